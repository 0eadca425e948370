"""The quality gate refuses captures the operating points were not calibrated for: each refusal
carries an instruction the person can act on, gets no score, and the kiosk keeps watching."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from edge_verify.kiosk import Kiosk, KioskConfig
from tests.conftest import SAMPLES, run_cli


def _photo() -> np.ndarray:
    return cv2.imread(str(SAMPLES / "astronaut_check.jpg"))


def dark(image: np.ndarray) -> np.ndarray:
    return (image * 0.12).astype(np.uint8)


def side_lit(image: np.ndarray) -> np.ndarray:
    """Light from one side: across the face, from deep shadow on the image's left to full light."""
    from edge_verify.detect import FaceDetector

    x, _, w, _ = FaceDetector().detect(image)[0].box
    gain = 0.05 + 0.95 * np.clip((np.arange(image.shape[1]) - x - 0.45 * w) / (0.3 * w), 0, 1)
    return (image * gain[None, :, None]).astype(np.uint8)


def tiny(image: np.ndarray) -> np.ndarray:
    canvas = np.full((480, 640, 3), 90, np.uint8)
    canvas[150:300, 250:400] = cv2.resize(image, (150, 150), interpolation=cv2.INTER_AREA)
    return canvas


def turned(image: np.ndarray) -> np.ndarray:
    from tests.puppet_attacks import Puppet

    return Puppet(image).render(yaw_deg=80)


def blurred(image: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), 3)


def overexposed(image: np.ndarray) -> np.ndarray:
    return np.clip(image * 2.2 + 40, 0, 255).astype(np.uint8)


CASES = [
    (dark, "dark", "More light on your face"),
    (side_lit, "uneven", "Light your face evenly"),
    (turned, "turned", "Look straight at the camera"),
    (blurred, "blurred", "Hold still"),
    (overexposed, "bright", "Less light on your face"),
]


@pytest.mark.parametrize(("make", "cue", "instruction"), CASES, ids=[c[1] for c in CASES])
def test_a_bad_capture_gets_its_instruction_and_no_embedding(verifier, make, cue, instruction):
    good = verifier.observe_one(_photo(), "good")
    assert good.quality.ok and good.embedding is not None and good.quality.instruction is None
    obs = verifier.observe_one(make(_photo()), cue)
    assert not obs.quality.ok and obs.embedding is None
    assert obs.quality.cues[0] == cue and obs.quality.instruction.startswith(instruction)


@pytest.mark.parametrize(
    ("make", "instruction"),
    [(dark, "more light on your face"), (side_lit, "light your face evenly"), (tiny, "come closer to the camera")],
    ids=["dark", "side-lit", "tiny"],
)
def test_check_on_a_bad_capture_says_what_to_change_and_records_no_score(tmp_path, enrolled_store, make, instruction):
    path = tmp_path / "capture.png"
    cv2.imwrite(str(path), make(_photo()))
    store = ["--store", str(enrolled_store.path)]
    r = run_cli("check", "astronaut", "--source", str(path), *store)
    assert r.returncode == 7, r.stderr  # QualityError: not a rejection, no score
    assert instruction in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "score" not in r.stdout
    last = json.loads(run_cli("audit", "--json", *store).stdout)["entries"][-1]
    assert last["command"] == "check" and last["score"] == "" and last["accepted"] == 0


def test_the_kiosk_waits_for_a_good_frame(verifier, enrolled_store):
    """Dark frames: the kiosk shows the instruction, decides nothing, audits nothing; then the
    person steps into the light and is let in on the good frames."""
    config = KioskConfig(source="unused", identity="astronaut", liveness="off", debounce=3, cooldown_s=0)
    kiosk = Kiosk(config, verifier, enrolled_store, [])
    rows = len(enrolled_store.audit_log(limit=-1))
    for i in range(8):
        assert kiosk.process(dark(_photo()), f"dark#{i}", at=i * 0.1) == []
        assert kiosk.status == {"state": "adjust", "prompt": "More light on your face"}
    assert len(enrolled_store.audit_log(limit=-1)) == rows
    events = [e for i in range(3) for e in kiosk.process(_photo(), f"lit#{i}", at=1 + i * 0.1)]
    assert [(e.accepted, e.identity, e.frames) for e in events] == [(True, "astronaut", 3)]
    assert kiosk.status["state"] == "ACCEPTED"


def test_the_gate_limits_are_recorded_with_the_operating_points(verifier):
    """The thresholds were calibrated on what this gate accepts: the bundle says which gate."""
    from dataclasses import asdict

    from edge_verify.quality import QualityOptions

    assert verifier.bundle.metadata["quality_gate"] == asdict(QualityOptions())
    for point in verifier.bundle.operating_points.values():
        assert all("gate_refused" in m for m in point.measured)
