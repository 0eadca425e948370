"""Attacks and faults, one group per numbered defect of the hardening issue: hostile bundles and
images, kiosk actions against misbehaving servers and commands, a tampered audit, leaked secrets,
races, hostile names and options, and a model that computes wrong embeddings."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import stat
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_verify.bundle import MODEL_INT8, bundle_path, load_bundle
from edge_verify.errors import BundleError, InputError, StoreError, TemplateIntegrityError, UsageError
from edge_verify.kiosk import Kiosk, KioskConfig, build_actions
from edge_verify.sources import read_image
from edge_verify.store import TemplateStore
from tests.conftest import ROOT, SAMPLES, make_video, random_unit, run_cli

detect = importlib.import_module("edge_verify.detect")  # the module; ``edge_verify.detect`` is api.detect

FP = "f" * 32
DEFAULT = bundle_path("resnet29")  # a bundle with a model of its own, to tamper with


def one_line_error(r: subprocess.CompletedProcess, code: int, needle: str) -> None:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert needle in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


# ---- 1. bundle loading ----------------------------------------------------------------------------
@pytest.fixture
def bundle_copy(tmp_path) -> Path:
    out = tmp_path / "bundle"
    shutil.copytree(DEFAULT, out)
    return out


def edit_meta(bundle: Path, change) -> None:
    meta = json.loads((bundle / "bundle.json").read_text())
    change(meta)
    (bundle / "bundle.json").write_text(json.dumps(meta))


def test_files_outside_the_bundle_are_refused(bundle_copy):
    target = "../../../../etc/hostname"
    digest = hashlib.sha256(Path("/etc/hostname").read_bytes()).hexdigest()
    edit_meta(bundle_copy, lambda m: m["files"].update({target: digest}))
    with pytest.raises(BundleError, match="not a plain file name"):
        load_bundle(bundle_copy)
    edit_meta(bundle_copy, lambda m: m["files"].pop(target) and m["files"].update({"/dev/zero": "0" * 64}))
    with pytest.raises(BundleError, match="not a plain file name"):
        load_bundle(bundle_copy)


def test_links_devices_and_fifos_never_hang(bundle_copy):
    """A model linked to /dev/zero, or bundle.json as a FIFO: one-line error, at once (no hang)."""
    model = bundle_copy / MODEL_INT8
    model.unlink()
    model.symlink_to("/dev/zero")
    r = run_cli("compare", str(SAMPLES / "cameraman.jpg"), str(SAMPLES / "cameraman.jpg"), "--bundle", str(bundle_copy))
    one_line_error(r, 8, "symbolic link")
    model.unlink()
    shutil.copy(DEFAULT / MODEL_INT8, model)
    meta = bundle_copy / "bundle.json"
    meta.unlink()
    os.mkfifo(meta)
    r = run_cli("doctor", "--bundle", str(bundle_copy), timeout=60)
    assert r.returncode == 3 and "not a regular file" in r.stdout, r.stdout


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda m: m.clear() or m.update({"x": [1] * 3}), "bundle format"),
        (lambda m: m.update(files=list(m["files"])), "files must map"),
        (lambda m: m["preprocess"].update(size=[150]), "preprocess.size"),
        (lambda m: m["preprocess"].update(size=["150", 150]), "preprocess.size"),
        (lambda m: m["preprocess"].update(channels=1), "preprocess.channels must be 3"),
        (lambda m: m["preprocess"].update(color_order="CMYK"), "color_order must be one of"),
        (lambda m: m["preprocess"].update(alignment="face68"), "alignment must be one of"),
        (lambda m: m["preprocess"].update(template=m["preprocess"]["template"][:3]), "5 [x, y] points"),
        (lambda m: m.update(embedding_size="128"), "embedding_size"),
        (lambda m: m.update(margin_1n=float("inf")), "unreadable bundle metadata"),
        (lambda m: m["operating_points"]["default"].update(threshold=2), "threshold must be in (0, 1]"),
    ],
)
def test_malformed_metadata_is_one_bundle_error(bundle_copy, change, needle):
    edit_meta(bundle_copy, change)
    with pytest.raises(BundleError, match=None) as err:
        load_bundle(bundle_copy)
    assert needle in str(err.value)


def test_deep_nesting_and_top_level_array(bundle_copy):
    (bundle_copy / "bundle.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BundleError, match="nested too deeply|must hold an object"):
        load_bundle(bundle_copy)
    (bundle_copy / "bundle.json").write_text("[1, 2]")
    with pytest.raises(BundleError, match="must hold an object"):
        load_bundle(bundle_copy)


def test_model_that_does_not_fit_the_bundle(bundle_copy):
    """A model whose input or output disagrees with bundle.json (hash and fingerprint re-sealed)."""
    from edge_verify.bundle import Preprocess, compute_fingerprint
    from edge_verify.embedder import Embedder

    def resize(meta):
        meta["preprocess"]["size"] = [112, 112]
        meta["fingerprint"] = compute_fingerprint(meta["files"][MODEL_INT8], Preprocess.from_dict(meta["preprocess"]))

    edit_meta(bundle_copy, resize)
    with pytest.raises(BundleError, match="the model takes 150x150x3 and gives 128 values"):
        Embedder.for_bundle(load_bundle(bundle_copy))


def test_embedding_size_is_checked(bundle_copy):
    from edge_verify.embedder import Embedder

    edit_meta(bundle_copy, lambda m: m.update(embedding_size=256) or m.pop("self_test"))
    with pytest.raises(BundleError, match="embedding_size 256"):
        Embedder.for_bundle(load_bundle(bundle_copy))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
FIELDS = ["format", "name", "version", "embedding_size", "preprocess", "files", "fingerprint", "far_curve",
          "margin_1n", "operating_points", "default_operating_point", "self_test"]  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    field=st.sampled_from(FIELDS),
    sub=st.sampled_from(["size", "channels", "color_order", "alignment", "template", "default", MODEL_INT8, None]),
    value=JSON,
)
def test_any_bundle_json_edit_is_accepted_or_a_bundle_error(bundle_copy, field, sub, value):
    """Property: whatever one field of bundle.json becomes, loading succeeds or raises BundleError."""
    meta = json.loads((DEFAULT / "bundle.json").read_text())
    if sub is not None and isinstance(meta.get(field), dict) and sub in meta[field]:
        meta[field][sub] = value
    else:
        meta[field] = value
    (bundle_copy / "bundle.json").write_text(json.dumps(meta))
    try:
        bundle = load_bundle(bundle_copy)
    except BundleError as exc:
        assert "\n" not in str(exc)
        return
    assert bundle.preprocess.channels in (1, 3) and 1 <= bundle.embedding_size <= 4096


# ---- 2. image size ---------------------------------------------------------------------------------
def huge_png(path: Path, side: int) -> None:
    """A real, valid grey PNG of side x side black pixels (a few hundred KB on disk)."""
    squeeze = zlib.compressobj(9)
    row = b"\0" * (side + 1)
    data = b"".join(squeeze.compress(row) for _ in range(side)) + squeeze.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def test_image_too_large_is_refused_before_decoding(tmp_path):
    big = tmp_path / "big.png"
    huge_png(big, 20000)
    assert big.stat().st_size < 2_000_000
    r = run_cli("compare", str(big), str(SAMPLES / "cameraman.jpg"))
    one_line_error(r, 4, "20000x20000 pixels, more than the 40 megapixels allowed")
    sparse = tmp_path / "sparse.jpg"
    with open(sparse, "wb") as f:
        f.truncate(3 * 1024**3)
    with pytest.raises(InputError, match="more than the 67 MB allowed"):
        read_image(sparse)


def test_formats_without_a_parsed_header_keep_opencvs_limit(tmp_path):
    tiff = tmp_path / "big.tif"
    cv2.imwrite(str(tiff), np.zeros((7000, 7000), np.uint8))
    r = run_cli("compare", str(tiff), str(SAMPLES / "cameraman.jpg"))
    one_line_error(r, 4, "not a readable image")


# ---- 3. kiosk actions ------------------------------------------------------------------------------
class MisbehavingServer:
    """A TCP server on 127.0.0.1 that answers each request in one of several bad ways."""

    def __init__(self, mode: str):
        self.mode = mode
        self.requests = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn):
        self.requests += 1
        conn.recv(65536)
        try:
            if self.mode == "garbage":
                conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            elif self.mode == "trickle":
                for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100:
                    if self.stop.wait(1.0):
                        break
                    conn.sendall(bytes([byte]))
            elif self.mode == "hang":
                self.stop.wait(30)
            elif self.mode == "redirect":
                conn.sendall(
                    b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:9/elsewhere\r\nContent-Length: 0\r\n\r\n"
                )
        except OSError:
            pass
        conn.close()

    def close(self):
        self.stop.set()
        self.sock.close()


def door_video(tmp_path) -> Path:
    video = tmp_path / "door.avi"
    make_video(video, [("astronaut_check.jpg", 12)])
    return video


def door_config(tmp_path, **settings) -> KioskConfig:
    """1:1 for the enrolled astronaut on a video of her, no liveness, every decision acted on."""
    base = dict(source=str(door_video(tmp_path)), liveness="off", identity="astronaut", debounce=3, cooldown_s=0)
    return KioskConfig(**{**base, **settings})


@pytest.mark.parametrize(
    ("mode", "needle"),
    [
        ("garbage", "BadStatusLine"),
        ("trickle", "no complete answer within 1s"),
        ("hang", "no complete answer within 1s"),
        ("redirect", "HTTP 302 redirect to http://127.0.0.1:9/elsewhere not followed"),
    ],
)
def test_webhook_that_misbehaves_never_stops_the_loop(tmp_path, verifier, enrolled_store, pins, mode, needle):
    server = MisbehavingServer(mode)
    config = door_config(
        tmp_path, relay_pin=17, relay_pulse_s=0.01, webhook=server.url, webhook_deadline_s=1.0, max_frames=6
    )
    kiosk = Kiosk(config, verifier, enrolled_store, build_actions(config))
    kiosk.run(threading.Event())
    server.close()
    assert kiosk.frames == 6 and len(kiosk.events) == 2  # the loop went on after each failed call
    for event in kiosk.events:
        actions = enrolled_store.audit_actions(event.audit_id)
        assert ("relay", True, "") in actions
        webhook = [a for a in actions if a[0] == "webhook"]
        assert webhook and webhook[0][1] is False and needle in webhook[0][2], actions


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("notaurl", "must be an http:// or https:// URL"),
        ("ftp://127.0.0.1/x", "must be an http:// or https:// URL"),
        ("file:///etc/passwd", "must be an http:// or https:// URL"),
        ("http://127.0.0.2/x", "is not this machine"),
        ("http://door.example.com/x", "is not this machine"),
        ("http://127.0.0.1:99999/x", "not a URL"),
    ],
)
def test_webhook_url_is_checked_at_start(url, needle):
    with pytest.raises(UsageError, match=None) as err:
        KioskConfig(webhook=url)
    assert needle in str(err.value)
    assert KioskConfig(webhook="http://10.0.0.5/door", webhook_allow_hosts=["10.0.0.5"]).webhook


def test_cli_kiosk_with_a_bad_webhook_fails_before_the_camera(store_path):
    TemplateStore(store_path).close()
    r = run_cli("kiosk", "--webhook", "notaurl", "--source", "/dev/video9", "--store", str(store_path))
    one_line_error(r, 2, "webhook 'notaurl'")


def test_hung_command_is_killed_with_its_children_and_exit_codes_recorded(tmp_path, verifier, enrolled_store):
    marker = f"{time.time():.6f}"
    script = tmp_path / "hook.sh"
    script.write_text(
        f'#!/bin/sh\nenv > "{tmp_path}/env.$EDGE_VERIFY_AUDIT_ID"\n'
        f'mkdir "{tmp_path}/first" 2>/dev/null && exit 3\nsleep 1{marker} &\nsleep 2{marker}\n'
    )
    script.chmod(0o755)
    config = door_config(tmp_path, command=str(script), command_timeout_s=1.0)
    frames = read_frames(door_video(tmp_path))
    os.environ["EDGE_VERIFY_KEY"] = "00" * 32  # must not reach the command
    try:
        kiosk = Kiosk(config, verifier, enrolled_store, build_actions(config))
        for image in frames[:3]:
            kiosk.process(image, "f")
        time.sleep(0.5)  # the first hook has exited by now; the loop records it on its next frame
        for image in frames[3:]:
            kiosk.process(image, "f")
        stopped = threading.Event()
        stopped.set()
        kiosk.run(stopped)  # stopping: the hooks still running are killed with their children
    finally:
        del os.environ["EDGE_VERIFY_KEY"]
    assert len(kiosk.events) == 4
    outcomes = [a for e in kiosk.events for a in enrolled_store.audit_actions(e.audit_id) if a[0] == "command"]
    details = [d for _, ok, d in outcomes if not d == ""]
    assert "exit 3" in details  # the first run's exit code
    assert any(w in d for d in details for w in ("timed out", "killed", "stopped with the kiosk"))
    alive = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()
    assert alive == [], "a hook command or its child survived the kiosk"
    env = (tmp_path / f"env.{kiosk.events[0].audit_id}").read_text()
    assert "EDGE_VERIFY_KEY" not in env and "EDGE_VERIFY_ACCEPTED=1" in env


class KioskProcess:
    """``edge-verify kiosk -v`` in its own interpreter, its log collected line by line."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_verify.cli", "kiosk", "-v", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log: list[str] = []
        self.reader = threading.Thread(target=lambda: self.log.extend(self.proc.stderr), daemon=True)
        self.reader.start()

    def wait_for(self, text: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.log):
            assert self.proc.poll() is None and time.monotonic() < deadline, ("".join(self.log), text)
            time.sleep(0.2)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float) -> str:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout)
        self.reader.join(10)
        return "".join(self.log)


