"""What the web app's routers share: the store, the kiosk runner and its frames, sessions, the
login limit, and the command-line options that name the bundle and the store."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from edge_verify.web.preview import FrameHub
from edge_verify.web.security import LoginLimiter, Sessions


@dataclass
class WebContext:
    args: argparse.Namespace  # the command line's bundle, store and key options
    store: object  # the web app's own TemplateStore connection
    hub: FrameHub
    runner: object | None = None  # KioskRunner; None: no camera (tests of the admin pages alone)
    tls: bool = False
    config_path: Path | None = None  # the kiosk TOML that the settings page edits
    load_config: object | None = None  # () -> KioskConfig: the file and the command line, as a reload reads them
    sessions: Sessions = field(default_factory=Sessions)
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    lock: threading.RLock = field(default_factory=threading.RLock)  # store writes and the enrolment verifier
    login_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one password check at a time
    jobs: dict = field(default_factory=dict)
    _verifier: object | None = None

    @property
    def kiosk(self):
        return self.runner.kiosk if self.runner is not None else None

    def verifier(self):
        """A pipeline for enrolment (TFLite interpreters are not shared between threads): the
        kiosk's bundle, loaded on first use; call with ``lock`` held."""
        if self._verifier is None:
            from edge_verify.cli.common import verifier_for

            self._verifier = verifier_for(self.args, self_test=True)
        return self._verifier


_capture = threading.local()


class _ThreadStdout(io.TextIOBase):
    """sys.stdout for the duration of a captured command: this thread's writes go to its buffer,
    every other thread's (the kiosk's lines) to the real stdout."""

    def __init__(self, real):
        self.real = real

    def write(self, text: str) -> int:
        buffer = getattr(_capture, "buffer", None)
        return (buffer or self.real).write(text)

    def flush(self) -> None:
        self.real.flush()


_stdout_lock = threading.Lock()


def run_command(name: str, args: argparse.Namespace, **options) -> tuple[int, dict]:
    """Run command ``name`` (doctor, calibrate, audit) as the command line would: its parser's
    defaults, the bundle and store options of ``args``, then ``options``, with --json; its exit code
    and JSON output. Errors come out as EdgeVerifyError, as on the CLI."""
    from edge_verify.cli import build_parser

    namespace = build_parser().parse_args([name])
    shared = ("store", "key_file", "bundle", "backend", "threads", "no_edgetpu", "detect_size", "timeout", "verbose")
    for key in shared:
        if hasattr(args, key):
            setattr(namespace, key, getattr(args, key))
    for key, value in {**options, "json": True}.items():
        setattr(namespace, key, value)
    _capture.buffer = io.StringIO()
    try:
        with _stdout_lock:
            if not isinstance(sys.stdout, _ThreadStdout):
                sys.stdout = _ThreadStdout(sys.stdout)
        code = namespace.func(namespace)
        lines = [ln for ln in _capture.buffer.getvalue().splitlines() if ln.startswith("{")]
        return code, json.loads(lines[-1]) if lines else {}
    finally:
        _capture.buffer = None
