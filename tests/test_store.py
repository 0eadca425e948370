"""The SQLite template store: encryption, authentication, atomicity, concurrency."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from edge_verify.errors import (
    FingerprintMismatchError,
    StoreError,
    TemplateIntegrityError,
    UnknownIdentityError,
    UsageError,
)
from edge_verify.store import KEY_ENV, TemplateStore
from tests.conftest import ROOT, random_unit

FP = "f" * 32


def test_round_trip_and_key_file_is_private(store_path):
    vec = random_unit(1, 128)[0]
    with TemplateStore(store_path) as store:
        store.put("alice", vec, FP, 3)
        assert np.array_equal(store.get("alice", FP), vec)
        assert [t.identity for t in store.list()] == ["alice"]
        assert store.list()[0].frames == 3
    key_file = store_path.with_name(store_path.name + ".key")
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    # nothing in the database file is the plain vector
    assert vec.tobytes() not in store_path.read_bytes()


def test_flipped_bit_in_template_is_detected(store_path):
    with TemplateStore(store_path) as store:
        store.put("alice", random_unit(1, 128)[0], FP, 1)
    db = sqlite3.connect(store_path)
    ct = bytearray(db.execute("SELECT ciphertext FROM templates").fetchone()[0])
    ct[17] ^= 0x04
    db.execute("UPDATE templates SET ciphertext = ?", (bytes(ct),))
    db.commit()
    db.close()
    with pytest.raises(TemplateIntegrityError, match="template of 'alice' was changed outside edge-verify"):
        TemplateStore(store_path)
    with TemplateStore(store_path, check_state=False) as store:
        with pytest.raises(TemplateIntegrityError, match="was changed outside edge-verify"):
            store.get("alice", FP)
        assert any("failed authentication" in p for p in store.integrity_check())  # doctor reports it


def test_template_moved_to_another_identity_is_detected(store_path):
    with TemplateStore(store_path) as store:
        store.put("alice", random_unit(1, 128, 1)[0], FP, 1)
        store.put("mallory", random_unit(1, 128, 2)[0], FP, 1)
    db = sqlite3.connect(store_path)
    nonce, ct = db.execute("SELECT nonce, ciphertext FROM templates WHERE identity='mallory'").fetchone()
    db.execute("UPDATE templates SET nonce = ?, ciphertext = ? WHERE identity = 'alice'", (nonce, ct))
    db.commit()
    db.close()
    with pytest.raises(TemplateIntegrityError, match="template of 'alice' was changed"):
        TemplateStore(store_path)
    with TemplateStore(store_path, check_state=False) as store:
        assert "template of 'alice' failed authentication" in " ".join(store.integrity_check())


def test_template_of_other_bundle_asks_for_re_enrolment(store_path):
    with TemplateStore(store_path) as store:
        store.put("alice", random_unit(1, 128)[0], "a" * 32, 1)
        with pytest.raises(FingerprintMismatchError, match="re-enroll"):
            store.get("alice", FP)
        assert store.all_templates(FP) == {}


def test_relabelled_fingerprint_column_fails_authentication(store_path):
    with TemplateStore(store_path) as store:
        store.put("alice", random_unit(1, 128)[0], "a" * 32, 1)
    db = sqlite3.connect(store_path)
    db.execute("UPDATE templates SET fingerprint = ?", (FP,))
    db.commit()
    db.close()
    with pytest.raises(TemplateIntegrityError, match="template of 'alice' was changed"):
        TemplateStore(store_path)
    with TemplateStore(store_path, check_state=False) as store:
        assert "template of 'alice' failed authentication" in " ".join(store.integrity_check())


def test_wrong_key_is_refused(store_path, monkeypatch):
    with TemplateStore(store_path) as store:
        store.put("alice", random_unit(1, 128)[0], FP, 1)
    monkeypatch.setenv(KEY_ENV, os.urandom(32).hex())
    with pytest.raises(TemplateIntegrityError, match="wrong key"):
        TemplateStore(store_path)


def test_malformed_env_key(store_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "not-a-key")
    with pytest.raises(StoreError, match="32 bytes"):
        TemplateStore(store_path)


def test_corrupt_store_file_gives_store_error(store_path):
    store_path.parent.mkdir(parents=True)
    store_path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a valid edge-verify store"):
        TemplateStore(store_path)


def test_unknown_identity_and_remove(store_path):
    with TemplateStore(store_path) as store:
        with pytest.raises(UnknownIdentityError):
            store.get("nobody", FP)
        with pytest.raises(UnknownIdentityError):
            store.remove("nobody")
        store.put("alice", random_unit(1, 8)[0], FP, 1)
        store.remove("alice")
        assert store.list() == []
        with pytest.raises(UsageError):
            store.put("", random_unit(1, 8)[0], FP, 1)


def test_threshold_override_and_audit(store_path):
    with TemplateStore(store_path) as store:
        assert store.threshold(FP) is None
        store.set_threshold(FP, {"threshold": 0.97, "far": 1e-3, "source": "test"})
        assert store.threshold(FP)["threshold"] == 0.97
        audit_id = store.audit("check", FP, True, claimed="alice", score=0.9, threshold=0.7)
        store.record_action(audit_id, "relay", True)
        entry = store.audit_log()[0]
        assert entry.accepted and entry.claimed == "alice" and entry.score == 0.9
        assert store.audit_actions(audit_id) == [("relay", True, "")]
        assert store.reset_threshold(FP) and store.threshold(FP) is None


@pytest.mark.parametrize("edit", ["loosen", "forge_mac", "copy_from_other_bundle"])
def test_threshold_edited_without_the_key_is_refused(store_path, edit):
    """Attack: lower the stored site threshold with sqlite3 (no key); it must never be used."""
    with TemplateStore(store_path) as store:
        store.set_threshold(FP, {"threshold": 0.97, "far": 1e-3, "source": "site"})
        store.set_threshold("e" * 32, {"threshold": 0.5, "far": 1e-1, "source": "other"})
    db = sqlite3.connect(store_path)
    (sealed,) = db.execute("SELECT value FROM meta WHERE key = ?", (f"threshold:{FP}",)).fetchone()
    record = json.loads(sealed)
    if edit == "loosen":
        record["data"] = record["data"].replace("0.97", "-1")
        db.execute("UPDATE meta SET value = ? WHERE key = ?", (json.dumps(record), f"threshold:{FP}"))
    elif edit == "forge_mac":
        record["data"] = record["data"].replace("0.97", "0.5")
        record["mac"] = "0" * 64
        db.execute("UPDATE meta SET value = ? WHERE key = ?", (json.dumps(record), f"threshold:{FP}"))
    else:  # a valid record of another bundle moved onto this one
        (other,) = db.execute("SELECT value FROM meta WHERE key = ?", ("threshold:" + "e" * 32,)).fetchone()
        db.execute("UPDATE meta SET value = ? WHERE key = ?", (other, f"threshold:{FP}"))
    db.commit()
    db.close()
    with pytest.raises(TemplateIntegrityError, match=f"the site calibration of bundle {FP[:12]} was"):
        TemplateStore(store_path)
    with TemplateStore(store_path, check_state=False) as store:
        with pytest.raises(TemplateIntegrityError, match="changed outside edge-verify"):
            store.threshold(FP)
        assert any("changed outside edge-verify" in p for p in store.integrity_check())


def test_template_of_an_older_format_asks_for_re_enrolment(tmp_path):
    """0.1 renormalised multi-frame templates (they score higher): such a template is not used."""
    store_path = tmp_path / "old.db"
    shutil.copy(ROOT / "tests" / "data" / "store_v2.db", store_path)  # bob: 3 frames, astronaut: 1
    db = sqlite3.connect(store_path)
    db.execute("UPDATE templates SET format = 1")
    db.commit()
    db.close()
    with TemplateStore(store_path, key=bytes(range(32))) as store:
        fingerprint = store.list()[0].fingerprint
        with pytest.raises(FingerprintMismatchError, match="older edge-verify"):
            store.get("bob", fingerprint)
        assert store.get("astronaut", fingerprint).shape == (256,)  # one frame: the same vector in both formats


WRITER = """
import sys, numpy as np
from edge_verify.store import TemplateStore
store = TemplateStore(sys.argv[1])
i = 0
while True:
    v = np.random.default_rng(i).normal(size=128).astype(np.float32)
    store.put(f"id{i % 50}", v / np.linalg.norm(v), "f" * 32, 1, replace=True)
    if i == 20:
        print("ready", flush=True)
    i += 1
