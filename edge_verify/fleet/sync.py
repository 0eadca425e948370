"""The kiosk's side: pull the revisions after the one applied (on a notification, and every
``interval_s`` as a fallback), verify each, apply them to the local store in one transaction (the
running loop sees them through ``PRAGMA data_version``), report the applied revision and the store's
chain head, push the audit rows the centre lacks (idempotent). The centre down: the kiosk keeps
deciding from its local store, and catches up when it returns."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_verify.errors import EdgeVerifyError, UsageError
from edge_verify.fleet import FleetError, first_line, require
from edge_verify.fleet.crypto import (
    BadRevision,
    Calibration,
    Revision,
    kiosk_key,
    open_template,
    request_aad,
    seal,
    verify,
)
from edge_verify.fleet.schema import CHANNEL, REQUESTS_CHANNEL
from edge_verify.store import TemplateStore
from edge_verify.store.audit import COLUMNS
from edge_verify.store.templates import check_identity_name
from edge_verify.toml_text import toml_value

log = logging.getLogger("edge_verify.fleet")
PUSH_BATCH = 1000
PASS_BURST, PASS_RATE = 5, 2.0  # the running loop: 5 passes at once, then 2 a second (notified or not)
# what the centre says to a revoked kiosk: its role may not log in (`fleet revoke`), or fleet_report()
REVOKED_SIGNS = ("is not permitted to log in", "not an enrolled kiosk")


@dataclass
class KioskFile:
    """What a kiosk needs to join the fleet (written by `fleet add-kiosk`, 0600: it holds the kiosk's
    private key and its centre password)."""

    kiosk: str
    group: str
    centre: str  # libpq connection string, with this kiosk's role and password
    key: str  # the kiosk's X25519 private key, hex
    authority: str  # the enrolment authority's Ed25519 public key, hex
    authority_box: str  # the authority's X25519 public key, hex (enrolment requests are sealed to it)
    interval_s: float = 30.0  # pull at least this often, notification or not
    mqtt: dict = field(default_factory=dict)  # the [mqtt] table (fleet/mqtt.py), if any

    @classmethod
    def load(cls, path: str | Path) -> KioskFile:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"{path}: cannot read the fleet file ({exc})") from None
        fleet = dict(data.get("fleet", {}))
        fleet["mqtt"] = data.get("mqtt", {})
        try:
            kiosk = cls(**fleet)
        except TypeError as exc:
            raise UsageError(f"{path}: not a kiosk's fleet file ({exc})") from None
        kiosk_key(kiosk.key)
        if not 1 <= kiosk.interval_s <= 3600:
            raise UsageError(f"{path}: interval_s must be 1..3600 seconds")
        return kiosk

    def save(self, path: str | Path) -> None:
        lines = ["[fleet]"]
        for name in ("kiosk", "group", "centre", "key", "authority", "authority_box"):
            lines.append(f"{name} = {toml_value(getattr(self, name))}")
        lines.append(f"interval_s = {self.interval_s}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")


@dataclass
class SyncResult:
    applied: int  # the revision applied after this pass
    put: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # revisions that failed verification (their identity removed)
    calibrated: list[str] = field(default_factory=list)  # bundle fingerprints whose site calibration changed
    pushed: int = 0  # audit rows pushed
    rollback: str | None = None  # the centre's flag: this store was replaced by an older copy


class KioskSync:
    """One kiosk's sync with the centre; its own connection to the local store."""

    def __init__(
        self,
        kiosk: KioskFile,
        store_path: str | Path,
        key_file: str | Path | None = None,
        key: bytes | None = None,
        create: bool = False,
    ):
        """``create``: a new kiosk's first sync makes its store (and key)."""
        self.kiosk = kiosk
        self.key = kiosk_key(kiosk.key)
        self.authority = bytes.fromhex(kiosk.authority)
        self.store = TemplateStore(store_path, key_file=key_file, key=key, create=create)
        self.conn = None
        self.last: SyncResult | None = None
        self.error: str | None = None  # the last failure (centre down...), None after a good pass
        self.wake = threading.Event()  # set by an MQTT hint: pull now
        self.revoked = False  # the centre said so: every template removed; the loop asks every interval_s

    def close(self) -> None:
        self._drop()
        self.store.close()

    def _connect(self):
        if self.conn is None or self.conn.closed:
            from edge_verify.fleet.centre import connect

            self.conn = connect(self.kiosk.centre, connect_timeout=3)
            self.conn.execute(f"LISTEN {CHANNEL}")
        return self.conn

    def _drop(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close; it is dropped anyway
                pass
            self.conn = None

    # -- one pass -------------------------------------------------------------------------------
    def sync_once(self) -> SyncResult:
        """Pull, verify, apply, report, push. FleetError when the centre cannot be reached."""
        psycopg = require("psycopg")
        try:
            conn = self._connect()
            result = self._pull(conn)
            revision, head_id, head_mac = self.store.chain_head()
            problem = "; ".join(result.refused) or None
            result.rollback = conn.execute(
                "SELECT fleet_report(%s, %s, %s, %s, %s)", (result.applied, revision, head_id, head_mac, problem)
            ).fetchone()[0]
            if result.rollback:
                log.error("the centre flags this kiosk's store: %s; audit rows are not pushed", result.rollback)
            else:
                result.pushed = self._push(conn)
        except psycopg.Error as exc:
            self._drop()
            self.error = f"fleet centre unreachable: {first_line(exc)}"
            self._if_revoked(str(exc))
            raise FleetError(self.error) from None
        except FleetError as exc:
            self._drop()
            self.error = str(exc)
            self._if_revoked(str(exc))
            raise
        self.error = None
        self.last = result
        return result

    def _if_revoked(self, message: str) -> None:
        """The centre says this kiosk was revoked (its login refused, or its report): fail closed, every
        template of the local store removed in one transaction; FleetError."""
        if not any(sign in message for sign in REVOKED_SIGNS):
            return
        identities = sorted({t.identity for t in self.store.list()})
        if identities or self.store.fleet_applied():
            # applied back to 0: added again under a new name, this store pulls every template again
            self.store.apply_fleet([], identities, 0, f"revoked by the centre: {len(identities)} removed")
        cause = " ".join(message.split())[:200]
        self.revoked = True
        self.error = f"this kiosk was revoked at the fleet centre: every template removed, it admits nobody ({cause})"
        raise FleetError(self.error) from None

    def _pull(self, conn) -> SyncResult:
        """Every revision after the one applied, in one snapshot of the centre (revisions commit in
        their numbers' order, so the snapshot holds all below its highest), streamed in batches."""
        applied = self.store.fleet_applied()
        result, puts = SyncResult(applied), []
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            calibrations = conn.execute(
                "SELECT revision, group_name, fingerprint, payload, signature FROM site_calibrations"
                " WHERE revision > %s",
                (applied,),
            ).fetchall()
            with conn.cursor(name="edge_verify_pull") as cursor:
                cursor.itersize = 500
                cursor.execute(
                    "SELECT DISTINCT ON (r.identity) r.revision, r.group_name, r.identity, r.fingerprint, r.op,"
                    " r.frames, r.digest, r.signature, b.box FROM template_revisions r LEFT JOIN template_boxes b"
                    " ON b.revision = r.revision AND b.kiosk = %s WHERE r.revision > %s"
                    " ORDER BY r.identity, r.revision DESC",
                    (self.kiosk.kiosk, applied),
                )
                for row in cursor:
                    self._take(row, result, puts, applied)
        settings = self._calibrations(calibrations, result, applied)
        result.applied = max([result.applied] + [c[0] for c in calibrations if c[0] > applied])
        if result.applied == applied:
            return result
        detail = f"revisions {applied + 1}..{result.applied}: {len(result.put)} put, {len(result.removed)} removed"
        if settings:
            detail += f", {len(settings)} calibration(s)"
        if result.refused:
            detail += f", {len(result.refused)} refused"
        self.store.apply_fleet(puts, result.removed, result.applied, detail, settings)
        return result

    def _take(self, row: tuple, result: SyncResult, puts: list, applied: int) -> None:
        """Verify one revision: a put opened into ``puts``, a removal noted; one that fails is refused."""
        revision, group, identity, fingerprint, op, frames, dig, signature, box = row
        if revision <= applied:
            # a centre that answers with an older (genuinely signed) revision is replaying it, e.g. the
            # "put" before a removal: never go back; what this kiosk has stays as it is
            result.refused.append(_stale("revision", revision, applied, identity))
            log.error("refused %s", result.refused[-1])
            return
        result.applied = max(result.applied, revision)
        try:
            check_identity_name(identity)
        except UsageError:
            result.refused.append(f"revision {revision}: invalid identity name {ascii(identity)}")
            return
        try:
            entry = Revision(revision, group, identity, fingerprint, op, frames, dig)
            verify(self.authority, entry, signature)
            if group != self.kiosk.group:
                raise BadRevision(f"revision {revision} ({identity!r}) is for group {group!r}")
            if op == "put":
                if box is None:
                    raise BadRevision(f"revision {revision} ({identity!r}) has no template sealed to this kiosk")
                puts.append((identity, open_template(self.key, entry, box), fingerprint, frames))
                result.put.append(identity)
            elif op == "remove":
                result.removed.append(identity)
            else:
                raise BadRevision(f"revision {revision} ({identity!r}): unknown operation {op!r}")
        except BadRevision as exc:
            # fail closed: a revision that does not verify leaves nobody admitted under that name
            log.error("refused %s; %r is removed here until a valid revision comes", exc, identity)
            result.refused.append(str(exc))
            result.removed.append(identity)

    def _calibrations(self, rows: list[tuple], result: SyncResult, applied: int) -> dict[str, dict | None]:
        """The verified site calibrations among ``rows`` (fingerprint -> record, None: reset); one that
        fails verification, or is not newer than ``applied``, is refused and the kiosk keeps the one it has."""
        settings = {}
        for revision, group, fingerprint, payload, signature in rows:
            try:
                if revision <= applied:
                    raise BadRevision(_stale("calibration revision", revision, applied, fingerprint[:12]))
                verify(self.authority, Calibration(revision, group, fingerprint, payload), signature)
                if group != self.kiosk.group:
                    raise BadRevision(f"calibration revision {revision} is for group {group!r}")
                record = json.loads(payload)
                if record is not None and not isinstance(record, dict):
                    raise BadRevision(f"calibration revision {revision} is not a calibration record")
            except (BadRevision, ValueError) as exc:
                log.error("refused %s; the current calibration stays", exc)
                result.refused.append(str(exc))
                continue
            settings[fingerprint] = record
            result.calibrated.append(fingerprint)
        return settings

    def _push(self, conn) -> int:
        """Push the audit rows the centre lacks (it keeps them once: the key is kiosk, table, row id)."""
        pushed = 0
        for table in COLUMNS:
            after = conn.execute(
                "SELECT coalesce(max(row_id), 0) FROM audit_rows WHERE kiosk = %s AND tbl = %s",
                (self.kiosk.kiosk, table),
            ).fetchone()[0]
            columns = COLUMNS[table]
            ts_at = columns.index("ts")
            while rows := self.store.export_audit(table, after, PUSH_BATCH):
                values = [
                    (self.kiosk.kiosk, table, v[0], v[ts_at], json.dumps(dict(zip(columns, v, strict=True))), mac)
                    for v, mac in rows
                ]
                with conn.transaction(), conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO audit_rows (kiosk, tbl, row_id, ts, row, mac) VALUES (%s, %s, %s, %s, %s, %s)"
                        " ON CONFLICT DO NOTHING",
                        values,
                    )
                pushed += len(rows)
                after = rows[-1][0][0]
        return pushed

    # -- enrolment requests ---------------------------------------------------------------------
    def request_enrolment(self, identity: str, vector: np.ndarray, fingerprint: str, frames: int) -> int:
        """Send a template to the centre's authority (sealed to it), which signs and distributes it to
        the group; returns the request's id."""
        box = seal(
            bytes.fromhex(self.kiosk.authority_box),
            np.asarray(vector, np.float32).tobytes(),
            request_aad(self.kiosk.kiosk, identity, fingerprint),
        )
        psycopg = require("psycopg")
        try:
            conn = self._connect()
            with conn.transaction():
                request = conn.execute("SELECT nextval('enrol_requests_id_seq')").fetchone()[0]
                conn.execute(
                    "INSERT INTO enrol_requests (id, kiosk, identity, fingerprint, frames, box)"
                    " VALUES (%s, %s, %s, %s, %s, %s)",
                    (request, self.kiosk.kiosk, identity, fingerprint, frames, box),
                )
                conn.execute("SELECT pg_notify(%s, %s)", (REQUESTS_CHANNEL, self.kiosk.kiosk))
        except psycopg.errors.InsufficientPrivilege:
            raise FleetError(
                f"the centre refused: kiosk {self.kiosk.kiosk!r} may not enrol (add it with --may-enrol)"
            ) from None
        except psycopg.Error as exc:
            self._drop()
            raise FleetError(f"fleet centre unreachable: {first_line(exc)}") from None
        return int(request)

    # -- the loop -------------------------------------------------------------------------------
    def run(self, stop: threading.Event, retry_s: float = 1.0) -> None:
        """Sync until ``stop``: after each pass, wait for a notification (or an MQTT hint, or
        ``interval_s``); the centre unreachable, try again every ``retry_s`` (up to ``interval_s``)."""
        # any role may NOTIFY, any broker user may hint: a flood must not turn into a pass per message,
        # so passes are spent from a bucket (PASS_BURST at once, refilled at PASS_RATE per second)
        tokens, stamp = float(PASS_BURST), time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            tokens, stamp = min(float(PASS_BURST), tokens + (now - stamp) * PASS_RATE), now
            if tokens < 1.0:
                stop.wait((1.0 - tokens) / PASS_RATE)
                continue
            tokens -= 1.0
            try:
                self.sync_once()
            except EdgeVerifyError as exc:
                log.warning("%s; deciding from the local store, retrying", exc)
                stop.wait(self.kiosk.interval_s if self.revoked else min(retry_s, self.kiosk.interval_s))
                continue
            self._wait(stop)

    def _wait(self, stop: threading.Event) -> None:
        """Until a notification, an MQTT hint, ``stop`` or ``interval_s``, in short slices."""
        deadline = self.kiosk.interval_s
        waited = 0.0
        while waited < deadline and not stop.is_set() and not self.wake.is_set():
            try:
                if any(True for _ in self.conn.notifies(timeout=0.2, stop_after=1)):
                    return
            except Exception:  # noqa: BLE001 - the centre went away: the next pass says so
                self._drop()
                return
            waited += 0.2
        self.wake.clear()


def _stale(what: str, revision: int, applied: int, name: str) -> str:
    return f"{what} {revision} ({name!r}) replayed by the centre: this kiosk already applied revision {applied}"
