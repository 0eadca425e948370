"""The fleet against real servers: a PostgreSQL 15 centre and a mosquitto 2 broker started here
(tests/fleet_servers.py), two kiosks of one group (A, B) and one of another (C), each with its own
local store, deciding through the real pipeline."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edge_verify.errors import FleetError, UnknownIdentityError
from edge_verify.store import TemplateStore
from tests.conftest import SAMPLES
from tests.fleet_servers import Mosquitto, Postgres, mosquitto_missing, postgres_missing

psycopg = pytest.importorskip("psycopg", reason="the fleet extra (psycopg) is not installed")

ASTRONAUT, CAMERAMAN = SAMPLES / "astronaut_enroll.jpg", SAMPLES / "cameraman.jpg"
DEADLINE_S = 2.0  # the promise: a change at the centre reaches a running kiosk within 2 s


@pytest.fixture(scope="session")
def postgres():
    reason = postgres_missing()
    if reason:
        pytest.skip(reason)
    server = Postgres.start_new()
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def broker():
    reason = mosquitto_missing()
    if reason:
        pytest.skip(reason)
    server = Mosquitto.start_new({"kiosk-b": "b-secret", "homeassistant": "ha-secret"})
    yield server
    server.destroy()


@dataclass
class Fleet:
    postgres: Postgres
    dsn: str
    authority: object
    centre: object
    root: Path
    files: dict
    fingerprint: str

    def store_path(self, kiosk: str) -> Path:
        return self.root / kiosk / "store.db"

    def sync(self, kiosk: str):
        from edge_verify.fleet.sync import KioskSync

        return KioskSync(self.files[kiosk], self.store_path(kiosk))

    def add(self, kiosk: str, group: str = "hq", may_enrol: bool = False) -> None:
        self.files[kiosk] = self.centre.add_kiosk(self.authority, kiosk, group, may_enrol, interval_s=30)
        TemplateStore(self.store_path(kiosk)).close()

    def reconnect(self) -> None:
        from edge_verify.fleet.centre import Centre

        self.centre.close()
        self.centre = Centre(self.dsn)


@pytest.fixture(scope="module")
def fleet(postgres, tmp_path_factory, verifier):
    from edge_verify.fleet.centre import Centre
    from edge_verify.fleet.crypto import Authority

    with psycopg.connect(postgres.dsn, autocommit=True) as admin:
        admin.execute("CREATE DATABASE fleet_test")
    dsn = postgres.dsn.replace("dbname=postgres", "dbname=fleet_test")
    authority = Authority.generate()
    centre = Centre(dsn)
    assert centre.init(authority) == [1, 2]
    assert centre.init(authority) == []  # migrations are applied once
    fleet = Fleet(postgres, dsn, authority, centre, tmp_path_factory.mktemp("fleet"), {}, verifier.bundle.fingerprint)
    fleet.add("a", may_enrol=True)
    fleet.add("b")
    fleet.add("c", group="lab")
    cameraman = verifier.embed_image(CAMERAMAN)
    centre.enroll(authority, "hq", "cameraman", cameraman, fleet.fingerprint, 1)
    yield fleet
    fleet.centre.close()


def running(target, *args) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=target, args=(*args, stop), daemon=True)
    thread.start()
    return stop, thread


def until(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def kiosk_for(verifier, store: TemplateStore):
    from edge_verify.kiosk import Kiosk, KioskConfig

    return Kiosk(KioskConfig(source="unused", liveness="off", debounce=1, cooldown_s=0), verifier, store, [])


def admitted(kiosk, image: Path) -> str | None:
    """Who the kiosk admits on ``image`` now (None: refused)."""
    import cv2

    kiosk.end_tracks("next check")
    events = kiosk.process(cv2.imread(str(image)), image.name)
    accepted = [e.identity for e in events if e.accepted]
    return accepted[0] if accepted else None


def test_enrol_at_a_admits_at_b_and_removal_refuses_within_2_s(fleet, verifier, tmp_path):
    from edge_verify.fleet.centre import Centre
    from edge_verify.kiosk import Kiosk, KioskConfig, build_actions

    first = fleet.sync("b")
    first.sync_once()
    first.close()
    b_store = TemplateStore(fleet.store_path("b"), create=False)
    path = tmp_path / "b-fleet.toml"
    fleet.files["b"].save(path)
    config = KioskConfig(source="unused", liveness="off", debounce=1, cooldown_s=0, fleet=str(path))
    actions = build_actions(config)  # kiosk B's own loop with its fleet link: the sync runs in its thread
    b_kiosk = Kiosk(config, verifier, b_store, actions)
    assert admitted(b_kiosk, CAMERAMAN) == "cameraman"
    assert admitted(b_kiosk, ASTRONAUT) is None
    authority_centre = Centre(fleet.dsn)
    stops = [running(authority_centre.serve, fleet.authority)]
    a_sync = fleet.sync("a")
    try:
        # `enroll --fleet` at kiosk A: the local enrolment, then the request to the authority
        vector = verifier.embed_image(ASTRONAUT)
        a_sync.store.put("astronaut", vector, fleet.fingerprint, 1)
        start = time.monotonic()
        a_sync.request_enrolment("astronaut", a_sync.store.get("astronaut", fleet.fingerprint), fleet.fingerprint, 1)
        assert until(lambda: admitted(b_kiosk, ASTRONAUT) == "astronaut", DEADLINE_S), "B did not admit within 2 s"
        print(f"enrol at A -> admitted at B: {time.monotonic() - start:.2f}s")

        start = time.monotonic()
        fleet.centre.remove(fleet.authority, "hq", "astronaut")
        assert until(lambda: admitted(b_kiosk, ASTRONAUT) is None, DEADLINE_S), "B still admits after 2 s"
        print(f"removed at the centre -> refused at B: {time.monotonic() - start:.2f}s")
        assert admitted(b_kiosk, CAMERAMAN) == "cameraman"

        # the removal is complete only when every kiosk of the group applied it: A has not synced since
        assert until(lambda: "astronaut" not in _status(fleet)["b"].pending_removals, DEADLINE_S)
        assert _status(fleet)["a"].pending_removals == ["astronaut"]
        assert _status(fleet)["c"].pending_removals == []  # another group's removal is none of C's business
    finally:
        for stop, thread in stops:
            stop.set()
            thread.join(10)
        for action in actions:
            action.close()
        authority_centre.close()
        a_sync.close()
        b_store.close()


def _status(fleet) -> dict:
    return {k.name: k for k in fleet.centre.status()}


def test_centre_down_kiosk_decides_catches_up_and_pushes_audit_once(fleet, verifier):
    b_sync = fleet.sync("b")
    b_sync.sync_once()
    b_store = TemplateStore(fleet.store_path("b"), create=False)
    b_kiosk = kiosk_for(verifier, b_store)
    stop, thread = running(b_sync.run)
    try:
        fleet.postgres.stop()
        assert until(lambda: b_sync.error is not None, 5), "the sync loop did not notice the centre went away"
        decisions = [admitted(b_kiosk, CAMERAMAN) for _ in range(3)] + [admitted(b_kiosk, ASTRONAUT)]
        assert decisions == ["cameraman"] * 3 + [None]  # offline: still deciding from the local copy

        fleet.postgres.start()
        fleet.reconnect()
        fleet.centre.enroll(fleet.authority, "hq", "late", verifier.embed_image(ASTRONAUT), fleet.fingerprint, 1)
        assert until(lambda: admitted(b_kiosk, ASTRONAUT) == "late", 15), "B did not catch up after the centre returned"
    finally:
        stop.set()
        thread.join(10)
    assert b_sync.sync_once().pushed > 0  # the rows written since the loop's last pass
    again = b_sync.sync_once()  # a pass after everything was pushed pushes nothing
    local = b_store.export_audit("audit", 0, 100000)
    rows = fleet.centre.conn.execute(
        "SELECT row_id, mac FROM audit_rows WHERE kiosk = 'b' AND tbl = 'audit' ORDER BY row_id"
    ).fetchall()
    assert again.pushed == 0
    assert [(r[0], r[1]) for r in rows] == [(v[0], mac) for v, mac in local]  # each row once, chain intact
    offline = [v for v, _ in local if v[1] > 0 and v[2] == "kiosk"]
    assert len(offline) >= 4  # the decisions made while the centre was down reached it
    b_sync.close()
    b_store.close()


def test_forged_or_altered_template_rows_are_refused(fleet, verifier):
    from edge_verify.fleet.crypto import Authority, Revision, aad, digest, seal

    b_sync = fleet.sync("b")
    fleet.centre.enroll(fleet.authority, "hq", "victim", verifier.embed_image(ASTRONAUT), fleet.fingerprint, 1)
    b_sync.sync_once()
    assert "victim" in [t.identity for t in b_sync.store.list()]
    attacker = verifier.embed_image(CAMERAMAN)
    b_public = bytes(fleet.centre.conn.execute("SELECT public_key FROM kiosks WHERE name = 'b'").fetchone()[0])
    forger = Authority.generate()

    def insert(identity: str, signer) -> int:
        """A revision written straight into the centre's tables (by someone holding the database)."""
        conn = fleet.centre.conn
        revision = conn.execute("SELECT nextval('template_revision_seq')").fetchone()[0]
        entry = Revision(revision, "hq", identity, fleet.fingerprint, "put", 1, digest(attacker))
        conn.execute(
            "INSERT INTO template_revisions (revision, group_name, identity, fingerprint, op, frames, digest,"
            " signature) VALUES (%s, 'hq', %s, %s, 'put', 1, %s, %s)",
            (revision, identity, fleet.fingerprint, entry.digest, None if signer is None else signer.sign(entry)),
        )
        box = seal(b_public, attacker.tobytes(), aad(identity, fleet.fingerprint, revision))
        conn.execute("INSERT INTO template_boxes VALUES (%s, 'b', %s)", (revision, box))
        return revision

    insert("intruder", None)  # unsigned
    insert("victim", forger)  # the victim's template swapped for the attacker's, signed by another key
    result = b_sync.sync_once()
    assert len(result.refused) == 2 and "intruder" not in result.put and "victim" not in result.put
    enrolled = [t.identity for t in b_sync.store.list()]
    assert "intruder" not in enrolled
    assert "victim" not in enrolled  # fail closed: the victim's name admits nobody until a valid revision
    with pytest.raises(UnknownIdentityError):
        b_sync.store.get("intruder", fleet.fingerprint)
    assert "not signed" in _status(fleet)["b"].problem

    # a signed revision whose sealed template was swapped for the attacker's at the centre
    revision = fleet.centre.enroll(
        fleet.authority, "hq", "swapped", verifier.embed_image(ASTRONAUT), fleet.fingerprint, 1
    )
    box = seal(b_public, attacker.tobytes(), aad("swapped", fleet.fingerprint, revision))
    fleet.centre.conn.execute("UPDATE template_boxes SET box = %s WHERE revision = %s AND kiosk = 'b'", (box, revision))
    result = b_sync.sync_once()
    assert result.put == [] and "not the one signed" in result.refused[0]
    assert "swapped" not in [t.identity for t in b_sync.store.list()]
    # the authority's own next revision restores the victim
    fleet.centre.enroll(fleet.authority, "hq", "victim", verifier.embed_image(ASTRONAUT), fleet.fingerprint, 1)
    assert b_sync.sync_once().put == ["victim"]
    b_sync.close()


