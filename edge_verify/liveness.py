"""Presentation-attack detection on one tracked face: is a live person in front of the camera?

Landmarks (``landmarks.FaceMesh``) become per-frame ``Sample``s (head yaw, eye openness, points);
``EventDetector`` turns a stream of samples into blinks and head turns; ``Challenge`` asks for a
random sequence of those actions within a time limit; ``PassiveCheck`` watches without asking.
Both also apply the passive cues: a picture that does not move, and a turn whose landmarks move
like points on a plane (a tilted photo or screen) rather than a head.

Directions are the user's own: ``turn_left`` is the user's left (the nose moves to the right of an
unmirrored camera image).
"""

from __future__ import annotations

import random
import secrets
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import cv2
import numpy as np

from edge_verify.antispoof import AntiSpoof, TrackScore
from edge_verify.detect import Face, FaceDetector
from edge_verify.errors import UsageError
from edge_verify.landmarks import FaceMesh, Mesh, face_from_mesh
from edge_verify.track import iou

MODES = ("off", "passive", "challenge")
ACTIONS = ("turn_left", "turn_right", "blink")
PROMPTS = {
    "turn_left": "Turn your head to your left",
    "turn_right": "Turn your head to your right",
    "blink": "Blink",
    "look": "Look at the camera",
}

# Face-mesh indices: eye corners (outer, inner) and two upper/lower lid pairs per eye; cheeks at the
# face contour beside the eyes; rigid points (contour, brows, eye corners, nose) for the planarity fit.
EYE_IMAGE_LEFT = (33, 133, (161, 160, 159, 158, 157), (163, 144, 145, 153, 154))
EYE_IMAGE_RIGHT = (263, 362, (388, 387, 386, 385, 384), (390, 373, 374, 380, 381))
CHEEK_IMAGE_LEFT, CHEEK_IMAGE_RIGHT = 234, 454
NOSE_TIP = 1
RIGID = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148, 176,
    149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,  # face oval
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,  # brows
    33, 133, 263, 362,  # eye corners
    1, 4, 5, 195, 197, 6, 168, 98, 327, 2,  # nose
)  # fmt: skip


@dataclass(frozen=True)
class LivenessOptions:
    """Thresholds of the detectors and the challenge (defaults measured on the liveness videos)."""

    turn_deg: float = 12.0  # yaw away from the resting pose that counts as a turn
    rest_deg: float = 6.0  # back within this of the resting pose: the turn is over
    blink_closed: float = 0.85  # both eyes below this fraction of their open baseline: closed
    blink_open: float = 0.92  # both back above this fraction: open again
    baseline_s: float = 1.5  # open-eye baseline: median over this many seconds
    max_blink_s: float = 1.5  # eyes closed longer than this is not a blink
    min_depth: float = 0.012  # parallax a real head shows in a turn, eye distances (benchmarks/liveness.py)
    length: int = 4  # actions in a random challenge
    min_turns: int = 3  # of which head turns (the actions a recording rarely makes at the right moment)
    settle_s: tuple[float, float] = (0.8, 3.0)  # random wait before the first prompt (looking at the camera)
    gap_s: tuple[float, float] = (0.5, 2.0)  # random wait, once the head is back at rest, before the next prompt
    react_min_s: float = 0.25  # an action that begins sooner after its prompt is not a reaction to it
    step_timeout_s: float = 2.0  # an action must begin within this after its prompt (reaction window)
    return_s: float = 4.0  # after a turn the head must be back at rest within this (no held turns)
    passive_timeout_s: float = 10.0  # passive: time to see a natural blink and head turn
    min_presence: float = 0.5  # face-mesh presence below which a frame is not used
    max_failures: int = 3  # failed or abandoned checks per track before it is locked out until the face leaves
    model_frames: int = 5  # anti-spoofing model: frames it must have scored before a check can pass
    model_min_s: float = 10.0  # ... and seconds: a phone replay scored 0.42 over its first 6 s, 0.375 over 10


