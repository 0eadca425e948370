"""What every command shares: output, progress, the verifier, the store, threshold options."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

from edge_verify.errors import HostDependencyError, UsageError

ACCEPTED, REJECTED = 0, 1


def emit(args: argparse.Namespace, data: dict, text: str) -> None:
    say(json.dumps(data, default=_json_default) if args.json else text)


def say(line: str) -> None:
    """Print ``line`` to stdout now. A reader that went away (``| head``) is not an error: the
    rest of the output is dropped quietly and the command keeps its exit code."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)  # interpreter exit flushes stdout again: send it nowhere
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _json_default(obj):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(type(obj).__name__)


def progress(args: argparse.Namespace, iterable, **kw):
    from tqdm import tqdm

    return tqdm(iterable, disable=args.json or not sys.stderr.isatty(), file=sys.stderr, leave=False, **kw)


def verifier_for(args: argparse.Namespace, bundle: str | None = None, self_test: bool = False):
    """The pipeline for the command's options; with ``self_test`` (commands whose decisions or
    templates last) the bundle's known-answer self-test must pass first."""
    from edge_verify import selftest
    from edge_verify.pipeline import Verifier, VerifierOptions

    if (args.detect_size or 0) < 0:
        raise UsageError("--detect-size must be a number of pixels, or 0 to search at full size")
    options = VerifierOptions(
        bundle=bundle or args.bundle,
        backend=args.backend,
        threads=args.threads,
        use_edgetpu=not args.no_edgetpu,
        detect_side=args.detect_size or None,
        variant=getattr(args, "variant", "int8"),
    )
    verifier = Verifier(options)
    if self_test:
        selftest.require(verifier)
    return verifier


def open_store(args: argparse.Namespace, bundle=None, create: bool = False, check_state: bool = True):
    """Open the store; with ``bundle``, check (or on first use, pin) its decision fields. Only
    commands that write (``create``: enroll, calibrate) may make a new store; ``check_state=False``
    (doctor, audit --verify) opens a store that was changed outside edge-verify, to list what changed."""
    from edge_verify.store import TemplateStore

    store = TemplateStore(args.store, key_file=args.key_file, create=create, check_state=check_state)
    if bundle is not None:
        try:
            store.pin_bundle(bundle)
        except BaseException:
            store.close()
            raise
    return store


def threshold_choice(args: argparse.Namespace, bundle, store, gallery_size: int = 1):
    """The threshold in force for the command's --threshold / --operating-point / --allow-looser."""
    from edge_verify.pipeline import resolve_threshold

    return resolve_threshold(
        bundle, store, args.threshold, args.operating_point, args.allow_looser, gallery_size=gallery_size
    )


def skipped_text(skipped: dict) -> str:
    return ", ".join(f"{n} {r}" for r, n in skipped.items() if n)


def add_threshold_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threshold", type=float, help="explicit threshold (a looser one than the default needs --allow-looser)"
    )
    p.add_argument("--operating-point", help="a named operating point of the bundle (strict, default, convenient)")
    p.add_argument("--allow-looser", action="store_true", help="allow a --threshold looser than the bundle default")


def require_host() -> None:
    if importlib.util.find_spec("tensorflow") is None:
        raise HostDependencyError("this command needs TensorFlow: pip install 'edge-verify[host]'")


def add_liveness_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--liveness",
        choices=["auto", "off", "passive", "challenge"],
        default="auto",
        help="presentation-attack check on the tracked face: challenge (random actions), passive (a natural blink "
        "and head turn), off (default auto: challenge for cameras and streams, off for files)",
    )
    p.add_argument(
        "--liveness-sequence", help="fixed challenge, e.g. 'turn_left,blink' (tests; default: random each time)"
    )
    add_reaction_window_option(p)


def add_reaction_window_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--liveness-step-timeout",
        type=float,
        help="reaction window: seconds within which each prompted action must begin (default 2, 0.5..3)",
    )


def liveness_options(args: argparse.Namespace):
    """The liveness options with the command line's reaction window, checked like the kiosk's."""
    from edge_verify.liveness import LivenessOptions

    window = getattr(args, "liveness_step_timeout", None)
    if window is None:
        return LivenessOptions()
    if not 0.5 <= window <= 3:
        raise UsageError(f"--liveness-step-timeout {window}: use 0.5 to 3 seconds")
    return LivenessOptions(step_timeout_s=window)


def store_path(args: argparse.Namespace) -> Path:
    from edge_verify.store import default_store_path

    return Path(args.store) if args.store else default_store_path()


def printable_text(value):
    """Text safe for a terminal: control, escape and bidi-override characters shown escaped (a name
    or source read from a store must not be able to forge an output line)."""
    if not isinstance(value, str):
        return value
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in value)


def positive_int(text: str) -> int:
    """argparse type of a count: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of at least 1")
    return value


def identity_name(text: str) -> str:
    """argparse type of an identity name (printable, see store.check_identity_name)."""
    from edge_verify.store import check_identity_name

    try:
        return check_identity_name(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
