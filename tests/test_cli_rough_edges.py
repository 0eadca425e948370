"""What a new user met on the command line (issue 26): output cut by `| head`, Ctrl-C, default
options that could not work, messages that said too little or named the wrong thing. Each test
runs the real command in a fresh interpreter, as a user would."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from edge_verify.store import TemplateStore
from tests.conftest import ROOT, SAMPLES, make_video, run_cli


def _store(store_path) -> list[str]:
    return ["--store", str(store_path)]


def _popen(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "edge_verify.cli", *args], cwd=ROOT, stderr=subprocess.PIPE, text=True, **kw
    )


@pytest.mark.parametrize("command", ["audit", "bench"])
def test_output_cut_short_by_the_reader_ends_quietly(tmp_path, enrolled_store, verifier, command):
    """`edge-verify audit | head -0`: the reader is gone before the first line; no exit 70, no traceback."""
    if command == "audit":
        for n in range(400):  # well over the 8 KiB that stdout buffers
            enrolled_store.audit("check", verifier.bundle.fingerprint, False, claimed=f"person-{n}", score=0.1)
        args = ["audit", *_store(enrolled_store.path)]
    else:
        video = tmp_path / "v.avi"
        make_video(video, [("astronaut_check.jpg", 2)])
        args = ["bench", "--source", str(video), "--frames", "2", "--liveness", "off"]
    proc = _popen(*args, stdout=subprocess.PIPE)
    proc.stdout.close()  # as `head` does when it has read enough
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert err == ""


def _opened(pid: int, path) -> bool:
    fds = f"/proc/{pid}/fd"
    try:
        return any(os.path.realpath(os.path.join(fds, fd)) == str(path) for fd in os.listdir(fds))
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc to see when the video is being read")
def test_ctrl_c_says_interrupted_exits_130_and_stores_nothing(tmp_path, store_path):
    video = tmp_path / "long.avi"
    make_video(video, [(None, 1500), ("astronaut_check.jpg", 6)])  # the face comes at the very end
    proc = _popen("enroll", "astronaut", "--source", str(video), *_store(store_path), stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not _opened(proc.pid, video.resolve()) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, "enroll ended before it was interrupted"
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert err.strip().splitlines() == ["edge-verify: interrupted; nothing stored"]
    with TemplateStore(store_path) as store:
        assert store.list() == [] and store.integrity_check() == []


def test_doctor_names_a_tampered_audit_row_once(enrolled_store):
    path = enrolled_store.path
    enrolled_store.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE audit SET accepted = 0 WHERE id = 1")
    r = run_cli("doctor", "--json", *_store(path))
    detail = json.loads(r.stdout)["checks"]["store"]["detail"]
    assert "audit: row 1 was edited" in detail and "audit: audit:" not in detail


def test_liveness_events_mode_explains_instead_of_pending(tmp_path):
    video = tmp_path / "face.avi"
    make_video(video, [("astronaut_check.jpg", 10)])
    r = run_cli("liveness", "--source", str(video), "--mode", "events")
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0]
    assert "PENDING" not in r.stdout and "report only" in first and "never passes or fails" in first


def test_identify_on_a_video_or_a_folder_works_with_the_defaults(tmp_path, enrolled_store):
    video = tmp_path / "door.avi"
    make_video(video, [(None, 2), ("astronaut_check.jpg", 6)])
    r = run_cli("identify", "--source", str(video), *_store(enrolled_store.path))
    assert r.returncode == 0, r.stderr
    assert "astronaut (score" in r.stdout
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("astronaut_check.jpg", "cameraman.jpg"):
        (folder / name).write_bytes((SAMPLES / name).read_bytes())
    r = run_cli("identify", "--source", str(folder), "--json", *_store(enrolled_store.path))
    faces = {f["frame"].rsplit("/", 1)[-1]: f["identity"] for f in json.loads(r.stdout)["faces"]}
    assert faces == {"astronaut_check.jpg": "astronaut", "cameraman.jpg": None}  # every photo, not the first


def test_audit_names_the_nearest_identity_of_an_unknown_face(tmp_path, enrolled_store):
    r = run_cli("identify", "--source", str(SAMPLES / "cameraman.jpg"), *_store(enrolled_store.path))
    assert r.returncode == 1 and "unknown (nearest astronaut, score" in r.stdout
    r = run_cli("audit", "--command", "identify", "--json", *_store(enrolled_store.path))
    (row,) = json.loads(r.stdout)["entries"]
    assert row["accepted"] == 0 and row["matched"] == "" and row["detail"] == "nearest astronaut"
    assert float(row["score"]) < float(row["threshold"])


def test_refused_enrolments_are_audited(tmp_path, enrolled_store):
    s = _store(enrolled_store.path)
    wall = tmp_path / "wall.png"
    cv2.imwrite(str(wall), np.full((240, 320, 3), 128, np.uint8))
    assert run_cli("enroll", "bob", "--source", str(wall), *s).returncode == 5
    assert run_cli("enroll", "astronaut", "--source", str(SAMPLES / "astronaut_check.jpg"), *s).returncode == 2
    assert run_cli("enroll", "again", "--source", str(SAMPLES / "astronaut_check.jpg"), *s).returncode == 18
    import edge_verify as ev

    with ev.open_store(enrolled_store.path) as store, pytest.raises(ev.EdgeVerifyError):
        ev.enroll("mixed", [SAMPLES / "astronaut_enroll.jpg", SAMPLES / "cameraman.jpg"], store)
    r = run_cli("audit", "--command", "enroll", "--json", *s)
    refused = [(e["claimed"], e["detail"].split(":")[0]) for e in json.loads(r.stdout)["entries"] if not e["accepted"]]
    assert refused == [
        ("bob", "NoFaceError"),
        ("astronaut", "AlreadyEnrolledError"),
        ("again", "DuplicateIdentityError"),
        ("mixed", "InconsistentEnrolmentError"),
    ]


# -- the kiosk says what it does -----------------------------------------------------------------
def _one_line(r: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and all(n in lines[0] for n in needles), r.stderr
    return lines[0]


def test_kiosk_prints_one_line_per_decision_without_verbose(tmp_path, enrolled_store):
    video = tmp_path / "door.avi"
    make_video(video, [("astronaut_check.jpg", 6), (None, 3), ("cameraman.jpg", 6)])
    r = run_cli(
        "kiosk", "--source", str(video), "--liveness", "off", "--max-frames", "15", *_store(enrolled_store.path)
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    rows = list(reversed(enrolled_store.audit_log(command="kiosk")))
    assert len(lines) == len(rows) + 1 and lines[-1].startswith("kiosk stopped: 15 frames, 2 decisions")
    assert "ACCEPTED astronaut: score" in lines[0] and f"[audit {rows[0].id}]" in lines[0]
    assert "REJECTED unknown face: score" in lines[1] and f"[audit {rows[1].id}]" in lines[1]


def test_kiosk_never_opens_a_camera_nobody_named(tmp_path, enrolled_store):
    r = run_cli("kiosk", *_store(enrolled_store.path), timeout=60)  # today it opened camera 0 and waited
    _one_line(r, 2, "kiosk needs --source", "0 for the first camera")
    config = tmp_path / "k.toml"
    config.write_text("[kiosk]\nliveness = 'off'\n")
    r = run_cli("kiosk", "--config", str(config), *_store(enrolled_store.path))
    _one_line(r, 2, "k.toml: no source set", "--source")


@pytest.fixture
def pi_config_store(store_path):
    """The shipped Raspberry Pi configuration's identity ('alice') enrolled from the sample photo."""
    r = run_cli("enroll", "alice", "--source", str(SAMPLES / "astronaut_enroll.jpg"), *_store(store_path))
    assert r.returncode == 0, r.stderr
    return store_path


