"""Frame -> faces -> chips -> quality -> embeddings: the path shared by every command."""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_verify.align import align_face, resize_frame
from edge_verify.bundle import Bundle, load_bundle
from edge_verify.detect import WORKING_SIDE, Face, FaceDetector
from edge_verify.embedder import Embedder, l2_normalize
from edge_verify.errors import MultipleFacesError, NoFaceError, QualityError, UsageError
from edge_verify.landmarks import FaceMesh
from edge_verify.liveness import MODES, LivenessMonitor, LivenessOptions, LivenessResult, make_check
from edge_verify.operating import ThresholdChoice, check_threshold, gallery_threshold
from edge_verify.quality import INSTRUCTIONS, QualityOptions, QualityReport, assess
from edge_verify.site_calibration import is_current
from edge_verify.track import Track, Tracker


@dataclass(frozen=True)
class VerifierOptions:
    bundle: str | Path | None = None  # None: the packaged default face bundle
    backend: str | None = None  # litert, tflite_runtime or tensorflow; None: first that loads
    threads: int | None = None
    use_edgetpu: bool = True
    variant: str = "int8"  # int8 (what devices run), or fp32 where a host bundle keeps it (evaluate)
    detector_score: float = 0.7
    detect_side: int | None = WORKING_SIDE  # search larger frames on a copy of about this long side; None: full
    quality: QualityOptions = field(default_factory=QualityOptions)


@dataclass
class Observation:
    face: Face | None  # None for whole-frame (non-face) bundles
    chip: np.ndarray
    quality: QualityReport
    embedding: np.ndarray | None = None  # set when the quality gate passed


def resolve_threshold(
    bundle: Bundle,
    store=None,
    threshold: float | None = None,
    operating_point: str | None = None,
    allow_looser: bool = False,
    gallery_size: int = 1,
) -> ThresholdChoice:
    """The threshold in force: an explicit ``threshold``, else a named ``operating_point`` of the
    bundle, else the site calibration stored for this bundle, else the bundle's default point.
    An explicit threshold looser than the default point is refused unless ``allow_looser``.
    For 1:N over ``gallery_size`` identities it is raised so that the per-search FAR stays at the
    point's FAR (``operating.gallery_threshold``); a warning says when the data cannot back that."""
    choice = _one_to_one_threshold(bundle, store, threshold, operating_point, allow_looser)
    if gallery_size <= 1:
        return choice
    choice = gallery_threshold(choice, gallery_size, bundle.margin_1n)
    key = (bundle.fingerprint, gallery_size, choice.value)
    if not choice.far_resolved and key not in _WARNED:  # once per gallery size, not on every reload
        _WARNED.add(key)
        resolved = [float(p[0]) for p in choice.curve if len(p) < 3 or p[2]]
        logging.getLogger("edge_verify").warning(
            "%d identities enrolled: FAR %s per search needs a 1:1 FAR of %.0e, below the %s that every data set "
            "of %s resolved (up to about %d identities); using threshold %.4f, the strictest it measured",
            gallery_size,
            choice.far,
            (choice.far or 0) / gallery_size,
            f"{min(resolved):.0e}" if resolved else "nothing",
            bundle.name,
            int((choice.far or 0) / min(resolved)) if resolved else 1,
            choice.value,
        )
    return choice


_WARNED: set[tuple] = set()  # (bundle, gallery size, threshold) already warned about


def _one_to_one_threshold(bundle, store, threshold, operating_point, allow_looser) -> ThresholdChoice:
    default = bundle.operating_point()
    if threshold is not None:
        value = check_threshold(threshold, "threshold")
        if value < default.threshold and not allow_looser:
            raise UsageError(
                f"threshold {value:.4f} is looser than the bundle's {default.name!r} operating point "
                f"({default.threshold:.4f}, FAR {default.far}); add --allow-looser if you mean it"
            )
        return ThresholdChoice(value, "command line", None)
    if operating_point is not None:
        point = bundle.operating_point(operating_point)
        return ThresholdChoice(point.threshold, f"operating point {point.name!r}", point.far, curve=bundle.far_curve)
    site = store.threshold(bundle.fingerprint) if store is not None else None
    if site is not None:
        value = check_threshold(site["threshold"], "site calibration")
        if not is_current(bundle, site):  # made with another statistic and other points: never looser
            key = (bundle.fingerprint, "stale", value)
            if key not in _WARNED:
                _WARNED.add(key)
                logging.getLogger("edge_verify").warning(
                    "the site calibration (%.4f) was made with another version of %s; using at least its %r "
                    "point (%.4f): run `edge-verify calibrate` again",
                    value,
                    bundle.name,
                    default.name,
                    default.threshold,
                )
            if value < default.threshold:
                return ThresholdChoice(
                    default.threshold,
                    f"operating point {default.name!r} (the site calibration is older than the bundle)",
                    default.far,
                    curve=bundle.far_curve,
                )
            # its FAR is the default point's at most: 1:N raises it from the bundle's curve
            origin = f"site calibration ({site['source']}; older than the bundle)"
            return ThresholdChoice(value, origin, default.far, curve=bundle.far_curve)
        curve = tuple(tuple(p) for p in site.get("far_curve", ()))
        return ThresholdChoice(value, f"site calibration ({site['source']})", site.get("far"), curve=curve)
    return ThresholdChoice(default.threshold, f"operating point {default.name!r}", default.far, curve=bundle.far_curve)