@dataclass(frozen=True)
class Sample:
    time: float
    yaw: float  # degrees, positive = the user's left
    eyes: tuple[float, float]  # eye aspect ratios (image-left eye, image-right eye)
    points: np.ndarray  # (468, 2) landmark pixels
    scale: float  # distance between the outer eye corners, pixels
    image: np.ndarray | None = None  # the frame (BGR or grey), for the planarity cue at turns


def eye_ratio(points: np.ndarray, eye: tuple) -> float:
    outer, inner, uppers, lowers = eye
    width = np.linalg.norm(points[outer, :2] - points[inner, :2])
    heights = [np.linalg.norm(points[u, :2] - points[lo, :2]) for u, lo in zip(uppers, lowers, strict=True)]
    return float(np.mean(heights) / max(width, 1e-6))


def head_yaw(points: np.ndarray) -> float:
    """Yaw from the depth difference of the two cheeks, in degrees (positive = the user's left)."""
    left, right = points[CHEEK_IMAGE_LEFT], points[CHEEK_IMAGE_RIGHT]
    return float(np.degrees(np.arctan2(right[2] - left[2], right[0] - left[0])))


def sample(mesh: Mesh, time: float, frame_bgr: np.ndarray | None = None) -> Sample:
    p = mesh.points
    return Sample(
        time=time,
        yaw=head_yaw(p),
        eyes=(eye_ratio(p, EYE_IMAGE_LEFT), eye_ratio(p, EYE_IMAGE_RIGHT)),
        points=p[:, :2].copy(),
        scale=float(np.linalg.norm(p[33, :2] - p[263, :2])),
        image=frame_bgr,
    )


def planar_residual(a: Sample, b: Sample) -> float | None:
    """How far the face's texture between two frames is from one homography (a flat picture, however
    it is tilted, maps exactly; a turning head shows parallax between nose, cheeks and ears).

    Corners in the face region of ``a`` are tracked into ``b`` with optical flow; a homography is fitted
    with RANSAC; the result is the median transfer error in eye distances. None without images or
    enough tracked corners."""
    if a.image is None or b.image is None:
        return None
    grey_a, grey_b = (x if x.ndim == 2 else cv2.cvtColor(x, cv2.COLOR_BGR2GRAY) for x in (a.image, b.image))
    x0, y0 = np.maximum(a.points.min(0), 0).astype(int)
    x1, y1 = a.points.max(0).astype(int)
    mask = np.zeros_like(grey_a)
    mask[y0:y1, x0:x1] = 255
    corners = cv2.goodFeaturesToTrack(grey_a, 200, 0.01, max(3, int(a.scale / 20)), mask=mask)
    if corners is None or len(corners) < 12:
        return None
    moved, status, _ = cv2.calcOpticalFlowPyrLK(grey_a, grey_b, corners, None, winSize=(21, 21), maxLevel=3)
    ok = status.ravel() == 1
    if ok.sum() < 12:
        return None
    src, dst = corners[ok].reshape(-1, 2), moved[ok].reshape(-1, 2)
    h, _ = cv2.findHomography(src, dst, cv2.RANSAC, 2.0)
    if h is None:
        return None
    error = np.linalg.norm(cv2.perspectiveTransform(src[None], h)[0] - dst, axis=1)
    return float(np.median(error) / max(b.scale, 1e-6))


def lid_gap(points: np.ndarray, eye: tuple) -> float:
    _, _, uppers, lowers = eye
    return float(np.mean([np.linalg.norm(points[u] - points[lo]) for u, lo in zip(uppers, lowers, strict=True)]))


