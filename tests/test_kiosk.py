"""The kiosk loop for real: a generated video as the camera, gpiozero's MockFactory as the pins,
a local HTTP receiver as the webhook, SIGTERM for shutdown."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from edge_verify.errors import UsageError
from edge_verify.kiosk import Kiosk, KioskConfig, build_actions
from edge_verify.store import TemplateStore
from tests.conftest import ROOT, SAMPLES, make_video

gpiozero = pytest.importorskip("gpiozero")


class Receiver:
    """A local webhook receiver on 127.0.0.1 collecting JSON bodies."""

    def __init__(self):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/door"

    def close(self):
        self.server.shutdown()


def test_enrolled_face_pulses_relay_and_webhook_once_per_cooldown(tmp_path, verifier, enrolled_store, pins):
    video = tmp_path / "door.avi"
    make_video(video, [(None, 3), ("astronaut_check.jpg", 30), (None, 3), ("cameraman.jpg", 12)])
    receiver = Receiver()
    config = KioskConfig(
        source=str(video),
        liveness="off",
        identity="astronaut",
        debounce=3,
        cooldown_s=10,
        relay_pin=17,
        relay_pulse_s=0.01,
        webhook=receiver.url,
        max_frames=48,
    )
    kiosk = Kiosk(config, verifier, enrolled_store, build_actions(config))
    kiosk.clock = lambda: float(kiosk.frames)  # the video as a 1 frame/s camera: deterministic cooldown
    kiosk.run(threading.Event())
    time.sleep(0.2)  # let the last background relay pulse finish
    receiver.close()

    accepted = [e for e in kiosk.events if e.accepted]
    rejected = [e for e in kiosk.events if not e.accepted]
    # 30 s of the enrolled face, debounce 3, cooldown 10 s: fires at 6, 16, 26 s -> 3 times
    assert len(accepted) == 3 and all(e.identity == "astronaut" for e in accepted)
    assert len(rejected) == 1  # the stranger: one rejection within the cooldown, no pulse
    states = [s.state for s in pins.pin(17).states]
    assert states == [False] + [True, False] * 3
    assert [b["accepted"] for b in receiver.received] == [True, True, True, False]
    audit = enrolled_store.audit_log(command="kiosk")
    assert [a.accepted for a in reversed(audit)] == [True, True, True, False]


def test_stranger_never_opens_the_door(tmp_path, verifier, enrolled_store, pins):
    video = tmp_path / "stranger.avi"
    make_video(video, [("cameraman.jpg", 20)])
    config = KioskConfig(source=str(video), liveness="off", debounce=2, cooldown_s=5, relay_pin=17, max_frames=20)
    kiosk = Kiosk(config, verifier, enrolled_store, build_actions(config))
    kiosk.run(threading.Event())
    assert kiosk.events and not any(e.accepted for e in kiosk.events)
    assert [s.state for s in pins.pin(17).states] == [False]


def test_camera_that_disappears_and_comes_back(tmp_path, verifier, enrolled_store, monkeypatch):
    import edge_verify.kiosk

    monkeypatch.setattr(edge_verify.kiosk, "RECENT_EVENTS", 4)  # memory stays bounded however long it runs
    video = tmp_path / "cam.avi"
    make_video(video, [("astronaut_check.jpg", 5)])
    saved = video.read_bytes()
    config = KioskConfig(
        source=str(video),
        liveness="off",
        identity="astronaut",
        debounce=1,
        cooldown_s=0,
        reconnect_s=0.05,
        max_frames=15,
    )
    kiosk = Kiosk(config, verifier, enrolled_store, [])
    worker = threading.Thread(target=kiosk.run, args=(threading.Event(),))
    worker.start()
    deadline = time.time() + 30
    while kiosk.frames < 5 and time.time() < deadline:
        time.sleep(0.01)
    video.unlink()  # the camera goes away
    while kiosk.reconnects < 4 and time.time() < deadline:
        time.sleep(0.01)
    assert kiosk.status["state"] in ("camera lost", "waiting for a face")
    video.write_bytes(saved)  # and comes back
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert kiosk.frames == 15 and kiosk.reconnects >= 4
    assert kiosk.accepted >= 10 and kiosk.decisions >= kiosk.accepted and len(kiosk.events) == 4
    assert all(e.accepted for e in kiosk.events) and kiosk.events[-1].audit_id == enrolled_store.audit_log()[0].id


def test_status_page(tmp_path, verifier, enrolled_store):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    video = tmp_path / "v.avi"
    make_video(video, [("astronaut_check.jpg", 5)])
    stop = threading.Event()
    config = KioskConfig(
        source=str(video), liveness="off", identity="astronaut", debounce=1, status_port=port, reconnect_s=0.05
    )
    kiosk = Kiosk(config, verifier, enrolled_store, [])
    worker = threading.Thread(target=kiosk.run, args=(stop,))
    worker.start()
    try:
        deadline = time.time() + 30
        while not kiosk.events and time.time() < deadline:
            time.sleep(0.05)
        status = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5).read())
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
    finally:
        stop.set()
        worker.join(timeout=30)
    assert status["state"] in ("ACCEPTED", "deciding") and "edge-verify kiosk" in page


def test_sigterm_stops_cleanly_and_store_stays_intact(tmp_path, store_path, verifier):
    video = tmp_path / "loop.avi"
    make_video(video, [("astronaut_check.jpg", 20)])
    with TemplateStore(store_path) as store:
        store.put("astronaut", verifier.embed_image(SAMPLES / "astronaut_enroll.jpg"), verifier.bundle.fingerprint, 1)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_verify.cli",
            "kiosk",
            "--source",
            str(video),
            "--store",
            str(store_path),
            "--debounce",
            "1",
            "--cooldown",
            "0",
            "--liveness",
            "off",
            "-v",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in proc.stderr:
            if "ACCEPTED" in line:
                break
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0
    *decisions, summary = out.splitlines()
    assert summary.startswith("kiosk stopped:") and decisions and all("ACCEPTED astronaut" in d for d in decisions)
    with TemplateStore(store_path) as store:
        assert store.integrity_check() == []
        assert any(e.command == "kiosk" and e.accepted for e in store.audit_log())


def test_unknown_identity_and_bad_config_fail_fast(tmp_path, store_path):
    from edge_verify.store import TemplateStore
    from tests.conftest import run_cli

    TemplateStore(store_path).close()
    r = run_cli("kiosk", "--identity", "nobody", "--source", "0", "--store", str(store_path))
    assert r.returncode == 11 and "not enrolled" in r.stderr
    bad = tmp_path / "k.toml"
    bad.write_text("[kiosk]\nsource = '0'\ncolour = 'red'\n")
    r = run_cli("kiosk", "--config", str(bad), "--store", str(store_path))
    assert r.returncode == 2 and "unknown kiosk settings ['colour']" in r.stderr


def test_audit_csv_export(tmp_path, enrolled_store, verifier):
    from tests.conftest import run_cli

    enrolled_store.audit("kiosk", verifier.bundle.fingerprint, True, matched="astronaut", score=0.97, threshold=0.9)
    out = tmp_path / "attendance.csv"
    r = run_cli("audit", "--csv", str(out), "--command", "kiosk", "--store", str(enrolled_store.path))
    assert r.returncode == 0, r.stderr
    rows = out.read_text().splitlines()
    assert rows[0].startswith("time,command,claimed,matched,score")
    assert ",kiosk,,astronaut,0.9700,0.9000,1," in rows[1]


def test_status_is_strict_json_when_a_liveness_check_fails(tmp_path, verifier, enrolled_store):
    """A rejection before any score (a photo held up: no reaction) has no score; /status sends
    null for it, not NaN, which a browser's JSON parser refuses (the page then showed nothing)."""
    import socket

    from edge_verify.sources import open_source

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    video = tmp_path / "photo.avi"
    make_video(video, [("astronaut_check.jpg", 60)])
    config = KioskConfig(source=str(video), identity="astronaut", liveness_step_timeout_s=1.0, status_port=port)
    kiosk = Kiosk(config, verifier, enrolled_store, [])
    server = kiosk._start_status_server()
    try:
        with open_source(str(video)) as source:
            for frame in source:
                if kiosk.process(frame.image, frame.name, frame.time):
                    break
        raw = urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5).read()
        shown = _status_page_text(f"http://127.0.0.1:{port}/")
    finally:
        server.shutdown()
        server.server_close()

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    status = json.loads(raw, parse_constant=refuse)  # as strict as JSON.parse in the page
    assert status["state"] == "REJECTED" and status["score"] is None
    assert status["liveness"].startswith("challenge failed")
    if shown is not None:  # the page itself, in a real browser, shows the rejection and why
        assert shown[0] == "REJECTED" and shown[1].startswith("challenge failed"), shown


