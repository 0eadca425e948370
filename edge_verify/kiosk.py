"""The kiosk loop: watch a camera, follow faces, decide per tracked face, audit, act, survive.

    Kiosk(config, verifier, store, actions).run(stop_event)

Each face is followed across frames (``track.py``); a track decides on the mean score of its
frames once it has ``debounce`` usable ones (again after every ``debounce`` new frames, on the mean
of up to its last ``10 * debounce``). Each outcome (an identity, or "rejected") then rests for
``cooldown_s``. The decision's audit row is committed before any action fires, and what each
action did is recorded against it. Enrolments, removals and calibrations made while the loop
runs are picked up on the next frame. The camera may vanish: the loop logs it, waits
``reconnect_s`` and opens it again until stopped.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from edge_verify import selftest
from edge_verify.actions import (
    Action,
    CommandAction,
    CommandRunner,
    Event,
    Outcome,
    RelayAction,
    StatusLed,
    WebhookAction,
    check_webhook_url,
)
from edge_verify.errors import (
    InputError,
    SourceError,
    SourceUnavailableError,
    StoreError,
    UnknownIdentityError,
    UsageError,
)
from edge_verify.liveness import MODES, LivenessOptions, LivenessResult, parse_sequence
from edge_verify.matcher import Decision, Gallery, identify, verify
from edge_verify.operating import check_threshold
from edge_verify.pipeline import FaceTracks, Verifier, resolve_threshold
from edge_verify.redaction import redact_url
from edge_verify.sources import Frame, open_source, unencrypted_stream
from edge_verify.store import TemplateStore, check_identity_name

log = logging.getLogger("edge_verify.kiosk")
RECENT_EVENTS = 1000  # decisions kept in memory (the audit log keeps them all): the loop runs for months


@dataclass
class KioskConfig:
    source: str = "0"
    allow_unencrypted_camera: bool = False  # permit an rtsp:// or http:// camera (its picture can be replaced)
    identity: str | None = None  # 1:1 against this identity; None: identify 1:N
    debounce: int = 3  # frames of one tracked face whose mean score decides
    cooldown_s: float = 10.0  # per outcome, between two firings
    threshold: float | None = None  # default: site calibration, else the bundle's default point
    operating_point: str | None = None  # a named operating point of the bundle instead
    allow_looser: bool = False  # permit a threshold looser than the bundle's default point
    relay_pin: int | None = None  # BCM pin of the door relay (gpiozero)
    relay_pulse_s: float = 1.0
    led_pin: int | None = None  # lit while a decision is being acted on
    webhook: str | None = None  # POST JSON here (this machine, or a host on webhook_allow_hosts)
    webhook_allow_hosts: list[str] = field(default_factory=list)  # other hosts the webhook may reach
    webhook_deadline_s: float = 2.0  # the whole call: connect, send, answer
    command: str | None = None  # run with EDGE_VERIFY_* environment variables
    command_timeout_s: float = 10.0  # its process group is killed after this
    reconnect_s: float = 2.0
    timeout_s: float = 5.0
    status_port: int | None = None  # tiny local status page on 127.0.0.1
    max_frames: int | None = None  # stop after this many frames (tests, benchmarks)
    liveness: str = "challenge"  # off | passive | challenge: presentation-attack check per tracked face
    liveness_sequence: str | None = None  # a fixed challenge (tests); default: random for each track
    liveness_step_timeout_s: float = 2.0  # reaction window: each prompted action must begin within this
    liveness_max_failures: int = 3  # failed or abandoned checks of one face before it is locked out until it leaves
    liveness_alarm_failures: int = 5  # this many failed or abandoned checks at the kiosk within the window ...
    liveness_alarm_window_s: float = 120.0
    liveness_alarm_failures_per_hour: int = 15  # ... or this many within an hour (attempts spaced out)
    liveness_lockout_s: float = 60.0  # ... stop all checks this long (doubling while it repeats), with an alert
    prompt_command: str | None = None  # run on each new prompt with EDGE_VERIFY_PROMPT=<action>
    fleet: str | None = None  # fleet file: [fleet] sync with a centre, [mqtt] events (docs/fleet.md)

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
        for name, value in overrides.items():
            if isinstance(value, list) and isinstance(data.get(name, []), list):
                data[name] = [*data.get(name, []), *value]  # a list on the command line adds to the file's
            elif value is not None:
                data[name] = value
        if "source" not in data:  # never a camera the file does not name
            raise UsageError(
                f'{path}: no source set; add source = 0 (the first camera), "picamera2", a video or a URL, '
                "or give --source"
            )
        try:
            return cls(**data)
        except UsageError as exc:
            raise UsageError(f"{path}: {exc}") from None

    def __post_init__(self) -> None:
        """Every setting has its type and range checked here, so a bad config fails at start."""
        if isinstance(self.source, int) and not isinstance(self.source, bool):
            self.source = str(self.source)  # `source = 0` in TOML: camera 0
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and "None" in str(f.type):
                continue
            if str(f.type).startswith("list[str]"):
                if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                    raise UsageError(f"kiosk setting {f.name} = {value!r} must be a list of names")
                continue
            wanted = {"int": int, "float": (int, float), "bool": bool, "str": str}[str(f.type).split(" ")[0]]
            if isinstance(value, bool) is not (wanted is bool) or not isinstance(value, wanted):
                raise UsageError(f"kiosk setting {f.name} = {value!r} must be of type {str(f.type).split(' ')[0]}")
        scheme = unencrypted_stream(self.source)
        if scheme and not self.allow_unencrypted_camera:
            raise UsageError(
                f"kiosk source {redact_url(self.source)} is an unencrypted {scheme} stream: anyone on its network "
                "can replace the picture the door decides on; use rtsps:// or https://, a camera wired to this "
                "device, or set allow_unencrypted_camera = true if that network is the door's alone"
            )
        if self.debounce < 1:
            raise UsageError("kiosk setting debounce must be at least 1 frame")
        if self.liveness not in MODES:
            raise UsageError(f"kiosk setting liveness = {self.liveness!r}: choose one of {', '.join(MODES)}")
        if self.liveness_sequence is not None:
            parse_sequence(self.liveness_sequence)
        for name in ("cooldown_s", "relay_pulse_s", "reconnect_s", "timeout_s", "liveness_lockout_s"):
            if not 0 <= getattr(self, name) <= 86400:
                raise UsageError(f"kiosk setting {name} must be between 0 and 86400 seconds")
        if not 0.5 <= self.liveness_step_timeout_s <= 3:
            raise UsageError("kiosk setting liveness_step_timeout_s must be between 0.5 and 3 seconds")
        if not 1 <= self.liveness_alarm_window_s <= 86400:
            raise UsageError("kiosk setting liveness_alarm_window_s must be between 1 and 86400 seconds")
        for name in ("liveness_max_failures", "liveness_alarm_failures", "liveness_alarm_failures_per_hour"):
            if not 1 <= getattr(self, name) <= 1000:
                raise UsageError(f"kiosk setting {name} must be between 1 and 1000")
        for name in ("webhook_deadline_s", "command_timeout_s"):
            if not 0 < getattr(self, name) <= 60:
                raise UsageError(f"kiosk setting {name} must be more than 0 and at most 60 seconds")
        for name in ("relay_pin", "led_pin"):
            if getattr(self, name) is not None and not 0 <= getattr(self, name) <= 63:
                raise UsageError(f"kiosk setting {name} must be a BCM pin number 0..63")
        if self.status_port is not None and not 1 <= self.status_port <= 65535:
            raise UsageError("kiosk setting status_port must be 1..65535")
        if self.max_frames is not None and self.max_frames < 1:
            raise UsageError("kiosk setting max_frames must be at least 1")
        if self.webhook is not None:
            check_webhook_url(self.webhook, tuple(self.webhook_allow_hosts))
        for name in ("command", "prompt_command"):
            if getattr(self, name) is not None:
                CommandRunner(getattr(self, name))  # a command line that cannot be split fails here
        if self.threshold is not None:
            check_threshold(self.threshold, "kiosk setting threshold")
        if self.identity is not None:
            if not self.identity.strip():
                raise UsageError("kiosk setting identity is empty (leave it out for 1:N)")
            check_identity_name(self.identity)


def build_actions(config: KioskConfig) -> list[Action]:
    actions: list[Action] = []
    if config.relay_pin is not None:
        actions.append(RelayAction(config.relay_pin, config.relay_pulse_s))
    if config.webhook:
        actions.append(WebhookAction(config.webhook, tuple(config.webhook_allow_hosts), config.webhook_deadline_s))
    if config.command:
        actions.append(CommandAction(config.command, config.command_timeout_s))
    if config.fleet:
        from edge_verify.fleet.link import FleetLink  # the optional fleet extra, only when asked for

        actions.append(FleetLink(config.fleet, config.relay_pulse_s if config.relay_pin is not None else None))
    return actions


class Kiosk:
    def __init__(
        self,
        config: KioskConfig,
        verifier: Verifier,
        store: TemplateStore,
        actions: list[Action],
        clock=time.monotonic,
        require_enrolled: bool = True,
    ):
        """``require_enrolled=False`` (the web app, which enrols from this loop's camera) starts with
        nobody enrolled: every decision is then a rejection until someone is."""
        self.config = config
        self.verifier = verifier
        self.store = store
        self.actions = actions
        self.clock = clock
        checked = selftest.require(verifier)  # a device that computes wrong embeddings must not guard a door
        if checked is None:
            log.warning("bundle %s records no self-test; embeddings are not checked here", verifier.bundle.name)
        else:
            log.info("%s", checked.summary())
        self._load(at_start=require_enrolled)
        self.on_frame: Callable[[Frame], None] | None = None  # called after each frame (the web app's preview)
        for action in actions:
            action.attach(self)
        self.tracks = FaceTracks(
            verifier,
            config.debounce,
            liveness=config.liveness,
            liveness_options=LivenessOptions(
                step_timeout_s=config.liveness_step_timeout_s, max_failures=config.liveness_max_failures
            ),
            sequence=parse_sequence(config.liveness_sequence) if config.liveness_sequence else None,
        )
        self.led = StatusLed(config.led_pin, config.relay_pulse_s) if config.led_pin is not None else None
        self.prompter = CommandRunner(config.prompt_command, max_running=1) if config.prompt_command else None
        self._prompt = ""
        self.on_decision: Callable[[Event], None] | None = None  # told of each audited decision or alert
        self.events: deque[Event] = deque(maxlen=RECENT_EVENTS)  # the latest decisions
        self.decisions = 0  # since start, with ``accepted`` of them
        self.accepted = 0
        self.frames = 0
        self.reconnects = 0
        self.reloads = 0
        self.status: dict = {"state": "starting"}
        self._last_fired: dict[object, float] = {}
        self._failures: deque[float] = deque()  # when checks failed or were abandoned, for the alarm
        self._hour: deque[float] = deque()  # the same over the last hour (not cleared by a lock-out)
        self._lockouts = 0  # lock-outs in a row (each twice as long); an accepted decision resets it
        self.locked_until = -np.inf
        self._file_offset, self._last_file_time = 0.0, -np.inf
        self._now = clock()  # the time of the frame being processed (a file's own clock for files)

    # -- templates and threshold, reloaded when another process changes the store ----------------
    def _load(self, at_start: bool = False) -> None:
        fp = self.verifier.bundle.fingerprint
        self._version = self.store.data_version()
        if self.config.identity:
            try:
                templates = {self.config.identity: self.store.get(self.config.identity, fp)}
            except UnknownIdentityError:
                if at_start:
                    raise
                templates = {}  # removed while running: nobody is admitted any more
        else:
            templates = self.store.all_templates(fp)
            if not templates and at_start:
                raise UsageError("nobody is enrolled with this bundle; enrol someone before starting the kiosk")
        self.gallery = Gallery(templates)
        self.choice = resolve_threshold(
            self.verifier.bundle,
            self.store,
            self.config.threshold,
            self.config.operating_point,
            self.config.allow_looser,
            gallery_size=1 if self.config.identity else len(self.gallery),
        )
        self.threshold = self.choice.value

    def refresh(self) -> bool:
        """Pick up enrolments, removals and calibrations committed by other processes; whether any were."""
        if self.store.data_version() == self._version:
            return False
        self._load()
        self.reloads += 1
        log.info("store changed: %d identities, threshold %.4f", len(self.gallery), self.threshold)
        return True

    # -- one frame ------------------------------------------------------------------------------
    def decide(self, probes: np.ndarray) -> Decision:
        if self.config.identity:
            if not len(self.gallery):
                return Decision(None, float("nan"), self.threshold, False, frames=len(probes))
            return verify(probes, self.gallery.matrix[0], self.threshold, self.config.identity)
        return identify(probes, self.gallery, self.threshold, self.choice.margin)

    def process(self, image: np.ndarray, name: str, at: float | None = None) -> list[Event]:
        """Follow faces, check liveness, decide on tracks that are ready, audit, act; returns the
        events fired. ``at``: the frame's time in seconds (default: the kiosk's clock)."""
        self.frames += 1
        self.refresh()
        now = self._now = self.clock() if at is None else at
        if now < self.locked_until:
            self.status = {"state": "locked", "seconds": round(self.locked_until - now), "prompt": "Please wait"}
            return []
        ready = self.tracks.feed(image, self.frames, name, now)
        if not any(not t.ended for t in self.tracks.tracker.tracks):
            self.status = {"state": "waiting for a face"}
        events = self._failed_checks(self.tracks.failed, name, now)
        for track in ready:
            result = self.tracks.result(track) if self.config.liveness != "off" else None
            probes = track.take(self.config.debounce)
            decision = self.decide(probes)
            event = self._fire(decision, track.id, name, result, redecide=lambda p=probes: self.decide(p))
            if result is not None and event is not None and event.accepted:
                self._lockouts = 0  # an enrolled person came in: the lock-outs start again from the shortest
            if event is not None:
                events.append(event)
        if not events:
            self._show_challenge()
            if self.tracks.instruction:  # the gate refused the face in front: no score, keep watching
                self.status = {"state": "adjust", "prompt": self.tracks.instruction}
        self._record_outcomes([o for action in self.actions for o in action.finished()])
        return events

    def end_tracks(self, reason: str, at: float | None = None) -> list[Event]:
        """The source ended or was reopened: no track continues, and a check under way is abandoned."""
        abandoned = self.tracks.end_all(reason)
        return self._failed_checks(abandoned, "", self._now if at is None else at)

    def _failed_checks(self, failed: list, name: str, now: float) -> list[Event]:
        """Audit every failed or abandoned check (each is an attempt); lock the kiosk out after
        ``liveness_alarm_failures`` of them within ``liveness_alarm_window_s``, or after
        ``liveness_alarm_failures_per_hour`` within an hour (then after each further one), with an alert."""
        events = []
        for track, result in failed:
            event = self._fire(Decision.refused(self.threshold), track.id, name, result, audit_always=True)
            if event is not None:
                events.append(event)
            self._failures.append(now)
            self._hour.append(now)
        window = self.config.liveness_alarm_window_s
        while self._failures and self._failures[0] < now - window:
            self._failures.popleft()
        while self._hour and self._hour[0] < now - 3600.0:
            self._hour.popleft()
        if len(self._failures) >= self.config.liveness_alarm_failures:
            count, span = len(self._failures), window
        elif failed and len(self._hour) >= self.config.liveness_alarm_failures_per_hour:
            count, span = len(self._hour), 3600.0
        else:
            return events
        self._lockouts += 1
        lockout = min(self.config.liveness_lockout_s * 2 ** (self._lockouts - 1), 86400.0)
        self.locked_until = now + lockout
        self._failures.clear()
        self.tracks.end_all("the kiosk locked its checks")  # not counted: the kiosk ended them
        alert = (
            f"liveness attack suspected: {count} failed or abandoned checks within {span:.0f}s; "
            f"checks stopped for {lockout:.0f}s"
        )
        log.warning("%s", alert)
        event = self._fire(Decision.refused(self.threshold), 0, name, None, audit_always=True, alert=alert)
        if event is not None:
            events.append(event)
        return events

    def _record_outcomes(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            if not outcome.ok:
                log.warning("%s for decision %d failed: %s", outcome.action, outcome.audit_id, outcome.detail)
            try:
                self.store.record_action(outcome.audit_id, outcome.action, outcome.ok, outcome.detail)
            except StoreError as exc:
                log.error("could not record %s outcome: %s", outcome.action, exc)

    def _show_challenge(self) -> None:
        """Status page, LED and prompt hook follow the largest face's liveness check."""
        if self.config.liveness == "off":
            return
        live = [t for t in self.tracks.tracker.tracks if t.id in self.tracks.monitors and t.box is not None]
        live.sort(key=lambda t: -t.box[2] * t.box[3])  # type: ignore[index]
        if live and self.tracks.locked(live[0]):
            self.status = {"state": "locked out", "prompt": "Too many attempts: step away from the camera"}
            return
        result = self.tracks.result(live[0]) if live else None
        if result is None or result.state == "failed":
            if self.status.get("state") == "liveness" and self.led is not None:
                self.led.show("idle")
            return
        prompt = result.prompt if result.state == "pending" else "Look at the camera"
        self.status = {
            "state": "liveness",
            "prompt": prompt,
            "step": result.step,
            "of": len(result.sequence),
            "track": live[0].id,
        }
        if self.led is not None:
            self.led.show("challenge")
        if prompt != self._prompt:
            self._prompt = prompt
            self._run_prompt_command(result)

    def _run_prompt_command(self, result: LivenessResult) -> None:
        if self.prompter is None:
            return
        action = result.sequence[result.step] if result.state == "pending" and result.sequence else "look"
        for _, ok, detail in self.prompter.reap():
            if not ok:
                log.warning("prompt command: %s", detail)
        try:
            self.prompter.start(action, EDGE_VERIFY_PROMPT=action)
        except (OSError, RuntimeError) as exc:  # a missing or slow sound player must not stop the door
            log.warning("prompt command not run: %s", exc)

    def _fire(
        self,
        decision: Decision,
        track: int,
        name: str,
        liveness: LivenessResult | None = None,
        audit_always: bool = False,
        alert: str | None = None,
        redecide: Callable[[], Decision] | None = None,
    ) -> Event | None:
        """Audit a decision, then act on it. Outcomes rest for ``cooldown_s``: within it a repeated
        outcome is neither audited nor acted on, except a decision that a passed liveness check
        authorised (each pass is one decision) and rows marked ``audit_always`` (failed checks,
        alerts), which are audited and only their actions rest. ``redecide``: decide again on the
        store as it is when the row is written, if another process changed it since the frame began."""
        now = self.clock()
        try:
            # the write lock: no removal or calibration can commit between this decision and its row
            with self.store.transaction():
                if redecide is not None and decision.accepted and self.refresh():
                    decision = redecide()  # committed while this frame was processed: decide on what is in force
                key = alert or (decision.identity if decision.accepted else "<rejected>")
                resting = now - self._last_fired.get(key, -np.inf) < self.config.cooldown_s
                if liveness is not None and liveness.state == "passed":
                    resting = False
                if resting and not audit_always:
                    return None
                event = Event(
                    time.time(),
                    decision.accepted,
                    decision.identity,
                    decision.score,
                    self.threshold,
                    name,
                    track,
                    decision.frames,
                    liveness.summary() if liveness else None,
                    alert=alert,
                )
                # the audit row is committed before anything can open the door; no row, no action
                event.audit_id = self.store.record(
                    "kiosk",
                    self.verifier.bundle.fingerprint,
                    decision,
                    claimed=self.config.identity,
                    source=name,
                    liveness=event.liveness,
                    detail=alert,
                )
        except StoreError as exc:
            log.error("decision not audited, so not acted on: %s", exc)
            self.status = {"state": "store busy", "error": str(exc)}
            return None
        if resting:
            self._tell(event)
            return event  # audited; its actions rest
        self._last_fired[key] = now
        outcomes = []
        for action in self.actions:
            try:
                if action.fire(event):
                    event.actions.append(action.name)
                    outcomes.append(Outcome(event.audit_id, action.name, True))
            except Exception as exc:  # an action must never stop the loop; its failure is audited
                outcomes.append(Outcome(event.audit_id, action.name, False, f"{type(exc).__name__}: {exc}"))
        self._record_outcomes(outcomes)
        self.events.append(event)
        self.decisions += 1
        self.accepted += decision.accepted
        self.status = {"state": "ACCEPTED" if decision.accepted else "REJECTED", **asdict(event)}
        if self.led is not None:
            self.led.show("accepted" if decision.accepted else "rejected")
        self._prompt = ""
        log.info(
            "%s %s (score %.4f%s)",
            self.status["state"],
            decision.identity or "-",
            decision.score,
            f"; liveness {event.liveness}" if event.liveness else "",
        )
        self._tell(event)
        return event

    def _tell(self, event: Event) -> None:
        if self.on_decision is None:
            return
        try:
            self.on_decision(event)
        except Exception as exc:  # whoever listens must not stop the door
            log.warning("decision listener failed: %s: %s", type(exc).__name__, exc)

    # -- the loop -------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set (or ``max_frames``); reconnect whenever the source fails."""
        server = None
        log.info("kiosk running on %s (%s)", redact_url(self.config.source), self.config.identity or "identify 1:N")
        try:
            server = self._start_status_server() if self.config.status_port else None
            while not stop.is_set() and not self.done():
                try:
                    with open_source(self.config.source, timeout_s=self.config.timeout_s) as source:
                        self.status = {"state": "waiting for a face"}
                        for frame in source:
                            if stop.is_set() or self.done():
                                return
                            self.process(frame.image, frame.name, None if source.live else self._file_time(frame.time))
                            if self.on_frame is not None:
                                self.on_frame(frame)
                    log.warning("%s ended; reopening", redact_url(self.config.source))
                    self.end_tracks("the source ended")
                except (SourceError, InputError) as exc:
                    if (isinstance(exc, InputError) and self.frames == 0) or isinstance(exc, SourceUnavailableError):
                        raise  # a wrong path at start, or picamera2 not installed: configuration, not a flaky camera
                    log.warning("camera problem: %s; retrying in %.0fs", exc, self.config.reconnect_s)
                    self.status = {"state": "camera lost", "error": str(exc)}
                    self.end_tracks("the camera was lost")
                self.reconnects += 1
                stop.wait(self.config.reconnect_s)
        finally:
            for action in self.actions:
                self._record_outcomes(action.close())
            if self.prompter is not None:
                self.prompter.close()
            if self.led is not None:
                self.led.close()
            if server is not None:
                server.shutdown()
                server.server_close()

    def _file_time(self, time_in_file: float) -> float:
        """A file's frame times as one clock that keeps running when the file is read again."""
        if time_in_file + self._file_offset <= self._last_file_time:
            self._file_offset = self._last_file_time + 0.04 - time_in_file
        self._last_file_time = time_in_file + self._file_offset
        return self._last_file_time

    def done(self) -> bool:
        return self.config.max_frames is not None and self.frames >= self.config.max_frames

    def _start_status_server(self) -> ThreadingHTTPServer:
        kiosk = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                if self.path == "/status":
                    body, kind = status_json(kiosk.status), "application/json"
                else:
                    body, kind = STATUS_PAGE.encode(), "text/html; charset=utf-8"
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        try:
            server = ThreadingHTTPServer(("127.0.0.1", self.config.status_port), Handler)
        except OSError as exc:
            raise UsageError(f"status_port {self.config.status_port}: cannot listen on it ({exc.strerror})") from None
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