def eye_openness(reference: Sample, s: Sample) -> tuple[float, float]:
    """Each eye's lid gap relative to the reference frame's lid gap carried into this frame by the
    homography of the rigid landmarks: a picture tilted or bent away from the camera foreshortens
    both alike (about 1.0), a blink closes the lids against the rest of the face."""
    idx = list(RIGID)
    h, _ = cv2.findHomography(reference.points[idx].astype(np.float64), s.points[idx].astype(np.float64), 0)
    if h is None:
        return s.eyes
    mapped = cv2.perspectiveTransform(reference.points[None].astype(np.float64), h)[0]
    return tuple(  # type: ignore[return-value]
        lid_gap(s.points, eye) / max(lid_gap(mapped, eye), 1e-6) for eye in (EYE_IMAGE_LEFT, EYE_IMAGE_RIGHT)
    )


@dataclass(frozen=True)
class LiveEvent:
    kind: str  # blink, turn_left, turn_right
    time: float  # when it was recognised (a turn crossed ``turn_deg``; a blink's eyes opened again)
    depth: float | None = None  # turns: planarity residual against the resting pose
    start: float | None = None  # when it began, if earlier than ``time`` (a blink: the eyes closed)

    @property
    def began(self) -> float:
        return self.time if self.start is None else self.start


class EventDetector:
    """Blinks and head turns from a stream of samples of one face."""

    def __init__(self, options: LivenessOptions | None = None):
        self.options = options or LivenessOptions()
        self.rest: float | None = None  # resting yaw
        self.rest_sample: Sample | None = None
        self._first: list[float] = []
        self._turned = 0  # -1 right, +1 left, 0 resting
        self._open: deque[tuple[float, float, float]] = deque()  # (time, eye, eye) while open
        self._closed_at: float | None = None
        self.reference: Sample | None = None  # eye openness is measured against this frame
        self.motion: list[float] = []  # per-frame landmark motion, eye distances (measured, not decided on)
        self._previous: Sample | None = None

    def feed(self, s: Sample) -> list[LiveEvent]:
        events = self._turns(s) + self._blinks(s)
        if self._previous is not None:
            step = np.linalg.norm(s.points - self._previous.points, axis=1).mean() / max(s.scale, 1e-6)
            self.motion.append(float(step))
        self._previous = s
        return events

    def _turns(self, s: Sample) -> list[LiveEvent]:
        o = self.options
        if self.rest is None:
            self._first.append(s.yaw)
            if len(self._first) >= 3:
                self.rest = float(np.median(self._first))
                self.rest_sample = s
            return []
        away = s.yaw - self.rest
        if self._turned == 0:
            if abs(away) < o.rest_deg:
                self.rest += 0.05 * (s.yaw - self.rest)  # follow slow drift of the resting pose
                self.rest_sample = s
            if abs(away) >= o.turn_deg:
                self._turned = 1 if away > 0 else -1
                depth = planar_residual(self.rest_sample, s) if self.rest_sample is not None else None
                return [LiveEvent("turn_left" if away > 0 else "turn_right", s.time, depth)]
        elif abs(away) < o.rest_deg:
            self._turned = 0
        return []

    @property
    def resting(self) -> bool:
        return self.rest is not None and self._turned == 0

    def _blinks(self, s: Sample) -> list[LiveEvent]:
        o = self.options
        if self.reference is None:
            self.reference = s
        eyes = eye_openness(self.reference, s)
        while self._open and self._open[0][0] < s.time - o.baseline_s:
            self._open.popleft()
        if len(self._open) < 3:
            if self._closed_at is None:
                self._open.append((s.time, *eyes))
            return []
        base = np.median(np.array([(a, b) for _, a, b in self._open]), axis=0)
        ratio = np.array(eyes) / np.maximum(base, 1e-6)
        if self._closed_at is None:
            if ratio.max() < o.blink_closed:
                self._closed_at = s.time
                return []
            self._open.append((s.time, *eyes))
            return []
        if s.time - self._closed_at > o.max_blink_s:  # closed too long for a blink: measure afresh
            self._closed_at = None
            self._open.clear()
            return []
        if ratio.min() > o.blink_open:
            closed_for = s.time - self._closed_at
            self._closed_at = None
            self._open.append((s.time, *eyes))
            if closed_for <= o.max_blink_s:
                return [LiveEvent("blink", s.time, start=s.time - closed_for)]
        return []