def test_a_kiosk_role_cannot_forge_audit_or_read_other_groups(fleet, verifier):
    fleet.centre.enroll(fleet.authority, "lab", "lab-only", verifier.embed_image(ASTRONAUT), fleet.fingerprint, 1)
    errors = psycopg.errors
    with psycopg.connect(fleet.files["a"].centre, autocommit=True) as a:
        with pytest.raises(errors.InsufficientPrivilege, match="row-level security"):
            a.execute(
                "INSERT INTO audit_rows (kiosk, tbl, row_id, ts, row, mac) VALUES ('b', 'audit', 999999, 0, '{}', 'x')"
            )
        groups = {r[0] for r in a.execute("SELECT DISTINCT group_name FROM template_revisions").fetchall()}
        assert groups == {"hq"}
        assert a.execute("SELECT count(*) FROM template_revisions WHERE identity = 'lab-only'").fetchone()[0] == 0
        assert {r[0] for r in a.execute("SELECT DISTINCT kiosk FROM template_boxes").fetchall()} == {"a"}
        assert a.execute("SELECT count(*) FROM audit_rows WHERE kiosk <> 'a'").fetchone()[0] == 0
        attacks = [
            "UPDATE audit_rows SET mac = 'x'",
            "DELETE FROM audit_rows",
            "UPDATE kiosks SET rollback = NULL",
            "SELECT * FROM kiosks",
            "INSERT INTO template_revisions (revision, group_name, identity, fingerprint, op, frames, digest)"
            " VALUES (999999, 'hq', 'x', 'y', 'put', 1, '')",
            "UPDATE template_boxes SET box = '\\x00'",
            "DELETE FROM template_revisions",
        ]
        for sql in attacks:
            with pytest.raises(errors.InsufficientPrivilege):
                a.execute(sql)
    # kiosk B may not ask for enrolments (added without --may-enrol)
    b_sync = fleet.sync("b")
    with pytest.raises(Exception, match="may not enrol"):
        b_sync.request_enrolment("sneak", verifier.embed_image(CAMERAMAN), fleet.fingerprint, 1)
    b_sync.close()
    # a revoked kiosk's credentials stop working
    fleet.add("gone")
    fleet.centre.revoke("gone")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(fleet.files["gone"].centre, connect_timeout=3)


