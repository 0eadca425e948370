"""Liveness: the detectors on real videos, the challenge, and attacks that must fail every time."""

from __future__ import annotations

import itertools
import json
import random
import threading

import cv2
import pytest

from edge_verify.detect import FaceDetector
from edge_verify.errors import UsageError
from edge_verify.landmarks import FaceMesh
from edge_verify.liveness import (
    ACTIONS,
    LivenessMonitor,
    LivenessOptions,
    make_check,
    parse_sequence,
    random_sequence,
    watch,
)
from tests.conftest import SAMPLES, SHARED, make_video, run_cli
from tests.liveness_replay import LIVENESS_VIDEOS, chance_passes, cooperative_check, followable, replay, video_samples
from tests.photo_attacks import KINDS, attack_frames


@pytest.fixture(scope="module")
def parts():
    return FaceDetector(), FaceMesh()


def video_frames(path):
    """(time in seconds, frame) of a video file, through the product's own source."""
    from edge_verify.sources import open_source

    with open_source(str(path)) as source:
        yield from ((f.time, f.image) for f in source)


def run(parts, frames, mode="events", sequence=None, options=None):
    detector, mesh = parts
    return watch(LivenessMonitor(mesh, make_check(mode, options or LivenessOptions(), sequence)), detector, frames)


def times(result, kind):
    return [e.time for e in result.events if e.kind == kind]


def near(found, expected, tolerance):
    return any(abs(t - expected) <= tolerance for t in found)


# -- sequences ------------------------------------------------------------------------------------
def test_random_challenges_always_ask_for_a_blink_and_a_turn():
    rng = random.Random(7)
    seen = {random_sequence(3, rng) for _ in range(300)}
    assert len(seen) >= 6  # not one fixed sequence
    for seq in seen:
        assert "blink" in seq and set(seq) - {"blink"} and all(a != b for a, b in itertools.pairwise(seq))
    with pytest.raises(UsageError):
        random_sequence(1)
    with pytest.raises(UsageError):
        parse_sequence("blink,smile")
    assert parse_sequence("turn_left, blink") == ("turn_left", "blink")


# -- attacks with the packaged photos (no shared data needed) ------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_a_held_print_of_the_sample_photo_never_passes(parts, kind):
    photo = cv2.imread(str(SAMPLES / "astronaut_enroll.jpg"))
    recorded = list(attack_frames(photo, kind, seconds=6))
    for sequence in itertools.permutations(ACTIONS):
        assert run(parts, recorded, "challenge", sequence).state == "failed", (kind, sequence)
    assert run(parts, recorded, "passive").state != "passed", kind


def test_check_from_a_photo_video_is_rejected_with_the_liveness_reason(tmp_path, enrolled_store):
    video = tmp_path / "print.avi"
    make_video(video, [("astronaut_check.jpg", 40)])
    s = ["--store", str(enrolled_store.path)]
    r = run_cli("check", "astronaut", "--source", str(video), "--liveness", "challenge", "--json", *s)
    data = json.loads(r.stdout)
    assert r.returncode == 1 and data["accepted"] is False and data["liveness"]["state"] == "failed", r.stdout
    assert "challenge failed" in (enrolled_store.audit_log()[0].liveness or "")
    r = run_cli("check", "astronaut", "--source", str(video), "--liveness", "off", *s)
    assert r.returncode == 0  # the same photo passes only when liveness is switched off explicitly
    r = run_cli("check", "astronaut", "--source", str(SAMPLES / "astronaut_check.jpg"), "--liveness", "challenge", *s)
    assert r.returncode == 2 and "needs a video or a camera" in r.stderr


def test_kiosk_defaults_to_a_challenge_and_a_photo_never_opens_the_door(tmp_path, verifier, enrolled_store):
    gpiozero = pytest.importorskip("gpiozero")
    from gpiozero.pins.mock import MockFactory

    from edge_verify.kiosk import Kiosk, KioskConfig, build_actions

    gpiozero.Device.pin_factory = factory = MockFactory()
    try:
        video = tmp_path / "door.avi"
        make_video(video, [("astronaut_check.jpg", 60)])
        config = KioskConfig(source=str(video), identity="astronaut", relay_pin=17, led_pin=27, max_frames=60)
        assert config.liveness == "challenge"
        kiosk = Kiosk(config, verifier, enrolled_store, build_actions(config))
        kiosk.clock = lambda: kiosk.frames / 5.0  # 5 frames/s: a 12 s visit, longer than one challenge
        kiosk.run(threading.Event())
        assert kiosk.events and not any(e.accepted for e in kiosk.events)
        assert all("challenge failed" in e.liveness for e in kiosk.events)
        assert [s.state for s in factory.pin(17).states] == [False]  # the relay never moved
        assert len(factory.pin(27).states) > 3  # the LED blinked during the challenge
        assert all(a.liveness and "challenge failed" in a.liveness for a in enrolled_store.audit_log(command="kiosk"))
    finally:
        factory.reset()
        gpiozero.Device.pin_factory = None