class Verifier:
    """Loads a bundle once and turns frames into observations with embeddings."""

    def __init__(self, options: VerifierOptions | None = None, bundle: Bundle | None = None):
        self.options = options or VerifierOptions()
        self.bundle = bundle or load_bundle(self.options.bundle)
        # (preprocess, embedder, weight) per model: one for a plain bundle, each member of a fused one
        self.members = [
            (
                member.preprocess,
                Embedder.for_bundle(
                    member,
                    variant=self.options.variant,
                    backend=self.options.backend,
                    threads=self.options.threads,
                    use_edgetpu=self.options.use_edgetpu,
                ),
                weight,
            )
            for member, weight in self.bundle.models
        ]
        self.embedder = self.members[0][1]
        self.detector = (
            FaceDetector(
                self.options.detector_score,
                working_side=self.options.detect_side,
                min_face_px=self.options.quality.min_face_px,
                backend=self.options.backend,
                threads=self.options.threads,
            )
            if self.bundle.is_face
            else None
        )
        self.too_small: Face | None = None  # the last detect's largest face, when all were below the size gate

    @property
    def continuity(self) -> float:
        """Agreement a face needs with its track's recent frames to stay on it: the loosest
        operating point (a person change scores far below it; a cut only delays a decision)."""
        return min(p.threshold for p in self.bundle.operating_points.values())

    def detect(self, frame: np.ndarray) -> list[Face]:
        """Faces large enough to use, largest first (background faces below the size gate are ignored;
        ``too_small`` keeps the largest of them, so that a lone distant face can be told to come closer)."""
        assert self.detector is not None
        found = self.detector.detect(frame)
        usable = [f for f in found if f.size >= self.options.quality.min_face_px]
        self.too_small = None if usable else next(iter(found), None)
        return usable

    def observe(self, frame: np.ndarray, faces: list[Face] | None = None) -> list[Observation]:
        """One observation per face (or one for the whole frame), embedded when it passes quality."""
        if self.detector is None:
            located = [(None, [resize_frame(frame, self.bundle.preprocess)])]
        else:
            faces = self.detect(frame) if faces is None else faces
            located = [(face, self.align(frame, face)) for face in faces]
        observations = [Observation(f, c[0], self.gate(c[0], f)) for f, c in located]
        good = [(obs, chips) for obs, (_, chips) in zip(observations, located, strict=True) if obs.quality.ok]
        if good:
            for (obs, _), emb in zip(good, self.embed_chips([chips for _, chips in good]), strict=True):
                obs.embedding = emb
        return observations

    def gate(self, chip: np.ndarray, face: Face | None) -> QualityReport:
        """The quality gate as every decision applies it: on the first model's ``chip`` of ``face``
        (None: a whole frame without a detector), with its size and landmarks (head turn)."""
        if face is None:
            return assess(chip, None, self.options.quality)
        return assess(chip, face.size, self.options.quality, self.members[0][0].template, face.landmarks)

    def align(self, frame: np.ndarray, face: Face) -> list[np.ndarray]:
        """The face's chip for each model (one, or one per member of a fused bundle)."""
        return [align_face(frame, face, pre) for pre, _, _ in self.members]

    def embed_chips(self, chips: list[list[np.ndarray]]) -> np.ndarray:
        """(N, D) unit vectors for N faces given as ``align``'s chips. A fused bundle's vector is its
        members' unit vectors scaled by sqrt(weight) and joined, so the cosine of two fused vectors
        is the weighted mean of the members' cosines."""
        if len(self.members) == 1:
            return self.embedder.embed(np.stack([c[0] for c in chips]))
        parts = [
            embedder.embed(np.stack([c[i] for c in chips])) * np.float32(np.sqrt(weight))
            for i, (_, embedder, weight) in enumerate(self.members)
        ]
        return l2_normalize(np.concatenate(parts, axis=1))

    def observe_single(self, frame: np.ndarray, where: str, largest: bool = False) -> Observation:
        """Exactly one usable face (enroll, check, compare), or with ``largest`` the largest of
        several; a clear error otherwise."""
        return self.require_embedding(self.observe_one(frame, where, largest), where)

    def observe_one(self, frame: np.ndarray, where: str, largest: bool = False) -> Observation:
        """The one face in view (or the largest), embedded if the quality gate passed it."""
        if self.detector is not None:
            faces = self.detect(frame)
            if not faces and self.too_small is not None:
                raise QualityError(
                    f"{where}: rejected by the quality gate: face too small ({self.too_small.size:.0f}px < "
                    f"{self.options.quality.min_face_px:.0f}px): {INSTRUCTIONS['small'].lower()}"
                )
            if not faces:
                raise NoFaceError(
                    f"{where}: no face found (need a frontal face of at least {self.options.quality.min_face_px:.0f}px)"
                )
            if len(faces) > 1 and not largest:
                raise MultipleFacesError(f"{where}: {len(faces)} faces found; exactly one person must be in view")
            return self.observe(frame, faces[:1])[0]
        return self.observe(frame)[0]

    @staticmethod
    def require_embedding(obs: Observation, where: str) -> Observation:
        if obs.embedding is None:
            raise QualityError(f"{where}: rejected by the quality gate: {'; '.join(obs.quality.reasons)}")
        return obs

    def embed_image(self, path: str | Path) -> np.ndarray:
        """Embedding of the single face in an image file."""
        from edge_verify.sources import read_image

        return self.observe_single(read_image(path), str(path)).embedding  # type: ignore[return-value]


