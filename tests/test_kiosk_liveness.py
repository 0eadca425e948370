"""The kiosk against attempts: one opening per liveness pass, no free retries (a failed or
abandoned check is audited and counted), lock-outs with an alert, and tracks that end with their
source. Real kiosk loop, generated or real videos, gpiozero's MockFactory for the pins."""

from __future__ import annotations

import random
import threading

import cv2
import pytest

from edge_verify import pipeline
from edge_verify.detect import FaceDetector
from edge_verify.kiosk import Kiosk, KioskConfig, build_actions
from edge_verify.landmarks import FaceMesh
from tests.conftest import make_video
from tests.liveness_replay import LIVENESS_VIDEOS, cooperative_check, followable, video_samples
from tests.test_kiosk import Receiver

pytest.importorskip("gpiozero")


def run_kiosk(config, verifier, store, seed=3, fps=10.0):
    """The kiosk over ``config.source`` with a seeded challenge draw; the video's frame times as its clock."""
    kiosk = Kiosk(config, verifier, store, build_actions(config))
    kiosk.tracks.rng = random.Random(seed)
    kiosk.clock = lambda: kiosk.frames / fps
    kiosk.run(threading.Event())
    return kiosk


def liveness_rows(store):
    return [a for a in reversed(store.audit_log(command="kiosk")) if a.liveness or a.detail]


def test_repeated_failures_lock_the_face_out_then_the_kiosk_with_an_alert(tmp_path, verifier, enrolled_store, pins):
    video = tmp_path / "print.avi"
    make_video(video, [("astronaut_check.jpg", 80), (None, 8), ("astronaut_check.jpg", 80)])  # 10 frames/s
    receiver = Receiver()
    config = KioskConfig(
        source=str(video),
        identity="astronaut",
        relay_pin=17,
        webhook=receiver.url,
        liveness_step_timeout_s=1.0,
        liveness_max_failures=2,
        liveness_alarm_failures=3,
        liveness_lockout_s=30,
        max_frames=168,
    )
    kiosk = run_kiosk(config, verifier, enrolled_store)
    receiver.close()
    rows = liveness_rows(enrolled_store)
    failed = [r for r in rows if r.liveness and "challenge failed" in r.liveness]
    alerts = [r for r in rows if r.detail and r.detail.startswith("liveness attack suspected")]
    assert len(failed) == 3, [r.liveness for r in rows]  # 2 on the first visit (then locked out), 1 on the second
    assert all("no reaction within 1.0s" in r.liveness for r in failed)
    assert len(alerts) == 1 and "3 failed or abandoned checks" in alerts[0].detail
    assert not any(r.accepted for r in enrolled_store.audit_log(command="kiosk"))
    assert [s.state for s in pins.pin(17).states] == [False]  # the relay never moved
    assert any((b.get("alert") or "").startswith("liveness attack suspected") for b in receiver.received)
    assert kiosk.status["state"] == "locked" and kiosk.locked_until > kiosk.frames / 10.0


def test_abandoned_challenges_are_audited_failures(tmp_path, verifier, enrolled_store):
    """Hiding the face when the prompt does not suit is no free retry: each is a failure row."""
    video = tmp_path / "hide.avi"
    make_video(video, [("astronaut_check.jpg", 34), (None, 10)] * 4)  # in view 3.4 s: prompted, then gone
    config = KioskConfig(source=str(video), identity="astronaut", liveness_step_timeout_s=3.0, max_frames=176)
    kiosk = run_kiosk(config, verifier, enrolled_store)
    rows = [r.liveness for r in liveness_rows(enrolled_store)]
    assert len(rows) == 4 and all("abandoned: the face left" in r for r in rows), rows
    assert len(kiosk._failures) == 4  # counted towards the kiosk's alarm (5 by default)


def test_attempts_spaced_out_still_meet_an_hourly_budget(tmp_path, verifier, enrolled_store):
    """Staying under the short alarm window is no way around it: the hourly budget locks the kiosk too."""
    video = tmp_path / "slow.avi"
    make_video(video, [("astronaut_check.jpg", 34), (None, 10)] * 4)
    config = KioskConfig(
        source=str(video),
        identity="astronaut",
        liveness_step_timeout_s=3.0,
        liveness_alarm_failures=100,
        liveness_alarm_failures_per_hour=3,
        max_frames=176,
    )
    kiosk = run_kiosk(config, verifier, enrolled_store)
    alerts = [r.detail for r in liveness_rows(enrolled_store) if r.detail]
    assert alerts == ["liveness attack suspected: 3 failed or abandoned checks within 3600s; checks stopped for 60s"]
    assert kiosk.status["state"] == "locked"


def test_a_source_that_ends_ends_its_tracks(tmp_path, verifier, enrolled_store):
    video = tmp_path / "short.avi"
    make_video(video, [("astronaut_check.jpg", 34)])
    config = KioskConfig(
        source=str(video), identity="astronaut", liveness_step_timeout_s=3.0, reconnect_s=0, max_frames=68
    )
    kiosk = run_kiosk(config, verifier, enrolled_store)
    rows = [r.liveness for r in liveness_rows(enrolled_store)]
    assert kiosk.reconnects >= 1
    assert rows and "abandoned: the source ended" in rows[0], rows
    assert kiosk.tracks.tracker._next_id >= 3  # the second reading began a new track


