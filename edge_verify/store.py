"""Template store: one SQLite file (WAL, transactions), AES-256-GCM templates, audit log."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import os
import sqlite3
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edge_verify.errors import (
    BundleError,
    FingerprintMismatchError,
    StoreError,
    TemplateIntegrityError,
    UnknownIdentityError,
    UsageError,
)
from edge_verify.matcher import Decision

log = logging.getLogger(__name__)
KEY_ENV = "EDGE_VERIFY_KEY"
MAX_NAME_LENGTH = 128
BUSY_TIMEOUT_S = 10.0
SCHEMA_VERSION = 2
# Template format 2: the unnormalised mean of unit enrolment embeddings (matcher.mean_template).
# Format 1 (edge-verify 0.1) renormalised the mean, which scores higher; such templates made from
# several frames must be re-enrolled. From one frame both formats are the same vector.
TEMPLATE_FORMAT = 2
_KEY_CHECK = (b"edge-verify key check", b"key-check")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS templates (
    identity TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    frames INTEGER NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    command TEXT NOT NULL,
    claimed TEXT,
    matched TEXT,
    score REAL,
    threshold REAL,
    accepted INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    source TEXT,
    liveness TEXT,
    detail TEXT,
    mac TEXT
);
CREATE TABLE IF NOT EXISTS audit_actions (
    audit_id INTEGER NOT NULL REFERENCES audit(id),
    ts REAL NOT NULL,
    action TEXT NOT NULL,
    ok INTEGER NOT NULL,
    detail TEXT,
    mac TEXT
);
"""
# Columns of each audit table in the order they are authenticated (see TemplateStore._chain).
_AUDIT_COLUMNS = {
    "audit": (
        "id",
        "ts",
        "command",
        "claimed",
        "matched",
        "score",
        "threshold",
        "accepted",
        "fingerprint",
        "source",
        "liveness",
        "detail",
    ),
    "audit_actions": ("rowid", "audit_id", "ts", "action", "ok", "detail"),
}


def default_store_path() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("edge-verify")) / "store.db"


@dataclass(frozen=True)
class TemplateInfo:
    identity: str
    fingerprint: str
    frames: int
    created: float
    updated: float
    bundle: str = ""  # name and version of the bundle that made it, as pinned; "" if unknown


@dataclass(frozen=True)
class AuditEntry:
    ts: float
    command: str
    claimed: str | None
    matched: str | None
    score: float | None
    threshold: float | None
    accepted: bool
    source: str | None
    liveness: str | None = None  # the liveness check's outcome, when one ran
    detail: str | None = None  # why a check failed before a decision (no face, quality, ...)
    id: int = 0


def check_identity_name(name: str) -> str:
    """An identity name: 1..128 printable characters, no control or bidi-override characters, no
    surrounding spaces (a name must not be able to forge a line of output). UsageError otherwise."""
    if (
        not isinstance(name, str)
        or not name
        or len(name) > MAX_NAME_LENGTH
        or not name.isprintable()
        or name != name.strip()
    ):
        raise UsageError(
            f"invalid identity name {ascii(name)}: use 1-{MAX_NAME_LENGTH} printable characters, "
            "no control characters and no leading or trailing spaces"
        )
    return name


def _parse_key(text: str, origin: str) -> bytes:
    text = text.strip()
    try:
        key = bytes.fromhex(text) if len(text) == 64 else base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        key = b""
    if len(key) != 32:
        raise StoreError(f"{origin}: key must be 32 bytes as 64 hex digits or base64")
    return key


