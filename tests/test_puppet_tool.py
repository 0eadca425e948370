"""The photo-puppet test tool (tests/puppet_attacks.py) does what the attack needs: a face our detector
finds, turns with the product's yaw sign, blinks our event detector sees, and a puppeteer that acts only
on the prompts it is shown. (Whether the attack fails is for the liveness tests, not these.)"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_verify import liveness
from edge_verify.detect import FaceDetector
from edge_verify.landmarks import FaceMesh
from edge_verify.liveness import EventDetector, LivenessOptions, head_yaw, sample
from tests.conftest import SAMPLES
from tests.puppet_attacks import CANVAS, Puppet, PuppetActor, on_screen, prompted_action


@pytest.fixture(scope="module")
def parts():
    return FaceDetector(), FaceMesh()


@pytest.fixture(scope="module")
def astronaut(parts):
    return Puppet(cv2.imread(str(SAMPLES / "astronaut_enroll.jpg")), *parts)


@pytest.fixture(scope="module")
def obama(shared_data, parts):
    return Puppet(cv2.imread(str(shared_data / "faces" / "obama" / "obama_2.jpg")), *parts)


def measure(parts, frame):
    detector, mesh = parts
    faces = detector.detect(frame)
    assert faces, "no face found in the rendered frame"
    return faces[0], mesh.landmarks(frame, faces[0])


def events(parts, frames):
    detector, mesh = parts
    found = EventDetector(LivenessOptions())
    seen = []
    for t, frame in frames:
        faces = detector.detect(frame)
        seen += found.feed(sample(mesh.landmarks(frame, faces[0]), t, frame))
    return seen


def act(actor, prompt, seconds, fps=15):
    return [(i / fps, actor.frame(i / fps, prompt)) for i in range(int(seconds * fps))]


@pytest.mark.shared_data
def test_the_puppet_renders_a_face_our_detector_finds(parts, obama):
    frame = obama.render()
    assert frame.shape == (CANVAS[1], CANVAS[0], 3)
    face, mesh = measure(parts, frame)
    assert 150 <= face.box[2] <= 250 and mesh.presence > 0.9
    screened = on_screen(frame, np.random.default_rng(1))
    assert screened.shape == frame.shape and not np.array_equal(screened, frame)
    assert measure(parts, screened)[1].presence > 0.9  # a screen is still a face to the detector


@pytest.mark.shared_data
def test_turn_left_is_a_positive_yaw_with_the_nose_to_image_right(parts, obama):
    rest = measure(parts, obama.render())[1].points
    left = measure(parts, obama.render(yaw_deg=25))[1].points
    right = measure(parts, obama.render(yaw_deg=-25))[1].points
    assert head_yaw(left) - head_yaw(rest) > LivenessOptions().turn_deg
    assert head_yaw(right) - head_yaw(rest) < -LivenessOptions().turn_deg
    assert left[liveness.NOSE_TIP, 0] > rest[liveness.NOSE_TIP, 0] > right[liveness.NOSE_TIP, 0]
    up = measure(parts, obama.render(pitch_deg=15))[1].points
    assert up[liveness.NOSE_TIP, 1] < rest[liveness.NOSE_TIP, 1]  # looking up moves the nose up


@pytest.mark.shared_data
def test_prompted_blinks_and_turns_are_events_for_our_detector(parts, obama):
    blinks = events(parts, act(PuppetActor(obama, np.random.default_rng(3)), liveness.PROMPTS["blink"], 4))
    assert {e.kind for e in blinks} == {"blink"}, blinks
    actor = PuppetActor(obama, np.random.default_rng(4))
    turns = events(parts, act(actor, liveness.PROMPTS["turn_left"], 2.5))
    assert [e.kind for e in turns if e.kind != "blink"] == ["turn_left"], turns
    assert [a for a, _ in actor.performed] == ["turn_left"]


def test_the_puppeteer_acts_only_on_prompts_it_knows(astronaut, monkeypatch):
    assert prompted_action(liveness.PROMPTS["turn_right"]) == "turn_right"
    assert prompted_action(liveness.PROMPTS["look"]) is None and prompted_action("") is None
    for prompt in ("", liveness.PROMPTS["look"], "Raise your hand"):
        actor = PuppetActor(astronaut, np.random.default_rng(0))
        act(actor, prompt, 3)
        assert actor.performed == [], prompt
    actor = PuppetActor(astronaut, np.random.default_rng(0))
    act(actor, liveness.PROMPTS["blink"], 1.5)
    assert len(actor.performed) == 1 and 0.3 <= actor.performed[0][1] <= 0.8 + 1 / 15  # a human's reaction


def test_actions_added_to_the_prompts_later_are_performed(astronaut, monkeypatch):
    monkeypatch.setattr(liveness, "PROMPTS", {**liveness.PROMPTS, "open_mouth": "Open your mouth"})
    actor = PuppetActor(astronaut, np.random.default_rng(0))
    frames = act(actor, "Open your mouth", 1.5)
    assert [a for a, _ in actor.performed] == ["open_mouth"]
    assert not np.array_equal(frames[0][1], frames[15][1])