def _status_page_text(url: str) -> tuple[str, str] | None:
    """(headline, detail) of the status page in Debian's chromium once it has read /status; None
    where Playwright or chromium is not installed."""
    import importlib.util
    import os

    if importlib.util.find_spec("playwright") is None or not os.path.exists("/usr/bin/chromium"):
        return None
    from playwright import sync_api

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium")
        try:
            page = browser.new_page()
            page.goto(url)
            page.wait_for_function("document.getElementById('s').textContent !== '…'", timeout=10000)
            return page.inner_text("#s"), page.inner_text("#d")
        finally:
            browser.close()


def test_a_camera_stream_anyone_on_the_network_can_replace_is_refused(tmp_path, store_path, enrolled_store):
    """An rtsp:// or http:// camera travels in the clear: whoever sits on that network (a switch port
    in the lobby, a spoofed address) can put a recording or a puppet in its place, and no liveness cue
    can tell an injected picture from the camera's. The kiosk refuses it unless told the network is
    the door's alone; TLS streams, wired cameras and files are taken as before."""
    from tests.conftest import run_cli

    enrolled_store.close()
    try:
        r = run_cli("kiosk", "--source", "rtsp://door:s3cret@192.0.2.10/cam", "--store", str(store_path), timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the kiosk kept trying to open an unencrypted stream instead of refusing it")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "unencrypted rtsp stream" in lines[0] and "allow_unencrypted_camera" in lines[0]
    assert "s3cret" not in r.stderr + r.stdout
    toml = tmp_path / "k.toml"
    toml.write_text('[kiosk]\nsource = "http://192.168.1.20/video.mjpg"\n')
    r = run_cli("kiosk", "--config", str(toml), "--store", str(store_path), timeout=60)
    assert r.returncode == 2 and "unencrypted http stream" in r.stderr
    for source in ("srtp://10.0.0.5:5004", " RTSP://cam/1", "udp://0.0.0.0:5000", "rtsp://127.0.0.2.evil.example/c"):
        with pytest.raises(UsageError, match="unencrypted"):
            KioskConfig(source=source)
    ok = ("rtsps://10.0.0.5/cam", "https://cam.local/video.mjpg", "0", "/dev/video0", "door.mp4")
    ok += ("rtsp://127.0.0.1:8554/cam", "http://localhost:1984/api/stream.mjpeg", "rtsp://[::1]/cam")  # restreamers
    for source in ok:
        assert KioskConfig(source=source).source == source
    assert KioskConfig(source="rtsp://127.0.0.1/cam", allow_unencrypted_camera=True).allow_unencrypted_camera


def test_a_removal_committed_while_a_frame_is_decided_lets_nobody_in(tmp_path, verifier, enrolled_store, pins):
    """`edge-verify remove` (or the web app) commits while the kiosk is deciding on a frame of that very
    person: the door must not open after the removal was confirmed. The decision is checked against
    the store under the write lock that its audit row takes, and made again if the store changed."""
    video = tmp_path / "door.avi"
    make_video(video, [("astronaut_check.jpg", 6)])
    config = KioskConfig(
        source=str(video), liveness="off", identity="astronaut", debounce=1, cooldown_s=0, relay_pin=17,
        relay_pulse_s=0.01, max_frames=6,
    )  # fmt: skip
    kiosk = Kiosk(config, verifier, enrolled_store, build_actions(config))
    decide, removed = kiosk.decide, []

    def removed_meanwhile(probes):
        decision = decide(probes)
        if decision.accepted and not removed:  # the frame was decided on the old store; now the removal lands
            with TemplateStore(enrolled_store.path) as other:
                other.remove("astronaut", source="another process")
            removed.append(time.time())
        return decision

    kiosk.decide = removed_meanwhile
    kiosk.run(threading.Event())
    time.sleep(0.1)
    assert removed and kiosk.frames == 6
    assert not any(e.accepted for e in kiosk.events), [(e.accepted, e.score) for e in kiosk.events]
    assert [s.state for s in pins.pin(17).states] == [False]  # the relay never moved
    rows = enrolled_store.audit_log()
    assert rows[-1].command != "kiosk" or not rows[-1].accepted
    assert not any(r.command == "kiosk" and r.accepted for r in rows)
