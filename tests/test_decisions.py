"""A stranger never gets in: mean-score decisions on tracked faces, consistent enrolment, guarded
thresholds, protected decision parameters, revocation, audit before action. Each attack is a test."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_verify.bundle import load_bundle
from edge_verify.kiosk import Action, Kiosk, KioskConfig
from edge_verify.matcher import Gallery, identify, mean_template, score, unit, verify
from edge_verify.operating import ThresholdChoice, gallery_threshold
from edge_verify.store import TemplateStore
from edge_verify.track import Tracker
from tests.conftest import SAMPLES, make_video, random_unit, run_cli


def _s(store_path):
    return ["--store", str(store_path)]


def _photo_folder(tmp_path, names):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, name in enumerate(names):
        shutil.copy(SAMPLES / name, folder / f"{i}_{name}")
    return folder


# -- the statistic --------------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(0, 10_000))
def test_score_is_the_mean_cosine_of_the_probe_frames_with_the_template_direction(e, k, seed):
    enrol, probes = random_unit(e, 16, seed), random_unit(k, 16, seed + 1)
    direction = enrol.mean(0) / np.linalg.norm(enrol.mean(0))
    expected = np.mean([float(p @ direction) for p in probes])
    assert score(probes, mean_template(enrol)) == pytest.approx(expected, abs=1e-6)
    gallery = Gallery({"x": mean_template(enrol)})
    assert gallery.scores(probes)[0] == pytest.approx(expected, abs=1e-6)
    assert gallery.best(probes, 1)[0][1] == pytest.approx(score(probes, mean_template(enrol)), abs=1e-12)


def test_one_lucky_frame_does_not_decide(verifier):
    """The old rule took the best frame: one impostor frame above threshold opened the door."""
    template = mean_template(random_unit(1, 128, 0))
    lucky = unit(template)[0] * 0.97 + unit(random_unit(1, 128, 9))[0] * 0.24
    others = random_unit(2, 128, 3)
    probes = np.vstack([unit(lucky), others])
    assert float(unit(lucky)[0] @ unit(template)[0]) > 0.95  # that frame alone would pass
    assert not verify(probes, template, 0.9466, "x").accepted


def test_identify_needs_a_margin_and_a_gallery_aware_threshold():
    a, b = random_unit(2, 64, 5)
    close = unit(a + 0.01 * b)[0]
    gallery = Gallery({"a": mean_template(a[None]), "a_twin": mean_template(close[None])})
    probe = unit(a + 0.001 * b)
    assert not identify(probe, gallery, 0.9, margin=0.02).accepted  # two near-identical candidates
    assert identify(probe, gallery, 0.9, margin=0.0).identity == "a"
    curve = ((1e-2, 0.93, True), (1e-3, 0.9466, True), (1e-4, 0.9532, True), (1e-5, 0.954, False))
    base = ThresholdChoice(0.9466, "default", 1e-3, curve=curve)
    values = [gallery_threshold(base, n, 0.02) for n in (1, 10, 100, 1000)]
    assert [v.value for v in values] == [0.9466, 0.9532, 0.954, 0.954]
    assert [v.far_resolved for v in values] == [True, True, False, False]


# -- tracks ---------------------------------------------------------------------------------------
def test_alternating_people_never_form_one_track(verifier):
    a = verifier.embed_image(SAMPLES / "astronaut_check.jpg")
    c = verifier.embed_image(SAMPLES / "cameraman.jpg")
    tracker = Tracker(verifier.continuity)
    box = (100.0, 100.0, 120.0, 120.0)
    for frame in range(12):
        tracker.update(frame, [(box, a if frame % 2 == 0 else c)])
    assert tracker.cuts == 11
    assert max(len(t.embeddings) for t in tracker.tracks) == 1


def test_a_decision_uses_frames_of_one_person_only(tmp_path, store_path):
    """Two people take turns in front of the camera: the decision averages one person's frames."""
    s = _s(store_path)
    assert run_cli("enroll", "astronaut", "--source", str(SAMPLES / "astronaut_enroll.jpg"), *s).returncode == 0
    video = tmp_path / "swap.avi"
    make_video(video, [("cameraman.jpg", 1), ("astronaut_check.jpg", 1)] * 10)
    r = run_cli("check", "astronaut", "--source", str(video), "--json", *s)
    data = json.loads(r.stdout)
    assert data["frames_used"] == 3 and len({int(f.rsplit("#", 1)[1]) % 2 for f in data["frames"]}) == 1
    alone = tmp_path / "one.avi"
    make_video(alone, [("cameraman.jpg", 6)])
    r2 = run_cli("check", "astronaut", "--source", str(alone), "--json", *s)
    assert r.returncode == r2.returncode == 1  # the cameraman's track decided first: rejected
    assert json.loads(r2.stdout)["score"] == pytest.approx(data["score"], abs=1e-3)