def ping_pong(frames, path, fps):
    """The video forward then backward, as one stream: the person stays in view twice as long."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    for frame in frames + frames[::-1]:
        writer.write(frame)
    writer.release()


@pytest.mark.shared_data
@pytest.mark.slow
def test_one_pass_opens_the_door_once_however_long_the_person_stays(
    tmp_path, shared_data, verifier, store_path, pins, monkeypatch
):
    from edge_verify.matcher import mean_template
    from edge_verify.sources import open_source
    from edge_verify.store import TemplateStore

    source = shared_data / "video/liveness/woman_headturns_wink_expressions.mp4"
    with open_source(str(source)) as frames_in:
        frames = [f.image for f in frames_in]
    fps = 30.0
    events = followable(video_samples(source, FaceDetector(), FaceMesh()))
    # the test hook: every new track's challenge prompts the woman's own movements just before she makes them
    monkeypatch.setattr(pipeline, "make_check", lambda *args, **kwargs: cooperative_check(events))
    video = tmp_path / "stays.avi"
    ping_pong(frames, video, fps)
    store = TemplateStore(store_path)
    first = [verifier.observe_single(f, "enrol").embedding for f in frames[:5]]
    store.put("woman", mean_template(first), verifier.bundle.fingerprint, 5)
    config = KioskConfig(
        source=str(video), identity="woman", relay_pin=17, relay_pulse_s=0.01, cooldown_s=0, max_frames=2 * len(frames)
    )
    kiosk = run_kiosk(config, verifier, store, fps=fps)
    accepted = [e for e in kiosk.events if e.accepted]
    assert len(accepted) == 1 and "challenge passed" in accepted[0].liveness, kiosk.events
    assert [s.state for s in pins.pin(17).states] == [False, True, False]  # one pulse in 23 s in view
    assert sum(a.accepted for a in store.audit_log(command="kiosk")) == 1
    store.close()


@pytest.mark.shared_data
@pytest.mark.slow
@pytest.mark.parametrize("video", LIVENESS_VIDEOS)
def test_a_looping_recording_never_opens_the_door(tmp_path, shared_data, verifier, store_path, pins, video):
    """The kiosk watches the recording of an enrolled person played in a loop, 10 times its length,
    with random challenges it ignores: no action fires, and its failures lock the kiosk out."""
    from edge_verify.matcher import mean_template
    from edge_verify.sources import open_source
    from edge_verify.store import TemplateStore

    path = shared_data / "video/liveness" / video
    with open_source(str(path)) as source:
        read = [(f.time, f.image) for f in source]
    frames = [image for _, image in read]
    fps = (len(read) - 1) / read[-1][0]
    store = TemplateStore(store_path)
    enrol = [o.embedding for f in frames[:15] for o in verifier.observe(f)[:1] if o.embedding is not None][:5]
    store.put("person", mean_template(enrol), verifier.bundle.fingerprint, len(enrol))
    receiver = Receiver()
    config = KioskConfig(
        source=str(path),
        identity="person",
        relay_pin=17,
        webhook=receiver.url,
        reconnect_s=0,
        max_frames=10 * len(frames),
    )
    kiosk = run_kiosk(config, verifier, store, seed=len(video), fps=fps)
    receiver.close()
    assert kiosk.reconnects >= 9
    assert not any(e.accepted for e in kiosk.events) and not any(a.accepted for a in store.audit_log(command="kiosk"))
    assert [s.state for s in pins.pin(17).states] == [False]
    assert not any(b["accepted"] for b in receiver.received)
    failures = [a for a in store.audit_log(limit=1000, command="kiosk") if a.liveness and "failed" in a.liveness]
    assert failures, "the recording must have been challenged"
    store.close()


@pytest.mark.shared_data
def test_frames_the_quality_gate_refused_cannot_answer_the_challenge(shared_data, verifier, monkeypatch):
    """A face too dark to identify (detected, with landmarks, but no embedding) must not perform the
    challenge for the identified face that started the track: otherwise anyone in the dark could do
    the movements and a photo of an enrolled person take the decision."""
    from edge_verify.pipeline import FaceTracks
    from edge_verify.sources import open_source

    source = shared_data / "video/liveness/woman_headturns_wink_expressions.mp4"
    with open_source(str(source)) as frames_in:
        frames = [(f.time, f.image) for f in frames_in]
    events = followable(video_samples(source, FaceDetector(), FaceMesh()))
    monkeypatch.setattr(pipeline, "make_check", lambda *args, **kwargs: cooperative_check(events))

    def run(darken: bool):
        tracks = FaceTracks(verifier, 3, liveness="challenge")
        ready = []
        for i, (t, image) in enumerate(frames):
            if darken and 3 <= i < len(frames) - 60:  # identified, then too dark to identify, then identified again
                image = (image * 0.2).astype(image.dtype)
            ready += tracks.feed(image, i, f"#{i}", t)
        return ready, tracks

    assert run(darken=False)[0]  # the cooperative hook passes in the light
    ready, tracks = run(darken=True)
    assert tracks.skipped["quality"] > 250 and tracks.tracker.tracks  # followed in the dark, not identified
    assert not ready  # the movements made in the dark did not count