"""


def test_kill_9_during_enrolment_leaves_store_consistent(store_path):
    with TemplateStore(store_path) as store:
        store.put("alice", random_unit(1, 128)[0], FP, 1)
    for attempt in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(store_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.05 * attempt)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with TemplateStore(store_path) as store:
            assert store.integrity_check() == []
            assert len(store.all_templates(FP)) >= 2  # alice plus the writer's committed ones
            assert "alice" in store.all_templates(FP)


CHECKER = """
import sys, numpy as np
from edge_verify.store import TemplateStore
store = TemplateStore(sys.argv[1])
for i in range(150):
    if sys.argv[2] == "write":
        v = np.random.default_rng(i).normal(size=128).astype(np.float32)
        store.put(f"w{i % 10}", v / np.linalg.norm(v), "f" * 32, 1, replace=True)
    else:
        store.get("alice", "f" * 32)
        store.audit("check", "f" * 32, True, claimed="alice")
print("ok")
"""


def test_concurrent_enrol_and_check(store_path):
    with TemplateStore(store_path) as store:
        store.put("alice", random_unit(1, 128)[0], FP, 1)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHECKER, str(store_path), mode],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for mode in ("write", "read", "write", "read")
    ]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert out.strip() == "ok"
    with TemplateStore(store_path) as store:
        assert len(store.audit_log(1000)) == 601  # 300 checks and 1 + 300 enrolments, each audited
        assert store.integrity_check() == []
