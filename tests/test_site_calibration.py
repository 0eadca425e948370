"""On-site calibration for a small site: the FAR side from the bundle's curve (never looser than it
vouches for), the site's impostor pairs only tighten, --dry-run always shows the figures."""

from __future__ import annotations

import json
import shutil

import pytest

from edge_verify.bundle import load_bundle
from edge_verify.operating import threshold_for_far
from edge_verify.site_calibration import people_needed
from tests.conftest import SAMPLES, face_images, run_cli


def _s(store_path):
    return ["--store", str(store_path)]


def test_dry_run_on_five_people_shows_the_figures_and_writes_nothing(shared_data, store_path):
    bundle = load_bundle()
    r = run_cli("calibrate", str(shared_data / "faces"), "--dry-run", "--json", *_s(store_path))
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert not data["written"] and not store_path.exists()
    # templates of up to 5 of a person's photos against each other photo: the statistic of the points
    assert data["people"] == 5 and data["images"] == 16 and not data["site_resolves_far"]
    assert (data["genuine_pairs"], data["impostor_pairs"]) == (16, 194)
    vouched, _ = threshold_for_far(bundle.far_curve, 1e-3)
    assert data["threshold"] >= vouched == data["bundle_threshold"]  # never looser than the bundle vouches for
    table = {round(row["threshold"], 4): row for row in data["table"]}
    for name, point in bundle.operating_points.items():  # the site's FRR at every operating point ...
        assert name in table[point.threshold]["points"]
    assert len(table) > len(bundle.operating_points)  # ... and at thresholds between them
    for row in data["table"]:
        assert row["frr_ci"][0] <= row["frr"] <= row["frr_ci"][1]
    frrs = [row["frr"] for row in sorted(data["table"], key=lambda row: row["threshold"])]
    assert frrs == sorted(frrs)  # a stricter threshold never rejects fewer of the site's people
    assert data["impostor_pairs_needed"] == 10_000 and data["people_needed"] == people_needed(1e-3) == 21
    text = run_cli("calibrate", str(shared_data / "faces"), "--dry-run", *_s(store_path)).stdout
    assert "needs 10,000 impostor tries (e.g. 21 people with 5 photos each); you have 194 impostor tries" in text
    assert "your people are turned away on" in text and "dry run: nothing written" in text


def test_calibrating_five_people_stores_the_bundles_threshold_and_their_frr(shared_data, store_path):
    s = _s(store_path)
    bundle = load_bundle()
    r = run_cli("calibrate", str(shared_data / "faces"), "--far", "1e-4", "--json", *s)  # stricter: no flag
    data = json.loads(r.stdout)
    assert r.returncode == 0 and data["written"] and not data["looser_than_default"]
    assert data["threshold"] >= threshold_for_far(bundle.far_curve, 1e-4)[0] >= bundle.threshold.value
    photos = face_images(shared_data / "faces")["obama"]
    run_cli("enroll", "obama", "--source", str(photos[0]), *s)
    out = json.loads(run_cli("check", "obama", "--source", str(photos[1]), "--json", *s).stdout)
    assert out["threshold"] == pytest.approx(data["threshold"]) and out["threshold_source"].startswith("site")
    # a looser request is still refused without --allow-looser, and the stored calibration stays
    r = run_cli("calibrate", str(shared_data / "faces"), "--far", "3e-2", *s)
    assert r.returncode == 2 and "looser than the bundle's 'default' operating point" in r.stderr
    assert "--allow-looser" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    out = json.loads(run_cli("check", "obama", "--source", str(photos[1]), "--json", *s).stdout)
    assert out["threshold"] == pytest.approx(data["threshold"])
    dry = json.loads(
        run_cli("calibrate", str(shared_data / "faces"), "--far", "3e-2", "--dry-run", "--json", *s).stdout
    )
    assert dry["looser_than_default"] and dry["refused"] and not dry["written"]  # figures shown all the same


