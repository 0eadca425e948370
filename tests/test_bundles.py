"""The packaged bundles by name (default, sface, fused): each runs demo, compare and enroll/check
end to end; a fused bundle's score is its members' weighted cosine; tampered fused bundles are refused."""

from __future__ import annotations

import json
import re
import shlex
import shutil

import pytest

from edge_verify.bundle import PACKAGED_BUNDLES, bundle_path, load_bundle
from edge_verify.errors import BundleError
from edge_verify.pipeline import Verifier, VerifierOptions
from tests.conftest import SAMPLES, run_cli

NAMES = ("default", "sface", "fused")


@pytest.mark.parametrize("name", NAMES)
def test_demo_with_each_bundle(name):
    r = run_cli("demo", "--bundle", name, "--json")
    assert r.returncode == 0, r.stderr
    checks = {c["image"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["astronaut_check.jpg"]["accepted"] is True
    assert checks["cameraman.jpg"]["accepted"] is False


@pytest.mark.parametrize("name", NAMES)
def test_compare_with_each_bundle(name):
    enroll, check, other = (str(SAMPLES / f) for f in ("astronaut_enroll.jpg", "astronaut_check.jpg", "cameraman.jpg"))
    same = run_cli("compare", enroll, check, "--bundle", name)
    different = run_cli("compare", enroll, other, "--bundle", name)
    assert same.returncode == 0 and same.stdout.startswith("SAME"), same.stdout + same.stderr
    assert different.returncode == 1 and different.stdout.startswith("DIFFERENT"), different.stdout


def test_the_re_enrolment_command_the_error_names_works(store_path):
    """After an upgrade that changed the model, ``check`` names a command to re-enrol with: run
    word for word, it must replace the old template, and the person is accepted again."""
    s = ["--store", str(store_path)]
    enroll, check = str(SAMPLES / "astronaut_enroll.jpg"), str(SAMPLES / "astronaut_check.jpg")
    assert run_cli("enroll", "astronaut", "--source", enroll, "--bundle", "resnet29", *s).returncode == 0
    refused = run_cli("check", "astronaut", "--source", check, *s)
    assert refused.returncode == 12, refused.stderr
    advice = re.search(r"`edge-verify ([^`]+)`", refused.stderr)
    assert advice, refused.stderr
    redo = run_cli(*shlex.split(advice.group(1)), "--source", enroll, *s)
    assert redo.returncode == 0, redo.stderr
    ok = run_cli("check", "astronaut", "--source", check, "--json", *s)
    assert ok.returncode == 0 and json.loads(ok.stdout)["accepted"] is True, ok.stdout + ok.stderr


def test_enroll_check_across_bundles(store_path):
    """Templates belong to the bundle that made them: another bundle (the default included, as
    after an upgrade that changed it) asks for re-enrolment, and list/doctor name each template's bundle."""
    s = ["--store", str(store_path)]
    enroll, check = str(SAMPLES / "astronaut_enroll.jpg"), str(SAMPLES / "astronaut_check.jpg")
    assert run_cli("enroll", "astronaut", "--source", enroll, "--bundle", "resnet29", *s).returncode == 0
    for other in ("sface", "default"):
        r = run_cli("check", "astronaut", "--source", check, "--bundle", other, *s)
        assert r.returncode == 12 and "another model" in r.stderr and "Traceback" not in r.stderr
    for name in ("sface", "fused"):
        r = run_cli("enroll", f"astronaut-{name}", "--source", enroll, "--bundle", name, *s)
        assert r.returncode == 0, r.stderr
        ok = run_cli("check", f"astronaut-{name}", "--source", check, "--bundle", name, "--json", *s)
        assert ok.returncode == 0 and json.loads(ok.stdout)["accepted"] is True, ok.stdout + ok.stderr
        bad = run_cli("check", f"astronaut-{name}", "--source", str(SAMPLES / "cameraman.jpg"), "--bundle", name, *s)
        assert bad.returncode == 1, bad.stdout + bad.stderr
    listed = {i["identity"]: i["bundle"] for i in json.loads(run_cli("list", "--json", *s).stdout)["identities"]}
    assert listed == {
        "astronaut": "face-resnet29-v1 1.4.0",
        "astronaut-sface": "face-sface-v1 2.2.0",
        "astronaut-fused": "face-fused-v1 2.2.0",
    }
    doctor = json.loads(run_cli("doctor", "--bundle", "sface", "--json", *s).stdout)["checks"]["store"]["detail"]
    assert "1 from face-sface-v1 2.2.0" in doctor and "2 made by another bundle" in doctor


def test_fused_score_is_weighted_member_cosine():
    fused = load_bundle("fused")
    assert [m.name for m, _ in fused.members] == ["face-resnet29-v1", "face-sface-v1"]
    verifiers = [Verifier(VerifierOptions(bundle=b, use_edgetpu=False)) for b in ("fused", "resnet29", "sface")]
    pairs = [("astronaut_enroll.jpg", "astronaut_check.jpg"), ("astronaut_enroll.jpg", "cameraman.jpg")]
    for a, b in pairs:
        scores = [float(v.embed_image(SAMPLES / a) @ v.embed_image(SAMPLES / b)) for v in verifiers]
        expected = sum(w * s for (_, w), s in zip(fused.members, scores[1:], strict=True))
        assert scores[0] == pytest.approx(expected, abs=1e-5)


def test_bundle_names_and_paths(tmp_path, monkeypatch):
    assert bundle_path("sface") == bundle_path("face-sface-v1")
    assert bundle_path("sface").name == PACKAGED_BUNDLES["sface"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sface").mkdir()  # a directory of that name, e.g. a converted bundle, wins
    assert bundle_path("sface").resolve() == (tmp_path / "sface").resolve()
    r = run_cli("compare", str(SAMPLES / "astronaut_enroll.jpg"), str(SAMPLES / "cameraman.jpg"), "--bundle", "nosuch")
    assert r.returncode == 8 and "nosuch: model bundle not found" in r.stderr


def _fused_copy(tmp_path, edit) -> str:
    """The packaged fused bundle and its members copied to tmp_path, bundle.json edited by ``edit``."""
    for name in ("face-resnet29-v1", "face-sface-v1", "face-fused-v1"):
        shutil.copytree(bundle_path(name), tmp_path / name)
    meta_path = tmp_path / "face-fused-v1" / "bundle.json"
    meta = json.loads(meta_path.read_text())
    edit(meta)
    meta_path.write_text(json.dumps(meta))
    return str(tmp_path / "face-fused-v1")


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda m: m["members"][0].update(weight=0.9), "weights must sum to 1"),
        (lambda m: m["members"][1].update(bundle="../face-sface-v1"), "not a bundle directory name"),
        (lambda m: m["members"][1].update(bundle="nosuch"), "model bundle not found"),
        (lambda m: m["members"][1].update(fingerprint="0" * 32), "not the 0000"),
        (lambda m: m["members"].pop(), "members must list 2..4 bundles"),
        (lambda m: m["members"][1].update(bundle="face-fused-v1"), "cannot be the member of another"),
        (lambda m: (m.update(embedding_size=128), m.pop("self_test")), "not the sum of its members"),
    ],
)
def test_tampered_fused_bundle_is_refused(tmp_path, edit, needle):
    with pytest.raises(BundleError, match=needle):
        load_bundle(_fused_copy(tmp_path, edit))