def test_sigterm_with_a_hung_command_stops_within_the_unit_timeout(tmp_path, enrolled_store):
    marker = f"{time.time():.6f}"
    video = tmp_path / "door.avi"
    make_video(video, [("astronaut_check.jpg", 40)])
    kiosk = KioskProcess(
        "--source", str(video), "--identity", "astronaut", "--liveness", "off", "--cooldown", "0",
        "--run", f"sleep 1{marker}", "--store", str(enrolled_store.path),
    )  # fmt: skip
    kiosk.wait_for("ACCEPTED astronaut")  # commands that never end are running now
    kiosk.stop(timeout=15)  # the unit's TimeoutStopSec
    assert kiosk.proc.returncode == 0, kiosk.log
    assert subprocess.run(["pgrep", "-f", marker], capture_output=True).stdout == b""
    unit = (ROOT / "firmware_examples" / "raspberry_pi" / "edge-verify-kiosk.service").read_text()
    assert "TimeoutStopSec=15" in unit


def test_sighup_reloads_the_configuration(tmp_path, enrolled_store):
    video = tmp_path / "door.avi"
    make_video(video, [("astronaut_check.jpg", 20)])
    config = tmp_path / "kiosk.toml"
    config.write_text(f'[kiosk]\nsource = "{video}"\nidentity = "astronaut"\nliveness = "off"\ncooldown_s = 3600.0\n')
    kiosk = KioskProcess("--config", str(config), "--store", str(enrolled_store.path))
    kiosk.wait_for("kiosk running on")
    config.write_text(config.read_text().replace("cooldown_s = 3600.0", "cooldown_s = 0.0"))
    kiosk.signal(signal.SIGHUP)
    kiosk.wait_for("configuration reloaded")
    config.write_text("[kiosk]\ncooldown_s = 'soon'\n")  # a bad edit: it goes on with the old one
    kiosk.signal(signal.SIGHUP)
    kiosk.wait_for("reload failed, keeping the running configuration")
    assert kiosk.proc.poll() is None
    log = kiosk.stop(timeout=15)
    assert kiosk.proc.returncode == 0, log
    assert log.count("kiosk running on") == 3


