"""The template a decision scores against: its direction (the unit mean of at most 5 enrolment
frames), the statistic the operating points were calibrated on."""

from __future__ import annotations

import cv2
import numpy as np

from edge_verify.enrolment import enrol
from edge_verify.matcher import MAX_TEMPLATE_FRAMES, mean_template, unit
from tests.conftest import SAMPLES


def _frames(verifier) -> tuple[np.ndarray, list[str]]:
    """Seven real frames of one person: the photo shifted, scaled, lit a little differently."""
    photo = cv2.imread(str(SAMPLES / "astronaut_enroll.jpg"))
    h, w = photo.shape[:2]
    frames, names = [], []
    for i, (dx, scale, gain) in enumerate(
        [(0, 1.0, 1.0), (8, 1.0, 0.9), (-8, 1.0, 1.1), (0, 0.9, 1.0), (4, 1.1, 0.95), (-4, 0.95, 1.05), (0, 1.0, 0.8)]
    ):
        m = np.float32([[scale, 0, dx + (1 - scale) * w / 2], [0, scale, (1 - scale) * h / 2]])
        frame = np.clip(cv2.warpAffine(photo, m, (w, h), borderMode=cv2.BORDER_REPLICATE) * gain, 0, 255)
        frames.append(verifier.observe_single(frame.astype(np.uint8), f"f{i}").embedding)
        names.append(f"f{i}")
    return np.stack(frames), names


def test_a_template_keeps_the_five_frames_that_agree_best(verifier, enrolled_store):
    embeddings, names = _frames(verifier)
    result = enrol(enrolled_store, verifier.bundle, "eileen", embeddings, names, force=True)
    assert result.frames == MAX_TEMPLATE_FRAMES == 5  # more were given: the points hold for 5
    stored = enrolled_store.get("eileen", verifier.bundle.fingerprint)
    sims = unit(embeddings) @ unit(embeddings).T
    agreement = (sims.sum(1) - 1) / (len(embeddings) - 1)
    best = np.sort(np.argsort(-agreement, kind="stable")[:5])
    assert np.allclose(stored, mean_template(embeddings[best]), atol=1e-6)


def test_camera_enrolment_spreads_its_frames_over_time(monkeypatch, verifier, store_path, capsys):
    """A 25 frames/s camera (a fake: this machine has none) showing two real photos of one person,
    alternating every 10 frames: the five enrolment frames are taken 0.25 s apart or more (frames 0,
    7, 14, 21, 28: both photos), not from one instant (frames 0-4: one photo)."""
    import json

    from edge_verify import cli, sources
    from edge_verify.store import TemplateStore

    photos = [cv2.imread(str(SAMPLES / name)) for name in ("astronaut_enroll.jpg", "astronaut_check.jpg")]

    class FakeCamera(sources.FrameSource):
        live = True
        name = "camera 0"

        def frames(self):
            for i in range(100):
                yield sources.Frame(photos[(i // 10) % 2], i, f"camera 0#{i}", i / 25)

    monkeypatch.setattr(sources, "open_source", lambda spec, timeout_s=5.0: FakeCamera())
    code = cli.main(["enroll", "eileen", "--source", "0", "--json", "--store", str(store_path)])
    assert code == 0 and json.loads(capsys.readouterr().out)["frames_used"] == 5
    a, b = (verifier.observe_single(p, "photo").embedding for p in photos)
    with TemplateStore(store_path) as store:
        stored = store.get("eileen", verifier.bundle.fingerprint)
    assert np.allclose(stored, mean_template(np.stack([a, a, b, a, a])), atol=1e-5)
