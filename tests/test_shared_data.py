"""Accuracy and behaviour on ../shared/data (skipped in a user's clone, where it is absent)."""

from __future__ import annotations

import json
from itertools import product

import pytest

from tests.conftest import face_images, run_cli

pytestmark = pytest.mark.shared_data


def test_every_genuine_accepted_every_impostor_rejected(shared_data, verifier):
    from edge_verify.errors import EdgeVerifyError
    from edge_verify.matcher import cosine

    images = face_images(shared_data / "faces")
    threshold = verifier.bundle.threshold.value
    embeddings = {}
    for name, paths in images.items():
        for path in paths:
            try:
                embeddings[(name, path.name)] = verifier.embed_image(path)
            except EdgeVerifyError:
                pass  # the partial face: at most one photo may be unusable
    assert len(embeddings) >= sum(len(p) for p in images.values()) - 1
    enrolled = {name: embeddings[(name, paths[0].name)] for name, paths in images.items()}
    genuine, impostor = [], []
    for (identity, template), ((name, photo), emb) in product(enrolled.items(), embeddings.items()):
        if photo == images[identity][0].name:
            continue
        (genuine if name == identity else impostor).append((cosine(emb, template), identity, photo))
    assert all(s >= threshold for s, *_ in genuine), min(genuine)
    assert all(s < threshold for s, *_ in impostor), max(impostor)


def test_identify_names_the_enrolled_people_in_group_photos(shared_data, store_path):
    s = ["--store", str(store_path)]
    for name in ("obama", "biden", "kit_harington", "rose_leslie"):
        photo = face_images(shared_data / "faces")[name][0]
        assert run_cli("enroll", name, "--source", str(photo), *s).returncode == 0
    r = run_cli("identify", "--source", str(shared_data / "scenes" / "obama_and_biden.jpg"), "--json", *s)
    named = {f["identity"] for f in json.loads(r.stdout)["faces"]}
    assert {"obama", "biden"} <= named
    r = run_cli("identify", "--source", str(shared_data / "scenes" / "kit_with_rose.jpg"), "--json", *s)
    named = {f["identity"] for f in json.loads(r.stdout)["faces"]}
    assert {"kit_harington", "rose_leslie"} <= named


def test_enroll_from_folder_and_check_from_video(shared_data, store_path):
    s = ["--store", str(store_path)]
    r = run_cli("enroll", "obama", "--source", str(shared_data / "faces" / "obama"), "--frames", "6", "--json", *s)
    data = json.loads(r.stdout)
    assert r.returncode == 0 and data["frames_used"] >= 4
    r = run_cli(
        "check",
        "obama",
        "--source",
        str(shared_data / "video" / "short_hamilton_clip.mp4"),
        "--frames",
        "10",
        "--json",
        *s,
    )
    assert r.returncode in (1, 5), r.stderr  # nobody in the clip is Obama: rejected, or no usable face


def test_bench_on_video(shared_data):
    r = run_cli("bench", "--source", str(shared_data / "video" / "short_hamilton_clip.mp4"), "--frames", "60", "--json")
    data = json.loads(r.stdout)
    assert r.returncode == 0 and data["frames"] == 60 and data["faces"] > 0
    assert set(data["ms_per_frame"]) == {"capture", "detect", "align", "invoke", "match"}
    assert data["fps"] > 0


def test_calibrate_writes_threshold_used_by_check(shared_data, store_path):
    s = ["--store", str(store_path)]
    r = run_cli("calibrate", str(shared_data / "faces"), "--far", "0.01", "--json", *s)
    data = json.loads(r.stdout)
    assert r.returncode == 0 and data["written"]
    photo = face_images(shared_data / "faces")["obama"]
    run_cli("enroll", "obama", "--source", str(photo[0]), *s)
    r = run_cli("check", "obama", "--source", str(photo[1]), "--json", *s)
    out = json.loads(r.stdout)
    assert out["threshold"] == pytest.approx(data["threshold"]) and out["threshold_source"].startswith("calibrated")


def test_evaluate_default_bundle_on_the_faces(shared_data):
    from edge_verify.bundle import default_bundle_path

    r = run_cli("evaluate", str(default_bundle_path()), "--data", str(shared_data / "faces"), "--json")
    report = json.loads(r.stdout)
    assert r.returncode == 0, r.stderr
    assert report["roc_auc"] == 1.0 and report["eer"] == 0.0 and report["recall_at_1"] == 1.0