def test_store_write_lock_held_by_another_process(tmp_path, verifier, store_path, pins):
    """A held lock: the decision is not audited, so the door stays shut; the loop survives."""
    with TemplateStore(store_path) as s:
        s.put("astronaut", verifier.embed_image(SAMPLES / "astronaut_enroll.jpg"), verifier.bundle.fingerprint, 1)
    store = TemplateStore(store_path, busy_timeout_s=0.3)
    holder = sqlite3.connect(store_path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    config = door_config(tmp_path, relay_pin=17, relay_pulse_s=0.01, max_frames=12)
    kiosk = Kiosk(config, verifier, store, build_actions(config))
    frames = iter(read_frames(door_video(tmp_path)))
    for _ in range(3):
        assert kiosk.process(next(frames), "f") == []  # decided, but not audited: nothing fired
    assert [p.state for p in pins.pin(17).states] == [False]
    holder.execute("ROLLBACK")
    fired = [e for _ in range(3) for e in kiosk.process(next(frames), "f")]
    assert len(fired) == 1 and fired[0].accepted and fired[0].audit_id
    time.sleep(0.1)
    assert True in [p.state for p in pins.pin(17).states]
    store.close()


def read_frames(video: Path) -> list[np.ndarray]:
    from edge_verify.sources import open_source

    with open_source(str(video)) as source:
        return [f.image for f in source]


def test_status_port_in_use_and_relay_without_gpio(tmp_path, enrolled_store):
    busy = socket.create_server(("127.0.0.1", 0))
    port = busy.getsockname()[1]
    args = ["--identity", "astronaut", "--source", str(door_video(tmp_path)), "--store", str(enrolled_store.path)]
    r = run_cli("kiosk", *args, "--status-port", str(port), "--liveness", "off")
    busy.close()
    one_line_error(r, 2, f"status_port {port}: cannot listen on it")
    r = run_cli("kiosk", *args, "--relay-pin", "17", env={"GPIOZERO_PIN_FACTORY": "lgpio"})
    one_line_error(r, 2, "relay_pin 17: no usable GPIO here")


# ---- 4. audit ----------------------------------------------------------------------------------------
@pytest.fixture
def audited_store(store_path):
    with TemplateStore(store_path) as store:
        for i in range(6):
            store.audit("kiosk" if i % 2 else "check", FP, i % 3 == 0, claimed="alice", score=0.9 + i / 100)
        store.record_action(1, "relay", True)
    return store_path


def verify_cli(store_path) -> subprocess.CompletedProcess:
    return run_cli("audit", "--verify", "--store", str(store_path))


@pytest.mark.parametrize(
    ("sql", "needle"),
    [
        ("UPDATE audit SET accepted = 1 WHERE id = 2", "audit: row 2 was edited"),
        ("UPDATE audit SET score = 0.99 WHERE id = 6", "audit: row 6 was edited"),
        ("DELETE FROM audit WHERE id = 3", "audit: row(s) 3 were deleted"),
        ("DELETE FROM audit WHERE id = 6", "audit: row(s) 6-6 at the end were deleted"),
        (
            "INSERT INTO audit (ts, command, claimed, matched, score, threshold, accepted, fingerprint)"
            " VALUES (1000, 'kiosk', 'mallory', 'mallory', 0.99, 0.95, 1, 'x')",
            "audit: row 7 was edited or inserted",
        ),
        ("UPDATE audit_actions SET ok = 0", "audit_actions: row 1 was edited"),
    ],
)
def test_audit_verify_detects_tampering(audited_store, sql, needle):
    assert verify_cli(audited_store).returncode == 0
    db = sqlite3.connect(audited_store)
    db.execute(sql)
    db.commit()
    db.close()
    r = verify_cli(audited_store)
    assert r.returncode == TemplateIntegrityError.exit_code and needle in r.stdout, r.stdout
    doctor = run_cli("doctor", "--store", str(audited_store))
    assert doctor.returncode == 3 and needle in doctor.stdout


def test_audit_filters_apply_before_the_limit_and_times_parse(audited_store):
    r = run_cli("audit", "--json", "--command", "kiosk", "--limit", "2", "--store", str(audited_store))
    entries = json.loads(r.stdout)["entries"]
    assert [e["command"] for e in entries] == ["kiosk", "kiosk"] and entries[-1]["score"] == "0.9500"
    for since in ("yesterday", "today", "12h", "2026-01-01", "2026-01-01 08:30"):
        r = run_cli("audit", "--json", "--since", since, "--store", str(audited_store))
        assert r.returncode == 0 and len(json.loads(r.stdout)["entries"]) == 6, (since, r.stderr)
    r = run_cli("audit", "--since", "tomorrowish", "--store", str(audited_store))
    one_line_error(r, 2, "--since 'tomorrowish': use YYYY-MM-DD")
    r = run_cli("audit", "--json", "--until", "2000-01-01", "--store", str(audited_store))
    assert json.loads(r.stdout)["entries"] == []


def test_audit_csv_is_safe_in_a_spreadsheet(tmp_path, store_path):
    with TemplateStore(store_path) as store:
        store.audit("check", FP, False, claimed="x", source='=HYPERLINK("http://evil","click")', score=-0.25)
        store.audit("check", FP, False, claimed="x", source="@SUM(A1:A9)")
        store.audit("check", FP, False, claimed="x", source="+1+2", liveness="-3")
    out = tmp_path / "a.csv"
    assert run_cli("audit", "--csv", str(out), "--store", str(store_path)).returncode == 0
    import csv

    rows = list(csv.DictReader(out.open()))
    assert rows[0]["source"].startswith("'=HYPERLINK") and rows[0]["score"] == "-0.2500"
    assert rows[1]["source"] == "'@SUM(A1:A9)" and rows[2]["source"] == "'+1+2" and rows[2]["liveness"] == "-3"


def test_administrative_actions_are_audited(tmp_path, store_path):
    s = ["--store", str(store_path)]
    assert run_cli("enroll", "astronaut", "--source", str(SAMPLES / "astronaut_enroll.jpg"), *s).returncode == 0
    assert run_cli("remove", "astronaut", *s).returncode == 0
    commands = [e["command"] for e in json.loads(run_cli("audit", "--json", *s).stdout)["entries"]]
    assert commands == ["enroll", "remove"]
    assert verify_cli(store_path).returncode == 0


def test_old_audit_rows_are_sealed_on_upgrade(store_path):
    """A store from before the chain (schema 2, no chain records): its rows are sealed once, when it
    is upgraded, then edits are caught."""
    store_path.parent.mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "data" / "store_v2.db", store_path)
    db = sqlite3.connect(store_path)
    db.execute("UPDATE audit SET mac = NULL")
    db.execute("UPDATE audit_actions SET mac = NULL")
    db.execute("DELETE FROM meta WHERE key LIKE 'audit_head:%' OR key = 'audit_chain'")
    db.commit()
    with TemplateStore(store_path, key=bytes(range(32))) as store:
        assert store.verify_audit() == []
    db.execute("UPDATE audit SET accepted = 0 WHERE id = 1")
    db.commit()
    with TemplateStore(store_path, key=bytes(range(32))) as store:
        assert store.verify_audit() == ["audit: row 1 was edited or inserted outside edge-verify"]