# -- enrolment ------------------------------------------------------------------------------------
def test_mixed_person_enrolment_is_refused_and_names_the_odd_frames(tmp_path, store_path):
    folder = _photo_folder(tmp_path, ["astronaut_enroll.jpg", "astronaut_check.jpg", "cameraman.jpg"])
    r = run_cli("enroll", "mixed", "--source", str(folder), *_s(store_path))
    assert r.returncode == 17 and "do not show one person" in r.stderr and "cameraman.jpg" in r.stderr
    assert "astronaut_check" not in r.stderr.split(":", 2)[-1].split("disagree")[1]
    assert json.loads(run_cli("list", "--json", *_s(store_path)).stdout)["identities"] == []


def test_enrolment_that_matches_someone_enrolled_needs_force(store_path):
    s = _s(store_path)
    assert run_cli("enroll", "astronaut", "--source", str(SAMPLES / "astronaut_enroll.jpg"), *s).returncode == 0
    r = run_cli("enroll", "eileen", "--source", str(SAMPLES / "astronaut_check.jpg"), *s)
    assert r.returncode == 18 and "astronaut" in r.stderr and "--force" in r.stderr
    r = run_cli("enroll", "eileen", "--source", str(SAMPLES / "astronaut_check.jpg"), "--force", "--json", *s)
    assert r.returncode == 0 and json.loads(r.stdout)["matches_enrolled"][0]["identity"] == "astronaut"


def test_enrolment_from_a_camera_needs_three_good_frames(monkeypatch, store_path, capsys):
    from edge_verify import cli, sources

    class TwoFrameCamera(sources.ImageSource):
        live = True

    monkeypatch.setattr(
        sources,
        "open_source",
        lambda spec, timeout_s=5.0: TwoFrameCamera([SAMPLES / "astronaut_enroll.jpg"] * 2, "camera 0"),
    )
    code = cli.main(["enroll", "alice", "--source", "0", "--timeout", "0.5", *_s(store_path)])
    assert code == 5 and "needs at least 3" in capsys.readouterr().err


# -- thresholds -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, code, needle",
    [
        (["--threshold=-1"], 2, "threshold must be in (0, 1]"),
        (["--threshold", "0.5"], 2, "looser than the bundle's 'default'"),
        (["--operating-point", "lenient"], 2, "no operating point 'lenient'"),
    ],
)
def test_threshold_options_are_validated(store_path, args, code, needle):
    s = _s(store_path)
    run_cli("enroll", "astronaut", "--source", str(SAMPLES / "astronaut_enroll.jpg"), *s)
    r = run_cli("check", "astronaut", "--source", str(SAMPLES / "cameraman.jpg"), *args, *s)
    assert r.returncode == code and needle in r.stderr, r.stderr


def test_explicitly_looser_threshold_and_named_points(store_path):
    s = _s(store_path)
    run_cli("enroll", "astronaut", "--source", str(SAMPLES / "astronaut_enroll.jpg"), *s)
    r = run_cli(
        "check", "astronaut", "--source", str(SAMPLES / "cameraman.jpg"), "--threshold", "0.5", "--allow-looser", *s
    )
    assert r.returncode == 0  # the operator asked for it in so many words
    r = run_cli(
        "check",
        "astronaut",
        "--source",
        str(SAMPLES / "astronaut_check.jpg"),
        "--operating-point",
        "strict",
        "--json",
        *s,
    )
    strict = load_bundle().operating_point("strict").threshold
    assert r.returncode == 0 and json.loads(r.stdout)["threshold"] == strict


@pytest.mark.parametrize(
    "line, needle",
    [
        ('threshold = "0.5"', "threshold"),
        ("threshold = -1.0", "threshold must be in (0, 1]"),
        ("threshold = 0.5", "looser than the bundle's"),
        ('debounce = "3"', "debounce"),
        ("cooldown_s = -5.0", "must be between 0 and 86400"),
        ('identity = ""', "identity is empty"),
    ],
)
def test_kiosk_config_is_validated_at_start(tmp_path, store_path, line, needle):
    run_cli("enroll", "astronaut", "--source", str(SAMPLES / "astronaut_enroll.jpg"), *_s(store_path))
    video = tmp_path / "v.avi"
    make_video(video, [("astronaut_check.jpg", 3)])
    config = tmp_path / "k.toml"
    config.write_text(f"[kiosk]\nsource = '{video}'\nmax_frames = 3\nliveness = 'off'\n{line}\n")
    r = run_cli("kiosk", "--config", str(config), *_s(store_path))
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr


