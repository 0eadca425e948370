"""What the kiosk does with a decision: a relay, a webhook, a command; and its status LED.

No action can stop the loop or hold it past a deadline: a webhook gets ``deadline_s`` in all
(connect, send, answer), follows no redirect and goes only to this machine unless its host is on
an allow-list; a command runs in its own process group with a time limit, an environment without
secrets, and its exit code recorded. The kiosk records what each action did against the audit row.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import shlex
import signal
import socket
import ssl
import subprocess
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

from edge_verify.errors import UsageError
from edge_verify.redaction import child_environment, redact_url

log = logging.getLogger("edge_verify.kiosk")
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
MAX_RESPONSE_BYTES = 64 * 1024


@dataclass
class Event:
    """A debounced decision that fired."""

    time: float
    accepted: bool
    identity: str | None
    score: float
    threshold: float
    frame: str
    track: int = 0
    frames: int = 1  # frames whose mean score decided
    liveness: str | None = None  # the liveness check's outcome
    audit_id: int = 0
    alert: str | None = None  # not a decision: a warning for the site (e.g. a liveness attack suspected)
    actions: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Outcome:
    """What an action did for the decision ``audit_id`` (recorded in the audit)."""

    audit_id: int
    action: str
    ok: bool
    detail: str = ""


class Action:
    name = "action"

    def fire(self, event: Event) -> bool:
        """Act on a decision; False when this action ignores it (a relay ignores rejections).
        Raises when it failed; the kiosk records the error and goes on."""
        raise NotImplementedError

    def attach(self, kiosk) -> None:
        """Called once the kiosk that runs this action exists (the fleet link starts from its store)."""

    def finished(self) -> list[Outcome]:
        """Outcomes known only later (a command's exit code); collected by the kiosk every frame."""
        return []

    def close(self) -> list[Outcome]:
        """Release the action; outcomes of work it had to stop."""
        return []


def _output_device(pin: int, what: str):
    try:
        from gpiozero import DigitalOutputDevice
    except ImportError:
        raise UsageError(f"{what} needs gpiozero: pip install 'edge-verify[kiosk]'") from None
    try:
        with warnings.catch_warnings():  # a PinFactoryFallback warning per library it tried: the error says it
            warnings.simplefilter("ignore")
            return DigitalOutputDevice(pin, initial_value=False)
    except Exception as exc:  # gpiozero raises its own types, OSError or RuntimeError without GPIO
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        flag = what.split("_")[0]
        raise UsageError(
            f"{what} {pin}: no usable GPIO here ({reason}); on a machine without GPIO give --no-{flag}, "
            "or --dry-run to simulate the pins"
        ) from None


def simulate_gpio() -> None:
    """Give gpiozero simulated pins (its MockFactory, as GPIOZERO_PIN_FACTORY=mock does): a relay or
    LED then switches nothing, so a Pi's configuration can be tried on any machine."""
    try:
        from gpiozero import Device
        from gpiozero.pins.mock import MockFactory
    except ImportError:
        raise UsageError("--dry-run needs gpiozero: pip install 'edge-verify[kiosk]'") from None
    Device.pin_factory = MockFactory()


class RelayAction(Action):
    """Pulse a relay (door strike) through gpiozero."""

    name = "relay"

    def __init__(self, pin: int, pulse_s: float):
        self.relay = _output_device(pin, "relay_pin")
        self.pulse_s = pulse_s

    def fire(self, event: Event) -> bool:
        if not event.accepted:
            return False
        self.relay.blink(on_time=self.pulse_s, off_time=0, n=1, background=True)
        return True

    def close(self) -> list[Outcome]:
        self.relay.off()
        self.relay.close()
        return []


class StatusLed:
    """The kiosk's state on one LED: off while waiting, fast blinking during a liveness check, lit
    for ``on_s`` on an accept, three slow blinks on a rejection."""

    def __init__(self, pin: int, on_s: float):
        self.led = _output_device(pin, "led_pin")
        self.on_s = on_s
        self.state = "idle"

    def show(self, state: str) -> None:
        if state == self.state:
            return
        self.state = state
        if state == "challenge":
            self.led.blink(on_time=0.15, off_time=0.15, background=True)
        elif state == "accepted":
            self.led.blink(on_time=self.on_s, off_time=0, n=1, background=True)
        elif state == "rejected":
            self.led.blink(on_time=0.4, off_time=0.4, n=3, background=True)
        else:
            self.led.off()

    def close(self) -> None:
        self.led.off()
        self.led.close()


def check_webhook_url(url: str, allow_hosts: tuple[str, ...] = ()) -> str:
    """``url`` if it is http(s) to this machine (127.0.0.1, ::1, localhost) or to a host on
    ``allow_hosts``; UsageError otherwise (checked when the kiosk starts)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"kiosk setting webhook {redact_url(url)!r}: not a URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"kiosk setting webhook {redact_url(url)!r}: must be an http:// or https:// URL with a host")
    host = parts.hostname.lower()
    if host not in LOOPBACK_HOSTS and host not in {h.lower() for h in allow_hosts}:
        raise UsageError(
            f"kiosk setting webhook: host {host!r} is not this machine; to send decisions there, add it to "
            f"webhook_allow_hosts (or --webhook-allow-host {host})"
        )
    if port == 0:
        raise UsageError(f"kiosk setting webhook {redact_url(url)!r}: port 0")
    return url


class WebhookAction(Action):
    """POST the event as JSON. The whole call (connect, send, read the answer) has ``deadline_s``;
    an answer other than 2xx (a redirect included: none is followed) is a failure."""

    name = "webhook"

    def __init__(self, url: str, allow_hosts: tuple[str, ...] = (), deadline_s: float = 2.0):
        self.url = check_webhook_url(url, allow_hosts)
        self.deadline_s = deadline_s

    def fire(self, event: Event) -> bool:
        body = json.dumps({k: None if v != v else v for k, v in asdict(event).items()}).encode()  # NaN: null
        parts = urlsplit(self.url)
        patience = 2 * self.deadline_s  # per socket operation; the deadline below cuts the whole call first
        if parts.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.hostname, parts.port, timeout=patience, context=ssl.create_default_context()
            )
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=patience)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {"Content-Type": "application/json", "Connection": "close"}
        if parts.username is not None:
            import base64

            token = f"{parts.username}:{parts.password or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(token).decode()
        result: dict = {}

        def call() -> None:
            try:
                conn.request("POST", path, body, headers)
                response = conn.getresponse()
                response.read(MAX_RESPONSE_BYTES)
                result["status"] = response.status
                result["location"] = response.getheader("Location")
            except Exception as exc:  # reported below, on the kiosk's thread
                result["error"] = exc

        worker = threading.Thread(target=call, name="webhook", daemon=True)
        worker.start()
        worker.join(self.deadline_s)
        if worker.is_alive():
            _abort(conn)
            worker.join(1.0)
            raise TimeoutError(f"no complete answer within {self.deadline_s:g}s")
        conn.close()
        if "error" in result:
            exc = result["error"]
            raise ConnectionError(f"{type(exc).__name__}: {str(exc)[:200] or 'no detail'}")
        status = result["status"]
        if 300 <= status < 400:
            raise ConnectionError(f"HTTP {status} redirect to {redact_url(str(result['location']))} not followed")
        if not 200 <= status < 300:
            raise ConnectionError(f"HTTP {status}")
        return True


def _abort(conn: http.client.HTTPConnection) -> None:
    """Wake the worker blocked on ``conn``'s socket (a server that trickles or never answers)."""
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    conn.close()


class CommandRunner:
    """Start a command (no shell) in its own process group, at most ``max_running`` at a time, each
    killed (its whole group) after ``timeout_s``; children see only ``child_environment``."""

    def __init__(self, command: str, timeout_s: float = 10.0, max_running: int = 4):
        try:
            self.argv = shlex.split(command)
        except ValueError as exc:
            raise UsageError(f"command {command!r}: {exc}") from None
        if not self.argv:
            raise UsageError("command is empty")
        self.timeout_s = timeout_s
        self.max_running = max_running
        self.running: list[tuple[subprocess.Popen, float, object]] = []

    def start(self, tag: object, **env: str) -> subprocess.Popen:
        """Start one run; ``tag`` comes back with its outcome. Raises OSError or RuntimeError."""
        self.reap()
        if len(self.running) >= self.max_running:
            raise RuntimeError(f"{len(self.running)} earlier runs still running; not started")
        proc = subprocess.Popen(
            self.argv,
            env=child_environment(**env),
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: a timeout kills its children too
        )
        self.running.append((proc, time.monotonic(), tag))
        return proc

    def reap(self) -> list[tuple[object, bool, str]]:
        """(tag, ok, detail) of the runs that ended or were killed for running too long."""
        done, still = [], []
        for proc, started, tag in self.running:
            code = proc.poll()
            if code is None and time.monotonic() - started > self.timeout_s:
                _kill_group(proc)
                done.append((tag, False, f"timed out after {self.timeout_s:g}s; killed"))
            elif code is None:
                still.append((proc, started, tag))
            else:
                done.append((tag, code == 0, f"exit {code}"))
        self.running = still
        return done

    def close(self, grace_s: float = 2.0) -> list[tuple[object, bool, str]]:
        """Stop every run still going: SIGTERM to its group, SIGKILL after ``grace_s``."""
        done = self.reap()
        for proc, _, _ in self.running:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc, _, tag in self.running:
            try:
                code = proc.wait(max(deadline - time.monotonic(), 0.01))
                done.append((tag, code == 0, f"exit {code} (stopped with the kiosk)"))
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                done.append((tag, False, "killed when the kiosk stopped"))
        self.running = []
        return done


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_group(proc: subprocess.Popen) -> None:
    _signal_group(proc, signal.SIGKILL)
    try:
        proc.wait(1.0)
    except subprocess.TimeoutExpired:
        log.warning("command %d did not die", proc.pid)


class CommandAction(Action):
    """Run a command with EDGE_VERIFY_ACCEPTED/IDENTITY/SCORE/AUDIT_ID; its exit code (or its
    timeout) is recorded against the decision when it ends."""

    name = "command"

    def __init__(self, command: str, timeout_s: float = 10.0):
        self.runner = CommandRunner(command, timeout_s)

    def fire(self, event: Event) -> bool:
        self.runner.start(
            event.audit_id,
            EDGE_VERIFY_ACCEPTED="1" if event.accepted else "0",
            EDGE_VERIFY_IDENTITY=event.identity or "",
            EDGE_VERIFY_SCORE=f"{event.score:.4f}",
            EDGE_VERIFY_AUDIT_ID=str(event.audit_id),
            EDGE_VERIFY_ALERT=event.alert or "",
        )
        return True

    def finished(self) -> list[Outcome]:
        return [Outcome(tag, self.name, ok, detail) for tag, ok, detail in self.runner.reap()]

    def close(self) -> list[Outcome]:
        return [Outcome(tag, self.name, ok, detail) for tag, ok, detail in self.runner.close()]