# ---- 5. secrets --------------------------------------------------------------------------------------
def test_url_credentials_never_printed_or_audited(tmp_path, enrolled_store):
    url = "http://admin:secret@127.0.0.1:9/video?token=hunter2"
    s = ["--store", str(enrolled_store.path), "--timeout", "1"]
    r = run_cli("check", "astronaut", "--source", url, "--liveness", "off", *s)
    assert r.returncode == 13 and "127.0.0.1:9" in r.stderr
    r2 = run_cli("doctor", "--source", url, *s)
    kiosk = KioskProcess("--source", url, "--identity", "astronaut", *s)
    kiosk.wait_for("cannot open")  # it keeps trying to reconnect, logging each try
    kiosk_log = kiosk.stop(timeout=15)
    audit = run_cli("audit", "--json", *s).stdout
    for text in (r.stderr, r2.stdout, r2.stderr, audit, kiosk_log):
        assert "secret" not in text and "hunter2" not in text and "admin" not in text, text


def test_store_files_are_private_and_a_readable_key_warns(store_path):
    with TemplateStore(store_path) as store:
        store.put("alice", random_unit(1, 8)[0], FP, 1)
        store.audit("check", FP, True)
        for f in store_path.parent.iterdir():
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    key = store_path.with_name(store_path.name + ".key")
    key.chmod(0o644)
    r = run_cli("list", "--store", str(store_path))
    assert r.returncode == 0 and "readable by other users" in r.stderr and "chmod 600" in r.stderr