def test_site_impostor_pairs_only_tighten(tmp_path, store_path):
    """Two people of the site look alike (here: two photos of one person labelled as two people):
    their impostor pair scores above the bundle's threshold, so the site's threshold rises above it."""
    for name in ("astronaut_enroll.jpg", "astronaut_check.jpg", "cameraman.jpg"):
        shutil.copy(SAMPLES / name, tmp_path / name)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text(
        "astronaut_enroll.jpg astronaut_enroll.jpg 1\n"
        "astronaut_enroll.jpg astronaut_check.jpg 0\n"  # the look-alikes
        "astronaut_check.jpg astronaut_check.jpg 1\n"
    )
    r = run_cli("calibrate", "--pairs", str(pairs), "--json", *_s(store_path))
    data = json.loads(r.stdout)
    assert r.returncode == 0, r.stderr
    assert data["tightened_by_site"] and data["threshold"] > data["bundle_threshold"]
    assert data["threshold"] == data["site_bound"] and data["written"]
    assert data["table"][-1]["site_far"] == 0.0  # the look-alike pair no longer passes
    assert data["at_threshold"]["site_far"] == 0.0 and data["report"]["impostor_max"] < data["threshold"]


def test_an_unresolved_gallery_is_warned_about_once_with_the_number(caplog, monkeypatch):
    """1:N beyond what the bundle's data resolved: the strictest measured threshold, and one warning
    per gallery size (a kiosk reloading its store does not repeat it)."""
    import logging

    from edge_verify import pipeline
    from edge_verify.pipeline import resolve_threshold

    monkeypatch.setattr(pipeline, "_WARNED", set())  # whatever this process warned about before
    bundle = load_bundle()
    with caplog.at_level(logging.WARNING, logger="edge_verify"):
        choices = [resolve_threshold(bundle, None, gallery_size=50) for _ in range(3)]
        resolved = resolve_threshold(bundle, None, gallery_size=2)
    warnings = [r.getMessage() for r in caplog.records if "identities enrolled" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("50 identities enrolled") and "2e-05" in warnings[0]
    assert all(not c.far_resolved for c in choices) and resolved.far_resolved
    assert choices[0].value == max(t for _, t, _ in bundle.far_curve) >= bundle.threshold.value


def test_a_site_calibration_from_before_the_bundle_changed_is_never_looser_than_its_default(store_path):
    """Attack: a site calibrated under the previous fused bundle (old statistic, old default 0.8424,
    stored as not looser than that default) upgrades and runs `doctor --repin`. Its old threshold,
    below the new default, must not stay in force: the new statistic scores impostors higher."""
    from edge_verify.pipeline import resolve_threshold
    from edge_verify.store import TemplateStore

    bundle = load_bundle()
    old = {"threshold": 0.8424, "far": 1e-3, "source": "200+1800 pairs from site", "looser_than_default": False}
    with TemplateStore(store_path) as store:
        store.set_threshold(bundle.fingerprint, {**old, "far_curve": [[1e-3, 0.8424, True]]})
    assert run_cli("doctor", "--repin", *_s(store_path)).returncode == 0
    with TemplateStore(store_path) as store:
        choice = resolve_threshold(bundle, store)
    assert choice.value >= bundle.threshold.value > old["threshold"]
    # a site calibration made with the current bundle is still the one in force
    with TemplateStore(store_path) as store:
        from edge_verify.site_calibration import stamp

        store.set_threshold(bundle.fingerprint, stamp(bundle, {**old, "threshold": 0.99}))
        assert resolve_threshold(bundle, store).value == 0.99


def test_a_far_far_below_the_curve_is_answered_not_hung():
    """`calibrate --far 1e-300` hung in the "how many people" line (one loop step per person:
    about 10^150 of them); it is answered at once, and the number is still the smallest that does."""
    import subprocess
    import sys

    code = "from edge_verify.site_calibration import people_needed; print(people_needed(1e-300))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    n = int(out.stdout)
    need, per_pair = 10 / 1e-300, 5 * 5  # MIN_EVENTS / far; templates (C(5, 4)) x photos
    assert n * (n - 1) * per_pair >= need > (n - 1) * (n - 2) * per_pair
    assert [people_needed(f) for f in (1e-3, 1e-4, 0.5)] == [21, 64, 2]
