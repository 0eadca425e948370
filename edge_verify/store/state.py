"""The one authenticated record of what the store holds. ``state`` (sealed like any record) holds a
revision counter, raised by every change, and the MAC of every other sealed record (pins, site
calibrations, the audit chain heads, and ``state:templates``: each template's fingerprint, revision
and row digest, and the revision each removed identity was removed at). Every tracked transaction
rewrites it before it commits, so a row put back, deleted or rolled back, or a record stripped, no
longer matches it. A copy of the whole file from an earlier day still matches: only a fleet centre,
which has seen a later revision, can tell."""

from __future__ import annotations

from pathlib import Path

from edge_verify.errors import TemplateIntegrityError
from edge_verify.store.audit import CHAIN_START, AuditLog
from edge_verify.store.db import SCHEMA_VERSION, Database, Tx
from edge_verify.store.records import Records
from edge_verify.store.templates import Templates, entry

STATE = "state"
LISTING = "state:templates"


def describe(name: str) -> str:
    """A sealed record, in words."""
    kind, _, rest = name.partition(":")
    if kind == "pin":
        return f"the pin of bundle {rest[:12]}"
    if kind == "threshold":
        return f"the site calibration of bundle {rest[:12]}"
    if kind == "admin":
        return f"the web administrator {rest!r}"
    if kind == "audit_head":
        return f"the head record of the {rest} chain"
    if name == CHAIN_START:
        return "the audit chain's start record"
    if name == LISTING:
        return "the list of enrolled templates"
    return f"record {name!r}"