class FaceTracks:
    """Frames in, tracks ready for a decision out: each track that has gathered ``k`` usable
    frames since its last decision. ``single``: every frame must show exactly one face (enrol,
    check; ``largest`` takes the largest instead); frames that fail are skipped and counted.

    With ``liveness`` (``passive`` or ``challenge``) every track runs its own check on its own
    frames, the anti-spoofing model included (``antispoof``); a track is ready only after its check
    passed, and decides on the ``k`` frames it gathers after that (so the identity comes from the
    face that performed the challenge). **One pass authorises one decision**: after it the track
    decides nothing more until the face leaves and a new track begins. A check that fails, or that
    is abandoned after its first prompt (the face leaves, hides, or the track is cut), is reported
    in ``failed`` after the frame; the track then starts a new check, until ``max_failures``
    failures lock it out until the face leaves."""

    def __init__(
        self,
        verifier: Verifier,
        k: int,
        use_boxes: bool = True,
        single: bool = False,
        largest: bool = False,
        raise_errors: bool = False,
        liveness: str = "off",
        liveness_options: LivenessOptions | None = None,
        sequence: tuple[str, ...] | None = None,
        rng: random.Random | None = None,
        antispoof: bool = True,
    ):
        if k < 1:
            raise UsageError(f"frames per decision must be at least 1, got {k}")
        self.verifier = verifier
        self.k = k
        self.single = single
        self.largest = largest
        self.tracker = Tracker(verifier.continuity, use_boxes=use_boxes)
        self.skipped: Counter[str] = Counter()
        self.raise_errors = raise_errors  # single: raise the frame's error instead of skipping it
        if liveness not in MODES:
            raise UsageError(f"liveness mode {liveness!r}: choose one of {', '.join(MODES)}")
        if liveness != "off" and verifier.detector is None:
            raise UsageError("liveness needs a face bundle")
        self.liveness = liveness
        self.liveness_options = liveness_options or LivenessOptions()
        self.sequence = sequence
        self.rng = rng  # challenges are drawn from the system's random source unless given (tests)
        self.mesh = FaceMesh(threads=verifier.options.threads) if liveness != "off" else None
        self.antispoof = None
        if liveness != "off" and antispoof:
            from edge_verify.antispoof import AntiSpoof

            self.antispoof = AntiSpoof(verifier.options.backend, verifier.options.threads)
        self.monitors: dict[int, LivenessMonitor] = {}
        self.failures: Counter[int] = Counter()  # failed or abandoned checks per live track
        self.spent: set[int] = set()  # tracks whose pass has been used by a decision
        self.failed: list[tuple[Track, LivenessResult]] = []
        self.instruction: str | None = None  # the last frame's: its largest face was refused by the quality gate
        self._tracks: dict[int, Track] = {}

    def feed(self, image: np.ndarray, index: int, name: str, time: float | None = None) -> list[Track]:
        """Take one frame (``time`` in seconds, for liveness; default: the frame index)."""
        self.failed = []
        if self.single:
            try:
                observations = [self.verifier.observe_one(image, name, self.largest)]
                if observations[0].embedding is None:
                    if self.raise_errors:
                        self.verifier.require_embedding(observations[0], name)
                    self.skipped["quality"] += 1
            except (NoFaceError, MultipleFacesError, QualityError) as exc:
                if self.raise_errors:
                    raise
                self.skipped[type(exc).__name__.replace("Error", "").lower()] += 1
                observations = []
        else:
            observations = self.verifier.observe(image)
            self.skipped["quality"] += sum(o.embedding is None for o in observations)
        self.instruction = self._instruction(observations)
        faces = [(o.face.box if o.face else None, o.embedding) for o in observations]
        if not faces and self.single:
            self.tracker.update(index, [], name)  # time passes for the tracks: a face that left ends its track
            self._forget_ended()
            return []
        updated = self.tracker.update(index, faces, name)
        if self.liveness == "off":
            return [t for t in updated if t.new_frames() >= self.k]
        self._check_liveness(image, observations, float(index) if time is None else time)
        ready = [
            t
            for t in updated
            if t.id not in self.spent and self.result(t).state == "passed" and t.new_frames() >= self.k
        ]
        self.spent.update(t.id for t in ready)  # one pass, one decision
        return ready

    def _instruction(self, observations: list[Observation]) -> str | None:
        """What the person in front (the largest face) should change, when the gate refused this frame."""
        if observations:
            return observations[0].quality.instruction
        small = self.verifier.too_small if self.verifier.detector is not None else None
        return INSTRUCTIONS["small"] if small is not None else None

    def result(self, track: Track) -> LivenessResult:
        return self.monitors[track.id].result

    def locked(self, track: Track) -> bool:
        """The track failed its check too often: nothing more until the face leaves."""
        return self.failures[track.id] >= self.liveness_options.max_failures

    def end_all(self, reason: str) -> list[tuple[Track, LivenessResult]]:
        """End every track (the source ended or was reopened); returns the checks this abandoned."""
        self.tracker.end_all()
        return self._forget_ended(reason)

    def _forget_ended(self, reason: str = "the face left before the check was completed") -> list:
        """Drop the state of tracks that ended; a check abandoned after its first prompt is a failure."""
        live = {t.id for t in self.tracker.tracks}
        abandoned = []
        for tid in [tid for tid in self.monitors if tid not in live]:
            monitor = self.monitors.pop(tid)
            track = self._tracks.pop(tid)
            if monitor.result.state == "pending" and monitor.result.prompted:
                monitor.check.give_up(f"abandoned: {reason}")
                abandoned.append((track, monitor.result))
            self.failures.pop(tid, None)
            self.spent.discard(tid)
        self.failed.extend(abandoned)
        return abandoned

    def _check_liveness(self, image: np.ndarray, observations: list[Observation], time: float) -> None:
        assert self.mesh is not None
        self._forget_ended()
        for obs, track in zip(observations, self.tracker.assigned, strict=True):
            if track is None or obs.embedding is None or self.locked(track) or track.id in self.spent:
                continue  # a frame whose face was not identified (quality gate) cannot answer for the track
            monitor = self.monitors.get(track.id)
            if monitor is None or monitor.result.state == "failed":
                check = make_check(self.liveness, self.liveness_options, self.sequence, self.rng)
                monitor = self.monitors[track.id] = LivenessMonitor(self.mesh, check, self.antispoof)
                self._tracks[track.id] = track
            before = monitor.result.state
            result = monitor.feed(image, obs.face, time)
            if result.state == "passed" and before != "passed":
                track.start = track.decided_at = len(track.embeddings)  # identity from the frames that follow
            elif result.state == "failed":
                self.failures[track.id] += 1
                self.failed.append((track, result))

    @property
    def longest(self) -> int:
        return max((len(t.embeddings) for t in self.tracker.tracks), default=0)