def load_key(key_file: Path, store_path: Path, create: bool) -> bytes:
    """The store key: from $EDGE_VERIFY_KEY, else from ``key_file``. With ``create`` (a new store)
    a missing key file is created (0600, atomically); otherwise it is an error that names the fix,
    never a fresh key beside a store made with another one."""
    env = os.environ.get(KEY_ENV)
    if env is not None:
        if not env.strip():
            raise StoreError(f"${KEY_ENV} is set but empty: set it to the store key, or unset it to use {key_file}")
        return _parse_key(env, f"${KEY_ENV}")
    try:
        fd = os.open(key_file, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        if create:
            return _create_key(key_file)
        raise StoreError(
            f"{key_file}: key file missing; the store {store_path} needs the key it was made with: restore the "
            f"key file from your backup (or set ${KEY_ENV}); to start afresh, move the store away"
        ) from None
    except OSError as exc:
        raise StoreError(f"{key_file}: cannot read the key file ({exc.strerror})") from None
    with os.fdopen(fd) as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise StoreError(f"{key_file}: not a regular file")
        text = f.read(4096)
    if info.st_mode & 0o077:
        log.warning(
            "%s: key file is readable by other users (mode %03o); run: chmod 600 %s",
            key_file,
            info.st_mode & 0o777,
            key_file,
        )
    return _parse_key(text, str(key_file))


def _create_key(key_file: Path) -> bytes:
    """Write a new random key: a complete 0600 file appears under ``key_file`` at once (link of a
    temporary file), and a process that loses the race reads the winner's key."""
    key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = AESGCM.generate_key(bit_length=256)
    tmp = key_file.with_name(f".{key_file.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(key.hex() + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, key_file)
        except FileExistsError:
            return _parse_key(key_file.read_text(), str(key_file))
    finally:
        tmp.unlink(missing_ok=True)
    return key


class TemplateStore:
    """Encrypted templates keyed by identity; every template is bound to a bundle fingerprint."""

    def __init__(
        self,
        path: str | Path | None = None,
        key_file: str | Path | None = None,
        key: bytes | None = None,
        create: bool = True,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
    ):
        """Open the store at ``path``; with ``create`` a missing store (and its key) is made, 0600.
        Commands that only read pass ``create=False``: a mistyped path is then an error."""
        self.path = Path(path) if path else default_store_path()
        self.key_file = Path(key_file) if key_file else self.path.with_name(self.path.name + ".key")
        new_store = not self.path.exists() or self.path.stat().st_size == 0
        if not new_store and _read_header(self.path) != b"SQLite format 3\x00":
            raise StoreError(f"{self.path}: not a valid edge-verify store (not an SQLite file); use another --store")
        if new_store and not create:
            raise StoreError(
                f"{self.path}: no store here (nothing enrolled yet; `edge-verify enroll NAME --source ...` makes it)"
            )
        key = key if key is not None else load_key(self.key_file, self.path, create=new_store)
        self._aead = AESGCM(key)
        self._mac_key = HKDF(hashes.SHA256(), 32, salt=None, info=b"edge-verify settings").derive(key)
        self._audit_key = HKDF(hashes.SHA256(), 32, salt=None, info=b"edge-verify audit chain").derive(key)
        self.busy_timeout_s = busy_timeout_s
        _private_file(self.path)
        try:
            # One connection, usable from the thread that runs the kiosk loop; writes are serialised.
            self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
            self._lock = threading.RLock()
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            with self._transaction():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                columns = {r[1] for r in self._db.execute("PRAGMA table_info(templates)")}
                if "format" not in columns:  # a store made by edge-verify 0.1
                    self._db.execute("ALTER TABLE templates ADD COLUMN format INTEGER NOT NULL DEFAULT 1")
                for table, column in (
                    ("audit", "liveness"),
                    ("audit", "detail"),
                    ("audit", "mac"),
                    ("audit_actions", "mac"),
                ):
                    if column not in {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}:
                        self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT")
            self._check_key(new_store)
            with self._transaction():
                self._seal_unchained_rows()
        except sqlite3.DatabaseError as exc:
            if _is_busy(exc):
                raise self._busy_error() from None
            raise StoreError(
                f"{self.path}: not a valid edge-verify store ({exc}); restore a backup or use another --store"
            ) from None
        for suffix in ("-wal", "-shm"):
            _private_file(self.path.with_name(self.path.name + suffix), create=False)

    # -- plumbing -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self):
        """One write transaction; rolled back if the block raises. A write lock held by another
        process longer than ``busy_timeout_s`` is a StoreError (one line), not a crash."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if _is_busy(exc):
                    raise self._busy_error() from None
                raise
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                self._db.execute("ROLLBACK")
                if _is_busy(exc):
                    raise self._busy_error() from None
                raise

    def _busy_error(self) -> StoreError:
        return StoreError(
            f"{self.path}: the store is busy (another process held its write lock for more than "
            f"{self.busy_timeout_s:g}s); nothing was written, try again"
        )

    def _check_key(self, new_store: bool) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'key_check'").fetchone()
        if row is None:
            if not new_store and self._db.execute("SELECT COUNT(*) FROM templates").fetchone()[0]:
                raise StoreError(f"{self.path}: store has no key check record (corrupt)")
            nonce = os.urandom(12)
            blob = nonce + self._aead.encrypt(nonce, _KEY_CHECK[0], _KEY_CHECK[1])
            with self._transaction():
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('key_check', ?)", (blob.hex(),))
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
                for table in _AUDIT_COLUMNS:
                    self._put_setting(f"audit_head:{table}", {"id": 0, "mac": ""}, in_transaction=True)
                self._put_setting("audit_chain", {"since": time.time()}, in_transaction=True)
            return
        blob = bytes.fromhex(row[0])
        try:
            self._aead.decrypt(blob[:12], blob[12:], _KEY_CHECK[1])
        except InvalidTag:
            origin = "$" + KEY_ENV if os.environ.get(KEY_ENV) else self.key_file
            raise TemplateIntegrityError(f"{self.path}: wrong key (from {origin}) for this store") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> TemplateStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def _aad(identity: str, fingerprint: str) -> bytes:
        return identity.encode() + b"\0" + fingerprint.encode()

    # -- templates ------------------------------------------------------------------------------
    def put(self, identity: str, embedding: np.ndarray, fingerprint: str, frames: int, replace: bool = False) -> None:
        """Store the template of ``identity`` in one transaction; an existing one is replaced only
        with ``replace`` (checked inside the transaction, so two enrolments cannot race)."""
        check_identity_name(identity)
        vector = np.asarray(embedding, np.float32).reshape(-1)
        nonce = os.urandom(12)
        ciphertext = self._aead.encrypt(nonce, vector.tobytes(), self._aad(identity, fingerprint))
        now = time.time()
        with self._transaction():
            row = self._db.execute("SELECT created FROM templates WHERE identity = ?", (identity,)).fetchone()
            if row is not None and not replace:
                raise UsageError(f"{identity!r} is already enrolled; add --replace to overwrite the template")
            self._db.execute(
                "INSERT OR REPLACE INTO templates"
                " (identity, fingerprint, nonce, ciphertext, frames, created, updated, format)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (identity, fingerprint, nonce, ciphertext, int(frames), row[0] if row else now, now, TEMPLATE_FORMAT),
            )

    def get(self, identity: str, fingerprint: str) -> np.ndarray:
        """Decrypt and authenticate the template of ``identity`` made by bundle ``fingerprint``."""
        row = self._db.execute(
            "SELECT fingerprint, nonce, ciphertext, frames, format FROM templates WHERE identity = ?", (identity,)
        ).fetchone()
        if row is None:
            raise UnknownIdentityError(f"{identity!r} is not enrolled (see `edge-verify list`)")
        return self._decrypt(identity, fingerprint, *row)

    def _decrypt(
        self,
        identity: str,
        fingerprint: str,
        stored_fp: str,
        nonce: bytes,
        ciphertext: bytes,
        frames: int = 1,
        fmt: int = TEMPLATE_FORMAT,
    ) -> np.ndarray:
        try:
            plain = self._aead.decrypt(nonce, ciphertext, self._aad(identity, stored_fp))
        except InvalidTag:
            raise TemplateIntegrityError(
                f"template of {identity!r} failed authentication (tampered or corrupted); "
                f"`edge-verify remove {identity}` and enroll again"
            ) from None
        if stored_fp != fingerprint:
            raise FingerprintMismatchError(
                f"{identity!r} was enrolled with another model (fingerprint {stored_fp[:12]}); "
                f"re-enroll with `edge-verify enroll {identity} --replace`"
            )
        if fmt < TEMPLATE_FORMAT and frames > 1:
            raise FingerprintMismatchError(
                f"{identity!r} was enrolled by an older edge-verify (template format {fmt}); "
                f"re-enroll with `edge-verify enroll {identity} --replace`"
            )
        return np.frombuffer(plain, np.float32).copy()

    def all_templates(self, fingerprint: str) -> dict[str, np.ndarray]:
        """Every template of this bundle (for 1:N); templates of other bundles are skipped."""
        rows = self._db.execute(
            "SELECT identity, fingerprint, nonce, ciphertext, frames, format FROM templates"
            " WHERE fingerprint = ? ORDER BY identity",
            (fingerprint,),
        ).fetchall()
        return {r[0]: self._decrypt(r[0], fingerprint, *r[1:]) for r in rows}

    def data_version(self) -> int:
        """Changes whenever another connection commits (enrol, remove, calibrate): cheap to poll."""
        with self._lock:
            return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def list(self) -> list[TemplateInfo]:
        rows = self._db.execute(
            "SELECT identity, fingerprint, frames, created, updated FROM templates ORDER BY identity"
        ).fetchall()
        bundles = self.bundle_names()
        return [TemplateInfo(*r, bundle=bundles.get(r[1], "")) for r in rows]

    def bundle_names(self) -> dict[str, str]:
        """'name version' of every bundle pinned in this store, by fingerprint."""
        with self._lock:
            keys = [r[0] for r in self._db.execute("SELECT key FROM meta WHERE key LIKE 'pin:%'").fetchall()]
        pins = {key[4:]: self._get_setting(key) for key in keys}
        return {fp: f"{pin['bundle']} {pin['version']}" for fp, pin in pins.items() if pin}

    def remove(self, identity: str) -> None:
        with self._transaction():
            cur = self._db.execute("DELETE FROM templates WHERE identity = ?", (identity,))
        if cur.rowcount == 0:
            raise UnknownIdentityError(f"{identity!r} is not enrolled (see `edge-verify list`)")

    # -- authenticated settings -------------------------------------------------------------------
    def _mac(self, name: str, payload: str) -> str:
        return hmac.new(self._mac_key, name.encode() + b"\0" + payload.encode(), hashlib.sha256).hexdigest()

    def _put_setting(self, name: str, data: dict, in_transaction: bool = False) -> None:
        payload = json.dumps(data, sort_keys=True)
        sealed = json.dumps({"data": payload, "mac": self._mac(name, payload)})
        with contextlib.nullcontext() if in_transaction else self._transaction():
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, sealed))

    def _get_setting(self, name: str) -> dict | None:
        """A setting written by this store's key, or None; edited outside edge-verify: refused."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (name,)).fetchone()
        if row is None:
            return None
        try:
            sealed = json.loads(row[0])
            payload, mac = sealed["data"], sealed["mac"]
            if hmac.compare_digest(self._mac(name, payload), str(mac)):
                return json.loads(payload)
        except (ValueError, TypeError, KeyError):
            pass
        raise TemplateIntegrityError(
            f"{self.path}: setting {name.split(':')[0]!r} was changed outside edge-verify (authentication failed); "
            "refusing to decide: `edge-verify calibrate --reset` and calibrate again"
        )

    def _delete_setting(self, name: str) -> bool:
        with self._transaction():
            return self._db.execute("DELETE FROM meta WHERE key = ?", (name,)).rowcount > 0

    def set_threshold(self, fingerprint: str, record: dict) -> None:
        """Store a site calibration for bundle ``fingerprint`` (authenticated with the store key)."""
        self._put_setting(f"threshold:{fingerprint}", record)

    def threshold(self, fingerprint: str) -> dict | None:
        return self._get_setting(f"threshold:{fingerprint}")

    def reset_threshold(self, fingerprint: str) -> bool:
        return self._delete_setting(f"threshold:{fingerprint}")

    def pin_bundle(self, bundle, repin: bool = False) -> None:
        """Pin the bundle's decision fields (thresholds, 1:N rules) on first use; later a bundle
        with the same model but other decision fields (bundle.json edited) is refused."""
        name = f"pin:{bundle.fingerprint}"
        digest = bundle.decision_digest()
        pinned = self._get_setting(name)
        if pinned is None or repin:
            self._put_setting(name, {"decision_digest": digest, "bundle": bundle.name, "version": bundle.version})
        elif pinned["decision_digest"] != digest:
            raise BundleError(
                f"{bundle.path / 'bundle.json'}: its thresholds differ from those pinned in {self.path} "
                f"(bundle.json edited?); if you upgraded the bundle on purpose, run `edge-verify doctor --repin`"
            )

    def audit(
        self,
        command: str,
        fingerprint: str,
        accepted: bool,
        claimed: str | None = None,
        matched: str | None = None,
        score: float | None = None,
        threshold: float | None = None,
        source: str | None = None,
        liveness: str | None = None,
        detail: str | None = None,
    ) -> int:
        """Write one audit row, chained to the previous one (committed when this returns); its id."""
        with self._transaction():
            cur = self._db.execute(
                "INSERT INTO audit (ts, command, claimed, matched, score, threshold, accepted, fingerprint, source,"
                " liveness, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    time.time(),
                    command,
                    claimed,
                    matched,
                    None if score is None else float(score),
                    None if threshold is None else float(threshold),
                    int(accepted),
                    fingerprint,
                    source,
                    liveness,
                    None if detail is None else detail[:500],
                ),
            )
            self._chain("audit", int(cur.lastrowid))
        return int(cur.lastrowid)

    def record_action(self, audit_id: int, action: str, ok: bool, detail: str = "") -> None:
        """Record what an action (relay, webhook, command) did for the decision ``audit_id``."""
        with self._transaction():
            cur = self._db.execute(
                "INSERT INTO audit_actions (audit_id, ts, action, ok, detail) VALUES (?, ?, ?, ?, ?)",
                (audit_id, time.time(), action, int(ok), detail[:500]),
            )
            self._chain("audit_actions", int(cur.lastrowid))

    def audit_actions(self, audit_id: int) -> list[tuple[str, bool, str]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT action, ok, detail FROM audit_actions WHERE audit_id = ? ORDER BY rowid", (audit_id,)
            ).fetchall()
        return [(r[0], bool(r[1]), r[2]) for r in rows]

    # -- the audit chain: each row's MAC covers its values and the previous row's MAC ---------------
    def _row_mac(self, table: str, values: tuple, previous: str) -> str:
        payload = json.dumps([table, previous, *values], separators=(",", ":"))
        return hmac.new(self._audit_key, payload.encode(), hashlib.sha256).hexdigest()

    def _head(self, table: str) -> tuple[int, str]:
        head = self._get_setting(f"audit_head:{table}")
        return (int(head["id"]), str(head["mac"])) if head else (0, "")

    def _chain(self, table: str, row_id: int) -> None:
        """Seal row ``row_id`` (just inserted, in the open transaction) and move the head to it."""
        key = "rowid" if table == "audit_actions" else "id"
        values = self._db.execute(
            f"SELECT {', '.join(_AUDIT_COLUMNS[table])} FROM {table} WHERE {key} = ?", (row_id,)
        ).fetchone()
        _, previous = self._head(table)
        mac = self._row_mac(table, values, previous)
        self._db.execute(f"UPDATE {table} SET mac = ? WHERE {key} = ?", (mac, row_id))
        self._put_setting(f"audit_head:{table}", {"id": row_id, "mac": mac}, in_transaction=True)

    def _seal_unchained_rows(self) -> None:
        """A store from before the chain has its rows sealed once, in order, when first opened.
        After that an unsealed row is one written outside edge-verify, and verify_audit says so."""
        if self._get_setting("audit_chain") is not None:
            return
        for table in _AUDIT_COLUMNS:
            key = "rowid" if table == "audit_actions" else "id"
            for (row_id,) in self._db.execute(f"SELECT {key} FROM {table} ORDER BY {key}").fetchall():
                self._chain(table, row_id)
        self._put_setting("audit_chain", {"since": time.time()}, in_transaction=True)

    def verify_audit(self) -> list[str]:
        """Walk both audit chains; return each row edited, inserted or deleted outside edge-verify
        (empty: intact). A store copied back whole from an earlier day is not detected here."""
        problems = []
        try:
            if self._get_setting("audit_chain") is None:
                problems.append("the audit chain's start record was deleted")
        except TemplateIntegrityError:
            problems.append("the audit chain's start record was changed outside edge-verify")
        for table in _AUDIT_COLUMNS:
            key = "rowid" if table == "audit_actions" else "id"
            try:
                head = self._get_setting(f"audit_head:{table}")
            except TemplateIntegrityError:
                problems.append(f"{table}: the chain's head record was changed outside edge-verify")
                continue
            with self._lock:
                rows = self._db.execute(
                    f"SELECT {', '.join(_AUDIT_COLUMNS[table])}, mac FROM {table} ORDER BY {key}"
                ).fetchall()
            previous, last_id = "", 0
            for *values, mac in rows:
                row_id = values[0]
                if row_id != last_id + 1:
                    gap = f"{last_id + 1}" if row_id == last_id + 2 else f"{last_id + 1}-{row_id - 1}"
                    problems.append(f"{table}: row(s) {gap} were deleted")
                elif mac is None or not hmac.compare_digest(self._row_mac(table, tuple(values), previous), str(mac)):
                    problems.append(f"{table}: row {row_id} was edited or inserted outside edge-verify")
                previous, last_id = str(mac), row_id
            if head is None:
                if rows:
                    problems.append(f"{table}: the chain's head record was deleted")
                continue
            if int(head["id"]) > last_id:
                problems.append(f"{table}: row(s) {last_id + 1}-{head['id']} at the end were deleted")
            elif int(head["id"]) < last_id:
                problems.append(f"{table}: row(s) after {head['id']} were added outside edge-verify")
            elif rows and not hmac.compare_digest(str(head["mac"]), previous):
                problems.append(f"{table}: row {last_id} was replaced outside edge-verify")
        return problems

    def record(
        self,
        command: str,
        fingerprint: str,
        decision: Decision,
        claimed: str | None = None,
        source: str | None = None,
        liveness: str | None = None,
        detail: str | None = None,
    ) -> int:
        """Audit one decision; returns the audit row id."""
        return self.audit(
            command,
            fingerprint,
            decision.accepted,
            claimed=claimed,
            matched=decision.identity,
            score=decision.score,
            threshold=decision.threshold,
            source=source,
            liveness=liveness,
            detail=detail,
        )

    def audit_log(
        self,
        limit: int = 100,
        since: float | None = None,
        until: float | None = None,
        command: str | None = None,
    ) -> list[AuditEntry]:
        """The newest ``limit`` entries (newest first) among those matching the filters."""
        where, params = [], []
        for clause, value in (("ts >= ?", since), ("ts < ?", until), ("command = ?", command)):
            if value is not None:
                where.append(clause)
                params.append(value)
        with self._lock:
            rows = self._db.execute(
                "SELECT ts, command, claimed, matched, score, threshold, accepted, source, liveness, detail, id"
                f" FROM audit {'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY id DESC LIMIT ?",
                (*params, limit),
            ).fetchall()
        return [AuditEntry(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), *r[7:]) for r in rows]

    def integrity_check(self) -> list[str]:
        """SQLite's own check, authentication of every template and setting, and the audit chain;
        returns the problems found."""
        problems = [r[0] for r in self._db.execute("PRAGMA integrity_check").fetchall() if r[0] != "ok"]
        for identity, fp, nonce, ct in self._db.execute(
            "SELECT identity, fingerprint, nonce, ciphertext FROM templates"
        ).fetchall():
            try:
                self._decrypt(identity, fp, fp, nonce, ct)
            except TemplateIntegrityError as exc:
                problems.append(str(exc))
        settings = self._db.execute("SELECT key FROM meta WHERE key LIKE 'threshold:%' OR key LIKE 'pin:%'").fetchall()
        for (name,) in settings:
            try:
                self._get_setting(name)
            except TemplateIntegrityError as exc:
                problems.append(str(exc))
        return problems + [f"audit: {p}" for p in self.verify_audit()]


def _is_busy(exc: sqlite3.Error) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def _private_file(path: Path, create: bool = True) -> None:
    """Make ``path`` (the store, its WAL and shared-memory files) readable by its owner only;
    SQLite gives the WAL files the database file's mode."""
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass
    try:
        if path.exists() and path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
    except OSError as exc:  # not our file: tell, do not fail
        log.warning("%s: cannot make it private (%s)", path, exc.strerror)


def _read_header(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(16)
    except OSError as exc:
        raise StoreError(f"{path}: cannot read the store ({exc.strerror})") from None