# -- the real liveness videos ----------------------------------------------------------------------
LIVE = "video/liveness"


@pytest.mark.shared_data
def test_blinks_found_where_the_videos_show_them(shared_data, parts):
    frontal = run(parts, video_frames(shared_data / LIVE / "man_frontal_expressions_blinks.mp4"))
    assert near(times(frontal, "blink"), 3.2, 0.5) and near(times(frontal, "blink"), 6.2, 0.5), frontal.events
    closeup = run(parts, video_frames(shared_data / LIVE / "closeup_blinking.mp4"))  # chin cut off
    assert near(times(closeup, "blink"), 3.8, 0.6) and near(times(closeup, "blink"), 6.6, 0.6), closeup.events
    obama = run(parts, video_frames(shared_data / LIVE / "obama_weekly_address_talking.mp4"))
    assert len(times(obama, "blink")) >= 5  # natural blinks while talking for 20 s


@pytest.mark.shared_data
def test_head_turns_found_where_the_videos_show_them(shared_data, parts):
    woman = run(parts, video_frames(shared_data / LIVE / "woman_headturns_wink_expressions.mp4"))
    turns = [e for e in woman.events if e.kind != "blink"]
    assert near([e.time for e in turns], 0.4, 0.5) and all(e.depth >= 0.012 for e in turns), turns
    assert near(times(woman, "blink"), 1.5, 0.5)  # the wink/squint at ~1.5 s closes both eyes enough
    obama = run(parts, video_frames(shared_data / LIVE / "obama_weekly_address_talking.mp4"))
    assert near(times(obama, "turn_right"), 7.2, 0.5) and near(times(obama, "turn_right"), 15.4, 0.5), obama.events
    # the "small left/right turns" of this clip measure 2-3 degrees: below a challenge turn (12), by design
    outdoor = run(parts, video_frames(shared_data / LIVE / "man_outdoor_talking_headturns.mp4"))
    assert not [e for e in outdoor.events if e.kind != "blink"]
    glasses = run(parts, video_frames(shared_data / LIVE / "man_glasses_frontal_expressions.mp4"))
    assert not [e for e in glasses.events if e.kind != "blink"]  # small motion is not a turn


@pytest.fixture(scope="module")
def recorded(shared_data, parts):
    """The landmark samples of each liveness video, measured once per test module."""
    cache: dict[str, list] = {}

    def samples(video: str) -> list:
        if video not in cache:
            cache[video] = video_samples(shared_data / LIVE / video, *parts)
        return cache[video]

    return samples


@pytest.mark.shared_data
@pytest.mark.parametrize("video", LIVENESS_VIDEOS)
def test_a_cooperative_person_passes(recorded, video):
    """The test hook shows each prompt 0.6 s before the person in the video makes the movement:
    every video with an action in it passes, each action inside its reaction window."""
    samples = recorded(video)
    actions = followable(samples)
    if not actions:
        pytest.skip(f"{video}: no blink or head turn in it to prompt")
    check = cooperative_check(actions)
    result = replay(check, samples)
    assert result.state == "passed", (check.plan, result.summary())
    assert result.sequence == tuple(e.kind for e in actions)


@pytest.mark.shared_data
def test_a_prompt_that_comes_too_late_or_a_movement_too_soon_fails(recorded):
    samples = recorded("woman_headturns_wink_expressions.mp4")
    events = followable(samples)
    r = replay(cooperative_check(events, lead=0.1), samples)  # the movement began before it could react
    assert r.state == "failed" and "too soon" in r.reason, r.reason
    r = replay(cooperative_check(events, lead=3.0), samples)  # the movement long after its prompt
    assert r.state == "failed" and "no reaction within" in r.reason, r.reason


@pytest.mark.shared_data
@pytest.mark.slow
@pytest.mark.parametrize("video", LIVENESS_VIDEOS)
def test_a_recording_that_ignores_the_prompts_never_passes(recorded, video):
    """The recording played to the camera as it is, at half and double speed, and looped 3 times
    from a random point, against 200 random challenges each (seeded): no pass."""
    samples = recorded(video)
    for speed, loops, random_start in ((1.0, 1, False), (0.5, 1, False), (2.0, 1, False), (1.0, 3, True)):
        passed = chance_passes(samples, range(200), speed, loops, random_start)
        assert passed == [], (video, speed, loops, passed)