def json_safe(value):
    """``value`` with every NaN or infinite float (a score that does not exist: a rejection before
    any score) as None, so that it becomes strict JSON, which every parser, a browser's included, reads."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def status_json(status: dict) -> bytes:
    """The status page's JSON (strict: see ``json_safe``)."""
    return json.dumps(json_safe(status), default=str, allow_nan=False).encode()


STATUS_PAGE = """<!doctype html><meta charset="utf-8"><title>edge-verify kiosk</title>
<style>body{font:3em sans-serif;text-align:center;margin-top:20vh}</style>
<div id="s">…</div><div id="d" style="font-size:.5em"></div>
<script>
async function tick(){try{const s=await (await fetch('/status')).json();
const asks=s.state==='liveness'||s.state==='adjust';
document.getElementById('s').textContent=asks?s.prompt:s.state+(s.identity?' '+s.identity:'');
document.body.style.background=s.state==='ACCEPTED'?'#9e9':s.state==='REJECTED'?'#e99':'#fff';
document.getElementById('d').textContent=s.state==='liveness'?'step '+(s.step+1>s.of?s.of:s.step+1)+' of '+s.of:
s.alert||s.liveness||(s.score!=null?'score '+s.score.toFixed(4):'');}catch(e){}}
setInterval(tick,500);tick();
</script>"""