def test_missing_key_is_an_error_not_a_new_key(store_path):
    with TemplateStore(store_path) as store:
        store.put("alice", random_unit(1, 8)[0], FP, 1)
    key = store_path.with_name(store_path.name + ".key")
    key.unlink()
    for command in (["list"], ["enroll", "bob", "--source", str(SAMPLES / "astronaut_enroll.jpg")]):
        r = run_cli(*command, "--store", str(store_path))
        one_line_error(r, 9, "key file missing")
        assert "restore the key file" in r.stderr and not key.exists()
    r = run_cli("list", "--store", str(store_path), env={"EDGE_VERIFY_KEY": ""})
    one_line_error(r, 9, "$EDGE_VERIFY_KEY is set but empty")


# ---- 6. concurrency ----------------------------------------------------------------------------------
def test_parallel_first_use_makes_one_key(store_path):
    code = "import sys; from edge_verify.store import TemplateStore; TemplateStore(sys.argv[1]).close()"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(store_path)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
        for _ in range(8)
    ]
    errors = [p.communicate(timeout=60)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    r = run_cli("list", "--json", "--store", str(store_path))
    assert r.returncode == 0, r.stderr
    assert len(store_path.with_name(store_path.name + ".key").read_text().strip()) == 64


def test_enrolment_race_never_overwrites(store_path):
    """Two enrolments of one name that both saw it free: the second is refused, not written."""
    first, second = TemplateStore(store_path), TemplateStore(store_path)
    assert all(t.identity != "alice" for t in second.list())  # the second one's early check passes
    first.put("alice", random_unit(1, 8, 1)[0], FP, 1)
    with pytest.raises(UsageError, match="already enrolled; add --replace"):
        second.put("alice", random_unit(1, 8, 2)[0], FP, 1)
    assert np.allclose(second.get("alice", FP), random_unit(1, 8, 1)[0])
    second.put("alice", random_unit(1, 8, 2)[0], FP, 1, replace=True)
    first.close()
    second.close()


def test_busy_store_is_a_one_line_error(store_path):
    TemplateStore(store_path).close()
    holder = sqlite3.connect(store_path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    store = TemplateStore.__new__(TemplateStore)
    with pytest.raises(StoreError, match="the store is busy"):
        store.__init__(store_path, busy_timeout_s=0.2)
    holder.execute("ROLLBACK")


# ---- 7. names and options ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["a\nACCEPTED bob", "\x1b[2Jx", "eve\u202egnp.exe", " ", "", "x" * 129, " bob"])
def test_names_that_could_forge_output_are_refused(store_path, name):
    r = run_cli("enroll", name, "--source", str(SAMPLES / "astronaut_enroll.jpg"), "--store", str(store_path))
    assert r.returncode == 2 and "invalid identity name" in r.stderr, r.stderr
    with pytest.raises(UsageError):
        TemplateStore(store_path).put(name, random_unit(1, 8)[0], FP, 1)


def test_invalid_utf8_name_is_refused(store_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_verify.cli",
            "enroll",
            b"bad\xffname",
            "--source",
            "x",
            "--store",
            str(store_path),
        ],
        capture_output=True,
        cwd=ROOT,
    )
    assert r.returncode == 2 and b"invalid identity name" in r.stderr and b"Traceback" not in r.stderr


def test_empty_identity_does_not_switch_the_kiosk_to_1n(store_path):
    r = run_cli("kiosk", "--identity", "", "--source", "0", "--store", str(store_path))
    assert r.returncode == 2 and "invalid identity name" in r.stderr


SETTING_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**9), 10**9), st.floats(), st.text(max_size=12),
    st.lists(st.text(max_size=5), max_size=3),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from([f.name for f in __import__("dataclasses").fields(KioskConfig)]), value=SETTING_VALUES)
