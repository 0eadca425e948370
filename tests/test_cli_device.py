"""Device commands end to end, through a fresh interpreter, on the packaged samples and bad input."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from tests.conftest import SAMPLES, run_cli


def _store_args(store_path):
    return ["--store", str(store_path)]


def test_demo_accepts_same_person_rejects_other():
    r = run_cli("demo", "--json")
    assert r.returncode == 0, r.stderr
    checks = {c["image"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["astronaut_check.jpg"]["accepted"] is True
    assert checks["cameraman.jpg"]["accepted"] is False


def test_enroll_check_list_remove(store_path):
    s = _store_args(store_path)
    r = run_cli("enroll", "astronaut", "--source", str(SAMPLES / "astronaut_enroll.jpg"), *s)
    assert r.returncode == 0, r.stderr
    assert run_cli("enroll", "astronaut", "--source", str(SAMPLES / "astronaut_enroll.jpg"), *s).returncode == 2
    ok = run_cli("check", "astronaut", "--source", str(SAMPLES / "astronaut_check.jpg"), "--json", *s)
    assert ok.returncode == 0 and json.loads(ok.stdout)["accepted"] is True
    bad = run_cli("check", "astronaut", "--source", str(SAMPLES / "cameraman.jpg"), "--json", *s)
    assert bad.returncode == 1 and json.loads(bad.stdout)["accepted"] is False
    listed = json.loads(run_cli("list", "--json", *s).stdout)["identities"]
    assert [i["identity"] for i in listed] == ["astronaut"]
    assert run_cli("remove", "astronaut", *s).returncode == 0
    assert json.loads(run_cli("list", "--json", *s).stdout)["identities"] == []


def test_compare_two_images():
    same = run_cli("compare", str(SAMPLES / "astronaut_enroll.jpg"), str(SAMPLES / "astronaut_check.jpg"))
    other = run_cli("compare", str(SAMPLES / "astronaut_enroll.jpg"), str(SAMPLES / "cameraman.jpg"))
    assert same.returncode == 0 and same.stdout.startswith("SAME")
    assert other.returncode == 1 and other.stdout.startswith("DIFFERENT")


def _one_line_error(r, code, needle):
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("edge-verify: error:")]
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_image_with_no_face(tmp_path, store_path):
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((240, 320, 3), 128, np.uint8))
    _one_line_error(run_cli("compare", str(blank), str(SAMPLES / "cameraman.jpg")), 5, "no face found")
    r = run_cli("enroll", "bob", "--source", str(blank), *_store_args(store_path))
    _one_line_error(r, 5, "no face found")
    assert json.loads(run_cli("list", "--json", *_store_args(store_path)).stdout)["identities"] == []


def test_file_that_is_not_an_image(tmp_path):
    fake = tmp_path / "photo.jpg"
    fake.write_text("definitely not a jpeg")
    _one_line_error(run_cli("compare", str(fake), str(SAMPLES / "cameraman.jpg")), 4, "not a readable image")
    _one_line_error(run_cli("compare", str(tmp_path / "missing.jpg"), str(fake)), 4, "no such image file")


def test_two_faces_on_check(tmp_path, store_path):
    a = cv2.imread(str(SAMPLES / "astronaut_enroll.jpg"))
    b = cv2.resize(cv2.imread(str(SAMPLES / "cameraman.jpg")), (a.shape[1], a.shape[0]))
    pair = tmp_path / "two.jpg"
    cv2.imwrite(str(pair), np.hstack([a, b]))
    s = _store_args(store_path)
    assert run_cli("enroll", "astronaut", "--source", str(SAMPLES / "astronaut_enroll.jpg"), *s).returncode == 0
    _one_line_error(run_cli("check", "astronaut", "--source", str(pair), *s), 6, "2 faces found")


def test_unknown_identity(store_path):
    from edge_verify.store import TemplateStore

    TemplateStore(store_path).close()
    r = run_cli("check", "nobody", "--source", str(SAMPLES / "cameraman.jpg"), *_store_args(store_path))
    _one_line_error(r, 11, "'nobody' is not enrolled")
    audit = json.loads(run_cli("audit", "--json", *_store_args(store_path)).stdout)["entries"]
    assert audit[-1]["accepted"] == 0 and "UnknownIdentityError" in audit[-1]["detail"]


def test_failed_check_is_audited(tmp_path, enrolled_store):
    """A check that ends without a decision (no face) leaves a rejected audit row saying why."""
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 127, np.uint8))
    store = ["--store", str(enrolled_store.path)]
    r = run_cli("check", "astronaut", "--source", str(blank), *store)
    assert r.returncode == 5, r.stderr
    last = json.loads(run_cli("audit", "--json", *store).stdout)["entries"][-1]
    assert last["command"] == "check" and last["claimed"] == "astronaut" and last["accepted"] == 0
    assert "NoFaceError" in last["detail"]


def test_missing_and_corrupt_bundle(tmp_path):
    _one_line_error(run_cli("compare", "a.jpg", "b.jpg", "--bundle", str(tmp_path / "nope")), 8, "bundle not found")
    bundle = tmp_path / "bundle"
    shutil.copytree(SAMPLES.parent / "models" / "face-resnet29-v1", bundle)
    model = bundle / "model_int8.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    _one_line_error(run_cli("compare", "a.jpg", "b.jpg", "--bundle", str(bundle)), 8, "sha256 does not match")
    (bundle / "bundle.json").write_text("{not json")
    _one_line_error(run_cli("compare", "a.jpg", "b.jpg", "--bundle", str(bundle)), 8, "unreadable bundle metadata")


def test_model_that_is_not_tflite_is_a_bundle_error(tmp_path):
    """A bundle whose model hashes match but is not a TFLite file (rebuilt bundle.json)."""
    from edge_verify.bundle import compute_fingerprint, load_bundle, sha256_file
    from edge_verify.errors import BundleError
    from edge_verify.pipeline import Verifier

    bundle = tmp_path / "bundle"
    shutil.copytree(SAMPLES.parent / "models" / "face-resnet29-v1", bundle)
    (bundle / "model_int8.tflite").write_bytes(b"\0" * 1024)
    meta = json.loads((bundle / "bundle.json").read_text())
    meta["files"] = {"model_int8.tflite": sha256_file(bundle / "model_int8.tflite")}
    b = load_bundle(bundle, verify=False)
    meta["fingerprint"] = compute_fingerprint(meta["files"]["model_int8.tflite"], b.preprocess)
    (bundle / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="not a loadable TFLite model"):
        Verifier(bundle=load_bundle(bundle))


def test_corrupt_store_file_via_cli(tmp_path):
    store = tmp_path / "s.db"
    store.write_bytes(b"garbage" * 500)
    r = run_cli("list", "--store", str(store))
    _one_line_error(r, 9, "not a valid edge-verify store")
    assert store.read_bytes() == b"garbage" * 500  # nothing was overwritten


def test_missing_camera_fails_fast_with_clear_error(store_path):
    r = run_cli("check", "x", "--source", "/dev/video9", *_store_args(store_path), "--timeout", "1")
    _one_line_error(r, 9, "no store here")  # a check never creates a store
    assert not store_path.exists() and not store_path.with_name(store_path.name + ".key").exists()
    from edge_verify.store import TemplateStore

    TemplateStore(store_path).close()
    r = run_cli("check", "x", "--source", "/dev/video9", *_store_args(store_path), "--timeout", "1")
    _one_line_error(r, 11, "not enrolled")  # identity is checked before the camera is opened
    r = run_cli("enroll", "x", "--source", "/dev/video9", *_store_args(store_path), "--timeout", "1")
    _one_line_error(r, 13, "no such camera device")
    r = run_cli("enroll", "x", "--source", "picamera2", *_store_args(store_path))
    _one_line_error(r, 13, "picamera2 is not installed")


def test_json_errors_are_machine_readable(tmp_path):
    r = run_cli("compare", str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg"), "--json")
    assert r.returncode == 4
    assert json.loads(r.stdout)["type"] == "InputError"


NO_TF = """
import sys
from edge_verify.cli import main
code = main(sys.argv[1:])
assert code in (0, 1), code
bad = [m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow.") or m == "keras"]
print("LEAK" if bad else "CLEAN", bad[:3])
"""


def test_device_commands_never_import_tensorflow(store_path):
    import subprocess
    import sys

    from tests.conftest import ROOT

    s = ["--store", str(store_path)]
    for argv in (
        ["enroll", "a", "--source", str(SAMPLES / "astronaut_enroll.jpg"), *s],
        ["check", "a", "--source", str(SAMPLES / "astronaut_check.jpg"), *s],
        ["compare", str(SAMPLES / "astronaut_enroll.jpg"), str(SAMPLES / "cameraman.jpg")],
    ):
        r = subprocess.run([sys.executable, "-c", NO_TF, *argv], capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[-1].startswith("CLEAN"), r.stdout
    r = subprocess.run(
        [sys.executable, "-c", "import edge_verify, sys; print('tensorflow' in sys.modules)"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.stdout.strip() == "False"


def test_host_command_without_tensorflow_says_how_to_install(tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = (
        "import importlib.util, sys; real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, *a: None if n == 'tensorflow' else real(n, *a)\n"
        "from edge_verify.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, "train", "--data", "fashion-mnist", "--out", str(tmp_path / "m.keras")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode == 15
    assert "pip install 'edge-verify[host]'" in r.stderr


def test_doctor_reports_backend_bundle_and_store(store_path):
    r = run_cli("doctor", "--json", *_store_args(store_path))
    report = json.loads(r.stdout)
    assert r.returncode == 0, report
    assert report["checks"]["bundle"]["ok"] and "hashes ok" in report["checks"]["bundle"]["detail"]
    assert "litert" in report["checks"]["interpreter"]["detail"]
    assert "CPU int8 is used" in report["checks"]["edgetpu"]["detail"]  # no EdgeTPU on this machine
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr


def test_largest_face_option_picks_the_biggest(tmp_path, store_path):
    a = cv2.imread(str(SAMPLES / "astronaut_check.jpg"))
    b = cv2.resize(cv2.imread(str(SAMPLES / "cameraman.jpg")), (int(a.shape[1] * 0.8), int(a.shape[0] * 0.8)))
    canvas = np.zeros((a.shape[0], a.shape[1] + b.shape[1], 3), np.uint8)
    canvas[:, : a.shape[1]] = a
    canvas[: b.shape[0], a.shape[1] :] = b
    pair = tmp_path / "two.jpg"
    cv2.imwrite(str(pair), canvas)
    s = _store_args(store_path)
    assert run_cli("enroll", "astronaut", "--source", str(SAMPLES / "astronaut_enroll.jpg"), *s).returncode == 0
    assert run_cli("check", "astronaut", "--source", str(pair), *s).returncode == 6
    r = run_cli("check", "astronaut", "--source", str(pair), "--largest-face", *s)
    assert r.returncode == 0, r.stderr


def _pairs_file(tmp_path):
    for name in ("astronaut_enroll.jpg", "astronaut_check.jpg", "cameraman.jpg"):
        shutil.copy(SAMPLES / name, tmp_path / name)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text(
        "# a b same\nastronaut_enroll.jpg astronaut_check.jpg 1\n"
        "astronaut_enroll.jpg cameraman.jpg 0\nastronaut_check.jpg cameraman.jpg 0\n"
    )
    return pairs


def test_calibrate_and_evaluate_from_pairs_file(tmp_path, store_path):
    pairs = _pairs_file(tmp_path)
    s = _store_args(store_path)
    # FAR 0.5 takes the bundle curve's loosest entry, looser than the bundle's default point
    r = run_cli("calibrate", "--pairs", str(pairs), "--far", "0.5", *s)
    _one_line_error(r, 2, "looser than the bundle's 'default' operating point")
    r = run_cli("calibrate", "--pairs", str(pairs), "--far", "0.5", "--allow-looser", "--json", *s)
    data = json.loads(r.stdout)
    assert r.returncode == 0, r.stderr
    assert data["report"]["pairs_genuine"] == 1 and data["report"]["pairs_impostor"] == 2
    assert data["report"]["eer"] == 0.0 and data["written"]
    r = run_cli("evaluate", str(SAMPLES.parent / "models" / "face-resnet29-v1"), "--pairs", str(pairs), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["roc_auc"] == 1.0
    bad = tmp_path / "bad.txt"
    bad.write_text("a.jpg b.jpg maybe\n")
    _one_line_error(run_cli("calibrate", "--pairs", str(bad), *_store_args(store_path)), 4, "bad.txt:1")


def test_forced_backends():
    import importlib.util

    a, b = str(SAMPLES / "astronaut_enroll.jpg"), str(SAMPLES / "astronaut_check.jpg")
    if importlib.util.find_spec("tensorflow") is not None:
        r = run_cli("compare", a, b, "--backend", "tensorflow", "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["score"] > 0.95
    if importlib.util.find_spec("tflite_runtime") is None:
        _one_line_error(run_cli("compare", a, b, "--backend", "tflite_runtime"), 14, "no TFLite backend")
    r = run_cli("compare", a, b, "--threads", "1", "--json")
    assert r.returncode == 0


def test_edgetpu_model_falls_back_to_cpu_once(tmp_path, caplog):
    """A bundle with an EdgeTPU model on a machine without libedgetpu: CPU int8, one warning."""
    import logging

    from edge_verify.bundle import load_bundle, sha256_file
    from edge_verify.pipeline import Verifier

    bundle = tmp_path / "bundle"
    shutil.copytree(SAMPLES.parent / "models" / "face-resnet29-v1", bundle)
    shutil.copy(bundle / "model_int8.tflite", bundle / "model_int8_edgetpu.tflite")
    meta = json.loads((bundle / "bundle.json").read_text())
    meta["files"]["model_int8_edgetpu.tflite"] = sha256_file(bundle / "model_int8_edgetpu.tflite")
    (bundle / "bundle.json").write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="edge_verify.interpreter"):
        verifier = Verifier(bundle=load_bundle(bundle))
    assert verifier.embedder.backend == "litert" and not verifier.embedder.loaded.edgetpu
    assert verifier.embedder.loaded.model_path.name == "model_int8.tflite"
    warnings = [r for r in caplog.records if "EdgeTPU unavailable" in r.getMessage()]
    assert len(warnings) == 1


def test_enroll_from_video_skips_and_counts_bad_frames(tmp_path, store_path):
    from tests.conftest import make_video

    video = tmp_path / "hello.avi"
    make_video(video, [(None, 5), ("astronaut_check.jpg", 6)])
    r = run_cli("enroll", "astronaut", "--source", str(video), "--frames", "3", "--json", *_store_args(store_path))
    data = json.loads(r.stdout)
    assert r.returncode == 0, r.stderr
    assert data["frames_used"] == 3 and data["frames_skipped"] == {"noface": 5}