def test_a_kiosk_cannot_pose_as_another_through_a_temporary_table(fleet, verifier):
    """SECURITY DEFINER functions resolve names in pg_temp first unless told otherwise: kiosk C (group lab,
    may not enrol) shadows ``kiosks`` with a temporary table claiming to be A (group hq, may enrol)."""
    errors = psycopg.errors
    with psycopg.connect(fleet.files["c"].centre, autocommit=True) as c:
        try:
            c.execute(
                "CREATE TEMP TABLE kiosks AS SELECT 'a'::text AS name, session_user::name AS role,"
                " 'hq'::text AS group_name, true AS may_enrol, NULL::timestamptz AS revoked_at"
            )
            c.execute("GRANT SELECT ON pg_temp.kiosks TO PUBLIC")
        except errors.InsufficientPrivilege:
            pass  # no temporary tables for kiosks at all: the attack cannot even start
        assert c.execute("SELECT fleet_kiosk(), fleet_group()").fetchone() == ("c", "lab")
        assert {r[0] for r in c.execute("SELECT DISTINCT group_name FROM template_revisions").fetchall()} <= {"lab"}
        assert c.execute("SELECT count(*) FROM template_boxes WHERE kiosk <> 'c'").fetchone()[0] == 0
        with pytest.raises(errors.InsufficientPrivilege):
            c.execute(
                "INSERT INTO audit_rows (kiosk, tbl, row_id, ts, row, mac) VALUES ('a', 'audit', 999999, 0, '{}', 'x')"
            )
        with pytest.raises(errors.InsufficientPrivilege):
            c.execute(
                "INSERT INTO enrol_requests (kiosk, identity, fingerprint, frames, box)"
                " VALUES ('a', 'sneak', 'f', 1, '\\x00')"
            )


def test_a_lying_centre_cannot_replay_an_older_signed_revision(fleet, verifier):
    """Someone holding the centre's database (not the authority key) answers the kiosk's pull with the
    earlier, genuinely signed "put" of a removed person, and an older, looser calibration. The kiosk
    must not go back: it refuses any revision at or below the one it applied."""
    from edge_verify.pipeline import resolve_threshold

    fleet.add("e")
    sync = fleet.sync("e")
    conn = fleet.centre.conn
    strict = {"threshold": 0.95, "source": "strict", "far": 1e-6}
    fleet.centre.calibrate(fleet.authority, "hq", fleet.fingerprint, {"threshold": 0.05, "source": "loose"})
    old_calibration = conn.execute("SELECT * FROM site_calibrations WHERE group_name = 'hq'").fetchone()
    put = fleet.centre.enroll(fleet.authority, "hq", "replayed", verifier.embed_image(ASTRONAUT), fleet.fingerprint, 1)
    sync.sync_once()
    assert "replayed" in [t.identity for t in sync.store.list()]
    removal = fleet.centre.remove(fleet.authority, "hq", "replayed")
    fleet.centre.calibrate(fleet.authority, "hq", fleet.fingerprint, strict)
    assert sync.sync_once().removed == ["replayed"]
    sync.close()
    assert sync_applied(fleet, "e") >= removal > put

    # the lie: the tombstone hidden, the old calibration back, and a ">" that is always true for this role
    conn.execute("CREATE SCHEMA evil")
    try:
        sql = psycopg.sql
        conn.execute(
            sql.SQL(
                "CREATE VIEW evil.template_revisions AS SELECT * FROM public.template_revisions WHERE revision <> {}"
            ).format(sql.Literal(removal))
        )
        revision, payload, signature = old_calibration[2], old_calibration[3], bytes(old_calibration[4])
        conn.execute(
            sql.SQL(
                "CREATE VIEW evil.site_calibrations AS SELECT group_name, fingerprint, {}::bigint AS revision,"
                " {}::text AS payload, {}::bytea AS signature, now() AS updated_at"
                " FROM public.site_calibrations WHERE group_name = 'hq'"
            ).format(sql.Literal(revision), sql.Literal(payload), sql.Literal(signature))
        )
        for right in ("smallint", "integer", "bigint"):
            conn.execute(
                f"CREATE FUNCTION evil.yes_{right}(bigint, {right}) RETURNS boolean LANGUAGE sql AS 'SELECT true'"
            )
            conn.execute(f"CREATE OPERATOR evil.> (LEFTARG = bigint, RIGHTARG = {right}, FUNCTION = evil.yes_{right})")
        conn.execute("GRANT USAGE ON SCHEMA evil TO edge_verify_kiosk")
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA evil TO edge_verify_kiosk")
        conn.execute("ALTER ROLE ev_kiosk_e SET search_path = evil, pg_catalog, public")
        # a genuine new revision comes with the replayed ones: the pass is applied
        fleet.centre.enroll(fleet.authority, "hq", "newcomer", verifier.embed_image(CAMERAMAN), fleet.fingerprint, 1)
        sync = fleet.sync("e")
        result = sync.sync_once()
        assert "newcomer" in result.put
        assert "replayed" not in [t.identity for t in sync.store.list()]
        assert sync.store.threshold(fleet.fingerprint) == strict
        assert "replayed" not in result.put
        assert "replayed" not in [t.identity for t in sync.store.list()]
        assert sync.store.threshold(fleet.fingerprint) == strict
        assert resolve_threshold(verifier.bundle, sync.store).value == 0.95
        assert result.refused and all("already applied" in r for r in result.refused)
        sync.close()
    finally:
        conn.execute("ALTER ROLE ev_kiosk_e RESET search_path")
        conn.execute("DROP SCHEMA evil CASCADE")


