"""The store's authenticated state: an attacker with write access to the file but not the key
cannot roll back, re-insert or strip what a decision depends on, nor leave a change half-written."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_verify.bundle import bundle_path, load_bundle
from edge_verify.errors import TemplateIntegrityError
from edge_verify.store import SCHEMA_VERSION, TemplateStore
from tests.conftest import ROOT, SAMPLES, random_unit, run_cli

FP = "f" * 32
ENROL = str(SAMPLES / "astronaut_enroll.jpg")
V2_KEY = bytes(range(32))


def sql(path: Path, *statements: str, params: tuple = ()) -> list[tuple]:
    """Run statements with the sqlite3 module (no key): what an attacker with the file can do."""
    db = sqlite3.connect(path)
    rows = []
    for s in statements:
        rows = db.execute(s, params if "?" in s else ()).fetchall()
    db.commit()
    db.close()
    return rows


def dump_row(path: Path, identity: str) -> tuple[list[str], tuple]:
    db = sqlite3.connect(path)
    cur = db.execute("SELECT * FROM templates WHERE identity = ?", (identity,))
    row, columns = cur.fetchone(), [d[0] for d in cur.description]
    db.close()
    return columns, row


def put_back(path: Path, columns: list[str], row: tuple) -> None:
    marks = ", ".join("?" * len(row))
    sql(path, f"INSERT OR REPLACE INTO templates ({', '.join(columns)}) VALUES ({marks})", params=row)


def refused(path: Path, needle: str) -> None:
    with pytest.raises(TemplateIntegrityError, match=needle):
        TemplateStore(path)


# ---- 1. revocation undone: an old row put back ------------------------------------------------------
def test_removed_template_put_back_is_refused_by_every_command(store_path):
    s = ["--store", str(store_path)]
    assert run_cli("enroll", "astronaut", "--source", ENROL, *s).returncode == 0
    columns, row = dump_row(store_path, "astronaut")
    assert run_cli("remove", "astronaut", *s).returncode == 0
    put_back(store_path, columns, row)
    check = run_cli("check", "astronaut", "--source", str(SAMPLES / "astronaut_check.jpg"), "--liveness", "off", *s)
    assert check.returncode == 10, (check.stdout, check.stderr)
    assert "template of 'astronaut' was removed" in check.stderr and "put back outside edge-verify" in check.stderr
    verify = run_cli("audit", "--verify", *s)
    assert verify.returncode == 10 and "TAMPERED template of 'astronaut' was removed" in verify.stdout, verify.stdout
    doctor = run_cli("doctor", *s)
    assert doctor.returncode != 0 and "FAIL store" in doctor.stdout and "'astronaut' was removed" in doctor.stdout
    assert run_cli("remove", "astronaut", *s).returncode == 0  # the key holder removes it again
    assert run_cli("audit", "--verify", *s).returncode == 0


def test_template_rolled_back_to_an_older_revision_is_refused(store_path):
    with TemplateStore(store_path) as store:
        store.put("alice", random_unit(1, 128, 1)[0], FP, 1)
    old = dump_row(store_path, "alice")
    with TemplateStore(store_path) as store:
        store.put("alice", random_unit(1, 128, 2)[0], FP, 1, replace=True)
    put_back(store_path, *old)
    refused(store_path, r"template of 'alice' is revision \d+, the store's state says \d+")


def test_template_deleted_or_inserted_is_refused(store_path, tmp_path):
    other = tmp_path / "other.db"
    with TemplateStore(store_path) as store, TemplateStore(other, key=b"k" * 32) as foreign:
        store.put("alice", random_unit(1, 128, 1)[0], FP, 1)
        foreign.put("mallory", random_unit(1, 128, 2)[0], FP, 1)
    sql(store_path, "DELETE FROM templates WHERE identity = 'alice'")
    refused(store_path, r"template of 'alice' \(revision \d+\) was deleted outside edge-verify")
    put_back(store_path, *dump_row(other, "mallory"))
    refused(store_path, "template of 'mallory' was inserted outside edge-verify")


def test_state_record_deleted_or_rolled_back_is_refused(store_path):
    with TemplateStore(store_path) as store:
        store.put("alice", random_unit(1, 128, 1)[0], FP, 1)
        (old_state,) = sql(store_path, "SELECT value FROM meta WHERE key = 'state'")[0]
        store.remove("alice")
    sql(store_path, "UPDATE meta SET value = ? WHERE key = 'state'", params=(old_state,))
    refused(store_path, "the list of enrolled templates was replaced or rolled back")
    sql(store_path, "DELETE FROM meta WHERE key = 'state'")
    refused(store_path, "the store's state record was deleted")


def test_a_store_opened_while_tampered_with_refuses_the_template(store_path):
    """The kiosk keeps its store open: a row put back while it runs is refused when it reloads."""
    with TemplateStore(store_path) as store:
        store.put("alice", random_unit(1, 128, 1)[0], FP, 1)
        store.put("bob", random_unit(1, 128, 2)[0], FP, 1)
        columns, row = dump_row(store_path, "alice")
        store.remove("alice")
        put_back(store_path, columns, row)
        with pytest.raises(TemplateIntegrityError, match="'alice' was removed"):
            store.get("alice", FP)
        with pytest.raises(TemplateIntegrityError, match="'alice' was removed"):
            store.all_templates(FP)


# ---- 2. pin stripped, 3. calibration deleted ---------------------------------------------------------
def test_stripped_pin_and_loosened_bundle_are_refused(store_path, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(bundle_path("resnet29"), bundle)
    s = ["--store", str(store_path), "--bundle", str(bundle)]
    assert run_cli("enroll", "astronaut", "--source", ENROL, *s).returncode == 0
    fingerprint = load_bundle(bundle).fingerprint
    sql(store_path, f"DELETE FROM meta WHERE key = 'pin:{fingerprint}'")
    meta = json.loads((bundle / "bundle.json").read_text())
    for point in meta["operating_points"].values():
        point["threshold"] = 0.30
    (bundle / "bundle.json").write_text(json.dumps(meta))
    stranger = run_cli("check", "astronaut", "--source", str(SAMPLES / "cameraman.jpg"), "--liveness", "off", *s)
    assert stranger.returncode == 10, (stranger.stdout, stranger.stderr)
    assert f"the pin of bundle {fingerprint[:12]} was deleted outside edge-verify" in stranger.stderr
    verify = run_cli("audit", "--verify", *s)
    assert verify.returncode == 10 and "TAMPERED the pin of bundle" in verify.stdout
    run_cli("doctor", "--repin", *s)  # the key holder pins the edited bundle on purpose: that settles it
    assert run_cli("audit", "--verify", *s).returncode == 0


def test_deleted_site_calibration_is_not_a_silent_fallback(store_path):
    with TemplateStore(store_path) as store:
        store.set_threshold(FP, {"threshold": 0.97, "far": 1e-5, "source": "site"})
    sql(store_path, f"DELETE FROM meta WHERE key = 'threshold:{FP}'")
    refused(store_path, f"the site calibration of bundle {FP[:12]} was deleted outside edge-verify")
    with TemplateStore(store_path, check_state=False) as store:  # what `calibrate --reset` does
        store.reset_threshold(FP)
    with TemplateStore(store_path) as store:
        assert store.threshold(FP) is None


def test_calibration_rolled_back_to_an_older_record_is_refused(store_path):
    with TemplateStore(store_path) as store:
        store.set_threshold(FP, {"threshold": 0.80, "far": 1e-3, "source": "first"})
        (old,) = sql(store_path, f"SELECT value FROM meta WHERE key = 'threshold:{FP}'")[0]
        store.set_threshold(FP, {"threshold": 0.97, "far": 1e-5, "source": "stricter"})
    sql(store_path, f"UPDATE meta SET value = ? WHERE key = 'threshold:{FP}'", params=(old,))
    refused(store_path, f"the site calibration of bundle {FP[:12]} was replaced or rolled back")


def test_legitimate_changes_keep_the_state_valid(store_path):
    with TemplateStore(store_path) as store:
        store.put("alice", random_unit(1, 128, 1)[0], FP, 1)
        store.set_threshold(FP, {"threshold": 0.9})
        store.reset_threshold(FP)
        store.remove("alice")
        store.put("alice", random_unit(1, 128, 2)[0], FP, 1)
        store.audit("check", FP, True, claimed="alice")
    with TemplateStore(store_path) as store:
        assert store.integrity_check() == []
        assert list(store.all_templates(FP)) == ["alice"]


# ---- 4. a crash between the template write and its audit row -----------------------------------------
CRASH = """
import os, runpy, sqlite3, sys
statement = sys.argv.pop(1)
connect = sqlite3.connect
def crashing(*args, **kwargs):
    conn = connect(*args, **kwargs)
    conn.set_trace_callback(lambda sql: os._exit(9) if sql.lstrip().upper().startswith(statement) else None)
    return conn