@dataclass
class LivenessResult:
    """Where a check stands: ``pending``, ``passed`` or ``failed`` (with the reason)."""

    mode: str
    state: str = "pending"
    reason: str = ""
    sequence: tuple[str, ...] = ()
    step: int = 0  # actions done
    prompt: str = ""
    events: list[LiveEvent] = field(default_factory=list)
    started: float | None = None
    finished: float | None = None
    prompted: bool = False  # an action was asked for: leaving now is an abandoned attempt, not a passer-by
    abandoned: bool = False  # failed because the face left or the source ended before the check finished
    real: float | None = None  # anti-spoofing model: mean P(real) over the frames it scored
    real_frames: int = 0

    @property
    def duration_s(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return self.finished - self.started

    def summary(self) -> str:
        """One line for the audit log."""
        text = f"{self.mode} {self.state}"
        if self.sequence:
            text += f" [{' '.join(self.sequence)}] {self.step}/{len(self.sequence)}"
        if self.real is not None:
            text += f" real {self.real:.2f}"
        return text + (f": {self.reason}" if self.reason else "")

    def as_dict(self) -> dict:
        return {
            "mode": self.mode,
            "state": self.state,
            "reason": self.reason,
            "sequence": list(self.sequence),
            "step": self.step,
            "prompt": self.prompt,
            "abandoned": self.abandoned,
            "real": None if self.real is None else round(self.real, 3),
            "real_frames": self.real_frames,
            "duration_s": None if self.duration_s is None else round(self.duration_s, 2),
            "events": [
                {"kind": e.kind, "time": round(e.time, 2), **({"depth": round(e.depth, 4)} if e.depth else {})}
                for e in self.events
            ],
        }


TURNS = tuple(a for a in ACTIONS if a != "blink")


def random_sequence(length: int = 4, rng: random.Random | None = None, min_turns: int = 1) -> tuple[str, ...]:
    """``length`` actions with at least one blink and ``min_turns`` head turns, no action twice in a
    row; drawn from the system's random source unless ``rng`` is given (tests)."""
    if length < 2 or not 1 <= min_turns < length:
        raise UsageError("a liveness challenge needs at least 2 actions: a blink and a head turn")
    rng = rng or secrets.SystemRandom()
    while True:
        seq = tuple(rng.choice(ACTIONS) for _ in range(length))
        if (
            "blink" in seq
            and sum(a in TURNS for a in seq) >= min_turns
            and all(a != b for a, b in zip(seq, seq[1:], strict=False))
        ):
            return seq


def parse_sequence(text: str) -> tuple[str, ...]:
    seq = tuple(a.strip() for a in text.replace(",", " ").split() if a.strip())
    unknown = [a for a in seq if a not in ACTIONS]
    if unknown or not seq:
        raise UsageError(f"liveness sequence {text!r}: use actions from {', '.join(ACTIONS)}")
    return seq


@dataclass(frozen=True)
class Step:
    """One action of a challenge and how long to wait, once the previous action is done (or the
    resting pose is known, for the first) and the head is back at rest, before prompting it."""

    action: str
    wait_s: float


def random_plan(
    options: LivenessOptions, sequence: tuple[str, ...] | None = None, rng: random.Random | None = None
) -> tuple[Step, ...]:
    """A challenge: random actions (or ``sequence``) at random moments, so that a recording cannot
    have its movements where the prompts will be."""
    rng = rng or secrets.SystemRandom()
    sequence = sequence or random_sequence(options.length, rng, options.min_turns)
    waits = [rng.uniform(*options.settle_s)] + [rng.uniform(*options.gap_s) for _ in sequence[1:]]
    return tuple(Step(a, w) for a, w in zip(sequence, waits, strict=True))


class Check:
    """Common part of the challenge and the passive check: feed samples, read ``result``."""

    decides = True

    def __init__(self, mode: str, options: LivenessOptions | None = None):
        self.options = options or LivenessOptions()
        self.detector = EventDetector(self.options)
        self.result = LivenessResult(mode)
        self.model_threshold: float | None = None  # set: the anti-spoofing model must pass too
        self._real = TrackScore(min_frames=self.options.model_frames)
        self._done = False  # the check's own cues passed; waiting for the model's minimum time

    def observe_real(self, p_real: float) -> None:
        """One frame's anti-spoofing score (P(real)) of this face."""
        r = self.result
        if r.state == "pending":
            self._real.add(p_real)
            r.real, r.real_frames = self._real.mean, self._real.frames

    def feed(self, s: Sample) -> LivenessResult:
        r = self.result
        if r.state != "pending":
            return r
        if r.started is None:
            r.started = s.time
        if self._done:  # the actions are done; the anti-spoofing model is still watching
            if s.time - r.started >= self.options.model_min_s:
                self._pass(s)
            return r
        if s.time - r.started > self.time_limit():
            self._fail(s, f"not completed within {self.time_limit():.0f}s")
            return r
        events = self.detector.feed(s)
        r.events.extend(events)
        for event in events:
            if self.decides and event.kind != "blink" and (event.depth is None or event.depth < self.options.min_depth):
                depth = "not measurable" if event.depth is None else f"{event.depth:.3f}"
                self._fail(s, f"flat picture: the face turned like a plane (depth {depth})")
                return r
        self._step(s, events)
        return r

    def time_limit(self) -> float:
        """Seconds from the first frame after which a pending check fails."""
        return self.options.step_timeout_s * max(1, len(self.result.sequence)) + 3.0

    def give_up(self, reason: str) -> None:
        """The face left or the source ended before the check finished: a failure, marked abandoned."""
        if self.result.state == "pending":
            self.result.state, self.result.reason, self.result.prompt = "failed", reason, ""
            self.result.abandoned = True

    def _fail(self, s: Sample, reason: str) -> None:
        self.result.state, self.result.reason, self.result.finished = "failed", reason, s.time
        self.result.prompt = ""

    def _pass(self, s: Sample) -> None:
        r, threshold = self.result, self.model_threshold
        if threshold is not None and r.started is not None and s.time - r.started < self.options.model_min_s:
            self._done, r.prompt = True, PROMPTS["look"]
            return
        if threshold is not None:
            live = self._real.live(threshold)
            if live is None:
                self._fail(s, f"anti-spoofing model scored {r.real_frames} frame(s), needs {self.options.model_frames}")
                return
            if not live:
                self._fail(
                    s, f"anti-spoofing model: mean P(real) {r.real:.2f} below {threshold:.2f} (a screen or print)"
                )
                return
        r.state, r.finished = "passed", s.time
        r.prompt = PROMPTS["look"]

    def _step(self, s: Sample, events: list[LiveEvent]) -> None:
        raise NotImplementedError


def _doing(action: str) -> str:
    return PROMPTS[action].lower()


class Challenge(Check):
    """Prompt each action of ``plan`` after its random wait; each must begin within the reaction
    window (``react_min_s`` .. ``step_timeout_s`` after its prompt). Any head turn that was not asked
    for (before the first prompt, between prompts, the wrong way, too soon to be a reaction) fails
    the attempt. Blinks are involuntary: one that was not asked for is ignored, and a blink step
    counts only a blink that began inside its window, with the head at rest."""

    def __init__(self, plan: tuple[Step, ...] | tuple[str, ...], options: LivenessOptions | None = None):
        super().__init__("challenge", options)
        steps = tuple(p if isinstance(p, Step) else None for p in plan)
        if None in steps:
            steps = random_plan(self.options, tuple(plan))  # type: ignore[arg-type]
        if not steps or any(step.action not in ACTIONS for step in steps):
            raise UsageError(f"liveness sequence must use {', '.join(ACTIONS)}")
        self.plan: tuple[Step, ...] = steps  # type: ignore[assignment]
        self.result.sequence = tuple(step.action for step in self.plan)
        self.result.prompt = PROMPTS["look"]
        self._ready_at: float | None = None  # the previous action was done and the head is at rest again
        self._prompted_at: float | None = None  # the current action's prompt was shown
        self._turned_at: float | None = None  # the last turn, while the head has not come back to rest

    def time_limit(self) -> float:
        o = self.options
        return sum(step.wait_s for step in self.plan) + len(self.plan) * (o.step_timeout_s + o.return_s) + 3.0

    def _step(self, s: Sample, events: list[LiveEvent]) -> None:
        r, o = self.result, self.options
        if self._ready_at is None:
            if not self.detector.resting:
                if self._turned_at is not None and s.time - self._turned_at > o.return_s:
                    self._fail(s, f"the head did not come back to the camera within {o.return_s:.1f}s")
                return  # the resting pose is not known yet, or the head is still turned
            self._ready_at, self._turned_at = s.time, None  # the next wait starts now
        for event in events:
            if event.kind == "blink" and (
                self._prompted_at is None
                or r.sequence[r.step] != "blink"
                or event.began - self._prompted_at < o.react_min_s
                or not self.detector.resting
            ):
                continue  # people blink: an unasked blink is neither an answer nor a failure
            if self._prompted_at is None:
                self._fail(s, f"{event.kind.replace('_', ' ')} before being asked")
                return
            wanted = r.sequence[r.step]
            if event.kind != wanted:
                self._fail(s, f"asked to {_doing(wanted)}, saw {event.kind.replace('_', ' ')}")
                return
            reaction = event.began - self._prompted_at
            if reaction < o.react_min_s:
                what = event.kind.replace("_", " ")
                self._fail(s, f"{what} {reaction:.2f}s after its prompt: too soon to be a reaction")
                return
            r.step += 1
            self._prompted_at = None
            self._ready_at = event.time if event.kind == "blink" else None
            self._turned_at = None if event.kind == "blink" else event.time
            r.prompt = PROMPTS["look"]
            if r.step == len(r.sequence):
                self._pass(s)
                return
        if self._prompted_at is None:
            if self._ready_at is not None and self._due(s) and self.detector.resting:
                self._prompted_at = s.time
                r.prompt, r.prompted = PROMPTS[r.sequence[r.step]], True
        elif s.time - self._prompted_at > o.step_timeout_s:
            self._fail(s, f"no reaction within {o.step_timeout_s:.1f}s to: {_doing(r.sequence[r.step])}")

    def _due(self, s: Sample) -> bool:
        """The current action's wait is over (its prompt is shown once the head is also at rest)."""
        assert self._ready_at is not None
        return s.time - self._ready_at >= self.plan[self.result.step].wait_s


class PassiveCheck(Check):
    """Ask nothing: pass once a natural blink and a natural head turn with depth have been seen;
    fail after ``passive_timeout_s`` without both, or at once on a turn that looks flat.

    The depth is measured only across a turn (the resting frame against the turned one): between
    frames far apart, optical flow loses track and a moved print can look deep."""

    def __init__(self, options: LivenessOptions | None = None):
        super().__init__("passive", options)

    def time_limit(self) -> float:
        return self.options.passive_timeout_s + 1.0  # _step fails first, naming what was missing

    def _step(self, s: Sample, events: list[LiveEvent]) -> None:
        self.result.prompted = True  # nothing is asked: a face that leaves before the end has abandoned
        seen = {e.kind for e in self.result.events}
        blinked, turned = "blink" in seen, bool(seen - {"blink"})  # flat turns have failed already
        if blinked and turned:
            self._pass(s)
        elif self.result.started is not None and s.time - self.result.started > self.options.passive_timeout_s:
            missing = " and no ".join(m for m, ok in (("blink", blinked), ("head turn", turned)) if not ok)
            self._fail(s, f"saw no {missing} in {self.options.passive_timeout_s:.0f}s")


class EventsOnly(Check):
    """Record blinks and turns and never decide (``edge-verify liveness --mode events``)."""

    decides = False

    def __init__(self, options: LivenessOptions | None = None):
        super().__init__("events", options)

    def time_limit(self) -> float:
        return float("inf")

    def _step(self, s: Sample, events: list[LiveEvent]) -> None:
        self.result.finished = s.time


def make_check(
    mode: str,
    options: LivenessOptions | None = None,
    sequence: tuple[str, ...] | tuple[Step, ...] | None = None,
    rng: random.Random | None = None,
) -> Check:
    """A fresh check for one track; a challenge draws a new random plan (actions and moments) unless
    ``sequence`` gives the actions (their moments are still drawn) or a whole plan of ``Step``s."""
    options = options or LivenessOptions()
    if mode == "challenge":
        if sequence and isinstance(sequence[0], Step):
            return Challenge(sequence, options)
        return Challenge(random_plan(options, sequence, rng), options)  # type: ignore[arg-type]
    if mode == "passive":
        return PassiveCheck(options)
    if mode == "events":
        return EventsOnly(options)
    raise UsageError(f"liveness mode {mode!r}: choose one of {', '.join(MODES)}")


@dataclass
class TracePoint:
    time: float
    yaw: float
    eyes: tuple[float, float]


class LivenessMonitor:
    """One tracked face's check: places the landmark crop (the detector's face, or the previous
    frame's landmarks when the detector's box disagrees with them, as on close-ups), measures the
    frame and feeds the check. ``trace`` keeps what was seen, for ``edge-verify liveness``."""

    def __init__(self, mesh: FaceMesh, check: Check, antispoof: AntiSpoof | None = None):
        self.mesh = mesh
        self.check = check
        self.antispoof = antispoof  # scores each frame's detected face; the check must then pass it too
        if antispoof is not None:
            check.model_threshold = antispoof.threshold
        self.previous: Mesh | None = None
        self.placed: Face | None = None  # the face the last landmarks were found in
        self.trace: list[TracePoint] = []

    @property
    def result(self) -> LivenessResult:
        return self.check.result

    def measure(self, frame_bgr: np.ndarray, face: Face | None, time: float) -> Sample | None:
        """The frame's landmark sample of this face, or None when no usable landmarks were found."""
        if self.previous is not None:
            from_mesh = face_from_mesh(self.previous)
            if face is None or iou(face.box, from_mesh.box) < 0.5:
                face = from_mesh
        self.placed = face
        if face is None:
            return None
        mesh = self.mesh.landmarks(frame_bgr, face)
        if mesh.presence < self.check.options.min_presence:
            self.previous = None
            return None
        self.previous = mesh
        s = sample(mesh, time, frame_bgr)
        self.trace.append(TracePoint(time, s.yaw, s.eyes))
        return s

    def feed(self, frame_bgr: np.ndarray, face: Face | None, time: float) -> LivenessResult:
        s = self.measure(frame_bgr, face, time)
        if s is None:
            return self.result
        if self.antispoof is not None and face is not None and self.placed is face:  # the face that moved
            self.check.observe_real(self.antispoof.score(frame_bgr, face))
        return self.check.feed(s)


def watch(
    monitor: LivenessMonitor, detector: FaceDetector, frames: Iterable[tuple[float, np.ndarray]]
) -> LivenessResult:
    """Feed (time, frame) pairs, the largest face of each, until the check decides; a check still
    pending when the frames run out has failed (events-only checks never decide)."""
    for time, frame in frames:
        faces = detector.detect(frame)
        if monitor.feed(frame, faces[0] if faces else None, time).state != "pending":
            break
    if monitor.check.decides:
        monitor.check.give_up("the source ended before the check was completed")
    return monitor.result