def sync_applied(fleet, kiosk: str) -> int:
    store = TemplateStore(fleet.store_path(kiosk), create=False)
    try:
        return store.fleet_applied()
    finally:
        store.close()


def test_the_documented_owner_without_superuser_runs_the_fleet_and_revokes_a_connected_kiosk(postgres, verifier):
    """docs/fleet.md: `createuser --createrole fleet_admin`, `createdb --owner fleet_admin`; the tests'
    other centres are owned by the superuser, which hides what a plain owner may not do."""
    from edge_verify.fleet.centre import Centre
    from edge_verify.fleet.crypto import Authority
    from edge_verify.fleet.sync import KioskSync

    with psycopg.connect(postgres.dsn, autocommit=True) as admin:
        admin.execute("CREATE ROLE fleet_admin LOGIN CREATEROLE PASSWORD 'owner-secret'")
        admin.execute("CREATE DATABASE fleet_owned OWNER fleet_admin")
    dsn = postgres.dsn.replace("dbname=postgres", "dbname=fleet_owned").replace("user=postgres", "user=fleet_admin")
    dsn = dsn.replace(f"password={postgres.password}", "password=owner-secret")
    authority = Authority.generate()
    with Centre(dsn) as centre, tempfile.TemporaryDirectory() as root:
        assert centre.init(authority)
        kiosk = centre.add_kiosk(authority, "owned-front", "hq")
        centre.enroll(authority, "hq", "cameraman", verifier.embed_image(CAMERAMAN), verifier.bundle.fingerprint, 1)
        sync = KioskSync(kiosk, Path(root) / "front.db", create=True)
        assert sync.sync_once().put == ["cameraman"]  # its connection stays open (it listens)
        centre.revoke("owned-front")  # the kiosk is connected while it is revoked
        with pytest.raises(FleetError):
            sync.sync_once()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(kiosk.centre, connect_timeout=3)
        sync.close()


def test_a_removal_after_the_centre_is_restored_from_a_backup_reaches_the_kiosks(postgres, verifier, tmp_path):
    """docs/fleet.md: back the centre up with pg_dump. Restored, its revision numbers start below what the
    kiosks applied; a removal numbered there was skipped by every kiosk while `fleet status` called it done."""
    from edge_verify.fleet.sync import KioskSync

    centre, authority = fresh_centre(postgres, "fleet_restored")
    fingerprint = verifier.bundle.fingerprint
    with centre:
        kiosk = centre.add_kiosk(authority, "restored-front", "hq")
        centre.enroll(authority, "hq", "cameraman", verifier.embed_image(CAMERAMAN), fingerprint, 1)
        backup = centre.conn.execute("SELECT last_value FROM template_revision_seq").fetchone()[0]
        centre.enroll(authority, "hq", "astronaut", verifier.embed_image(ASTRONAUT), fingerprint, 1)
        sync = KioskSync(kiosk, tmp_path / "front.db", create=True)
        sync.sync_once()
        # the restore: the rows and the sequence as they were at the backup
        centre.conn.execute("DELETE FROM template_revisions WHERE revision > %s", (backup,))
        centre.conn.execute("SELECT setval('template_revision_seq', %s)", (backup,))
        centre.conn.execute("UPDATE kiosks SET applied_revision = %s", (backup,))
        sync.sync_once()  # the kiosk reports what it applied
        centre.remove(authority, "hq", "cameraman")
        assert sync.sync_once().removed == ["cameraman"]
        assert "cameraman" not in [t.identity for t in sync.store.list()]
        assert not [k for k in centre.status() if k.pending_removals]
        sync.close()


def test_a_kiosk_reporting_an_absurd_revision_cannot_stop_enrolment_and_removal(postgres, verifier):
    """Revisions are numbered above what kiosks report (a restored centre); a stolen kiosk reporting the
    largest number must not exhaust the numbering, or nobody could be removed any more."""
    centre, authority = fresh_centre(postgres, "fleet_liar")
    with centre:
        kiosk = centre.add_kiosk(authority, "liar", "hq")
        with psycopg.connect(kiosk.centre, autocommit=True) as liar:
            liar.execute("SELECT fleet_report(9223372036854775807, 0, 0, '', NULL)")
        vector = verifier.embed_image(CAMERAMAN)
        first = centre.enroll(authority, "hq", "cameraman", vector, verifier.bundle.fingerprint, 1)
        assert centre.remove(authority, "hq", "cameraman") > first


def test_a_second_fleet_in_the_same_cluster_cannot_take_over_a_kiosk_role(postgres, fleet):
    """Roles belong to the whole PostgreSQL cluster, not to one database: a second fleet adding a kiosk
    of the same name dropped the first fleet's role and made its own, which then logged into the first
    fleet's database as that kiosk (and the real kiosk was locked out)."""
    from edge_verify.errors import UsageError

    fleet.add("twin")
    other, authority = fresh_centre(postgres, "fleet_other")
    with other:
        with pytest.raises(UsageError, match="another fleet"):
            other.add_kiosk(authority, "twin", "hq")
    with psycopg.connect(fleet.files["twin"].centre, autocommit=True) as twin:  # the first fleet's still logs in
        assert twin.execute("SELECT fleet_kiosk()").fetchone() == ("twin",)


