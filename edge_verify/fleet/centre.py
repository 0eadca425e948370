"""The centre's owner side (the enrolment authority's tools): schema, kiosks and their roles, template
revisions signed and sealed to each kiosk, removals as tombstones, enrolment requests, status."""

from __future__ import annotations

import json
import logging
import re
import secrets
from dataclasses import dataclass

import numpy as np

from edge_verify.errors import EdgeVerifyError, UsageError
from edge_verify.fleet import FleetError, first_line, require
from edge_verify.fleet.crypto import (
    Authority,
    BadRevision,
    Calibration,
    Revision,
    aad,
    digest,
    new_kiosk_key,
    open_box,
    open_template,
    request_aad,
    seal,
    verify,
)
from edge_verify.fleet.schema import CHANNEL, KIOSK_GROUP_ROLE, REQUESTS_CHANNEL, migrate
from edge_verify.fleet.sync import KioskFile
from edge_verify.store.templates import check_identity_name, template_vector

log = logging.getLogger("edge_verify.fleet")
REPORTED_REVISION_CAP = 2**53  # far below the sequence's end (2^63 - 1), far above any real fleet's count
KIOSK_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


@dataclass(frozen=True)
class KioskStatus:
    name: str
    group: str
    may_enrol: bool
    revoked: bool
    applied_revision: int
    seen_at: float | None
    problem: str | None
    rollback: str | None
    pending_removals: list[str]  # removals of its group it has not applied yet


@dataclass(frozen=True)
class Identity:
    identity: str
    group: str
    fingerprint: str
    revision: int
    frames: int


def connect(dsn: str, **kwargs):
    """A psycopg connection (autocommit); FleetError naming the centre when it cannot be reached."""
    psycopg = require("psycopg")
    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=kwargs.pop("connect_timeout", 5), **kwargs)
    except psycopg.ProgrammingError as exc:
        raise FleetError(f"invalid fleet centre connection string ({first_line(exc)})") from None
    except psycopg.OperationalError as exc:
        host = psycopg.conninfo.conninfo_to_dict(dsn).get("host", "?")
        raise FleetError(f"cannot reach the fleet centre at {host}: {first_line(exc)}") from None


def unverified_centre(dsn: str) -> str | None:
    """Why a kiosk with connection string ``dsn`` would talk to whoever answers at the centre's
    address (None: the centre's certificate is checked, or the centre is on this machine)."""
    params = require("psycopg").conninfo.conninfo_to_dict(dsn)
    hosts = [h for h in str(params.get("host") or "").split(",") if h]
    if hosts and all(h in ("localhost", "127.0.0.1", "::1") or h.startswith("/") for h in hosts):
        return None
    mode = params.get("sslmode") or "prefer"
    if mode in ("verify-ca", "verify-full"):
        return None
    return (
        f"sslmode={mode}: the kiosk does not check the centre's certificate, so a host on its network could"
        " pose as the centre (hold removals back, read names and audit rows); use sslmode=verify-full"
    )


def check_group(group: str) -> str:
    if not KIOSK_NAME.match(group or ""):
        raise UsageError(f"invalid group {group!r}: 1-40 of a-z, 0-9, '-' and '_'")
    return group


