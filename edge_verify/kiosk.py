"""The kiosk loop: watch a camera, decide with debouncing and a cooldown, act, audit, survive.

    Kiosk(config, verifier, store, actions).run(stop_event)

A decision fires only after ``debounce`` consecutive frames agree on the same outcome; each
outcome (an identity, or "rejected") then rests for ``cooldown_s``. The camera may vanish: the
loop logs it, waits ``reconnect_s`` and opens it again until stopped.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from edge_verify.errors import InputError, SourceError, UsageError
from edge_verify.matcher import Decision, identify, verify
from edge_verify.pipeline import Verifier, effective_threshold
from edge_verify.sources import open_source
from edge_verify.store import TemplateStore

log = logging.getLogger("edge_verify.kiosk")


@dataclass
class KioskConfig:
    source: str = "0"
    identity: str | None = None  # 1:1 against this identity; None: identify 1:N
    debounce: int = 3  # consecutive frames that must agree
    cooldown_s: float = 10.0  # per outcome, between two firings
    threshold: float | None = None  # default: calibrated, else the bundle's
    relay_pin: int | None = None  # BCM pin of the door relay (gpiozero)
    relay_pulse_s: float = 1.0
    led_pin: int | None = None  # lit while a decision is being acted on
    webhook: str | None = None  # POST JSON here (a local address)
    command: str | None = None  # run with EDGE_VERIFY_* environment variables
    reconnect_s: float = 2.0
    timeout_s: float = 5.0
    status_port: int | None = None  # tiny local status page on 127.0.0.1
    max_frames: int | None = None  # stop after this many frames (tests, benchmarks)

    @classmethod
    def from_toml(cls, path: str | Path, **overrides) -> KioskConfig:
        import tomllib

        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"{path}: cannot read kiosk config ({exc})") from None
        data = data.get("kiosk", data)
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise UsageError(f"{path}: unknown kiosk settings {sorted(unknown)}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data)


@dataclass
class Event:
    """A debounced decision that fired."""

    time: float
    accepted: bool
    identity: str | None
    score: float
    threshold: float
    frame: str
    actions: list[str] = field(default_factory=list)


class Action:
    name = "action"

    def fire(self, event: Event) -> bool:
        """Act on a decision; False when this action ignores it (a relay ignores rejections)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class RelayAction(Action):
    """Pulse a relay (door strike) through gpiozero; optionally light an LED meanwhile."""

    name = "relay"

    def __init__(self, pin: int, pulse_s: float, led_pin: int | None = None):
        try:
            from gpiozero import DigitalOutputDevice
        except ImportError:
            raise UsageError("relay_pin needs gpiozero: pip install 'edge-verify[kiosk]'") from None
        self.relay = DigitalOutputDevice(pin, initial_value=False)
        self.led = DigitalOutputDevice(led_pin, initial_value=False) if led_pin is not None else None
        self.pulse_s = pulse_s

    def fire(self, event: Event) -> bool:
        if not event.accepted:
            return False
        self.relay.blink(on_time=self.pulse_s, off_time=0, n=1, background=True)
        if self.led is not None:
            self.led.blink(on_time=self.pulse_s, off_time=0, n=1, background=True)
        return True

    def close(self) -> None:
        for dev in (self.relay, self.led):
            if dev is not None:
                dev.off()
                dev.close()


