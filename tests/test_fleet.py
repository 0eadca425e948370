"""The fleet against real servers: a PostgreSQL 15 centre and a mosquitto 2 broker started here
(tests/fleet_servers.py), two kiosks of one group (A, B) and one of another (C), each with its own
local store, deciding through the real pipeline."""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_verify.errors import UnknownIdentityError
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
    assert centre.init(authority) == [1]
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


def test_enrol_at_a_admits_at_b_and_removal_refuses_within_2_s(fleet, verifier):
    from edge_verify.fleet.centre import Centre

    b_sync = fleet.sync("b")
    b_sync.sync_once()
    b_store = TemplateStore(fleet.store_path("b"), create=False)
    b_kiosk = kiosk_for(verifier, b_store)
    assert admitted(b_kiosk, CAMERAMAN) == "cameraman"
    assert admitted(b_kiosk, ASTRONAUT) is None
    authority_centre = Centre(fleet.dsn)
    stops = [running(authority_centre.serve, fleet.authority), running(b_sync.run)]
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
        authority_centre.close()
        a_sync.close()
        b_sync.close()
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


def test_a_store_replaced_by_an_older_copy_is_flagged(fleet, tmp_path):
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


def test_unusable_fleet_file_is_a_one_line_error(tmp_path):
    from edge_verify.errors import UsageError
    from edge_verify.fleet.sync import KioskFile

    bad = tmp_path / "kiosk.toml"
    bad.write_text("[fleet]\nkiosk = 'x'\n")
    with pytest.raises(UsageError, match="not a kiosk's fleet file"):
        KioskFile.load(bad)
