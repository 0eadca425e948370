"""Operating points hold their FAR on people the calibration never saw: the held-out margin that
``converters/operating_points.py`` adds to each per-set threshold."""

from __future__ import annotations

import json

import numpy as np
import pytest

from converters.operating_points import DevSet, calibrate_points, heldout
from edge_verify.bundle import PACKAGED_BUNDLES, bundle_path
from edge_verify.operating import conservative_threshold, far_curve


def _look_alikes(seed: int = 3) -> DevSet:
    """24 people, 8 photos each, in 6 families of 4 who look alike: a calibration that misses some
    of a family sees fewer of the scores strangers reach."""
    rng = np.random.default_rng(seed)
    embeddings, labels = [], []
    for family in range(6):
        base = rng.normal(size=64)
        for member in range(4):
            centre = base + 0.9 * rng.normal(size=64)
            for _ in range(8):
                embeddings.append(centre + 0.6 * rng.normal(size=64))
                labels.append(f"p{family}{member}")
    e = np.array(embeddings)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    return DevSet("look-alikes", e, np.array(labels), [f"{i}.jpg" for i in range(len(labels))], 0)


def test_plain_threshold_lets_in_more_than_its_far_of_unseen_people_and_the_margin_does_not():
    far = 1e-2
    held = heldout([_look_alikes()], [far], folds=6, repeats=10)
    fa, trials = held.events(far)["look-alikes"]
    assert fa > far * trials  # the attack: strangers the calibration never saw pass more often
    margin = held.margin(far)
    assert margin > 0
    fa, trials = held.events(far, margin)["look-alikes"]
    assert fa <= far * trials
    fa, trials = held.events(far, round(margin - 0.001, 6))["look-alikes"]
    assert fa > far * trials  # the smallest step that holds, not a looser guess


def test_calibrated_points_carry_the_margin_and_never_loosen_at_a_smaller_far():
    s = _look_alikes()
    points = {"strict": 1e-3, "default": 1e-2, "convenient": 3e-2}
    impostor = s.scores()[1]
    held = heldout([s], sorted({*points.values(), *(entry[0] for entry in far_curve([impostor]))}), repeats=10)
    out = calibrate_points([s], points, held=held)
    for name, far in points.items():
        point = out["operating_points"][name]
        plain = conservative_threshold([impostor], far)
        assert point["heldout_margin"] == held.margin(far)
        assert point["threshold"] >= round(plain + point["heldout_margin"], 4) - 1e-12
        held_out = point["measured"][0]["heldout"]
        assert held_out["far"] <= max(far, 10 / held_out["impostor_trials"])
    curve = sorted(out["far_curve"])
    assert all(a[1] >= b[1] for a, b in zip(curve, curve[1:], strict=False))  # smaller FAR: never looser
    for point in out["operating_points"].values():  # 1:N and calibrate read the same thresholds
        assert [t for f, t, _ in curve if f == point["far"]] in ([], [point["threshold"]])


@pytest.mark.parametrize("name", [n for n in PACKAGED_BUNDLES if n != "default"])
def test_shipped_points_record_their_held_out_far(name):
    """Every packaged bundle's points were set with the margin, and record the held-out FAR it keeps."""
    meta = json.loads((bundle_path(name) / "bundle.json").read_text())
    for point_name, point in meta["operating_points"].items():
        assert point["heldout_margin"] >= 0, point_name
        for m in point["measured"]:
            held = m["heldout"]
            assert held["far"] <= max(point["far"], 10 / max(held["impostor_trials"], 1)), (point_name, m["set"])