sqlite3.connect = crashing
sys.argv[0] = "edge-verify"
runpy.run_module("edge_verify.cli", run_name="__main__")
"""


@pytest.mark.parametrize(
    ("command", "statement"),
    [
        ("enroll", "INSERT OR REPLACE INTO TEMPLATES"),
        ("enroll", "INSERT INTO AUDIT ("),
        ("remove", "DELETE FROM TEMPLATES"),
        ("remove", "INSERT INTO AUDIT ("),
    ],
)
def test_power_cut_between_template_and_audit_row_leaves_nothing_half_written(store_path, command, statement):
    s = ["--store", str(store_path)]
    if command == "remove":
        assert run_cli("enroll", "astronaut", "--source", ENROL, *s).returncode == 0
    else:
        with TemplateStore(store_path):
            pass
    args = ["remove", "astronaut"] if command == "remove" else ["enroll", "astronaut", "--source", ENROL]
    r = subprocess.run(
        [sys.executable, "-c", CRASH, statement, *args, *s], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 9, r.stderr  # the power cut happened at that statement
    with TemplateStore(store_path) as store:
        assert store.integrity_check() == []
        enrolled = [t.identity for t in store.list()]
        commands = [e.command for e in store.audit_log()]
    assert enrolled == (["astronaut"] if command == "remove" else [])  # nothing of the change committed
    assert command not in commands[:-1] if command == "enroll" else commands == ["enroll"]


# ---- the migration from schema 2 ----------------------------------------------------------------------
@pytest.fixture
def v2_store(tmp_path) -> Path:
    """A store written by the schema-2 store of commit 9d11e1c (tests/data/store_v2.db, key 00 01 .. 1f:
    astronaut from 1 frame, bob from 3, a pin, a stricter site calibration, 4 audit rows, 1 action)."""
    path = tmp_path / "store_v2.db"
    shutil.copy(ROOT / "tests" / "data" / "store_v2.db", path)
    path.with_name(path.name + ".key").write_text(V2_KEY.hex() + "\n")
    path.with_name(path.name + ".key").chmod(0o600)
    return path


def test_schema_2_store_is_migrated_in_place(v2_store):
    before = {r[0]: r[1] for r in sql(v2_store, "SELECT identity, ciphertext FROM templates")}
    with TemplateStore(v2_store) as store:
        assert store.integrity_check() == []
        assert sorted(t.identity for t in store.list()) == ["astronaut", "bob"]
        fingerprint = store.list()[0].fingerprint
        assert store.get("astronaut", fingerprint).shape == (256,)
        assert store.threshold(fingerprint)["source"] == "fixture"
        assert [e.command for e in store.audit_log()][:1] == ["migrate"]
    assert sql(v2_store, "SELECT value FROM meta WHERE key = 'schema'") == [(str(SCHEMA_VERSION),)]
    after = {r[0]: r[1] for r in sql(v2_store, "SELECT identity, ciphertext FROM templates")}
    assert before.keys() == after.keys() and all(before[k] != after[k] for k in before)  # re-sealed
    # the fixture pinned the thresholds of its day; the bundle's have been recalibrated since
    assert run_cli("doctor", "--repin", "--store", str(v2_store)).returncode == 0
    check = run_cli(
        "check", "astronaut", "--source", str(SAMPLES / "astronaut_check.jpg"), "--liveness", "off",
        "--store", str(v2_store),
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    assert run_cli("audit", "--verify", "--store", str(v2_store)).returncode == 0


def test_migrated_store_put_back_to_schema_2_is_refused(v2_store):
    """Undoing the migration (schema row set back, state deleted) to re-run it over old rows is caught."""
    with TemplateStore(v2_store) as store:
        store.remove("bob")
    sql(v2_store, "UPDATE meta SET value = '2' WHERE key = 'schema'", "DELETE FROM meta WHERE key = 'state'")
    refused(v2_store, "already upgraded")


def test_schema_2_store_with_a_tampered_chain_is_not_migrated(v2_store):
    sql(v2_store, "UPDATE audit SET accepted = 0 WHERE id = 4")
    refused(v2_store, "audit: row 4 was edited")
    assert sql(v2_store, "SELECT value FROM meta WHERE key = 'schema'") == [("2",)]


def test_state_survives_concurrent_writers_and_readers_unchanged(store_path):
    with TemplateStore(store_path) as a, TemplateStore(store_path) as b:
        for i in range(20):
            a.put(f"a{i}", random_unit(1, 128, i)[0], FP, 1)
            b.audit("check", FP, True)
            assert np.array_equal(b.get(f"a{i}", FP), random_unit(1, 128, i)[0])
            if i % 3 == 0:
                b.remove(f"a{i}")
    with TemplateStore(store_path) as store:
        assert store.integrity_check() == []