def fresh_centre(postgres, name: str):
    """A new centre database owned by the superuser, set up by a new authority."""
    from edge_verify.fleet.centre import Centre
    from edge_verify.fleet.crypto import Authority

    with psycopg.connect(postgres.dsn, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    authority = Authority.generate()
    centre = Centre(postgres.dsn.replace("dbname=postgres", f"dbname={name}"))
    centre.init(authority)
    return centre, authority


def test_an_authority_key_others_can_read_is_refused(tmp_path):
    """The fleet's root of trust, restored from a backup with the usual umask (0644), must not be used
    as it is: anyone on the admin host could enrol anyone."""
    import os

    from edge_verify.fleet.crypto import Authority

    path = tmp_path / "authority.key"
    Authority.generate().save(path)
    assert Authority.load(path).public
    os.chmod(path, 0o644)
    with pytest.raises(FleetError, match="chmod 600"):
        Authority.load(path)


def test_a_revoked_kiosk_that_reaches_the_centre_stops_admitting(fleet):
    """`fleet revoke` of a kiosk still on the wall (retired, or suspected): its store kept admitting
    everyone it had, removed later or not, for as long as it ran. Told by the centre it is revoked, it
    removes every template (fail closed); offline it cannot be told (docs/fleet.md says so)."""
    fleet.add("retired")
    sync = fleet.sync("retired")
    assert "cameraman" in sync.sync_once().put
    fleet.centre.revoke("retired")
    errors = []
    for _ in range(3):  # the pass that meets its session ended first, then the refused login
        with pytest.raises(FleetError) as caught:
            sync.sync_once()
        errors.append(str(caught.value))
    assert "revoked" in errors[-1] and "revoked" in errors[-2] and sync.revoked
    assert sync.store.list() == []
    last = sync.store.audit_log(limit=1)[0]
    assert last.command == "fleet-sync" and "revoked" in last.detail
    sync.close()


def test_a_store_replaced_by_an_older_copy_is_flagged(fleet, tmp_path):
    from edge_verify.fleet.sync import KioskSync

    fleet.add("d")
    path = fleet.store_path("d")
    sync = fleet.sync("d")
    assert sync.sync_once().rollback is None
    sync.close()
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{path}{suffix}").exists():
            shutil.copy(f"{path}{suffix}", tmp_path / f"old.db{suffix}")
    sync = fleet.sync("d")
    for _ in range(3):
        sync.store.audit("kiosk", fleet.fingerprint, False, detail="a refusal")
    assert sync.sync_once().rollback is None
    sync.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
        if (tmp_path / f"old.db{suffix}").exists():
            shutil.copy(tmp_path / f"old.db{suffix}", f"{path}{suffix}")
    sync = fleet.sync("d")  # the older copy opens cleanly: on its own it is self-consistent
    result = sync.sync_once()
    assert result.rollback and "set back" in result.rollback
    assert result.pushed == 0
    assert _status(fleet)["d"].rollback == result.rollback
    sync.store.audit("kiosk", fleet.fingerprint, False, detail="after the copy")
    assert sync.sync_once().rollback  # it stays flagged, whatever it reports next

    # back in service as docs/fleet.md says: revoked (it meets that first), then added under a new name
    fleet.centre.revoke("d")
    for _ in range(2):  # the pass that meets its session ended, then the refused login
        with pytest.raises(FleetError) as caught:
            sync.sync_once()
    assert "revoked" in str(caught.value)
    sync.close()
    fleet.add("d-2")
    sync = KioskSync(fleet.files["d-2"], path)
    result = sync.sync_once()
    assert result.rollback is None and "cameraman" in result.put  # every template again
    local = sync.store.export_audit("audit", 0, 100000)
    assert result.pushed >= len(local) and fleet.centre.audit_count("d-2") >= len(local)  # its whole chain
    sync.close()


def test_a_kiosk_gets_its_group_only_and_a_quiet_pass_changes_nothing(fleet, verifier):
    fleet.centre.enroll(fleet.authority, "lab", "lab-member", verifier.embed_image(ASTRONAUT), fleet.fingerprint, 1)
    sync = fleet.sync("c")
    first = sync.sync_once()
    enrolled = {t.identity for t in sync.store.list()}
    assert "lab-member" in enrolled and "cameraman" not in enrolled  # cameraman is in group hq
    before = sync.store.data_version(), sync.store.chain_head()
    second = sync.sync_once()
    assert second.applied == first.applied and second.put == second.removed == [] and second.pushed == 0
    assert sync.store.chain_head() == before[1]  # nothing written locally when nothing changed
    sync.close()


def test_site_calibration_reaches_the_group_signed_or_not_at_all(fleet, verifier):
    from edge_verify.fleet.crypto import Authority, Calibration
    from edge_verify.pipeline import resolve_threshold

    sync = fleet.sync("b")
    record = {"threshold": 0.9, "source": "fleet test", "far": 1e-4}
    fleet.centre.calibrate(fleet.authority, "hq", fleet.fingerprint, record)
    assert sync.sync_once().calibrated == [fleet.fingerprint]
    assert sync.store.threshold(fleet.fingerprint) == record
    choice = resolve_threshold(verifier.bundle, sync.store)
    assert choice.value == 0.9 and "site calibration" in choice.origin

    # a looser calibration written straight into the centre, signed by another key: refused, 0.9 stays
    conn = fleet.centre.conn
    revision = conn.execute("SELECT nextval('template_revision_seq')").fetchone()[0]
    payload = '{"far": 0.1, "source": "attacker", "threshold": 0.05}'
    forged = Authority.generate().sign(Calibration(revision, "hq", fleet.fingerprint, payload))
    conn.execute(
        "UPDATE site_calibrations SET revision = %s, payload = %s, signature = %s WHERE group_name = 'hq'",
        (revision, payload, forged),
    )
    result = sync.sync_once()
    assert result.calibrated == [] and "signature" in result.refused[0]
    assert sync.store.threshold(fleet.fingerprint) == record

    fleet.centre.calibrate(fleet.authority, "hq", fleet.fingerprint, None)  # back to the bundle's own point
    assert sync.sync_once().calibrated == [fleet.fingerprint]
    assert sync.store.threshold(fleet.fingerprint) is None
    sync.close()


def test_a_kiosk_cannot_replace_someones_template_by_request(fleet, verifier):
    from edge_verify.fleet.centre import Centre

    a_sync, b_sync = fleet.sync("a"), fleet.sync("b")
    b_sync.sync_once()
    before = b_sync.store.get("cameraman", fleet.fingerprint)
    # kiosk A (may enrol) sends the attacker's face under an enrolled name
    a_sync.request_enrolment("cameraman", verifier.embed_image(ASTRONAUT), fleet.fingerprint, 1)
    with Centre(fleet.dsn) as centre:
        handled = centre.process_requests(fleet.authority)
    assert len(handled) == 1 and "already enrolled" in handled[0][2]
    b_sync.sync_once()
    assert np.array_equal(b_sync.store.get("cameraman", fleet.fingerprint), before)
    a_sync.close()
    b_sync.close()


def test_core_does_not_import_the_fleet_extra():
    import subprocess
    import sys

    code = (
        "import sys, edge_verify, edge_verify.cli, edge_verify.kiosk, edge_verify.store; "
        "edge_verify.cli.build_parser(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('psycopg', 'paho')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_unusable_fleet_file_is_a_one_line_error(tmp_path):
    from edge_verify.errors import UsageError
    from edge_verify.fleet.sync import KioskFile

    bad = tmp_path / "kiosk.toml"
    bad.write_text("[fleet]\nkiosk = 'x'\n")
    with pytest.raises(UsageError, match="not a kiosk's fleet file"):
        KioskFile.load(bad)


class Subscriber:
    """Home Assistant's side of the broker: a paho client that keeps every message it gets."""

    def __init__(self, broker, topics=("homeassistant/#", "edge-verify/#"), user: str = "homeassistant"):
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{user}-test-{time.time_ns()}")
        self.client.username_pw_set(user, broker.users[user])
        self.client.on_message = lambda c, u, m: self._keep(m)
        ready = threading.Event()
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        self.client.subscribe([(t, 1) for t in topics])
        assert ready.wait(5)

    def _keep(self, message) -> None:
        with self.lock:
            self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))

    def payloads(self, topic: str) -> list[bytes]:
        with self.lock:
            return [p for t, p, _ in self.messages if t == topic]

    def json(self, topic: str) -> list[dict]:
        import json

        return [json.loads(p) for p in self.payloads(topic)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def write_mqtt_file(path: Path, broker, kiosk: str, password: str = "b-secret", **extra) -> Path:
    lines = [
        "[mqtt]",
        f'kiosk = "{kiosk}"',
        f"port = {broker.port}",
        'username = "kiosk-b"',
        f'password = "{password}"',
    ] + [f'{k} = "{v}"' for k, v in extra.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_mqtt_discovery_decisions_relay_and_remote_unlock(broker, verifier, enrolled_store, tmp_path, pins):
    from edge_verify.fleet.mqtt import unlock_code_hash
    from edge_verify.kiosk import Kiosk, KioskConfig, build_actions

    ha = Subscriber(broker)
    path = write_mqtt_file(
        tmp_path / "fleet.toml", broker, "door-1", remote_unlock_code_sha256=unlock_code_hash("2468")
    )
    config = KioskConfig(
        source="unused", liveness="off", debounce=1, cooldown_s=0, relay_pin=17, relay_pulse_s=0.05, fleet=str(path)
    )
    actions = build_actions(config)
    kiosk = Kiosk(config, verifier, enrolled_store, actions)
    node = "homeassistant/{}/edge_verify_door-1/{}/config"
    try:
        assert until(lambda: ha.payloads("edge-verify/door-1/availability") == [b"online"], 5)
        assert until(lambda: len(ha.payloads(node.format("lock", "door"))) == 1, 5)
        event = ha.json(node.format("event", "decision"))[0]
        assert event["state_topic"] == "edge-verify/door-1/decision"
        assert event["event_types"] == ["accepted", "rejected", "lockout"]
        assert event["availability_topic"] == "edge-verify/door-1/availability"
        relay = ha.json(node.format("binary_sensor", "relay"))[0]
        assert (relay["state_topic"], relay["device_class"]) == ("edge-verify/door-1/relay", "lock")
        attack = ha.json(node.format("binary_sensor", "attack"))[0]
        assert (attack["state_topic"], attack["device_class"]) == ("edge-verify/door-1/attack", "safety")
        assert ha.json(node.format("lock", "door"))[0]["command_topic"] == "edge-verify/door-1/lock/set"
        late = Subscriber(broker)  # Home Assistant restarted: discovery and availability are retained
        assert until(lambda: late.payloads("edge-verify/door-1/availability") == [b"online"], 5)
        assert until(lambda: len([t for t, _, r in late.messages if t.startswith("homeassistant/") and r]) == 4, 5)
        late.close()

        assert admitted(kiosk, ASTRONAUT) == "astronaut"
        assert admitted(kiosk, CAMERAMAN) is None
        assert until(lambda: len(ha.payloads("edge-verify/door-1/decision")) == 2, 5)
        accepted, rejected = ha.json("edge-verify/door-1/decision")
        assert set(accepted) == {"event_type", "identity", "time", "liveness", "audit_id"}  # no score, no image
        assert (accepted["event_type"], accepted["identity"]) == ("accepted", "astronaut")
        assert (rejected["event_type"], rejected["identity"]) == ("rejected", None)
        assert accepted["audit_id"] == enrolled_store.audit_log(command="kiosk")[1].id
        assert until(lambda: ha.payloads("edge-verify/door-1/relay") == [b"ON", b"OFF"], 5)
        assert ha.payloads("edge-verify/door-1/attack") == [b"OFF"]

        # remote unlock: a wrong code is audited and opens nothing; the right one is audited, then opens
        pulses = len(pins.pin(17).states)
        ha.client.publish("edge-verify/door-1/lock/set", '{"action": "UNLOCK", "code": "1111"}', qos=1)
        assert until(lambda: enrolled_store.audit_log(command="remote-unlock"), 5)
        time.sleep(0.2)
        assert len(pins.pin(17).states) == pulses
        ha.client.publish("edge-verify/door-1/lock/set", '{"action": "UNLOCK", "code": "2468"}', qos=1)
        assert until(lambda: len(enrolled_store.audit_log(command="remote-unlock")) == 2, 5)
        right, wrong = enrolled_store.audit_log(command="remote-unlock")
        assert (wrong.accepted, right.accepted) == (False, True) and wrong.source == right.source == "mqtt"
        assert until(lambda: [s.state for s in pins.pin(17).states][pulses:] == [True, False], 5)
        assert enrolled_store.audit_actions(right.id) == [("relay", True, "")]
        assert until(lambda: ha.payloads("edge-verify/door-1/lock") == [b"LOCKED", b"UNLOCKED", b"LOCKED"], 5)
    finally:
        for action in actions:
            action.close()
    assert until(lambda: ha.payloads("edge-verify/door-1/availability")[-1:] == [b"offline"], 5)
    ha.close()


def test_mqtt_hint_last_will_without_unlock_and_bad_credentials(broker, tmp_path):
    import socket

    from edge_verify.fleet import FleetError
    from edge_verify.fleet.link import load
    from edge_verify.fleet.mqtt import MqttLink, publish_hint

    ha = Subscriber(broker)
    _, settings = load(write_mqtt_file(tmp_path / "f.toml", broker, "door-2"))
    hinted = threading.Event()
    link = MqttLink(settings, on_hint=hinted.set, group="hq")
    try:
        publish_hint(settings, "lab", 7)  # another group's hint: not for this kiosk
        publish_hint(settings, "hq", 8)
        assert until(hinted.is_set, 5)
        assert until(lambda: ha.json("edge-verify/fleet/hq/changed") == [{"revision": 8}], 5)
        assert until(lambda: ha.payloads("edge-verify/door-2/availability") == [b"online"], 5)
        lock = "homeassistant/lock/edge_verify_door-2/door/config"
        assert until(lambda: ha.payloads(lock) == [b""], 5)  # no remote unlock unless set: any old entity removed
        link.client.socket().shutdown(socket.SHUT_RDWR)  # the kiosk vanishes without saying goodbye
        assert until(lambda: b"offline" in ha.payloads("edge-verify/door-2/availability"), 10)
    finally:
        link.close()
        ha.close()
    _, settings = load(write_mqtt_file(tmp_path / "g.toml", broker, "door-3", password="wrong"))
    with pytest.raises(FleetError, match="refused the kiosk"):
        MqttLink(settings)


def test_mqtt_over_tls_checks_the_broker_certificate(broker, tmp_path):
    import dataclasses

    from edge_verify.fleet.link import load
    from edge_verify.fleet.mqtt import MqttLink

    ha = Subscriber(broker)
    path = write_mqtt_file(tmp_path / "tls.toml", broker, "door-tls", tls_ca=str(broker.ca))
    _, settings = load(path)
    settings = dataclasses.replace(settings, port=broker.tls_port)
    link = MqttLink(settings)
    try:
        assert until(lambda: ha.payloads("edge-verify/door-tls/availability") == [b"online"], 5)
    finally:
        link.close()
    # a broker whose certificate is not signed by the configured CA is never talked to
    from tests.fleet_servers import write_tls_files

    (tmp_path / "other").mkdir()
    other_ca = write_tls_files(tmp_path / "other")[0]
    link = MqttLink(dataclasses.replace(settings, kiosk="door-mitm", tls_ca=str(other_ca)), connect_timeout_s=1)
    try:
        time.sleep(0.5)
        assert ha.payloads("edge-verify/door-mitm/availability") == []
    finally:
        link.close()
    ha.close()


@pytest.mark.slow
def test_cli_init_add_kiosk_enroll_sync_check_remove_status_revoke(postgres, tmp_path):
    """The commands a site runs, each in a fresh interpreter, against the real centre."""
    import json

    from edge_verify.fleet.centre import Centre
    from edge_verify.fleet.crypto import Authority
    from tests.conftest import run_cli

    with psycopg.connect(postgres.dsn, autocommit=True) as admin:
        admin.execute("CREATE DATABASE fleet_cli")
    env = {
        "EDGE_VERIFY_CENTRE": postgres.dsn.replace("dbname=postgres", "dbname=fleet_cli"),
        "EDGE_VERIFY_AUTHORITY": str(tmp_path / "authority" / "authority.key"),
    }
    admin_store, kiosk_store = str(tmp_path / "admin.db"), str(tmp_path / "kiosk.db")

    def cli(*args, code=0):
        done = run_cli(*args, "--json", env=env)
        assert done.returncode == code, done.stderr
        return json.loads(done.stdout.splitlines()[-1]) if done.stdout.strip() else {}

    assert cli("fleet", "init")["created"] is True
    assert oct(Path(env["EDGE_VERIFY_AUTHORITY"]).stat().st_mode & 0o777) == "0o600"
    assert cli("fleet", "init")["created"] is False  # kept, never overwritten
    cli("fleet", "add-kiosk", "cli-door", "--group", "office", "--may-enrol", "--out", str(tmp_path / "door.toml"))
    assert oct((tmp_path / "door.toml").stat().st_mode & 0o777) == "0o600"
    again = run_cli("fleet", "add-kiosk", "cli-door", "--group", "x", "--out", str(tmp_path / "x.toml"), env=env)
    assert again.returncode == 2 and "exists" in again.stderr and not (tmp_path / "x.toml").exists()
    cli("enroll", "astronaut", "--source", str(ASTRONAUT), "--store", admin_store)
    assert cli("fleet", "enroll", "astronaut", "--group", "office", "--store", admin_store)["revision"] >= 1
    assert [i["identity"] for i in cli("fleet", "list")["identities"]] == ["astronaut"]
    nothing = run_cli("fleet", "calibrate", "--group", "office", "--store", admin_store, env=env)
    assert nothing.returncode == 2 and "no site calibration" in nothing.stderr
    assert len(cli("fleet", "calibrate", "--group", "office", "--store", admin_store, "--reset")["revisions"]) == 1

    door = ["--store", kiosk_store]
    sync = cli("fleet", "sync", "--fleet-file", str(tmp_path / "door.toml"), *door)
    assert sync["put"] == ["astronaut"] and sync["refused"] == []
    assert cli("check", "astronaut", "--source", str(SAMPLES / "astronaut_check.jpg"), *door)["accepted"] is True

    cli("fleet", "remove", "astronaut", "--group", "office")
    status = cli("fleet", "status", code=1)  # the door has not applied the removal yet
    assert status["kiosks"][0]["pending_removals"] == ["astronaut"]
    assert cli("fleet", "sync", "--fleet-file", str(tmp_path / "door.toml"), *door)["removed"] == ["astronaut"]
    cli("fleet", "status")
    cli("check", "astronaut", "--source", str(SAMPLES / "astronaut_check.jpg"), *door, code=11)  # not enrolled

    # enrol at the door, sent to the centre; the authority signs and distributes it
    cli("enroll", "cameraman", "--source", str(CAMERAMAN), *door, "--fleet", str(tmp_path / "door.toml"))
    with Centre(env["EDGE_VERIFY_CENTRE"]) as centre:
        handled = centre.process_requests(Authority.load(Path(env["EDGE_VERIFY_AUTHORITY"])))
    assert [(who, outcome) for _, who, outcome in handled] == [("cameraman", "done")]
    assert [i["identity"] for i in cli("fleet", "list", "--group", "office")["identities"]] == ["cameraman"]

    cli("fleet", "revoke", "cli-door")
    done = run_cli("fleet", "sync", "--fleet-file", str(tmp_path / "door.toml"), *door, env=env)
    assert done.returncode == 19 and done.stderr.count("\n") == 1 and "revoked at the fleet centre" in done.stderr
    bad = run_cli("fleet", "enroll", "nobody", "--group", "office", "--store", admin_store, env=env)
    assert bad.returncode == 2 and "not enrolled" in bad.stderr


def test_fleet_options_count_before_or_after_the_command():
    from edge_verify.cli import build_parser

    parser = build_parser()
    for argv in (["fleet", "--json", "--store", "s.db", "status"], ["fleet", "status", "--json", "--store", "s.db"]):
        args = parser.parse_args(argv)
        assert (args.json, args.store, args.fleet_command) == (True, "s.db", "status")
    assert parser.parse_args(["fleet", "status"]).json is False


@pytest.mark.parametrize("dsn", ["host=127.0.0.1 port=1 = =bad", "host=127.0.0.1 port=1 dbname=x"])
def test_a_bad_or_unreachable_centre_is_a_one_line_error(dsn):
    from tests.conftest import run_cli

    done = run_cli("fleet", "status", "--centre", dsn)
    assert done.returncode == 19 and done.stderr.count("\n") == 1 and "fleet centre" in done.stderr


def test_add_kiosk_warns_when_the_kiosk_would_not_check_the_centre():
    from edge_verify.fleet.centre import unverified_centre

    assert "pose as the centre" in unverified_centre("host=centre.example dbname=ev user=k")
    assert "sslmode=require" in unverified_centre("host=centre.example dbname=ev sslmode=require")
    assert unverified_centre("host=centre.example dbname=ev sslmode=verify-full sslrootcert=/etc/ca.crt") is None
    assert unverified_centre("host=127.0.0.1 port=5432 dbname=ev") is None


def test_two_kiosks_never_share_home_assistant_discovery_topics():
    """ "front-2" and "front_2" were one node id: the ACL line of one gave it the other's discovery
    topics, where it could rewrite the other's lock (where Home Assistant sends its code)."""
    from edge_verify.errors import UsageError
    from edge_verify.fleet.mqtt import MqttSettings, discovery_configs

    code = {"remote_unlock_code_sha256": "0" * 64}
    dash = discovery_configs(MqttSettings.from_dict(code, "front-2"))
    underscore = discovery_configs(MqttSettings.from_dict(code, "front_2"))
    assert not set(dash) & set(underscore)
    for bad in ("front 2", "front/2", "fr+nt", "#", ""):
        with pytest.raises(UsageError, match=r"\[mqtt\] kiosk"):
            MqttSettings.from_dict({}, bad)


def test_the_documented_broker_acl_keeps_a_kiosk_to_its_own_topics(tmp_path):
    """docs/fleet.md's mosquitto ACL, taken from the page as it is: kiosk "front"'s credentials (a
    stolen kiosk) cannot unlock another door, send a sync hint, rewrite another kiosk's discovery,
    or read another kiosk's events."""
    reason = mosquitto_missing()
    if reason:
        pytest.skip(reason)
    page = (Path(__file__).parent.parent / "docs" / "fleet.md").read_text()
    acl = page.split("# /etc/mosquitto/acl")[1].split("```")[0].split("\n", 1)[1]
    users = {"door-front": "f-secret", "homeassistant": "ha-secret", "authority": "a-secret"}
    broker = Mosquitto.start_new(users, acl=acl)
    ha = Subscriber(broker, ("#",))
    front = Subscriber(broker, ("edge-verify/front/lock/set", "edge-verify/back/decision"), user="door-front")
    try:
        denied = [
            "edge-verify/back/lock/set",
            "edge-verify/fleet/hq/changed",
            "homeassistant/lock/edge_verify_back/door/config",
            "edge-verify/back/decision",
        ]
        for topic in denied:
            front.client.publish(topic, '{"action": "UNLOCK", "code": "1234"}', qos=1)
        front.client.publish("edge-verify/front/decision", "{}", qos=1)  # its own: allowed, and after the others
        assert until(lambda: ha.payloads("edge-verify/front/decision"), 5)
        assert not any(ha.payloads(topic) for topic in denied)

        ha.client.publish("edge-verify/back/decision", "{}", qos=1)
        ha.client.publish("edge-verify/front/lock/set", "{}", qos=1)  # the one it reads, after the other
        assert until(lambda: front.payloads("edge-verify/front/lock/set"), 5)
        assert front.payloads("edge-verify/back/decision") == []
    finally:
        ha.close()
        front.close()
        broker.destroy()


def test_a_retained_unlock_command_does_not_open_the_door_on_every_connection(broker, tmp_path):
    """An unlock published with the retain flag (a mistaken automation, or anyone allowed to write
    `…/lock/set` once) is handed to the kiosk again each time it connects: the door opened at every
    restart or broker reconnection, with nobody asking. Only a live command counts."""
    from edge_verify.fleet.link import load
    from edge_verify.fleet.mqtt import MqttLink, unlock_code_hash

    topic = "edge-verify/door-ret/lock/set"
    ha = Subscriber(broker)
    ha.client.publish(topic, '{"action": "UNLOCK", "code": "482913"}', qos=1, retain=True).wait_for_publish(5)
    path = write_mqtt_file(
        tmp_path / "r.toml", broker, "door-ret", remote_unlock_code_sha256=unlock_code_hash("482913")
    )
    _, settings = load(path)
    calls = []
    link = MqttLink(settings, on_unlock=lambda ok, detail: calls.append((ok, detail)) or ok)
    try:
        assert until(lambda: calls, 5)
        assert calls[0][0] is False and "retained" in calls[0][1]  # audited, not opened
        ha.client.publish(topic, '{"action": "UNLOCK", "code": "482913"}', qos=1)  # a live command still works
        assert until(lambda: len(calls) == 2, 5) and calls[1][0] is True
    finally:
        link.close()
        ha.client.publish(topic, "", qos=1, retain=True).wait_for_publish(5)
        ha.close()


def test_a_notification_flood_from_one_kiosk_does_not_make_the_others_hammer_the_centre(fleet):
    """Any role may NOTIFY any channel (and any broker user without the documented ACL may send sync
    hints): a stolen kiosk notifying in a loop made every kiosk pass after pass, as fast as it could."""
    from edge_verify.fleet.sync import PASS_BURST, PASS_RATE

    sync = fleet.sync("b")
    passes = []
    once = sync.sync_once
    sync.sync_once = lambda: passes.append(time.monotonic()) or once()
    stop, thread = running(sync.run)
    try:
        assert until(lambda: passes, 5)
        with psycopg.connect(fleet.files["a"].centre, autocommit=True) as a:
            end = time.monotonic() + 2.0
            while time.monotonic() < end:
                a.execute("SELECT pg_notify('edge_verify_templates', 'hq')")
                sync.wake.set()  # and MQTT hints
                time.sleep(0.002)
    finally:
        stop.set()
        thread.join(10)
        sync.close()
    assert len(passes) <= PASS_BURST + 2.5 * PASS_RATE + 1  # the flood lasted 2 s (and a little)