@pytest.mark.shared_data
def test_actions_in_the_wrong_order_or_unasked_fail(shared_data, parts):
    frames = list(video_frames(shared_data / LIVE / "woman_headturns_wink_expressions.mp4"))
    r = run(parts, frames, "challenge", ("turn_left", "blink", "turn_right"))
    assert r.state == "failed" and "turn right before being asked" in r.reason, r.reason  # she turns at 0.7 s
    r = run(parts, frames, "challenge", ("blink", "turn_right", "turn_left"))
    assert r.state == "failed"


@pytest.mark.shared_data
def test_frames_alternating_between_two_people_never_pass(shared_data, verifier):
    from edge_verify.pipeline import FaceTracks

    woman = list(video_frames(shared_data / LIVE / "woman_headturns_wink_expressions.mp4"))
    man = list(video_frames(shared_data / LIVE / "man_frontal_expressions_blinks.mp4"))
    size = (woman[0][1].shape[1], woman[0][1].shape[0])
    tracks = FaceTracks(verifier, 3, single=True, liveness="challenge", sequence=("turn_right", "blink", "turn_left"))
    ready = []
    for i, ((t, a), (_, b)) in enumerate(zip(woman, man, strict=False)):
        frame = a if i % 2 == 0 else cv2.resize(b, size)
        ready += tracks.feed(frame, i, f"#{i}", t)
    assert not ready and tracks.tracker.cuts > 50  # every switch of person cuts the track


@pytest.mark.shared_data
@pytest.mark.slow
def test_prints_of_every_shared_photo_never_pass_the_challenge(shared_data, parts):
    photos = sorted(p for p in (shared_data / "faces").glob("*/*") if p.suffix.lower() in {".jpg", ".png"})
    for i, photo in enumerate(photos):
        image = cv2.imread(str(photo))
        for kind in KINDS:
            recorded = list(attack_frames(image, kind, seconds=5, fps=12, seed=i))
            sequence = random_sequence(3, random.Random(i))
            assert run(parts, recorded, "challenge", sequence).state == "failed", (photo.name, kind, sequence)
    # Not asserted: the passive mode. A moved print of biden_1.jpg at 12 frames/s showed a fake blink and
    # a turn with optical-flow depth 0.040 and passed it (benchmarks/liveness.py, docs/liveness.md).


REPLAYS = sorted(
    p.name for p in (SHARED / "antispoof/replay_dev/replay").glob("*") if p.suffix.lower() in {".mp4", ".mov"}
)


@pytest.mark.shared_data
@pytest.mark.slow
@pytest.mark.parametrize("replay_video", REPLAYS or ["(absent)"])
def test_a_phone_or_monitor_replay_is_rejected_by_passive_and_challenge(tmp_path, shared_data, replay_video):
    """The person is enrolled from the replay's own first frames (their face matches perfectly):
    only the liveness check stands between the screen and the door."""
    video = shared_data / "antispoof/replay_dev/replay" / replay_video
    s = ["--store", str(tmp_path / "s.db")]
    r = run_cli("enroll", "person", "--source", str(video), "--frames", "3", *s)
    assert r.returncode == 0, r.stderr
    for mode in ("passive", "challenge"):
        r = run_cli("check", "person", "--source", str(video), "--liveness", mode, "--json", *s, timeout=300)
        data = json.loads(r.stdout)
        assert r.returncode == 1 and data["accepted"] is False, (mode, r.stdout, r.stderr)
        assert data["liveness"]["state"] == "failed", data["liveness"]


@pytest.mark.shared_data
def test_a_held_turn_fails(recorded):
    """A recording cannot hold a turn to time the next prompt."""
    samples = recorded("woman_headturns_wink_expressions.mp4")
    r = replay(cooperative_check(followable(samples), options=LivenessOptions(return_s=0.2)), samples)
    assert r.state == "failed" and "did not come back to the camera within 0.2s" in r.reason, r.reason


@pytest.mark.shared_data
def test_passive_mode_lets_people_move_while_the_model_watches(recorded):
    samples = recorded("woman_headturns_wink_expressions.mp4")  # a turn at 0.7 s, a blink at 1.6 s, turns later
    check = make_check("passive")
    check.model_threshold = 0.41
    for s in samples:
        check.observe_real(0.9)
        if check.feed(s).state != "pending":
            break
    assert check.result.state == "passed" and check.result.finished >= LivenessOptions().model_min_s, check.result