class WebhookAction(Action):
    """POST the event as JSON; a failing receiver is logged, never fatal."""

    name = "webhook"

    def __init__(self, url: str, timeout_s: float = 2.0):
        self.url = url
        self.timeout_s = timeout_s

    def fire(self, event: Event) -> bool:
        body = json.dumps(asdict(event)).encode()
        request = urllib.request.Request(self.url, body, {"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read()
        except OSError as exc:
            log.warning("webhook %s failed: %s", self.url, exc)
        return True


class CommandAction(Action):
    """Run a command (no shell) with EDGE_VERIFY_ACCEPTED/IDENTITY/SCORE in its environment."""

    name = "command"

    def __init__(self, command: str):
        self.argv = shlex.split(command)
        self._running: list[subprocess.Popen] = []

    def fire(self, event: Event) -> bool:
        env = {
            **os.environ,
            "EDGE_VERIFY_ACCEPTED": "1" if event.accepted else "0",
            "EDGE_VERIFY_IDENTITY": event.identity or "",
            "EDGE_VERIFY_SCORE": f"{event.score:.4f}",
        }
        self._running = [p for p in self._running if p.poll() is None]
        try:
            self._running.append(subprocess.Popen(self.argv, env=env))
        except OSError as exc:
            log.warning("command %s failed: %s", self.argv[0], exc)
        return True

    def close(self) -> None:
        for p in self._running:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()


def build_actions(config: KioskConfig) -> list[Action]:
    actions: list[Action] = []
    if config.relay_pin is not None:
        actions.append(RelayAction(config.relay_pin, config.relay_pulse_s, config.led_pin))
    if config.webhook:
        actions.append(WebhookAction(config.webhook))
    if config.command:
        actions.append(CommandAction(config.command))
    return actions


class Kiosk:
    def __init__(
        self, config: KioskConfig, verifier: Verifier, store: TemplateStore, actions: list[Action], clock=time.monotonic
    ):
        if config.debounce < 1:
            raise UsageError("debounce must be at least 1 frame")
        self.config = config
        self.verifier = verifier
        self.store = store
        self.actions = actions
        self.clock = clock
        fp = verifier.bundle.fingerprint
        if config.identity:
            self.templates = {config.identity: store.get(config.identity, fp)}
        else:
            self.templates = store.all_templates(fp)
            if not self.templates:
                raise UsageError("nobody is enrolled with this bundle; enrol someone before starting the kiosk")
        self.threshold, _ = effective_threshold(verifier.bundle, store, config.threshold)
        self.events: list[Event] = []
        self.frames = 0
        self.reconnects = 0
        self.status: dict = {"state": "starting"}
        self._streak_key: object = None
        self._streak = 0
        self._last_fired: dict[object, float] = {}

    # -- one frame ------------------------------------------------------------------------------
    def decide(self, embedding: np.ndarray) -> Decision:
        if self.config.identity:
            return verify(embedding, self.templates[self.config.identity], self.threshold, self.config.identity)
        return identify(embedding, self.templates, self.threshold)

    def process(self, image: np.ndarray, name: str) -> Event | None:
        """Detect, decide, debounce; returns the event if one fired on this frame."""
        self.frames += 1
        faces = self.verifier.detect(image)
        if not faces:
            self._streak_key, self._streak = None, 0
            self.status = {"state": "waiting for a face"}
            return None
        obs = self.verifier.observe(image, faces[:1])[0]
        if obs.embedding is None:
            self.status = {"state": "face rejected", "reasons": list(obs.quality.reasons)}
            return None
        decision = self.decide(obs.embedding)
        key = decision.identity if decision.accepted else "<rejected>"
        self._streak = self._streak + 1 if key == self._streak_key else 1
        self._streak_key = key
        self.status = {
            "state": "deciding",
            "identity": decision.identity,
            "accepted": decision.accepted,
            "score": round(decision.score, 4),
            "streak": self._streak,
        }
        if self._streak < self.config.debounce:
            return None
        now = self.clock()
        if now - self._last_fired.get(key, -np.inf) < self.config.cooldown_s:
            return None
        self._last_fired[key] = now
        event = Event(time.time(), decision.accepted, decision.identity, decision.score, self.threshold, name)
        event.actions = [action.name for action in self.actions if action.fire(event)]
        self.store.record(
            "kiosk", self.verifier.bundle.fingerprint, decision, claimed=self.config.identity, source=name
        )
        self.events.append(event)
        self.status = {"state": "ACCEPTED" if decision.accepted else "REJECTED", **asdict(event)}
        log.info("%s %s (score %.4f)", self.status["state"], decision.identity or "-", decision.score)
        return event

    # -- the loop -------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set (or ``max_frames``); reconnect whenever the source fails."""
        server = self._start_status_server() if self.config.status_port else None
        log.info("kiosk running on %s (%s)", self.config.source, self.config.identity or "identify 1:N")
        try:
            while not stop.is_set() and not self._done():
                try:
                    with open_source(self.config.source, timeout_s=self.config.timeout_s) as source:
                        self.status = {"state": "waiting for a face"}
                        for frame in source:
                            if stop.is_set() or self._done():
                                return
                            self.process(frame.image, frame.name)
                    log.warning("%s ended; reopening", self.config.source)
                except (SourceError, InputError) as exc:
                    if isinstance(exc, InputError) and self.frames == 0:
                        raise  # a wrong path at start is a configuration error, not a flaky camera
                    log.warning("camera problem: %s; retrying in %.0fs", exc, self.config.reconnect_s)
                    self.status = {"state": "camera lost", "error": str(exc)}
                self.reconnects += 1
                stop.wait(self.config.reconnect_s)
        finally:
            for action in self.actions:
                action.close()
            if server is not None:
                server.shutdown()

    def _done(self) -> bool:
        return self.config.max_frames is not None and self.frames >= self.config.max_frames

    def _start_status_server(self) -> ThreadingHTTPServer:
        kiosk = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                if self.path == "/status":
                    body, kind = json.dumps(kiosk.status, default=str).encode(), "application/json"
                else:
                    body, kind = STATUS_PAGE.encode(), "text/html; charset=utf-8"
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.config.status_port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


STATUS_PAGE = """<!doctype html><meta charset="utf-8"><title>edge-verify kiosk</title>
<style>body{font:3em sans-serif;text-align:center;margin-top:20vh}</style>
<div id="s">…</div><div id="d" style="font-size:.5em"></div>
<script>
async function tick(){try{const s=await (await fetch('/status')).json();
document.getElementById('s').textContent=s.state+(s.identity?' '+s.identity:'');
document.body.style.background=s.state==='ACCEPTED'?'#9e9':s.state==='REJECTED'?'#e99':'#fff';
document.getElementById('d').textContent=s.score!==undefined?'score '+s.score:'';}catch(e){}}
setInterval(tick,500);tick();
</script>"""
