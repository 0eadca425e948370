"""``edge-verify`` command line. Device commands never import TensorFlow; host commands do, lazily.

One module per group of commands: ``identities`` (enroll, check, identify, compare, demo, list,
remove), ``site`` (calibrate, bench, doctor, audit), ``kiosk`` (kiosk, liveness), ``web`` (serve), ``host`` (train,
convert, evaluate, import-dlib), ``fleet`` (fleet …: the centre, a kiosk's sync); ``common`` holds what they share.

Exit codes: each error class in ``edge_verify.errors`` carries its own; docs/commands/exit-codes.md
lists every code (tests/test_docs.py checks that the two agree).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback

from edge_verify.cli import fleet, host, identities, kiosk, site, web
from edge_verify.cli.common import say
from edge_verify.detect import WORKING_SIDE
from edge_verify.errors import EdgeVerifyError

INTERNAL_ERROR = 70  # EX_SOFTWARE: an unexpected exception
INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("--bundle", help="model bundle directory (default: the built-in face bundle)")
    common.add_argument("--store", help="template store file (default: the user data directory)")
    common.add_argument("--key-file", help="template key file (default: STORE.key, or $EDGE_VERIFY_KEY)")
    common.add_argument("--backend", choices=["litert", "tflite_runtime", "tensorflow"], help="force an interpreter")
    common.add_argument("--threads", type=int, help="interpreter threads (default: all cores)")
    common.add_argument("--no-edgetpu", action="store_true", help="ignore the bundle's EdgeTPU model")
    common.add_argument("--timeout", type=float, default=5.0, help="camera/stream timeout in seconds")
    common.add_argument(
        "--detect-size",
        type=int,
        default=WORKING_SIDE,
        metavar="PX",
        help=f"search frames larger than PX on a scaled copy, landmarks re-read at full size: faster and "
        f"lighter on big photos (default {WORKING_SIDE}; 0: search every frame at full size)",
    )
    common.add_argument("-v", "--verbose", action="store_true")

    parser = argparse.ArgumentParser(prog="edge-verify", description="On-device face (and image) verification.")
    from edge_verify import __version__

    parser.add_argument("--version", action="version", version=f"edge-verify {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, fn, help_text):
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(func=fn)
        return p

    for group in (identities, site, kiosk, web, host):
        group.register(add)
    fleet.register(sub, common)  # nested: edge-verify fleet COMMAND
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="edge-verify: %(message)s")
    try:
        return args.func(args)
    except EdgeVerifyError as exc:
        if args.json:
            say(json.dumps({"error": str(exc), "type": type(exc).__name__, "exit_code": exc.exit_code}))
        print(f"edge-verify: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:  # every write is one transaction: what was under way is not stored
        print(f"edge-verify: interrupted; {getattr(args, 'interrupted', 'nothing stored')}", file=sys.stderr)
        return INTERRUPTED
    except Exception as exc:  # a bug, not a verdict: never the "rejected" code 1
        if args.verbose:
            traceback.print_exc()
        message = f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
        if args.json:
            say(json.dumps({"error": message, "type": "InternalError", "exit_code": INTERNAL_ERROR}))
        print(f"edge-verify: {message} (a bug: please report it; -v shows the traceback)", file=sys.stderr)
        return INTERNAL_ERROR
