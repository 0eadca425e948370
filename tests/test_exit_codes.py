"""The exit codes no other test produced: 7 (quality gate), 14 (no interpreter backend), 130 (Ctrl-C).
docs/commands/exit-codes.md names, for every code, the test that produces it (tests/test_docs.py checks)."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

from tests.conftest import ROOT, SAMPLES, make_video, run_cli


def test_quality_gate_exit_code(tmp_path):
    dark = tmp_path / "dark.png"
    cv2.imwrite(str(dark), (cv2.imread(str(SAMPLES / "astronaut_check.jpg")) * 0.12).astype("uint8"))
    r = run_cli("compare", str(SAMPLES / "astronaut_enroll.jpg"), str(dark))
    assert r.returncode == 7 and "rejected by the quality gate" in r.stderr and "too dark" in r.stderr, r.stderr


def test_missing_backend_exit_code():
    if importlib.util.find_spec("tflite_runtime") is not None:
        pytest.skip("tflite_runtime is installed here: asking for it does not fail")
    r = run_cli(
        "compare", str(SAMPLES / "astronaut_enroll.jpg"), str(SAMPLES / "cameraman.jpg"), "--backend", "tflite_runtime"
    )
    assert r.returncode == 14 and "no TFLite backend could be imported" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def _has_open(pid: int, path: Path) -> bool:
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == str(path) for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:  # the process is gone, or a descriptor closed while we looked
        return False


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to see when the video is open")
def test_ctrl_c_exit_code(tmp_path):
    """SIGINT (Ctrl-C) while a command works: exit 130, one line, no traceback."""
    video = tmp_path / "long.avi"
    make_video(video, [("astronaut_check.jpg", 300)])
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_verify.cli", "bench", "--source", str(video), "--frames", "300"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not _has_open(proc.pid, video):  # the command is reading frames: past start-up, inside main()
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err