class State:
    def __init__(self, db: Database, records: Records, templates: Templates, audit: AuditLog):
        self.db = db
        self.records = records
        self.templates = templates
        self.audit = audit
        db.on_begin.append(self.begin)
        db.on_commit.append(self.seal)

    @property
    def path(self) -> Path:
        return self.db.path

    def load(self) -> dict:
        """The state record; deleted or edited outside edge-verify: TemplateIntegrityError."""
        try:
            state = self.records.get(STATE)
        except TemplateIntegrityError:
            raise TemplateIntegrityError(
                f"{self.path}: the store's state record was changed outside edge-verify"
            ) from None
        if state is None:
            raise TemplateIntegrityError(f"{self.path}: the store's state record was deleted outside edge-verify")
        return state

    def listing(self) -> dict:
        """The templates the state vouches for: {"templates": {identity: [fingerprint, revision, digest]},
        "removed": {identity: revision}}."""
        state = self.load()
        macs = self.records.macs(only=LISTING)
        if macs.get(LISTING) != state["records"].get(LISTING):
            raise TemplateIntegrityError(f"{self.path}: {describe(LISTING)} was changed outside edge-verify")
        return self.records.get(LISTING)

    # -- the hooks of every tracked transaction ----------------------------------------------------
    def begin(self, tx: Tx) -> None:
        tx.revision = int(self.load()["revision"]) + 1

    def seal(self, tx: Tx) -> None:
        """Fold the transaction's changes into the state (inside it, before it commits)."""
        state = self.load()
        if tx.templates:
            listing = self.listing()
            for identity, item in tx.templates.items():
                if item is None:
                    listing["templates"].pop(identity, None)
                    listing["removed"][identity] = tx.removed[identity]
                else:
                    listing["templates"][identity] = item
                    listing["removed"].pop(identity, None)
            self.records.put(LISTING, listing)
        for name, mac in tx.records.items():
            if mac is None:
                state["records"].pop(name, None)
            else:
                state["records"][name] = mac
        state["revision"] = tx.revision
        self.records.put(STATE, state, track=False)

    def initialize(self, tx: Tx) -> None:
        """The first state of a new or upgraded store: what it holds now, at revision ``tx.revision``."""
        listing = {"templates": {row[0]: entry(row) for row in self.templates.rows()}, "removed": {}}
        self.records.put(LISTING, listing)
        macs = self.records.macs(exclude=(STATE,))
        self.records.put(STATE, {"revision": tx.revision, "records": macs}, track=False)

    def upgrade(self, tx: Tx) -> None:
        """Migration 2 -> 3, inside the open transaction: an intact store gets revisions and a state;
        one already upgraded and set back (to re-run this over old rows) is refused."""
        done = self.db.execute(
            "SELECT id FROM audit WHERE command = 'migrate' AND detail LIKE ?", (f"% -> {SCHEMA_VERSION}",)
        ).fetchone()
        if done or self.db.execute("SELECT 1 FROM meta WHERE key = ?", (STATE,)).fetchone():
            row = f" (audit row {done[0]})" if done else ""
            raise TemplateIntegrityError(
                f"{self.path}: this store was already upgraded to schema {SCHEMA_VERSION}{row} and has been set "
                "back to an older schema outside edge-verify; restore it from a backup"
            )
        self.audit.seal_unchained_rows()
        problems = self.audit.verify() + [
            f"{describe(name)} fails authentication" for name, mac in self.records.macs().items() if mac is None
        ]
        if problems:
            raise TemplateIntegrityError(
                f"{self.path}: not upgraded to schema {SCHEMA_VERSION}: it was changed outside edge-verify: "
                + "; ".join(problems)
            )
        tx.revision = 1
        self.templates.reseal(tx)
        self.audit.append("migrate", "", True, detail=f"schema {self.db.schema_version()} -> {SCHEMA_VERSION}")
        self.initialize(tx)

    # -- checks -----------------------------------------------------------------------------------
    def verify(self, tail: bool = True) -> list[str]:
        """Everything that differs from the state record (empty: the store is as edge-verify left it);
        with ``tail``, also whether each audit chain ends at its head (the full walk is AuditLog.verify)."""
        actual = self.records.macs(exclude=(STATE,))
        try:
            state = self.load()
        except TemplateIntegrityError as exc:
            return [str(exc).split(": ", 1)[1]] + [
                f"{describe(name)} was changed outside edge-verify (authentication failed)"
                for name, mac in actual.items()
                if mac is None
            ]
        expected = state["records"]
        problems = []
        for name in sorted(expected.keys() | actual.keys()):
            if name not in actual:
                problems.append(f"{describe(name)} was deleted outside edge-verify")
            elif name not in expected:
                problems.append(f"{describe(name)} was added outside edge-verify")
            elif actual[name] is None:
                problems.append(f"{describe(name)} was changed outside edge-verify (authentication failed)")
            elif actual[name] != expected[name]:
                problems.append(f"{describe(name)} was replaced or rolled back outside edge-verify")
        if LISTING in actual and actual[LISTING] == expected.get(LISTING):
            problems += template_problems(self.templates.rows(), self.records.get(LISTING))
        return problems + (self.audit.tail_problems() if tail else [])

    def check_templates(self, rows: list[tuple], identities: set[str] | None = None) -> None:
        """TemplateIntegrityError unless ``rows`` are what the state vouches for (and, of
        ``identities``, None: all, none is missing)."""
        problems = template_problems(rows, self.listing(), identities)
        if problems:
            raise TemplateIntegrityError(f"{self.path}: " + "; ".join(problems) + "; restore the store from a backup")


def template_problems(rows: list[tuple], listing: dict, identities: set[str] | None = None) -> list[str]:
    """How template ``rows`` differ from ``listing``; rows missing among ``identities`` (None: all)."""
    expected, removed = listing["templates"], listing["removed"]
    problems, seen = [], set()
    for row in rows:
        identity, revision = row[0], row[6]
        seen.add(identity)
        item = expected.get(identity)
        if item is None:
            problems.append(
                f"template of {identity!r} was removed (revision {removed[identity]}) and put back outside edge-verify"
                if identity in removed
                else f"template of {identity!r} was inserted outside edge-verify"
            )
        elif revision != item[1]:
            problems.append(
                f"template of {identity!r} is revision {revision}, the store's state says {item[1]}: "
                "rolled back or replaced outside edge-verify"
            )
        elif entry(row) != item:
            problems.append(f"template of {identity!r} was changed outside edge-verify")
    for identity in sorted(expected.keys() - seen):
        if identities is None or identity in identities:
            problems.append(
                f"template of {identity!r} (revision {expected[identity][1]}) was deleted outside edge-verify"
            )
    return problems