def test_any_kiosk_setting_is_valid_or_a_usage_error(field, value):
    """Property: a configuration is either refused at start (UsageError) or has sane types and ranges."""
    try:
        config = KioskConfig(**{field: value})
    except UsageError:
        return
    assert isinstance(config.debounce, int) and config.debounce >= 1
    assert 0 <= config.cooldown_s <= 86400 and 0 < config.webhook_deadline_s <= 60
    assert config.identity is None or config.identity.strip()
    assert config.status_port is None or 1 <= config.status_port <= 65535


def test_internal_error_has_its_own_exit_code(monkeypatch, capsys):
    from edge_verify import cli
    from edge_verify.cli import identities

    def broken(args):
        raise TypeError("unsupported operand")

    monkeypatch.setattr(identities, "cmd_list", broken)
    assert cli.main(["list"]) == cli.INTERNAL_ERROR != 1
    err = capsys.readouterr().err
    assert "internal error: TypeError: unsupported operand" in err and "Traceback" not in err


# ---- 8. self-test ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def altered_bundle(tmp_path_factory) -> Path:
    """Weights of one layer zeroed, hash and fingerprint updated: only the self-test can tell."""
    from tests.model_tampering import alter_layer, reseal_copy

    model = (DEFAULT / MODEL_INT8).read_bytes()
    return reseal_copy(DEFAULT, tmp_path_factory.mktemp("altered") / "b", alter_layer(model, 20, lambda w: 0 * w))