# -- protected decision parameters ---------------------------------------------------------------
def test_edited_bundle_thresholds_are_refused(tmp_path, store_path):
    """Attack: lower the default threshold in bundle.json (no hash covers it): the store's pin
    notices, `doctor` says so, and nothing is decided until the change is accepted on purpose."""
    from edge_verify.bundle import bundle_path

    bundle = tmp_path / "bundle"
    shutil.copytree(bundle_path("resnet29"), bundle)
    s = [*_s(store_path), "--bundle", str(bundle)]
    assert run_cli("enroll", "astronaut", "--source", str(SAMPLES / "astronaut_enroll.jpg"), *s).returncode == 0
    meta = json.loads((bundle / "bundle.json").read_text())
    meta["operating_points"]["default"]["threshold"] = 0.01
    (bundle / "bundle.json").write_text(json.dumps(meta))
    r = run_cli("check", "astronaut", "--source", str(SAMPLES / "cameraman.jpg"), *s)
    assert r.returncode == 8 and "pinned" in r.stderr
    r = run_cli("doctor", "--json", *s)
    assert r.returncode == 3 and not json.loads(r.stdout)["checks"]["decision"]["ok"]
    meta["operating_points"]["default"]["threshold"] = -1
    (bundle / "bundle.json").write_text(json.dumps(meta))
    r = run_cli("check", "astronaut", "--source", str(SAMPLES / "cameraman.jpg"), *s)
    assert r.returncode == 8 and "threshold must be in (0, 1]" in r.stderr


def test_edited_store_threshold_is_refused_by_check_and_doctor(store_path):
    s = _s(store_path)
    run_cli("enroll", "astronaut", "--source", str(SAMPLES / "astronaut_enroll.jpg"), *s)
    from edge_verify.bundle import load_bundle

    fp = load_bundle().fingerprint
    with TemplateStore(store_path) as store:
        store.set_threshold(fp, {"threshold": 0.97, "far": 1e-4, "source": "site"})
    db = sqlite3.connect(store_path)
    db.execute("UPDATE meta SET value = ? WHERE key = ?", (json.dumps({"threshold": -1}), f"threshold:{fp}"))
    db.commit()
    db.close()
    r = run_cli("check", "astronaut", "--source", str(SAMPLES / "cameraman.jpg"), *s)
    assert r.returncode == 10 and "changed outside edge-verify" in r.stderr
    r = run_cli("doctor", "--json", *s)
    assert r.returncode == 3 and not json.loads(r.stdout)["checks"]["store"]["ok"]
    assert run_cli("calibrate", "--reset", *s).returncode == 0
    assert run_cli("check", "astronaut", "--source", str(SAMPLES / "astronaut_check.jpg"), *s).returncode == 0


# -- the kiosk ------------------------------------------------------------------------------------
def test_removed_identity_is_not_admitted_by_a_running_kiosk_within_a_second(tmp_path, verifier, enrolled_store):
    video = tmp_path / "door.avi"
    make_video(video, [("astronaut_check.jpg", 400)])
    config = KioskConfig(
        source=str(video), liveness="off", identity="astronaut", debounce=1, cooldown_s=0, reconnect_s=0.01
    )
    kiosk = Kiosk(config, verifier, enrolled_store, [])
    stop = threading.Event()
    worker = threading.Thread(target=kiosk.run, args=(stop,))
    worker.start()
    try:
        deadline = time.time() + 30
        while sum(e.accepted for e in kiosk.events) < 3 and time.time() < deadline:
            time.sleep(0.01)
        with TemplateStore(enrolled_store.path) as other:  # another process: `edge-verify remove astronaut`
            other.remove("astronaut")
        removed_at = time.time()
        frames_then = kiosk.frames
        while kiosk.frames < frames_then + 20 and time.time() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        worker.join(timeout=30)
    assert sum(e.accepted for e in kiosk.events) >= 3
    late = [e for e in kiosk.events if e.accepted and e.time > removed_at + 1.0]
    assert late == [] and kiosk.reloads >= 1
    assert kiosk.frames >= frames_then + 20  # it kept running and deciding: rejections after removal
    assert not kiosk.events[-1].accepted


class RecordingAction(Action):
    """Reads the audit table through its own connection at the moment it would open the door."""

    name = "probe"

    def __init__(self, path):
        self.path = path
        self.seen: list[tuple] = []

    def fire(self, event):
        db = sqlite3.connect(self.path)
        self.seen.append(db.execute("SELECT id, accepted FROM audit WHERE id = ?", (event.audit_id,)).fetchone())
        db.close()
        return True


class BrokenAction(Action):
    name = "webhook"

    def fire(self, event):
        raise ConnectionResetError("receiver hung up")


def test_audit_row_is_committed_before_any_action_and_failures_are_recorded(tmp_path, verifier, enrolled_store):
    video = tmp_path / "door.avi"
    make_video(video, [("astronaut_check.jpg", 6), ("cameraman.jpg", 6)])
    probe = RecordingAction(enrolled_store.path)
    config = KioskConfig(
        source=str(video), liveness="off", identity="astronaut", debounce=3, cooldown_s=100, max_frames=12
    )
    kiosk = Kiosk(config, verifier, enrolled_store, [BrokenAction(), probe])
    kiosk.run(threading.Event())
    assert [e.accepted for e in kiosk.events] == [True, False]
    assert probe.seen == [(e.audit_id, int(e.accepted)) for e in kiosk.events]  # visible to another reader
    for e in kiosk.events:
        assert enrolled_store.audit_actions(e.audit_id) == [
            ("webhook", False, "ConnectionResetError: receiver hung up"),
            ("probe", True, ""),
        ]