class Centre:
    """The centre, as its owner (the role that ran ``fleet init``) sees it."""

    def __init__(self, dsn: str):
        self.dsn = dsn
        self.conn = connect(dsn)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Centre:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- setup ----------------------------------------------------------------------------------
    def init(self, authority: Authority) -> list[int]:
        """Bring the schema up to date and record the authority's public keys (refusing another's)."""
        applied = migrate(self.conn)
        with self.conn.transaction():
            for key, value in (("authority", authority.public.hex()), ("authority_box", authority.box_public.hex())):
                row = self.conn.execute("SELECT value FROM fleet_meta WHERE key = %s", (key,)).fetchone()
                if row is None:
                    self.conn.execute("INSERT INTO fleet_meta VALUES (%s, %s)", (key, value))
                elif row[0] != value:
                    raise FleetError("this centre belongs to another enrolment authority (its public key differs)")
        return applied

    def check_authority(self, authority: Authority) -> None:
        row = self.conn.execute("SELECT value FROM fleet_meta WHERE key = 'authority'").fetchone()
        if row is None:
            raise FleetError("the centre is not set up: run `edge-verify fleet init` first")
        if row[0] != authority.public.hex():
            raise FleetError("this authority key is not the centre's (its public key differs)")

    def add_kiosk(
        self,
        authority: Authority,
        name: str,
        group: str,
        may_enrol: bool = False,
        host: str | None = None,
        interval_s: float = 30.0,
    ) -> KioskFile:
        """Create kiosk ``name``: a key pair, its own login role (a member of the kiosks' role), every live
        template of its group sealed to it; returns its fleet file (``host``: the centre's address as the
        kiosk reaches it, default the one used here)."""
        key, public_key = new_kiosk_key()
        password = self._add_kiosk(authority, name, group, public_key, may_enrol)
        conninfo = require("psycopg").conninfo
        params = conninfo.conninfo_to_dict(self.dsn)
        params.update(user=f"ev_kiosk_{name}", password=password)
        if host:
            params["host"] = host
        return KioskFile(
            name,
            group,
            conninfo.make_conninfo(**params),
            key,
            authority.public.hex(),
            authority.box_public.hex(),
            interval_s,
        )

    def _add_kiosk(self, authority: Authority, name: str, group: str, public_key: bytes, may_enrol: bool) -> str:
        psycopg = require("psycopg")
        sql = psycopg.sql
        if not KIOSK_NAME.match(name or ""):
            raise UsageError(f"invalid kiosk name {name!r}: 1-40 of a-z, 0-9, '-' and '_'")
        check_group(group)
        self.check_authority(authority)
        role, password = f"ev_kiosk_{name}", secrets.token_urlsafe(24)
        with self.conn.transaction():
            if self.conn.execute("SELECT 1 FROM kiosks WHERE name = %s", (name,)).fetchone():
                raise UsageError(f"kiosk {name!r} exists (revoke it, then add it under another name)")
            if self.conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                # roles belong to the whole cluster: dropping it would hand another fleet's kiosk to this one
                raise UsageError(
                    f"role {role} exists in this PostgreSQL cluster (another fleet's kiosk, or a user):"
                    " choose another kiosk name"
                )
            self.conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
                    sql.Identifier(role), sql.Literal(password), sql.Identifier(KIOSK_GROUP_ROLE)
                )
            )
            self.conn.execute(
                "INSERT INTO kiosks (name, role, group_name, public_key, may_enrol) VALUES (%s, %s, %s, %s, %s)",
                (name, role, group, public_key, may_enrol),
            )
            self.conn.execute("LOCK TABLE template_revisions IN EXCLUSIVE MODE")
            rows = self.conn.execute(
                "SELECT revision, identity, fingerprint, frames, digest, signature, authority_box FROM "
                + _LATEST
                + " WHERE op = 'put'",
                (group,),
            ).fetchall()
            boxes = []
            for revision, identity, fingerprint, frames, dig, signature, box in rows:
                entry = Revision(revision, group, identity, fingerprint, "put", frames, dig)
                try:  # only what this authority signed is sealed again (a row forged at the centre is not)
                    verify(authority.public, entry, signature)
                    vector = open_template(authority.box, entry, box or b"")
                except BadRevision as exc:
                    log.error("not sealed to kiosk %s: %s", name, exc)
                    continue
                boxes.append((revision, name, seal(public_key, vector.tobytes(), aad(identity, fingerprint, revision))))
            with self.conn.cursor() as cur:
                cur.executemany("INSERT INTO template_boxes (revision, kiosk, box) VALUES (%s, %s, %s)", boxes)
        return password

    def revoke(self, name: str) -> None:
        """End kiosk ``name``: its role can no longer log in, its sessions are ended, its boxes deleted,
        and nothing is sealed to it again."""
        sql = require("psycopg").sql
        with self.conn.transaction():
            row = self.conn.execute(
                "UPDATE kiosks SET revoked_at = now() WHERE name = %s AND revoked_at IS NULL RETURNING role", (name,)
            ).fetchone()
            if row is None:
                raise UsageError(f"no kiosk {name!r} in the fleet (or already revoked; see `edge-verify fleet status`)")
            self.conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(row[0])))
            # a plain owner (CREATEROLE, not superuser) may end only the sessions of roles it is a member of
            self.conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(row[0])))
            self.conn.execute("DELETE FROM template_boxes WHERE kiosk = %s", (name,))
        self.conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (row[0],))

    # -- templates ------------------------------------------------------------------------------
    def publish(
        self, authority: Authority, group: str, items: list[tuple[str, np.ndarray | None, str, int]]
    ) -> list[int]:
        """One revision per ``(identity, vector, fingerprint, frames)`` (vector None: a removal), signed,
        sealed to each kiosk of ``group`` and to the authority, in one transaction; kiosks are told."""
        check_group(group)
        self.check_authority(authority)
        revisions = []
        with self.conn.transaction():
            # Revisions are numbered and committed in one order, so no kiosk can pull past one.
            self.conn.execute("LOCK TABLE template_revisions IN EXCLUSIVE MODE")
            kiosks = self.conn.execute(
                "SELECT name, public_key FROM kiosks WHERE group_name = %s AND revoked_at IS NULL", (group,)
            ).fetchall()
            self._number_past_kiosks()
            numbers = self.conn.execute(
                "SELECT nextval('template_revision_seq') FROM generate_series(1, %s)", (len(items),)
            ).fetchall()
            rows, boxes = [], []
            for (revision,), (identity, vector, fingerprint, frames) in zip(numbers, items, strict=True):
                check_identity_name(identity)
                if vector is None:
                    current = self.conn.execute(
                        "SELECT fingerprint, op FROM " + _LATEST + " WHERE identity = %s", (group, identity)
                    ).fetchone()
                    if current is None or current[1] == "remove":
                        raise UsageError(
                            f"{identity!r} is not enrolled in group {group!r} (see `edge-verify fleet list`)"
                        )
                    fingerprint = current[0]
                else:
                    vector = template_vector(identity, vector, None)
                entry = Revision(
                    revision,
                    group,
                    identity,
                    fingerprint,
                    "remove" if vector is None else "put",
                    0 if vector is None else int(frames),
                    "" if vector is None else digest(vector),
                )
                own = None
                if vector is not None:
                    plain, ad = vector.tobytes(), aad(identity, fingerprint, revision)
                    own = seal(authority.box_public, plain, ad)
                    boxes += [(revision, name, seal(bytes(key), plain, ad)) for name, key in kiosks]
                rows.append(
                    (
                        revision,
                        group,
                        identity,
                        fingerprint,
                        entry.op,
                        entry.frames,
                        entry.digest,
                        authority.sign(entry),
                        own,
                    )
                )
                revisions.append(revision)
            with self.conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO template_revisions (revision, group_name, identity, fingerprint, op, frames, digest,"
                    " signature, authority_box) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    rows,
                )
                cur.executemany("INSERT INTO template_boxes (revision, kiosk, box) VALUES (%s, %s, %s)", boxes)
            self.conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, group))
        return revisions

    def _number_past_kiosks(self) -> None:
        """Number the next revision above every revision a kiosk reported applying: a centre restored
        from a backup starts below them, and kiosks pull only revisions above the one they applied. A
        kiosk reports its own number: capped at 2^53, a stolen one cannot exhaust the numbering."""
        self.conn.execute(
            "SELECT setval('template_revision_seq', k.applied) FROM template_revision_seq s,"
            " (SELECT least(max(applied_revision), %s) AS applied FROM kiosks WHERE revoked_at IS NULL) k"
            " WHERE k.applied > s.last_value",
            (REPORTED_REVISION_CAP,),
        )

    def enroll(self, authority: Authority, group: str, identity: str, vector, fingerprint: str, frames: int) -> int:
        return self.publish(authority, group, [(identity, np.asarray(vector, np.float32), fingerprint, frames)])[0]

    def remove(self, authority: Authority, group: str, identity: str) -> int:
        return self.publish(authority, group, [(identity, None, "", 0)])[0]

    def calibrate(self, authority: Authority, group: str, fingerprint: str, record: dict | None) -> int:
        """Give ``group`` the site calibration ``record`` of bundle ``fingerprint`` (None: back to the
        bundle's own operating point), signed; returns its revision (numbered with the templates')."""
        check_group(group)
        self.check_authority(authority)
        payload = json.dumps(record, sort_keys=True)
        with self.conn.transaction():
            self.conn.execute("LOCK TABLE template_revisions IN EXCLUSIVE MODE")
            self._number_past_kiosks()
            revision = self.conn.execute("SELECT nextval('template_revision_seq')").fetchone()[0]
            signature = authority.sign(Calibration(revision, group, fingerprint, payload))
            self.conn.execute(
                "INSERT INTO site_calibrations (group_name, fingerprint, revision, payload, signature)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (group_name, fingerprint) DO UPDATE SET"
                " revision = excluded.revision, payload = excluded.payload, signature = excluded.signature,"
                " updated_at = now()",
                (group, fingerprint, revision, payload, signature),
            )
            self.conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, group))
        return revision

    def identities(self, group: str | None = None) -> list[Identity]:
        rows = self.conn.execute(
            "SELECT DISTINCT ON (group_name, identity) identity, group_name, fingerprint, revision, frames, op"
            " FROM template_revisions WHERE %(g)s::text IS NULL OR group_name = %(g)s"
            " ORDER BY group_name, identity, revision DESC",
            {"g": group},
        ).fetchall()
        return [Identity(*r[:5]) for r in rows if r[5] == "put"]

    # -- enrolment requests from kiosks ---------------------------------------------------------
    def process_requests(self, authority: Authority) -> list[tuple[int, str, str]]:
        """Sign and distribute each pending enrolment request (from a kiosk that may enrol, in its own
        group); returns (request id, identity, "done" or why it was refused)."""
        done = []
        while True:
            with self.conn.transaction():
                row = self.conn.execute(
                    "SELECT r.id, r.kiosk, r.identity, r.fingerprint, r.frames, r.box, k.group_name,"
                    " k.may_enrol AND k.revoked_at IS NULL FROM enrol_requests r JOIN kiosks k ON k.name = r.kiosk"
                    " WHERE r.state = 'pending' ORDER BY r.id LIMIT 1 FOR UPDATE OF r SKIP LOCKED"
                ).fetchone()
                if row is None:
                    return done
                request, kiosk, identity, fingerprint, frames, box, group, allowed = row
                try:
                    if not allowed:
                        raise FleetError(f"kiosk {kiosk!r} may not enrol (revoked, or added without --may-enrol)")
                    current = self.conn.execute(
                        "SELECT op FROM " + _LATEST + " WHERE identity = %s", (group, identity)
                    ).fetchone()
                    if current is not None and current[0] == "put":
                        # a kiosk never replaces someone's template: that is the admin's `fleet enroll`
                        raise FleetError(f"{identity!r} is already enrolled in group {group!r}")
                    plain = open_box(authority.box, bytes(box), request_aad(kiosk, identity, fingerprint))
                    revision = self.enroll(
                        authority, group, identity, np.frombuffer(plain, np.float32), fingerprint, frames
                    )
                    self.conn.execute(
                        "UPDATE enrol_requests SET state = 'done', revision = %s WHERE id = %s", (revision, request)
                    )
                    outcome = "done"
                except EdgeVerifyError as exc:  # refused: recorded, and the next request goes on
                    outcome = str(exc)
                    self.conn.execute(
                        "UPDATE enrol_requests SET state = 'refused', detail = %s WHERE id = %s", (outcome, request)
                    )
                log.info("enrolment request %d (%s from %s): %s", request, identity, kiosk, outcome)
                done.append((request, identity, outcome))

    def serve(self, authority: Authority, stop, interval_s: float = 30.0) -> None:
        """The authority's loop: process requests as they are announced (and every ``interval_s``);
        the centre unreachable, try again every second until ``stop``."""
        psycopg = require("psycopg")
        listener = None
        while not stop.is_set():
            try:
                if listener is None:
                    listener = connect(self.dsn)
                    listener.execute(f"LISTEN {REQUESTS_CHANNEL}")
                    if self.conn.closed:
                        self.conn = connect(self.dsn)
                self.process_requests(authority)
                waited = 0.0
                while waited < interval_s and not stop.is_set():
                    if any(True for _ in listener.notifies(timeout=0.5, stop_after=1)):
                        break
                    waited += 0.5
            except (psycopg.Error, FleetError) as exc:
                log.warning("authority: %s; retrying", first_line(exc))
                for conn in (listener, self.conn):
                    if conn is not None and not conn.closed:
                        conn.close()
                listener = None
                stop.wait(1.0)
        if listener is not None:
            listener.close()

    # -- status ---------------------------------------------------------------------------------
    def status(self) -> list[KioskStatus]:
        """Every kiosk, with the removals of its group it has not applied (a removal is complete
        only when every kiosk of the group has applied it)."""
        kiosks = self.conn.execute(
            "SELECT name, group_name, may_enrol, revoked_at IS NOT NULL, applied_revision,"
            " extract(epoch FROM seen_at), problem, rollback FROM kiosks ORDER BY name"
        ).fetchall()
        result = []
        for name, group, may_enrol, revoked, applied, seen, problem, rollback in kiosks:
            pending = self.conn.execute(
                "SELECT identity FROM template_revisions WHERE group_name = %s AND op = 'remove' AND revision > %s"
                " ORDER BY revision",
                (group, applied),
            ).fetchall()
            result.append(
                KioskStatus(
                    name,
                    group,
                    may_enrol,
                    revoked,
                    applied,
                    None if seen is None else float(seen),
                    problem,
                    rollback,
                    [] if revoked else [r[0] for r in pending],
                )
            )
        return result

    def audit_count(self, kiosk: str) -> int:
        return self.conn.execute("SELECT count(*) FROM audit_rows WHERE kiosk = %s", (kiosk,)).fetchone()[0]


# The latest revision of each identity of group %s (a subquery usable as a table).
_LATEST = (
    "(SELECT DISTINCT ON (identity) revision, identity, fingerprint, op, frames, digest, signature, authority_box"
    " FROM template_revisions"
    " WHERE group_name = %s ORDER BY identity, revision DESC) AS latest"
)
