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
