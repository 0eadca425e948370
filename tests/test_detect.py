"""The face detector: YuNet run by LiteRT finds what OpenCV's FaceDetectorYN finds on the same
model (its altered or missing model: tests/test_hardening.py)."""

from __future__ import annotations

import importlib

import cv2
import numpy as np
import pytest

from edge_verify.detect import FaceDetector
from edge_verify.sources import list_images, open_source, read_image
from tests.conftest import SAMPLES

detect = importlib.import_module("edge_verify.detect")  # the module; ``edge_verify.detect`` is the API function


def opencv_search(image: np.ndarray) -> list[detect.Face]:
    """OpenCV's own YuNet on the packaged ONNX file the TFLite model is built from."""
    h, w = image.shape[:2]
    yunet = cv2.FaceDetectorYN.create(str(detect.yunet_onnx_path()), "", (w, h), 0.7, 0.3, 50)
    return sorted(detect._faces(yunet.detect(image)[1]), key=lambda f: f.box[2] * f.box[3], reverse=True)


def assert_same_faces(ours: list[detect.Face], theirs: list[detect.Face]) -> None:
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert np.abs(np.subtract(a.box, b.box)).max() < 0.01
        assert np.abs(a.landmarks - b.landmarks).max() < 0.01
        assert a.score == pytest.approx(b.score, abs=1e-4)


def test_litert_yunet_finds_what_opencv_finds_on_the_samples():
    detector = FaceDetector()
    images = [read_image(p) for p in sorted(SAMPLES.glob("*.jpg"))]
    images.append(cv2.resize(images[0], None, fx=0.37, fy=0.37, interpolation=cv2.INTER_AREA))  # not a multiple of 32
    images.append(np.full((200, 300, 3), 90, np.uint8))  # no face
    for image in images:
        assert_same_faces(detector.search(image), opencv_search(image))
    assert sum(len(detector.search(i)) for i in images) >= 3


@pytest.mark.slow
def test_litert_yunet_finds_what_opencv_finds_on_shared_photos_and_video(shared_data):
    detector = FaceDetector()
    images = [read_image(p) for d in sorted((shared_data / "faces").iterdir()) for p in list_images(d)]
    images += [read_image(p) for p in list_images(shared_data / "scenes")]
    with open_source(str(shared_data / "video" / "short_hamilton_clip.mp4")) as video:
        images += [f.image for f in video if f.index % 25 == 0]
    found = 0
    for image in images:
        if max(image.shape[:2]) > 1300:  # full-size search of the largest photos is slow and adds nothing here
            image = cv2.resize(image, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
        ours = detector.search(image)
        assert_same_faces(ours, opencv_search(image))
        found += len(ours)
    assert found >= 40


def test_a_stream_of_large_frames_gives_the_same_faces_in_every_frame():
    """Large frames are refined on full-resolution crops; after a few frames the crops get an
    interpreter of their own, which must not change what is found."""
    detector = FaceDetector(working_side=640)
    frame = cv2.resize(read_image(SAMPLES / "astronaut_check.jpg"), None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
    first = detector.detect(frame)
    assert len(first) == 1
    for _ in range(4):
        again = detector.detect(frame)
        assert np.array_equal(again[0].landmarks, first[0].landmarks) and again[0].box == first[0].box
    assert detector._refiner is not None