def test_self_test_catches_altered_weights(altered_bundle, store_path):
    load_bundle(altered_bundle)  # every hash matches
    r = run_cli("doctor", "--bundle", str(altered_bundle))
    assert r.returncode == 3 and "FAIL self-test" in r.stdout and "refusing to decide" in r.stdout, r.stdout
    r = run_cli("bench", "--source", str(SAMPLES / "cameraman.jpg"), "--bundle", str(altered_bundle))
    one_line_error(r, 8, "self-test failed")
    TemplateStore(store_path).close()
    r = run_cli("kiosk", "--source", "0", "--bundle", str(altered_bundle), "--store", str(store_path))
    one_line_error(r, 8, "self-test failed")
    ok = run_cli("doctor")
    assert "ok   self-test    self-test passed" in ok.stdout


def test_self_test_does_not_depend_on_the_commands_detection_options():
    """A smaller search size changes the landmarks a photo gets, not the model: the self-test must
    still pass (it used to refuse, blaming the CPU), and a stranger is still refused at that size."""
    r = run_cli("demo", "--detect-size", "320", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    checks = json.loads(r.stdout)["checks"]
    assert [c["accepted"] for c in checks] == [c["expected"] for c in checks] == [True, False], checks


def test_native_output_passes_and_a_native_crash_is_reported():
    code = (
        "import ctypes, os\n"
        "from edge_verify.interpreter import _native_stderr_filtered\n"
        "with _native_stderr_filtered():\n"
        "    os.write(2, b'INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\nnative warning\\n')\n"
        "with _native_stderr_filtered():\n"
        "    ctypes.string_at(0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode != 0
    assert "native warning" in r.stderr and "XNNPACK" not in r.stderr
    assert "Segmentation fault" in r.stderr, r.stderr


@pytest.fixture
def detector_copy(tmp_path, monkeypatch):
    """A copy of the detector model that the detector loads instead of the packaged one."""
    copy = tmp_path / detect.yunet_path().name
    shutil.copy(detect.yunet_path(), copy)
    monkeypatch.setattr(detect, "yunet_path", lambda: copy)
    return copy


def test_altered_detector_model_is_refused_before_it_runs(detector_copy, capsys):
    """One bit of one weight changed would move every landmark; the detector is hash-pinned."""
    from edge_verify.cli import main

    content = bytearray(detector_copy.read_bytes())
    content[len(content) // 2] ^= 0x01  # one bit of one weight
    detector_copy.write_bytes(bytes(content))
    with pytest.raises(BundleError, match="altered or damaged"):
        detect.FaceDetector()
    code = main(["compare", str(SAMPLES / "astronaut_enroll.jpg"), str(SAMPLES / "astronaut_check.jpg")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "face detector model altered or damaged" in err[0]


def test_missing_detector_model_says_so(detector_copy):
    detector_copy.unlink()
    with pytest.raises(BundleError, match="face detector model missing"):
        detect.FaceDetector()
