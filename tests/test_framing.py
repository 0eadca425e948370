"""The border cue (``edge_verify.framing``): a phone, monitor or print held up to the camera brings its
straight edges around the face; a person's head has a room around it and a body below it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_verify.detect import FaceDetector
from edge_verify.framing import framing_sides
from edge_verify.liveness import LivenessOptions
from tests.conftest import SAMPLES
from tests.puppet_attacks import on_screen

FRAMED = LivenessOptions().framed_sides
SHARE = LivenessOptions().max_framed_share


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


def frames_of(path, step: int = 6):
    capture = cv2.VideoCapture(str(path))
    index = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            return
        if index % step == 0:
            if frame.shape[1] > 960:
                frame = cv2.resize(frame, None, fx=640 / frame.shape[1], fy=640 / frame.shape[1])
            yield frame
        index += 1


def framed_share(detector, path) -> tuple[int, int]:
    framed = measured = 0
    for frame in frames_of(path):
        faces = detector.detect(frame)
        if faces:
            framed += framing_sides(frame, faces[0].box) >= FRAMED
            measured += 1
    return framed, measured


def test_a_face_shown_on_a_screen_has_the_screen_border_around_it(detector):
    face = cv2.imread(str(SAMPLES / "astronaut_check.jpg"))
    face = cv2.resize(face, (640, 480))
    sides = []
    for seed in range(20):
        frame = on_screen(face, np.random.default_rng(seed))  # a phone or monitor filmed by the kiosk camera
        found = detector.detect(frame)
        assert found, f"screen {seed}: no face found"
        sides.append(framing_sides(frame, found[0].box))
    assert sum(s >= FRAMED for s in sides) >= 18, sides


@pytest.mark.shared_data
def test_black_bars_of_a_letterboxed_camera_are_not_a_border(shared_data, detector):
    """A 4:3 camera delivered in a 16:9 stream (bars left and right, and top and bottom): the bars'
    edges are straight and strong, but they are the picture's end, not something held up in it."""
    frame = next(frames_of(shared_data / "video" / "liveness" / "obama_weekly_address_talking.mp4"))
    frame = cv2.resize(frame, (480, 360))
    barred = cv2.copyMakeBorder(frame, 60, 60, 160, 160, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    face = detector.detect(barred)[0]
    assert framing_sides(barred, face.box) < FRAMED
    grey_bars = cv2.copyMakeBorder(frame, 60, 60, 160, 160, cv2.BORDER_CONSTANT, value=(128, 128, 128))
    assert framing_sides(grey_bars, face.box) >= FRAMED  # the same frame on a lit surface: a border


@pytest.mark.slow
@pytest.mark.shared_data
def test_bona_fide_videos_never_show_a_border_and_replays_do(shared_data, detector):
    """Every bona fide video (the liveness videos, the phone and webcam selfies) stays under the share
    of framed frames that fails a check; every phone and monitor replay of replay_dev reaches it."""
    real = sorted((shared_data / "video" / "liveness").glob("*.mp4"))
    real += sorted(p for p in (shared_data / "antispoof" / "replay_dev" / "real").iterdir() if p.suffix != ".csv")
    for path in real:
        framed, measured = framed_share(detector, path)
        assert measured and framed < SHARE * measured, f"{path.name}: {framed} of {measured} frames framed"
    replays = sorted(p for p in (shared_data / "antispoof" / "replay_dev" / "replay").iterdir() if p.suffix != ".csv")
    assert len(replays) >= 5
    for path in replays:
        framed, measured = framed_share(detector, path)
        assert framed >= SHARE * measured, f"{path.name}: only {framed} of {measured} frames framed"
