"""The audit log: one row per decision or administrative change, and one row per action taken;
each row's HMAC covers its values and the previous row's HMAC (a chain), its head a sealed record."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass

from edge_verify.errors import TemplateIntegrityError
from edge_verify.store.db import Database
from edge_verify.store.records import Records

# Columns of each audit table in the order they are authenticated (see AuditLog.chain).
COLUMNS = {
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
_KEY = {"audit": "id", "audit_actions": "rowid"}
CHAIN_START = "audit_chain"


def head_name(table: str) -> str:
    return f"audit_head:{table}"


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


class AuditLog:
    def __init__(self, db: Database, records: Records, mac_key: bytes):
        self.db = db
        self.records = records
        self._key = mac_key

    def start(self) -> None:
        """A new store's empty chains (in the open transaction)."""
        for table in COLUMNS:
            self.records.put(head_name(table), {"id": 0, "mac": ""})
        self.records.put(CHAIN_START, {"since": time.time()})

    def append(
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
        """Write one audit row, chained to the previous one; its id."""
        with self.db.transaction():
            cur = self.db.execute(
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
            self.chain("audit", int(cur.lastrowid))
        return int(cur.lastrowid)

    def record_action(self, audit_id: int, action: str, ok: bool, detail: str = "") -> None:
        with self.db.transaction():
            cur = self.db.execute(
                "INSERT INTO audit_actions (audit_id, ts, action, ok, detail) VALUES (?, ?, ?, ?, ?)",
                (audit_id, time.time(), action, int(ok), detail[:500]),
            )
            self.chain("audit_actions", int(cur.lastrowid))

    def actions(self, audit_id: int) -> list[tuple[str, bool, str]]:
        rows = self.db.execute(
            "SELECT action, ok, detail FROM audit_actions WHERE audit_id = ? ORDER BY rowid", (audit_id,)
        ).fetchall()
        return [(r[0], bool(r[1]), r[2]) for r in rows]

    def actions_between(self, first: int, last: int) -> dict[int, list[tuple[str, bool, str]]]:
        rows = self.db.execute(
            "SELECT audit_id, action, ok, detail FROM audit_actions WHERE audit_id BETWEEN ? AND ? ORDER BY rowid",
            (first, last),
        ).fetchall()
        found: dict[int, list[tuple[str, bool, str]]] = {}
        for audit_id, action, ok, detail in rows:
            found.setdefault(audit_id, []).append((action, bool(ok), detail))
        return found

    def entries(
        self, limit: int = 100, since: float | None = None, until: float | None = None, command: str | None = None
    ) -> list[AuditEntry]:
        """The newest ``limit`` entries (newest first) among those matching the filters."""
        where, params = [], []
        for clause, value in (("ts >= ?", since), ("ts < ?", until), ("command = ?", command)):
            if value is not None:
                where.append(clause)
                params.append(value)
        rows = self.db.execute(
            "SELECT ts, command, claimed, matched, score, threshold, accepted, source, liveness, detail, id"
            f" FROM audit {'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY id DESC LIMIT ?",
            (*params, limit),
        ).fetchall()
        return [AuditEntry(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), *r[7:]) for r in rows]

    def rows(self, table: str, after: int, limit: int) -> list[tuple[tuple, str]]:
        """Rows of ``table`` after row id ``after``, oldest first: (values as COLUMNS[table], MAC)."""
        key = _KEY[table]
        rows = self.db.execute(
            f"SELECT {', '.join(COLUMNS[table])}, mac FROM {table} WHERE {key} > ? ORDER BY {key} LIMIT ?",
            (after, limit),
        ).fetchall()
        return [(tuple(r[:-1]), str(r[-1] or "")) for r in rows]

    # -- the chain ------------------------------------------------------------------------------
    def row_mac(self, table: str, values: tuple, previous: str) -> str:
        payload = json.dumps([table, previous, *values], separators=(",", ":"))
        return hmac.new(self._key, payload.encode(), hashlib.sha256).hexdigest()

    def head(self, table: str) -> tuple[int, str]:
        head = self.records.get(head_name(table))
        return (int(head["id"]), str(head["mac"])) if head else (0, "")

    def chain(self, table: str, row_id: int) -> None:
        """Seal row ``row_id`` (just inserted, in the open transaction) and move the head to it."""
        values = self.db.execute(
            f"SELECT {', '.join(COLUMNS[table])} FROM {table} WHERE {_KEY[table]} = ?", (row_id,)
        ).fetchone()
        _, previous = self.head(table)
        mac = self.row_mac(table, values, previous)
        self.db.execute(f"UPDATE {table} SET mac = ? WHERE {_KEY[table]} = ?", (mac, row_id))
        self.records.put(head_name(table), {"id": row_id, "mac": mac})

    def seal_unchained_rows(self) -> None:
        """A store from before the chain has its rows sealed once, in order, when first opened.
        After that an unsealed row is one written outside edge-verify, and verify says so."""
        if self.records.get(CHAIN_START) is not None:
            return
        for table in COLUMNS:
            key = _KEY[table]
            for (row_id,) in self.db.execute(f"SELECT {key} FROM {table} ORDER BY {key}").fetchall():
                self.chain(table, row_id)
        self.records.put(CHAIN_START, {"since": time.time()})

    def verify(self) -> list[str]:
        """Walk both audit chains; return each row edited, inserted or deleted outside edge-verify
        (empty: intact). A store copied back whole from an earlier day is not detected here."""
        problems = []
        try:
            if self.records.get(CHAIN_START) is None:
                problems.append("the audit chain's start record was deleted")
        except TemplateIntegrityError:
            problems.append("the audit chain's start record was changed outside edge-verify")
        for table in COLUMNS:
            key = _KEY[table]
            try:
                head = self.records.get(head_name(table))
            except TemplateIntegrityError:
                problems.append(f"{table}: the chain's head record was changed outside edge-verify")
                continue
            rows = self.db.execute(f"SELECT {', '.join(COLUMNS[table])}, mac FROM {table} ORDER BY {key}").fetchall()
            previous, last_id = "", 0
            for *values, mac in rows:
                row_id = values[0]
                if row_id != last_id + 1:
                    gap = f"{last_id + 1}" if row_id == last_id + 2 else f"{last_id + 1}-{row_id - 1}"
                    problems.append(f"{table}: row(s) {gap} were deleted")
                elif mac is None or not hmac.compare_digest(self.row_mac(table, tuple(values), previous), str(mac)):
                    problems.append(f"{table}: row {row_id} was edited or inserted outside edge-verify")
                previous, last_id = str(mac), row_id
            if head is None:
                if rows:
                    problems.append(f"{table}: the chain's head record was deleted")
                continue
            problems += _head_problems(table, head, last_id, previous if rows else "")
        return problems

    def tail_problems(self) -> list[str]:
        """The cheap part of ``verify`` (at every open): each chain ends at its head record."""
        problems = []
        for table in COLUMNS:
            try:
                head = self.records.get(head_name(table))
            except TemplateIntegrityError:
                continue  # the state check names the record
            if head is None:
                continue
            last = self.db.execute(
                f"SELECT {_KEY[table]}, mac FROM {table} ORDER BY {_KEY[table]} DESC LIMIT 1"
            ).fetchone() or (0, "")
            problems += _head_problems(table, head, int(last[0]), str(last[1] or ""))
        return problems


def _head_problems(table: str, head: dict, last_id: int, last_mac: str) -> list[str]:
    if int(head["id"]) > last_id:
        return [f"{table}: row(s) {last_id + 1}-{head['id']} at the end were deleted"]
    if int(head["id"]) < last_id:
        return [f"{table}: row(s) after {head['id']} were added outside edge-verify"]
    if last_id and not hmac.compare_digest(str(head["mac"]), last_mac):
        return [f"{table}: row {last_id} was replaced outside edge-verify"]
    return []
