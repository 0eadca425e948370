"""Alignment, quality gate, frame sources, embedder quantisation: small real-data unit tests."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_verify.align import similarity_transform
from edge_verify.errors import InputError, SourceError
from edge_verify.quality import QualityOptions, assess
from edge_verify.sources import open_source
from tests.conftest import SAMPLES


@settings(max_examples=60, deadline=None)
@given(st.floats(-3.1, 3.1), st.floats(0.2, 5), st.floats(-100, 100), st.floats(-100, 100))
def test_similarity_transform_recovers_a_known_transform(angle, scale, tx, ty):
    src = np.array([[38.0, 52], [74, 51], [56, 72], [42, 92], [71, 92]])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ rot.T + [tx, ty]
    m = similarity_transform(src, dst)
    assert np.allclose(m[:, :2], rot, atol=1e-6) and np.allclose(m[:, 2], [tx, ty], atol=1e-4)


def test_aligned_chip_puts_landmarks_on_the_template(verifier):
    from edge_verify.align import align_face

    img = cv2.imread(str(SAMPLES / "astronaut_enroll.jpg"))
    face = verifier.detector.detect(img)[0]
    chip = align_face(img, face, verifier.bundle.preprocess)
    assert chip.shape == (150, 150, 3)
    redetected = verifier.detector.detect(
        cv2.copyMakeBorder(cv2.cvtColor(chip, cv2.COLOR_RGB2BGR), 75, 75, 75, 75, cv2.BORDER_CONSTANT)
    )[0]
    error = np.abs(redetected.landmarks - 75 - np.array(verifier.bundle.preprocess.template)).max()
    assert error < 6.0  # pixels in a 150 px chip


def test_quality_gate_rejects_blur_dark_and_small():
    chip = cv2.cvtColor(cv2.imread(str(SAMPLES / "astronaut_enroll.jpg")), cv2.COLOR_BGR2RGB)[100:250, 150:300]
    assert assess(chip, 120).ok
    blurred = assess(cv2.GaussianBlur(chip, (0, 0), 6), 120)
    assert not blurred.ok and "blurred" in blurred.reasons[0]
    dark = assess((chip * 0.1).astype(np.uint8), 120)
    assert not dark.ok and any("dark" in r for r in dark.reasons)
    small = assess(chip, 20, QualityOptions(min_face_px=40))
    assert not small.ok and "too small" in small.reasons[0]


def test_tiny_face_is_not_used(verifier):
    from edge_verify.errors import NoFaceError, QualityError

    img = cv2.imread(str(SAMPLES / "astronaut_enroll.jpg"))
    tiny = cv2.resize(img, (64, 64))
    canvas = np.full((480, 640, 3), 90, np.uint8)
    canvas[200:264, 300:364] = tiny
    with pytest.raises(QualityError, match="too small.*come closer to the camera"):
        verifier.observe_single(canvas, "tiny.png")
    with pytest.raises(NoFaceError, match="at least"):  # nobody at all: no instruction to give
        verifier.observe_single(np.full((480, 640, 3), 90, np.uint8), "empty.png")


def test_directory_and_video_sources(tmp_path):
    img = cv2.imread(str(SAMPLES / "cameraman.jpg"))
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), img)
    (tmp_path / "notes.txt").write_text("ignored")
    with open_source(str(tmp_path)) as src:
        assert [f.index for f in src] == [0, 1, 2]
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (img.shape[1], img.shape[0]))
    for _ in range(7):
        writer.write(img)
    writer.release()
    with open_source(str(video)) as src:
        frames = list(src)
    assert len(frames) == 7 and frames[0].image.shape == img.shape


def test_live_source_hands_over_the_newest_frame(tmp_path):
    """A camera is read by a thread that keeps only the newest frame: a slow loop skips frames
    instead of falling behind; a camera that stops delivering is a SourceError after the timeout."""
    import time

    from edge_verify.sources import CaptureSource

    video = tmp_path / "camera.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30, (64, 48))
    for i in range(300):
        writer.write(np.full((48, 64, 3), i % 256, np.uint8))
    writer.release()
    camera = CaptureSource(str(video), "fake camera", live=True, timeout_s=0.5)  # a file played as a camera
    indices = []
    with camera, pytest.raises(SourceError, match="no frame for"):
        for frame in camera:
            indices.append(frame.index)
            time.sleep(0.02)  # a loop slower than the camera
    assert indices == sorted(set(indices)) and len(indices) < 300
    assert max(np.diff(indices)) > 1  # frames were dropped, not queued
    assert camera._reader is None  # closed: the reader thread was joined before the release


def test_bad_sources(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        open_source(str(tmp_path / "nothing.jpg"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="has no images"):
        open_source(str(tmp_path / "empty"))
    with pytest.raises(SourceError, match="no such camera"):
        open_source("/dev/video77")
    with pytest.raises(SourceError, match="cannot open"):
        list(open_source("rtsp://127.0.0.1:9/none", timeout_s=1))


def test_embedder_outputs_unit_vectors_close_to_keras_scale(verifier):
    from edge_verify.embedder import dequantize, quantize

    detail = {"dtype": np.int8, "quantization": (1.0, -128)}
    x = np.array([0.0, 127.0, 255.0])
    assert list(quantize(x, detail)) == [-128, -1, 127]
    assert np.allclose(dequantize(quantize(x, detail), detail), x)
    chips = np.random.default_rng(0).integers(0, 255, (2, 150, 150, 3)).astype(np.uint8)
    out = verifier.embedder.embed(chips)
    assert out.shape == (2, 128) and np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 400), seed=st.integers(0, 10**6), ties=st.booleans())
def test_identify_equals_exact_float64_scoring(n, seed, ties):
    """The float32 product only preselects: the decision equals the exact float64 one, ties included."""
    from edge_verify.matcher import Gallery, identify, unit

    rng = np.random.default_rng(seed)
    templates = unit(rng.normal(size=(n, 32))).astype(np.float32)
    if ties and n > 3:
        templates[1] = templates[0]  # two identities with the same template
        templates[2] = unit(templates[0] + 1e-4 * rng.normal(size=32)).astype(np.float32)
    probes = unit(templates[0] + 0.3 * rng.normal(size=(3, 32)))
    gallery = Gallery({f"id{i}": t for i, t in enumerate(templates)})
    exact = unit(templates.astype(np.float64)) @ unit(probes).mean(0)  # each template's direction
    order = np.argsort(-exact, kind="stable")
    decision = identify(probes, gallery, threshold=0.5, margin=0.01)
    assert decision.score == pytest.approx(exact[order[0]], abs=1e-12)
    assert decision.second_score == (pytest.approx(exact[order[1]], abs=1e-12) if n > 1 else None)
    assert decision.accepted == (exact[order[0]] >= 0.5 and (n == 1 or exact[order[0]] - exact[order[1]] >= 0.01))
    assert [s for _, s in gallery.rank(probes, top=3)] == pytest.approx([exact[i] for i in order[:3]], abs=1e-12)
