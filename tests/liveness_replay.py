"""Recorded videos replayed against liveness checks without following any prompt: the attack of a
phone or monitor playing a recording (at other speeds, looped) in front of the kiosk.

The landmarks of a video are measured once (``video_samples``); a check is then fed those samples,
so hundreds of random challenges cost seconds. Used by tests/test_liveness.py and
benchmarks/liveness.py.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from edge_verify.detect import FaceDetector
from edge_verify.landmarks import FaceMesh
from edge_verify.liveness import (
    Challenge,
    Check,
    LiveEvent,
    LivenessMonitor,
    LivenessOptions,
    LivenessResult,
    Sample,
    Step,
    make_check,
)
from edge_verify.sources import open_source

LIVENESS_VIDEOS = [
    "closeup_blinking.mp4",
    "man_frontal_expressions_blinks.mp4",
    "man_glasses_frontal_expressions.mp4",
    "man_outdoor_talking_headturns.mp4",
    "obama_weekly_address_talking.mp4",
    "woman_headturns_wink_expressions.mp4",
]  # ../shared/data/video/liveness/


def video_samples(path: Path, detector: FaceDetector, mesh: FaceMesh) -> list[Sample]:
    """The landmark sample of the largest face in each frame of ``path`` (frames without usable
    landmarks are left out, as the check never sees them); images kept in grey for the depth cue."""
    monitor = LivenessMonitor(mesh, make_check("events"))
    samples = []
    with open_source(str(path)) as source:
        for frame in source:
            faces = detector.detect(frame.image)
            s = monitor.measure(frame.image, faces[0] if faces else None, frame.time)
            if s is not None:
                samples.append(replace(s, image=cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY)))
    return samples


def duration(samples: list[Sample]) -> float:
    """Length of one play of the recording, one frame interval included (so loops do not overlap)."""
    step = np.median(np.diff([s.time for s in samples])) if len(samples) > 1 else 0.04
    return samples[-1].time - samples[0].time + float(step)


def played(samples: list[Sample], speed: float = 1.0, start: float = 0.0, seconds: float = 60.0) -> list[Sample]:
    """What a camera sees of the recording played at ``speed`` from ``start`` seconds into it, looped
    until ``seconds`` have passed: each video frame shown for its own time divided by ``speed``."""
    length = duration(samples)
    t0 = samples[0].time
    out: list[Sample] = []
    loop = 0
    offset = start % length
    while True:
        for s in samples:
            video_time = loop * length + (s.time - t0) - offset
            if video_time < 0:
                continue
            at = video_time / speed
            if at > seconds:
                return out
            out.append(replace(s, time=at))
        loop += 1


def replay(check: Check, stream: list[Sample]) -> LivenessResult:
    """Feed ``stream`` until the check decides; a check still pending at the end has been abandoned."""
    for s in stream:
        if check.feed(s).state != "pending":
            break
    check.give_up("the recording ended before the check was completed")
    return check.result


def chance_passes(
    samples: list[Sample],
    seeds: range,
    speed: float = 1.0,
    loops: float = 1.0,
    random_start: bool = False,
    options: LivenessOptions | None = None,
) -> list[int]:
    """Seeds whose random challenge the recording passed: each seed draws the challenge (and, with
    ``random_start``, the point of the recording at which it begins); the recording plays at
    ``speed`` for ``loops`` plays."""
    options = options or LivenessOptions()
    passed = []
    length = duration(samples)
    for seed in seeds:
        rng = random.Random(seed)
        start = rng.uniform(0, length) if random_start else 0.0
        stream = played(samples, speed, start, seconds=loops * length / speed)
        if replay(make_check("challenge", options, rng=rng), stream).state == "passed":
            passed.append(seed)
    return passed


class PromptedAt(Challenge):
    """The test hook of a cooperative user: prompts each action at a given time of the recording,
    just before the person in it makes that movement, as if following the prompts."""

    def __init__(self, actions: list[str], times: list[float], options: LivenessOptions | None = None):
        super().__init__(tuple(Step(a, 0.0) for a in actions), options)
        self.times = times

    def _due(self, s: Sample) -> bool:
        return s.time >= self.times[self.result.step]


def cooperative_check(events: list[LiveEvent], lead: float = 0.6, options=None) -> PromptedAt:
    """A challenge that prompts each of ``events`` (the recording's own actions, in order) ``lead``
    seconds before it begins."""
    return PromptedAt([e.kind for e in events], [e.began - lead for e in events], options)


def followable(samples: list[Sample], lead: float = 0.6) -> list[LiveEvent]:
    """The recording's actions a cooperative plan can prompt: every head turn (an unprompted one
    would fail the check), and the blinks that begin at least ``lead`` + 0.3 s after the previous
    chosen action (room for their prompt); each prompted ``lead`` s before it begins, at a moment
    when the head is at rest (as the check requires). Stops at the first action that cannot be."""
    check = make_check("events")
    events, resting = [], []
    for s in samples:
        events += check.feed(s).events[len(events) :]
        resting.append((s.time, check.detector.resting))
    chosen: list[LiveEvent] = []
    for event in events:
        previous = chosen[-1].time if chosen else samples[0].time
        if event.kind == "blink" and event.began - previous < lead + 0.3:
            continue
        prompt_at = event.began - lead
        at_rest = [r for t, r in resting if t >= prompt_at]
        if prompt_at < previous or not at_rest or not at_rest[0]:
            break
        chosen.append(event)
    return chosen