def test_fused_weights_are_bound_to_the_fingerprint(tmp_path):
    """Shifting weight between members (both still summing to 1) changes what a score means: refused."""

    def shift(meta):
        meta["members"][0]["weight"] = round(meta["members"][0]["weight"] + 0.1, 4)
        meta["members"][1]["weight"] = round(1 - meta["members"][0]["weight"], 4)

    with pytest.raises(BundleError, match="fingerprint does not match"):
        load_bundle(_fused_copy(tmp_path, shift))


def test_member_model_tampered_is_refused(tmp_path):
    path = _fused_copy(tmp_path, lambda m: None)
    model = tmp_path / "face-sface-v1" / "model_int8.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256 does not match"):
        load_bundle(path)
    load_bundle("fused")  # the packaged bundles are untouched


def test_detection_size_option():
    """640 (the default) and 0 (full size) both find the face; a negative size is a usage error."""
    images = (str(SAMPLES / "astronaut_enroll.jpg"), str(SAMPLES / "astronaut_check.jpg"))
    for size in ("640", "0", "300"):
        assert run_cli("compare", *images, "--detect-size", size).returncode == 0, size
    r = run_cli("compare", *images, "--detect-size", "-1")
    assert r.returncode == 2 and "--detect-size must be" in r.stderr and "Traceback" not in r.stderr
