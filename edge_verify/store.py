"""Template store: one SQLite file (WAL, transactions), AES-256-GCM templates, audit log."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import sqlite3
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

KEY_ENV = "EDGE_VERIFY_KEY"
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
    liveness TEXT
);
CREATE TABLE IF NOT EXISTS audit_actions (
    audit_id INTEGER NOT NULL REFERENCES audit(id),
    ts REAL NOT NULL,
    action TEXT NOT NULL,
    ok INTEGER NOT NULL,
    detail TEXT
);
"""


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


def _parse_key(text: str, origin: str) -> bytes:
    text = text.strip()
    try:
        key = bytes.fromhex(text) if len(text) == 64 else base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        key = b""
    if len(key) != 32:
        raise StoreError(f"{origin}: key must be 32 bytes as 64 hex digits or base64")
    return key


def load_or_create_key(key_file: Path) -> bytes:
    """Key from $EDGE_VERIFY_KEY, else from ``key_file`` (created 0600 with a random key if absent)."""
    if os.environ.get(KEY_ENV):
        return _parse_key(os.environ[KEY_ENV], f"${KEY_ENV}")
    if key_file.exists():
        return _parse_key(key_file.read_text(), str(key_file))
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key = AESGCM.generate_key(bit_length=256)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
    return key


class TemplateStore:
    """Encrypted templates keyed by identity; every template is bound to a bundle fingerprint."""

    def __init__(self, path: str | Path | None = None, key_file: str | Path | None = None, key: bytes | None = None):
        self.path = Path(path) if path else default_store_path()
        self.key_file = Path(key_file) if key_file else self.path.with_name(self.path.name + ".key")
        new_store = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        key = key if key is not None else load_or_create_key(self.key_file)
        self._aead = AESGCM(key)
        self._mac_key = HKDF(hashes.SHA256(), 32, salt=None, info=b"edge-verify settings").derive(key)
        try:
            # One connection, usable from the thread that runs the kiosk loop; writes are serialised.
            self._db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
            self._lock = threading.RLock()
            self._db.execute("PRAGMA busy_timeout = 10000")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            with self._transaction():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                columns = {r[1] for r in self._db.execute("PRAGMA table_info(templates)")}
                if "format" not in columns:  # a store made by edge-verify 0.1
                    self._db.execute("ALTER TABLE templates ADD COLUMN format INTEGER NOT NULL DEFAULT 1")
                if "liveness" not in {r[1] for r in self._db.execute("PRAGMA table_info(audit)")}:
                    self._db.execute("ALTER TABLE audit ADD COLUMN liveness TEXT")
            self._check_key(new_store)
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"{self.path}: not a valid edge-verify store ({exc}); restore a backup or use another --store"
            ) from None

    # -- plumbing -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self):
        """One write transaction; rolled back if the block raises."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

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
    def put(self, identity: str, embedding: np.ndarray, fingerprint: str, frames: int) -> None:
        """Store (or replace) the template of ``identity`` in one transaction."""
        if not identity or len(identity) > 128 or "\0" in identity:
            raise UsageError(f"invalid identity name {identity!r}")
        vector = np.asarray(embedding, np.float32).reshape(-1)
        nonce = os.urandom(12)
        ciphertext = self._aead.encrypt(nonce, vector.tobytes(), self._aad(identity, fingerprint))
        now = time.time()
        with self._transaction():
            row = self._db.execute("SELECT created FROM templates WHERE identity = ?", (identity,)).fetchone()
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
                f"re-enroll with `edge-verify enroll {identity}`"
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
        return [TemplateInfo(*r) for r in rows]

    def remove(self, identity: str) -> None:
        with self._transaction():
            cur = self._db.execute("DELETE FROM templates WHERE identity = ?", (identity,))
        if cur.rowcount == 0:
            raise UnknownIdentityError(f"{identity!r} is not enrolled (see `edge-verify list`)")

    # -- authenticated settings -------------------------------------------------------------------
    def _mac(self, name: str, payload: str) -> str:
        return hmac.new(self._mac_key, name.encode() + b"\0" + payload.encode(), hashlib.sha256).hexdigest()

    def _put_setting(self, name: str, data: dict) -> None:
        payload = json.dumps(data, sort_keys=True)
        sealed = json.dumps({"data": payload, "mac": self._mac(name, payload)})
        with self._transaction():
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
    ) -> int:
        """Write one audit row (committed when this returns) and return its id."""
        with self._transaction():
            cur = self._db.execute(
                "INSERT INTO audit (ts, command, claimed, matched, score, threshold, accepted, fingerprint, source,"
                " liveness) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    time.time(),
                    command,
                    claimed,
                    matched,
                    score,
                    threshold,
                    int(accepted),
                    fingerprint,
                    source,
                    liveness,
                ),
            )
        return int(cur.lastrowid)

    def record_action(self, audit_id: int, action: str, ok: bool, detail: str = "") -> None:
        """Record what an action (relay, webhook, command) did for the decision ``audit_id``."""
        with self._transaction():
            self._db.execute(
                "INSERT INTO audit_actions (audit_id, ts, action, ok, detail) VALUES (?, ?, ?, ?, ?)",
                (audit_id, time.time(), action, int(ok), detail[:500]),
            )

    def audit_actions(self, audit_id: int) -> list[tuple[str, bool, str]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT action, ok, detail FROM audit_actions WHERE audit_id = ? ORDER BY rowid", (audit_id,)
            ).fetchall()
        return [(r[0], bool(r[1]), r[2]) for r in rows]

    def record(
        self,
        command: str,
        fingerprint: str,
        decision: Decision,
        claimed: str | None = None,
        source: str | None = None,
        liveness: str | None = None,
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
        )

    def audit_log(self, limit: int = 100) -> list[AuditEntry]:
        rows = self._db.execute(
            "SELECT ts, command, claimed, matched, score, threshold, accepted, source, liveness"
            " FROM audit ORDER BY id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [AuditEntry(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7], r[8]) for r in rows]

    def integrity_check(self) -> list[str]:
        """SQLite's own check plus authentication of every template; returns the problems found."""
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
        return problems