PI_CONFIG = ROOT / "firmware_examples" / "raspberry_pi" / "kiosk.toml"


def _laptop_env() -> dict:
    """This machine has no GPIO; no pin factory chosen in advance."""
    return {k: v for k, v in os.environ.items() if k != "GPIOZERO_PIN_FACTORY"}


def test_shipped_pi_config_tried_on_a_laptop(tmp_path, pi_config_store):
    """The README's way to try firmware_examples/raspberry_pi/kiosk.toml without a Pi: --dry-run
    simulates its relay and LED pins; --no-relay / --relay-pin none leave them out."""
    pytest.importorskip("gpiozero")
    video = tmp_path / "door.avi"
    make_video(video, [("astronaut_check.jpg", 6)])
    common = ["kiosk", "--config", str(PI_CONFIG), "--source", str(video), "--liveness", "off", "--max-frames", "6"]
    common += _store(pi_config_store)
    r = subprocess.run(
        [sys.executable, "-m", "edge_verify.cli", *common], capture_output=True, text=True, cwd=ROOT, env=_laptop_env()
    )
    _one_line(r, 2, "relay_pin 17: no usable GPIO here", "--no-relay", "--dry-run")  # and no gpiozero warnings
    r = subprocess.run(
        [sys.executable, "-m", "edge_verify.cli", *common, "--dry-run"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_laptop_env(),
    )
    assert r.returncode == 0, r.stderr
    assert "ACCEPTED alice" in r.stdout and "relay (simulated pins)" in r.stdout
    r = subprocess.run(
        [sys.executable, "-m", "edge_verify.cli", *common],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**_laptop_env(), "GPIOZERO_PIN_FACTORY": "mock"},  # the README's other way: gpiozero's own switch
    )
    assert r.returncode == 0, r.stderr
    assert "ACCEPTED alice" in r.stdout and "; relay [audit" in r.stdout
    r = subprocess.run(
        [sys.executable, "-m", "edge_verify.cli", *common, "--relay-pin", "none", "--no-led"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_laptop_env(),
    )
    assert r.returncode == 0, r.stderr
    assert "ACCEPTED alice" in r.stdout and "relay" not in r.stdout


def test_webhook_host_on_the_command_line(tmp_path, enrolled_store):
    video = tmp_path / "door.avi"
    make_video(video, [("astronaut_check.jpg", 6)])
    args = [
        "kiosk",
        "--source",
        str(video),
        "--liveness",
        "off",
        "--max-frames",
        "6",
        "--webhook",
        "http://127.0.0.2:9/d",
    ]
    r = run_cli(*args, *_store(enrolled_store.path))
    _one_line(r, 2, "kiosk setting webhook", "webhook_allow_hosts", "--webhook-allow-host 127.0.0.2")
    r = run_cli(*args, "--webhook-allow-host", "127.0.0.2", *_store(enrolled_store.path))
    assert r.returncode == 0, r.stderr
    assert "ACCEPTED astronaut" in r.stdout and "webhook for decision" in r.stderr  # allowed, tried, refused there
    r = run_cli("audit", "--command", "kiosk", *_store(enrolled_store.path))
    header, row = r.stdout.splitlines()
    assert header.endswith("\tactions") and row.split("\t")[-1].startswith("webhook FAILED (ConnectionError")


def test_opencv_says_nothing_around_the_one_line_error(tmp_path, enrolled_store):
    broken = tmp_path / "clip.mp4"
    broken.write_bytes(b"not a video at all" * 100)
    for source in (str(broken), "9"):
        r = run_cli("check", "astronaut", "--source", source, "--timeout", "1", *_store(enrolled_store.path))
        _one_line(r, 13, "cannot open")


# -- enrolment says what it took ------------------------------------------------------------------
@pytest.fixture
def six_photos(tmp_path):
    """Five usable photos of the sample person (two photos at three sizes) and a wall."""
    folder = tmp_path / "alice"
    folder.mkdir()
    photos = [cv2.imread(str(SAMPLES / n)) for n in ("astronaut_enroll.jpg", "astronaut_check.jpg")]
    for i, scale in enumerate((1.0, 1.0, 0.8, 0.8, 0.9)):
        cv2.imwrite(str(folder / f"{i + 1}.jpg"), cv2.resize(photos[i % 2], None, fx=scale, fy=scale))
    cv2.imwrite(str(folder / "6_wall.jpg"), np.full((300, 300, 3), 128, np.uint8))
    return folder


def test_folder_enrolment_names_the_photo_it_skipped_and_why(six_photos, store_path):
    r = run_cli("enroll", "alice", "--source", str(six_photos), *_store(store_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("enrolled alice from 5 frame(s), skipped 1")
    assert "skipped " + str(six_photos / "6_wall.jpg") + ": no face found" in r.stdout
    r = run_cli("enroll", "bob", "--source", str(six_photos), "--frames", "4", "--force", "--json", *_store(store_path))
    data = json.loads(r.stdout)
    assert data["frames_used"] == 4 and data["not_read"] == [str(six_photos / n) for n in ("5.jpg", "6_wall.jpg")]


def test_video_enrolment_says_which_face_it_took(tmp_path, store_path):
    video = tmp_path / "hello.avi"
    make_video(video, [(None, 2), ("astronaut_check.jpg", 6)])
    r = run_cli("enroll", "alice", "--source", str(video), *_store(store_path))
    assert r.returncode == 0, r.stderr
    took = r.stdout.splitlines()[-1]
    assert took.startswith("  took the face at (") and f"in {video}#2 to {video}#6" in took


def test_kiosk_without_picamera2_says_so_and_stops(enrolled_store):
    """The Pi's `source = "picamera2"` on a laptop: one line and exit 13, not a retry every 2 s forever."""
    import importlib.util

    if importlib.util.find_spec("picamera2") is not None:
        pytest.skip("picamera2 is installed here")
    r = run_cli("kiosk", "--source", "picamera2", *_store(enrolled_store.path), timeout=60)
    _one_line(r, 13, "picamera2 is not installed")
