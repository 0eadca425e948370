"""TemplateStore: the one object commands and the API use; it composes the store's layers (db, keys,
records, audit, templates, state) and adds nothing but the order in which they are called."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edge_verify.errors import (
    BundleError,
    InvalidTemplateError,
    StoreError,
    TemplateIntegrityError,
    UnknownIdentityError,
    UsageError,
)
from edge_verify.matcher import Decision
from edge_verify.store.audit import AuditEntry, AuditLog
from edge_verify.store.db import (
    BUSY_TIMEOUT_S,
    SCHEMA_VERSION,
    Database,
    busy_error,
    is_busy,
    private_file,
    read_header,
)
from edge_verify.store.keys import Keys, load_key, wrong_key
from edge_verify.store.records import Records
from edge_verify.store.state import State
from edge_verify.store.templates import TemplateInfo, Templates, check_identity_name, template_vector

log = logging.getLogger(__name__)
FLEET_RECORD = "fleet"  # the fleet revision applied (edge_verify/fleet/sync.py)


def default_store_path() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("edge-verify")) / "store.db"


class TemplateStore:
    """Encrypted templates keyed by identity; every template is bound to a bundle fingerprint."""

    def __init__(
        self,
        path: str | Path | None = None,
        key_file: str | Path | None = None,
        key: bytes | None = None,
        create: bool = True,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
        check_state: bool = True,
    ):
        """Open the store at ``path``; with ``create`` a missing store (and its key) is made, 0600.
        Commands that only read pass ``create=False``: a mistyped path is then an error. A store that
        differs from its authenticated state (a row put back, deleted or rolled back, a pin or
        calibration stripped) is refused: TemplateIntegrityError naming what is wrong; ``check_state=False``
        (doctor, audit --verify) opens it anyway, to list the problems."""
        self.path = Path(path) if path else default_store_path()
        self.key_file = Path(key_file) if key_file else self.path.with_name(self.path.name + ".key")
        if self.path.exists() and not stat.S_ISREG(self.path.stat().st_mode):
            raise StoreError(f"{self.path}: not a regular file (a FIFO, device or folder); use another --store")
        new_store = not self.path.exists() or self.path.stat().st_size == 0
        if not new_store and read_header(self.path) != b"SQLite format 3\x00":
            raise StoreError(f"{self.path}: not a valid edge-verify store (not an SQLite file); use another --store")
        if new_store and not create:
            raise StoreError(
                f"{self.path}: no store here (nothing enrolled yet; `edge-verify enroll NAME --source ...` makes it)"
            )
        keys = Keys(key if key is not None else load_key(self.key_file, self.path, create=new_store))
        self.busy_timeout_s = busy_timeout_s
        private_file(self.path)
        try:
            self._db = Database(self.path, busy_timeout_s)
            self._lock = self._db.lock
            self._records = Records(self._db, keys.settings)
            self._audit = AuditLog(self._db, self._records, keys.audit)
            self._templates = Templates(self._db, keys.aead)
            self._state = State(self._db, self._records, self._templates, self._audit)
            self._open(keys, new_store)
            problems = self._state.verify() if check_state else []
        except sqlite3.DatabaseError as exc:
            if is_busy(exc):
                raise busy_error(self.path, busy_timeout_s) from None
            raise StoreError(
                f"{self.path}: not a valid edge-verify store ({exc}); restore a backup or use another --store"
            ) from None
        for suffix in ("-wal", "-shm"):
            private_file(self.path.with_name(self.path.name + suffix), create=False)
        if problems:
            self._db.close()
            raise TemplateIntegrityError(
                f"{self.path}: changed outside edge-verify: {'; '.join(problems)}; refusing to use it: restore the "
                "store from a backup (`edge-verify doctor` lists every problem)"
            )

    def _open(self, keys: Keys, new_store: bool) -> None:
        """Make a new store, or check the key of an existing one and bring it to this schema."""
        with self._db.transaction(tracked=False) as tx:
            self._db.create_tables()
            row = self._db.execute("SELECT value FROM meta WHERE key = 'key_check'").fetchone()
            if row is None:
                if not new_store and self._db.execute("SELECT COUNT(*) FROM templates").fetchone()[0]:
                    raise StoreError(f"{self.path}: store has no key check record (corrupt)")
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('key_check', ?)", (keys.check_record(),))
                self._db.set_schema_version(SCHEMA_VERSION)
                for version in range(2, SCHEMA_VERSION + 1):
                    self._db.add_columns(version)
                self._audit.start()
                tx.revision = 1
                self._state.initialize(tx)
                return
            if not keys.matches(row[0]):
                raise wrong_key(self.path, self.key_file)
            self._db.migrate({3: self._state.upgrade}, tx)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> TemplateStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes (a calibration and its audit row) into one transaction: all or nothing."""
        with self._db.transaction():
            yield

    # -- templates ------------------------------------------------------------------------------
    def put(
        self,
        identity: str,
        embedding: np.ndarray,
        fingerprint: str,
        frames: int,
        replace: bool = False,
        source: str | None = None,
    ) -> None:
        """Store the template of ``identity`` and its audit row ("enroll") in one transaction; an
        existing one is replaced only with ``replace`` (checked inside the transaction, so two
        enrolments cannot race). A template of the wrong size (the pinned bundle's, else that of the
        bundle's other templates), not finite, or with a norm a mean of unit vectors cannot have:
        InvalidTemplateError."""
        check_identity_name(identity)
        if not isinstance(fingerprint, str) or not fingerprint:
            raise UsageError(f"invalid bundle fingerprint {fingerprint!r}")
        if not isinstance(frames, int) or isinstance(frames, bool) or frames < 1:
            raise UsageError(f"invalid frame count {frames!r}: a template is made from 1 or more frames")
        with self._db.transaction():
            vector = template_vector(identity, embedding, self._embedding_size(fingerprint))
            self._templates.put(identity, vector, fingerprint, frames, replace)
            self._audit.append("enroll", fingerprint, True, claimed=identity, source=source)

    def get(self, identity: str, fingerprint: str) -> np.ndarray:
        """Decrypt and authenticate the template of ``identity`` made by bundle ``fingerprint``."""
        with self._db.snapshot():
            row = self._templates.row(identity)
            self._state.check_templates([row] if row else [], {identity})
            size = self._embedding_size(fingerprint)
        if row is None:
            raise UnknownIdentityError(f"{identity!r} is not enrolled (see `edge-verify list`)")
        return self._checked(identity, self._templates.decrypt(row, fingerprint), size)

    def all_templates(self, fingerprint: str) -> dict[str, np.ndarray]:
        """Every template of this bundle (for 1:N); templates of other bundles are skipped, and so is
        one that is unusable (logged as an error): 1:N goes on for everyone else."""
        with self._db.snapshot():
            rows = self._templates.rows()
            self._state.check_templates(rows)
            size = self._embedding_size(fingerprint)
        templates = {}
        for row in rows:
            if row[1] == fingerprint:
                try:
                    templates[row[0]] = self._checked(row[0], self._templates.decrypt(row, fingerprint), size)
                except InvalidTemplateError as exc:
                    log.error("%s: %s", self.path, exc)
        return templates

    def _checked(self, identity: str, vector: np.ndarray, size: int | None) -> np.ndarray:
        try:
            return template_vector(identity, vector, size)
        except InvalidTemplateError as exc:
            raise InvalidTemplateError(f"{exc}; re-enroll with `edge-verify enroll {identity} --replace`") from None

    def _embedding_size(self, fingerprint: str) -> int | None:
        """The size of this bundle's embeddings: as pinned, else as most of its stored templates."""
        pin = self._records.get(f"pin:{fingerprint}")
        if pin and "embedding_size" in pin:
            return int(pin["embedding_size"])
        return self._templates.stored_size(fingerprint)

    def data_version(self) -> int:
        """Changes whenever another connection commits (enrol, remove, calibrate): cheap to poll."""
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def list(self) -> list[TemplateInfo]:
        bundles = self.bundle_names()
        return [TemplateInfo(*r, bundle=bundles.get(r[1], "")) for r in self._templates.infos()]

    def bundle_names(self) -> dict[str, str]:
        """'name version' of every bundle pinned in this store, by fingerprint."""
        pins = {name[4:]: self._records.get(name) for name in self._records.names("pin:")}
        return {fp: f"{pin['bundle']} {pin['version']}" for fp, pin in pins.items() if pin}

    def remove(self, identity: str, source: str | None = None) -> None:
        """Delete the template of ``identity`` and write its audit row ("remove") in one transaction."""
        with self._db.transaction():
            fingerprint = self._templates.delete(identity)
            if fingerprint is None:
                raise UnknownIdentityError(f"{identity!r} is not enrolled (see `edge-verify list`)")
            self._audit.append("remove", fingerprint, True, claimed=identity, source=source)

    # -- settings -------------------------------------------------------------------------------
    def set_threshold(self, fingerprint: str, record: dict) -> None:
        """Store a site calibration for bundle ``fingerprint`` (authenticated with the store key)."""
        self._records.put(f"threshold:{fingerprint}", record)

    def threshold(self, fingerprint: str) -> dict | None:
        return self._records.get(f"threshold:{fingerprint}")

    def reset_threshold(self, fingerprint: str) -> bool:
        return self._records.delete(f"threshold:{fingerprint}")

    def pin_bundle(self, bundle, repin: bool = False) -> None:
        """Pin the bundle's decision fields (thresholds, 1:N rules) on first use; later a bundle
        with the same model but other decision fields (bundle.json edited) is refused."""
        name = f"pin:{bundle.fingerprint}"
        digest = bundle.decision_digest()
        pinned = self._records.get(name)
        record = {
            "decision_digest": digest,
            "bundle": bundle.name,
            "version": bundle.version,
            "embedding_size": bundle.embedding_size,
        }
        if pinned is None or repin:
            self._records.put(name, record)
        elif pinned["decision_digest"] == digest and "embedding_size" not in pinned:  # pinned before sizes were
            self._records.put(name, record)
        elif pinned["decision_digest"] != digest:
            raise BundleError(
                f"{bundle.path / 'bundle.json'}: its thresholds differ from those pinned in {self.path} "
                f"(bundle.json edited?); if you upgraded the bundle on purpose, run `edge-verify doctor --repin`"
            )

    # -- web app administrators -----------------------------------------------------------------
    def set_admin(self, name: str, record: dict, source: str) -> None:
        """Store an administrator's password record (a KDF hash, never the password) as an
        authenticated record, and audit it, in one transaction."""
        check_identity_name(name)
        with self._db.transaction():
            self._records.put(f"admin:{name}", record)
            self._audit.append("admin", "", True, claimed=name, source=source, detail="administrator password set")

    def remove_admin(self, name: str, source: str) -> bool:
        """Delete an administrator's password record (her sessions end at their next request) and
        audit it, in one transaction; whether there was one."""
        with self._db.transaction():
            removed = self._records.delete(f"admin:{name}")
            if removed:
                self._audit.append("admin", "", True, claimed=name, source=source, detail="administrator removed")
        return removed

    def admin(self, name: str) -> dict | None:
        """The password record of administrator ``name``, or None (edited outside: TemplateIntegrityError)."""
        return self._records.get(f"admin:{name}")

    def admins(self) -> list[str]:
        return [n.split(":", 1)[1] for n in self._records.names("admin:")]

    # -- audit ----------------------------------------------------------------------------------
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
        return self._audit.append(
            command, fingerprint, accepted, claimed, matched, score, threshold, source, liveness, detail
        )

    def audit_refusal(self, command: str, fingerprint: str, exc: Exception, **fields) -> None:
        """Audit a command that ended without a decision (no face, quality gate, a refused enrolment);
        a store that cannot write is passed over: the original error says more."""
        try:
            self.audit(command, fingerprint, False, detail=f"{type(exc).__name__}: {exc}"[:500], **fields)
        except StoreError:
            pass

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
        """Audit one decision; returns the audit row id. An unknown face's nearest identity goes in
        its detail (its score is the row's score)."""
        if decision.identity is None and decision.nearest is not None:
            detail = "; ".join(filter(None, (detail, f"nearest {decision.nearest}")))
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

    def record_action(self, audit_id: int, action: str, ok: bool, detail: str = "") -> None:
        """Record what an action (relay, webhook, command) did for the decision ``audit_id``."""
        self._audit.record_action(audit_id, action, ok, detail)

    # -- fleet (edge_verify/fleet/sync.py) ------------------------------------------------------
    def apply_fleet(
        self,
        puts: list[tuple[str, np.ndarray, str, int]],
        removals: list[str],
        applied: int,
        detail: str,
        calibrations: dict[str, dict | None] | None = None,
    ) -> None:
        """Apply revisions pulled from a fleet centre in ONE transaction: each ``(identity, vector,
        fingerprint, frames)`` put (replacing), each of ``removals`` deleted if present, each site
        calibration by fingerprint set (None: reset), one audit row ("fleet-sync", ``detail``), and
        the sealed record of the revision applied."""
        with self._db.transaction():
            sizes: dict[str, int | None] = {}  # per bundle, looked up once (a lookup reads every template)
            for identity, vector, fingerprint, frames in puts:
                if fingerprint not in sizes:
                    sizes[fingerprint] = self._embedding_size(fingerprint)
                vector = template_vector(identity, vector, sizes[fingerprint])
                sizes[fingerprint] = vector.size
                self._templates.put(identity, vector, fingerprint, frames, replace=True)
            for identity in removals:
                self._templates.delete(identity)
            for fingerprint, record in (calibrations or {}).items():
                if record is None:
                    self.reset_threshold(fingerprint)
                else:
                    self.set_threshold(fingerprint, record)
            self._records.put(FLEET_RECORD, {"applied": int(applied)})
            self._audit.append("fleet-sync", "", True, detail=detail)

    def fleet_applied(self) -> int:
        """The fleet revision this store has applied (0: none)."""
        record = self._records.get(FLEET_RECORD)
        return int(record["applied"]) if record else 0

    def chain_head(self) -> tuple[int, int, str]:
        """The store's state revision and the audit chain's head (row id, MAC): what a fleet centre
        remembers to catch this store replaced by an older copy."""
        with self._db.snapshot():
            head_id, head_mac = self._audit.head("audit")
            return int(self._state.load()["revision"]), head_id, head_mac

    def export_audit(self, table: str, after: int, limit: int = 1000) -> list[tuple[tuple, str]]:
        """Audit rows of ``table`` ("audit" or "audit_actions") after row ``after``: (values, MAC), in order."""
        return self._audit.rows(table, after, limit)

    def audit_actions(self, audit_id: int) -> list[tuple[str, bool, str]]:
        return self._audit.actions(audit_id)

    def audit_actions_between(self, first: int, last: int) -> dict[int, list[tuple[str, bool, str]]]:
        """What the actions did for each audit row ``first``..``last``: {audit id: [(action, ok, detail)]}."""
        return self._audit.actions_between(first, last)

    def audit_log(
        self, limit: int = 100, since: float | None = None, until: float | None = None, command: str | None = None
    ) -> list[AuditEntry]:
        """The newest ``limit`` entries (newest first) among those matching the filters."""
        return self._audit.entries(limit, since, until, command)

    def verify_audit(self) -> list[str]:
        """Walk both audit chains; return each row edited, inserted or deleted outside edge-verify
        (empty: intact). A store copied back whole from an earlier day is not detected here."""
        return self._audit.verify()

    def verify_state(self) -> list[str]:
        """How the store differs from its authenticated state: each template put back, deleted or
        rolled back, each pin, calibration or chain head deleted or replaced (empty: none)."""
        with self._db.snapshot():
            return self._state.verify(tail=False)

    def integrity_check(self) -> list[str]:
        """SQLite's own check, the authenticated state, authentication of every template, and the
        audit chain; returns the problems found."""
        problems = [r[0] for r in self._db.execute("PRAGMA integrity_check").fetchall() if r[0] != "ok"]
        problems += self.verify_state()
        for row in self._templates.rows():
            try:
                self._templates.decrypt(row)
            except TemplateIntegrityError as exc:
                problems.append(str(exc))
            except StoreError:  # another model or an older format: `list` and `check` say so
                pass
        return problems + self.verify_audit()  # each names its table (audit, audit_actions) or the chain
