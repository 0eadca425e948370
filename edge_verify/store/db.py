"""The bottom layer: one SQLite connection (WAL), the schema, its migrations, and transactions."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from edge_verify.errors import StoreError

log = logging.getLogger(__name__)
BUSY_TIMEOUT_S = 10.0
# 1: edge-verify 0.1 (no template format, no audit chain); 2: formats and the audit chain;
# 3: template revisions in the associated data and the authenticated state record (store/state.py).
SCHEMA_VERSION = 3
SCHEMA = """
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
# Columns added after the first release, by the schema version that added them.
_COLUMNS = {
    2: (
        ("templates", "format", "INTEGER NOT NULL DEFAULT 1"),
        ("audit", "liveness", "TEXT"),
        ("audit", "detail", "TEXT"),
        ("audit", "mac", "TEXT"),
        ("audit_actions", "mac", "TEXT"),
    ),
    3: (("templates", "revision", "INTEGER NOT NULL DEFAULT 0"),),
}


@dataclass
class Tx:
    """One write transaction, and what it changed: the layer that seals the store's state
    (store/state.py) reads these before the commit."""

    revision: int = 0  # the state revision this transaction commits (0: none, while migrating)
    records: dict[str, str | None] = field(default_factory=dict)  # sealed meta record -> its MAC, None: deleted
    templates: dict[str, tuple | None] = field(default_factory=dict)  # identity -> state entry, None: removed
    removed: dict[str, int] = field(default_factory=dict)  # identity -> revision it was removed at

    @property
    def changed(self) -> bool:
        return bool(self.records or self.templates)


class Database:
    """The store's SQLite file. Writes go through ``transaction()``; reads that must agree with each
    other (a template and the state that vouches for it) through ``snapshot()``."""

    def __init__(self, path: Path, busy_timeout_s: float = BUSY_TIMEOUT_S):
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        # One connection, usable from the thread that runs the kiosk loop; writes are serialised.
        self.conn = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
        self.lock = threading.RLock()
        self.on_begin: list[Callable[[Tx], None]] = []  # run after BEGIN of a tracked transaction
        self.on_commit: list[Callable[[Tx], None]] = []  # run before its COMMIT, inside it
        self._tx: Tx | None = None
        self.conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = FULL")

    def execute(self, sql: str, params: tuple = ()) -> sqlite3.Cursor:
        with self.lock:
            return self.conn.execute(sql, params)

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def transaction(self, tracked: bool = True) -> Iterator[Tx]:
        """One write transaction; rolled back if the block raises. A transaction opened inside another
        joins it. A write lock held by another process longer than ``busy_timeout_s`` is a StoreError
        (one line), not a crash. ``tracked``: the state hooks run (every change but the setup's)."""
        with self.lock:
            if self._tx is not None:
                yield self._tx
                return
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if is_busy(exc):
                    raise self.busy_error() from None
                raise
            tx = self._tx = Tx()
            try:
                if tracked:
                    for hook in self.on_begin:
                        hook(tx)
                yield tx
                if tracked and tx.changed:
                    for hook in self.on_commit:
                        hook(tx)
            except BaseException:
                self._tx = None
                self.conn.execute("ROLLBACK")
                raise
            self._tx = None
            try:
                self.conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                self.conn.execute("ROLLBACK")
                if is_busy(exc):
                    raise self.busy_error() from None
                raise

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads that see one committed state (WAL read transaction); inside a write, that one."""
        with self.lock:
            if self.conn.in_transaction:
                yield
                return
            self.conn.execute("BEGIN")
            try:
                yield
            finally:
                self.conn.execute("COMMIT")

    def busy_error(self) -> StoreError:
        return busy_error(self.path, self.busy_timeout_s)

    # -- schema ---------------------------------------------------------------------------------
    def create_tables(self) -> None:
        for statement in SCHEMA.split(";"):
            if statement.strip():
                self.conn.execute(statement)

    def schema_version(self) -> int:
        """The version recorded in the store; 1 for a store of edge-verify 0.1 (none recorded)."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        try:
            return int(row[0]) if row else 1
        except ValueError:
            raise StoreError(f"{self.path}: unreadable schema version {row[0]!r} (corrupt)") from None

    def set_schema_version(self, version: int) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(version),))

    def add_columns(self, version: int) -> None:
        """The columns schema ``version`` added (each only if missing)."""
        for table, column, kind in _COLUMNS.get(version, ()):
            if column not in {r[1] for r in self.conn.execute(f"PRAGMA table_info({table})")}:
                self.conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    def migrate(self, steps: dict[int, Callable[[Tx], None]], tx: Tx) -> list[int]:
        """Bring the store to SCHEMA_VERSION inside the open transaction ``tx``: for each version
        above the store's, its columns, then its step. Returns the versions applied."""
        current = self.schema_version()
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: made by a newer edge-verify (store schema {current}, this one reads "
                f"{SCHEMA_VERSION}); upgrade edge-verify"
            )
        applied = []
        for version in range(current + 1, SCHEMA_VERSION + 1):
            self.add_columns(version)
            if version in steps:
                steps[version](tx)
            applied.append(version)
        if applied:
            self.set_schema_version(SCHEMA_VERSION)
            log.warning("%s: store upgraded from schema %d to %d", self.path, current, SCHEMA_VERSION)
        return applied


def busy_error(path: Path, busy_timeout_s: float) -> StoreError:
    return StoreError(
        f"{path}: the store is busy (another process held its write lock for more than "
        f"{busy_timeout_s:g}s); nothing was written, try again"
    )


def is_busy(exc: sqlite3.Error) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def private_file(path: Path, create: bool = True) -> None:
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


def read_header(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(16)
    except OSError as exc:
        raise StoreError(f"{path}: cannot read the store ({exc.strerror})") from None
