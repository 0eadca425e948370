"""Events on MQTT for Home Assistant: decisions, lock-outs ("attack suspected"), availability
(retained, with a last will) and relay state under ``<base>/<kiosk>/…``; Home Assistant discovery
under ``<discovery_prefix>/<component>/edge_verify_<kiosk>/<object>/config``; a sync hint topic
``<base>/fleet/<group>/changed``. No face image and no score is ever sent unless ``include_scores``.
Remote unlock (a Home Assistant lock entity) exists only when configured with a code, and every
attempt, right or wrong, is audited before the relay moves."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime

from edge_verify.actions import Action, Event
from edge_verify.errors import UsageError
from edge_verify.fleet import FleetError, require

log = logging.getLogger("edge_verify.fleet")
UNLOCK_FAILURES, UNLOCK_PAUSE_S = 5, 300.0  # wrong codes before remote unlock pauses, and for how long


@dataclass
class MqttSettings:
    """The ``[mqtt]`` table of a fleet file."""

    kiosk: str = ""  # topic name of this kiosk (default: the fleet file's kiosk)
    host: str = "127.0.0.1"
    port: int = 1883  # 8883 with TLS, as mosquitto users expect
    username: str | None = None
    password: str | None = None
    tls_ca: str | None = None  # CA certificate file: TLS on, server certificate checked
    tls_cert: str | None = None  # client certificate and key (mosquitto's require_certificate)
    tls_key: str | None = None
    base: str = "edge-verify"
    discovery_prefix: str = "homeassistant"
    discovery: bool = True
    include_scores: bool = False  # add score and threshold to decisions (off: they say little, reveal more)
    remote_unlock_code_sha256: str | None = None  # set: a Home Assistant lock entity opens the door with this code
    keepalive_s: int = 30

    @classmethod
    def from_dict(cls, data: dict, kiosk: str = "") -> MqttSettings:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise UsageError(f"unknown [mqtt] settings {sorted(unknown)}")
        settings = cls(**{"kiosk": kiosk, **data})
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", settings.kiosk or ""):
            # a topic level and Home Assistant's node id: letters, digits, '_' and '-' only
            raise UsageError(f"[mqtt] kiosk {settings.kiosk!r}: 1-64 of A-Z, a-z, 0-9, '_' and '-' is needed")
        code = settings.remote_unlock_code_sha256
        if code is not None and (len(code) != 64 or any(c not in "0123456789abcdef" for c in code)):
            raise UsageError("[mqtt] remote_unlock_code_sha256 must be 64 lower-case hex digits (sha256 of the code)")
        return settings

    def topic(self, name: str) -> str:
        return f"{self.base}/{self.kiosk}/{name}"


def unlock_code_hash(code: str) -> str:
    """The value of ``remote_unlock_code_sha256`` for ``code``."""
    return hashlib.sha256(code.encode()).hexdigest()


def decision_payload(event: Event, include_scores: bool = False) -> dict:
    """What a decision says on ``<base>/<kiosk>/decision`` (Home Assistant's event entity reads
    ``event_type``): never an image, and no score unless asked."""
    payload = {
        "event_type": "lockout" if event.alert else ("accepted" if event.accepted else "rejected"),
        "identity": event.identity if event.accepted else None,
        "time": datetime.fromtimestamp(event.time, UTC).isoformat(timespec="milliseconds"),
        "liveness": event.liveness,
        "audit_id": event.audit_id,
    }
    if event.alert:
        payload["alert"] = event.alert
    if include_scores:
        payload["score"] = None if event.score != event.score else round(float(event.score), 4)
        payload["threshold"] = round(float(event.threshold), 4)
    return payload


def discovery_configs(settings: MqttSettings, model: str = "") -> dict[str, dict | None]:
    """Home Assistant discovery: topic -> config (published retained; None: an empty payload)."""
    node = f"edge_verify_{settings.kiosk}"  # kept apart: "front-2" and "front_2" are two kiosks (and ACLs)
    device = {"identifiers": [node], "name": f"edge-verify {settings.kiosk}", "manufacturer": "edge-verify"}
    if model:
        device["model"] = model
    common = {"availability_topic": settings.topic("availability"), "device": device}
    configs = {
        f"{settings.discovery_prefix}/event/{node}/decision/config": {
            "name": "Decision",
            "unique_id": f"{node}_decision",
            "state_topic": settings.topic("decision"),
            "event_types": ["accepted", "rejected", "lockout"],
            **common,
        },
        f"{settings.discovery_prefix}/binary_sensor/{node}/relay/config": {
            "name": "Door relay",
            "unique_id": f"{node}_relay",
            "state_topic": settings.topic("relay"),
            "device_class": "lock",  # on: unlocked
            "payload_on": "ON",
            "payload_off": "OFF",
            **common,
        },
        f"{settings.discovery_prefix}/binary_sensor/{node}/attack/config": {
            "name": "Attack suspected",
            "unique_id": f"{node}_attack",
            "state_topic": settings.topic("attack"),
            "device_class": "safety",  # on: unsafe
            "payload_on": "ON",
            "payload_off": "OFF",
            **common,
        },
    }
    lock = f"{settings.discovery_prefix}/lock/{node}/door/config"
    configs[lock] = None  # no remote unlock: an empty retained config removes an entity published before
    if settings.remote_unlock_code_sha256:
        configs[lock] = {
            "name": "Door",
            "unique_id": f"{node}_door",
            "command_topic": settings.topic("lock/set"),
            "state_topic": settings.topic("lock"),
            "command_template": '{"action": "{{ value }}", "code": "{{ code }}"}',
            "payload_lock": "LOCK",
            "payload_unlock": "UNLOCK",
            "state_locked": "LOCKED",
            "state_unlocked": "UNLOCKED",
            "code_format": "^\\d{4,}$",
            **common,
        }
    return configs


class MqttLink(Action):
    """The kiosk's MQTT client, and an action: each decision that fires is published."""

    name = "mqtt"

    def __init__(
        self,
        settings: MqttSettings,
        model: str = "",
        relay_pulse_s: float | None = None,
        on_unlock: Callable[[bool, str], bool] | None = None,
        on_hint: Callable[[], None] | None = None,
        group: str | None = None,
        connect_timeout_s: float = 5.0,
    ):
        """Connect, publish availability and discovery (FleetError when the broker refuses the credentials;
        a broker not reached within ``connect_timeout_s`` is retried in the background).
        ``relay_pulse_s``: the door has a relay (its state is published); ``on_unlock(ok, detail)`` audits
        a remote unlock attempt and, if ``ok``, opens the door (returns whether it did); ``on_hint`` is
        called when the centre announces a change for ``group``."""
        self.settings = settings
        self.relay_pulse_s = relay_pulse_s
        self.on_unlock = on_unlock
        self.on_hint = on_hint
        self.group = group
        self._failures: list[float] = []
        self._timers: list[threading.Timer] = []
        self._connected = threading.Event()
        self._refused: str | None = None
        client = new_client(settings, f"edge-verify-{settings.kiosk}")
        client.will_set(settings.topic("availability"), "offline", qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.reconnect_delay_set(1, 30)
        self.client = client
        self._discovery = discovery_configs(settings, model) if settings.discovery else {}
        client.connect_async(settings.host, settings.port, keepalive=settings.keepalive_s)
        client.loop_start()
        if not self._connected.wait(connect_timeout_s):
            # the door works without the broker: events wait in the client's queue while it retries
            log.warning("MQTT broker %s:%d not reached yet; retrying in the background", settings.host, settings.port)
        elif self._refused:
            client.loop_stop()
            raise FleetError(f"MQTT broker {settings.host}:{settings.port} refused the kiosk: {self._refused}")

    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        if reason_code.is_failure:
            self._refused = str(reason_code)
            self._connected.set()
            client.disconnect()
            return
        # on every (re)connection: availability, discovery, and the topics this kiosk listens to
        client.publish(self.settings.topic("availability"), "online", qos=1, retain=True)
        for topic, config in self._discovery.items():
            client.publish(topic, "" if config is None else json.dumps(config), qos=1, retain=True)
        if self.settings.remote_unlock_code_sha256:
            client.subscribe(self.settings.topic("lock/set"), qos=1)
            client.publish(self.settings.topic("lock"), "LOCKED", qos=1, retain=True)
        if self.group and self.on_hint:
            client.subscribe(f"{self.settings.base}/fleet/{self.group}/changed", qos=1)
        self._connected.set()

    def _on_message(self, client, userdata, message) -> None:
        try:
            if message.topic == self.settings.topic("lock/set"):
                if message.retain:
                    # a retained command comes again at every connection: never a reason to open
                    detail = "remote unlock by MQTT: a retained command (replayed at connection), ignored"
                    log.warning("%s", detail)
                    if self.on_unlock:
                        self.on_unlock(False, detail)
                    return
                self._remote_unlock(message.payload)
            elif self.on_hint is not None:
                self.on_hint()
        except Exception:  # noqa: BLE001 - a bad message must not stop the client's thread
            log.exception("MQTT message on %s not handled", message.topic)

    def _remote_unlock(self, payload: bytes) -> None:
        """A Home Assistant lock command: ``{"action": "UNLOCK", "code": "1234"}``. Audited either way."""
        now = time.monotonic()
        self._failures = [t for t in self._failures if now - t < UNLOCK_PAUSE_S]
        try:
            command = json.loads(payload)
            action, code = str(command["action"]), str(command.get("code", ""))
        except (ValueError, TypeError, KeyError):
            action, code = "?", ""
        if action != "UNLOCK":
            return  # LOCK: the door locks itself after the pulse
        if len(self._failures) >= UNLOCK_FAILURES:
            ok, detail = False, f"remote unlock paused after {UNLOCK_FAILURES} wrong codes"
        else:
            ok = hmac.compare_digest(unlock_code_hash(code), self.settings.remote_unlock_code_sha256 or "")
            detail = "remote unlock by MQTT (code accepted)" if ok else "remote unlock by MQTT: wrong code"
            if not ok:
                self._failures.append(now)
        log.warning("%s", detail)
        opened = self.on_unlock(ok, detail) if self.on_unlock else False
        if opened:
            self.client.publish(self.settings.topic("lock"), "UNLOCKED", qos=1, retain=True)
            self._relay(True)
            self._later(lambda: self.client.publish(self.settings.topic("lock"), "LOCKED", qos=1, retain=True))

    # -- the action -----------------------------------------------------------------------------
    def fire(self, event: Event) -> bool:
        self.client.publish(
            self.settings.topic("decision"), json.dumps(decision_payload(event, self.settings.include_scores)), qos=1
        )
        if event.alert:
            self.client.publish(self.settings.topic("attack"), "ON", qos=1, retain=True)
        elif event.accepted:
            self.client.publish(self.settings.topic("attack"), "OFF", qos=1, retain=True)
            self._relay(True)
        return True

    def _relay(self, opened: bool) -> None:
        if self.relay_pulse_s is None:
            return
        self.client.publish(self.settings.topic("relay"), "ON" if opened else "OFF", qos=1, retain=True)
        if opened:
            self._later(lambda: self._relay(False))

    def _later(self, fn) -> None:
        timer = threading.Timer(self.relay_pulse_s or 1.0, fn)
        timer.daemon = True
        timer.start()
        self._timers.append(timer)

    def close(self) -> list:
        for timer in self._timers:
            timer.cancel()
        info = self.client.publish(self.settings.topic("availability"), "offline", qos=1, retain=True)
        try:
            info.wait_for_publish(2.0)
        except (RuntimeError, ValueError):
            pass
        self.client.disconnect()
        self.client.loop_stop()
        return []


def publish_hint(settings: MqttSettings, group: str, revision: int, timeout_s: float = 5.0) -> None:
    """Tell the kiosks of ``group`` that revision ``revision`` is waiting (they pull at once)."""
    client = new_client(settings, f"edge-verify-authority-{time.time_ns()}")
    try:
        client.connect(settings.host, settings.port)
    except OSError as exc:
        raise FleetError(f"MQTT broker {settings.host}:{settings.port} unreachable ({exc})") from None
    client.loop_start()
    try:
        info = client.publish(f"{settings.base}/fleet/{group}/changed", json.dumps({"revision": revision}), qos=1)
        info.wait_for_publish(timeout_s)
    finally:
        client.disconnect()
        client.loop_stop()


def new_client(settings: MqttSettings, client_id: str):
    """A paho client with the settings' credentials and TLS."""
    mqtt = require("paho.mqtt.client")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    if settings.username:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls_ca:
        client.tls_set(ca_certs=settings.tls_ca, certfile=settings.tls_cert, keyfile=settings.tls_key)
    return client
