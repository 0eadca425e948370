"""What a running kiosk joins when its config names a fleet file (``fleet = "/etc/edge-verify/fleet.toml"``):
the sync thread (``[fleet]``, fleet/sync.py) with its own connection to the kiosk's store, and the MQTT
client (``[mqtt]``, fleet/mqtt.py), which is also an action that publishes each decision."""

from __future__ import annotations

import logging
import threading
import time
import tomllib
from pathlib import Path

from edge_verify.actions import Action, Event, Outcome, RelayAction
from edge_verify.errors import UsageError
from edge_verify.fleet.mqtt import MqttLink, MqttSettings
from edge_verify.fleet.sync import KioskFile, KioskSync

log = logging.getLogger("edge_verify.fleet")


def load(path: str | Path) -> tuple[KioskFile | None, MqttSettings | None]:
    """The ``[fleet]`` and ``[mqtt]`` parts of a fleet file (either may be absent, not both)."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the fleet file ({exc})") from None
    unknown = set(data) - {"fleet", "mqtt"}
    if unknown or not data:
        raise UsageError(f"{path}: a fleet file has a [fleet] and/or an [mqtt] table, not {sorted(unknown) or 'none'}")
    kiosk = KioskFile.load(path) if "fleet" in data else None
    try:
        mqtt = MqttSettings.from_dict(data["mqtt"], kiosk.kiosk if kiosk else "") if "mqtt" in data else None
    except UsageError as exc:
        raise UsageError(f"{path}: {exc}") from None
    return kiosk, mqtt


class FleetLink(Action):
    """Started by the kiosk (``attach``), closed with its other actions."""

    name = "fleet"

    def __init__(self, path: str | Path, relay_pulse_s: float | None):
        self.path = path
        self.kiosk_file, self.settings = load(path)
        self.relay_pulse_s = relay_pulse_s
        self.sync: KioskSync | None = None
        self.mqtt: MqttLink | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._kiosk = None

    def attach(self, kiosk) -> None:
        """Start syncing into ``kiosk``'s store and publishing its events."""
        self._kiosk = kiosk
        if self.kiosk_file is not None:
            self.sync = KioskSync(self.kiosk_file, kiosk.store.path, key_file=kiosk.store.key_file)
            self._thread = threading.Thread(target=self.sync.run, args=(self._stop,), name="fleet-sync", daemon=True)
            self._thread.start()
        if self.settings is not None:
            self.mqtt = MqttLink(
                self.settings,
                model=f"{kiosk.verifier.bundle.name} {kiosk.verifier.bundle.version}",
                relay_pulse_s=self.relay_pulse_s,
                on_unlock=self._unlock,
                on_hint=self.sync.wake.set if self.sync else None,
                group=self.kiosk_file.group if self.kiosk_file else None,
            )

    def _unlock(self, ok: bool, detail: str) -> bool:
        """Audit a remote unlock attempt, then (if the code was right) pulse the kiosk's relays."""
        kiosk = self._kiosk
        fingerprint = kiosk.verifier.bundle.fingerprint
        audit_id = kiosk.store.audit("remote-unlock", fingerprint, ok, source="mqtt", detail=detail)
        if not ok:
            return False
        event = Event(time.time(), True, None, float("nan"), kiosk.threshold, "mqtt", audit_id=audit_id)
        opened = False
        for action in kiosk.actions:
            if isinstance(action, RelayAction):
                try:
                    opened = action.fire(event) or opened
                    kiosk.store.record_action(audit_id, action.name, True)
                except Exception as exc:  # noqa: BLE001 - recorded against the audit row
                    kiosk.store.record_action(audit_id, action.name, False, f"{type(exc).__name__}: {exc}")
        return opened

    def fire(self, event: Event) -> bool:
        return self.mqtt.fire(event) if self.mqtt is not None else False

    def close(self) -> list[Outcome]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self.sync is not None:
            self.sync.close()
        if self.mqtt is not None:
            self.mqtt.close()
        return []
