"""Frame -> faces -> chips -> quality -> embeddings: the path shared by every command."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_verify.align import align_face, resize_frame
from edge_verify.bundle import Bundle, load_bundle
from edge_verify.detect import Face, FaceDetector
from edge_verify.embedder import Embedder
from edge_verify.errors import MultipleFacesError, NoFaceError, QualityError
from edge_verify.quality import QualityOptions, QualityReport, assess


@dataclass(frozen=True)
class VerifierOptions:
    bundle: str | Path | None = None  # None: the packaged default face bundle
    backend: str | None = None  # litert, tflite_runtime or tensorflow; None: first that loads
    threads: int | None = None
    use_edgetpu: bool = True
    detector_score: float = 0.7
    quality: QualityOptions = field(default_factory=QualityOptions)


@dataclass
class Observation:
    face: Face | None  # None for whole-frame (non-face) bundles
    chip: np.ndarray
    quality: QualityReport
    embedding: np.ndarray | None = None  # set when the quality gate passed


def effective_threshold(bundle: Bundle, store, override: float | None = None) -> tuple[float, str]:
    """The threshold in force and where it comes from: an explicit value, else the one
    `edge-verify calibrate` stored for this bundle, else the bundle's own."""
    if override is not None:
        return float(override), "command line"
    calibrated = store.threshold(bundle.fingerprint) if store is not None else None
    if calibrated:
        return float(calibrated["value"]), f"calibrated ({calibrated['source']})"
    return bundle.threshold.value, "bundle"


class Verifier:
    """Loads a bundle once and turns frames into observations with embeddings."""

    def __init__(self, options: VerifierOptions | None = None, bundle: Bundle | None = None):
        self.options = options or VerifierOptions()
        self.bundle = bundle or load_bundle(self.options.bundle)
        self.embedder = Embedder.for_bundle(
            self.bundle,
            backend=self.options.backend,
            threads=self.options.threads,
            use_edgetpu=self.options.use_edgetpu,
        )
        self.detector = FaceDetector(self.options.detector_score) if self.bundle.is_face else None

    def detect(self, frame: np.ndarray) -> list[Face]:
        """Faces large enough to use, largest first (background faces below the size gate are ignored)."""
        assert self.detector is not None
        return [f for f in self.detector.detect(frame) if f.size >= self.options.quality.min_face_px]

    def observe(self, frame: np.ndarray, faces: list[Face] | None = None) -> list[Observation]:
        """One observation per face (or one for the whole frame), embedded when it passes quality."""
        pre = self.bundle.preprocess
        if self.detector is None:
            chip = resize_frame(frame, pre)
            items = [(None, chip, assess(chip, None, self.options.quality))]
        else:
            faces = self.detect(frame) if faces is None else faces
            items = []
            for face in faces:
                chip = align_face(frame, face, pre)
                items.append((face, chip, assess(chip, face.size, self.options.quality)))
        observations = [Observation(f, c, q) for f, c, q in items]
        good = [o for o in observations if o.quality.ok]
        if good:
            for obs, emb in zip(good, self.embedder.embed(np.stack([o.chip for o in good])), strict=True):
                obs.embedding = emb
        return observations

    def observe_single(self, frame: np.ndarray, where: str, largest: bool = False) -> Observation:
        """Exactly one usable face (enroll, check, compare), or with ``largest`` the largest of
        several; a clear error otherwise."""
        if self.detector is not None:
            faces = self.detect(frame)
            if not faces:
                raise NoFaceError(
                    f"{where}: no face found (need a frontal face of at least {self.options.quality.min_face_px:.0f}px)"
                )
            if len(faces) > 1 and not largest:
                raise MultipleFacesError(f"{where}: {len(faces)} faces found; exactly one person must be in view")
            obs = self.observe(frame, faces[:1])[0]
        else:
            obs = self.observe(frame)[0]
        if obs.embedding is None:
            raise QualityError(f"{where}: rejected by the quality gate: {'; '.join(obs.quality.reasons)}")
        return obs

    def embed_image(self, path: str | Path) -> np.ndarray:
        """Embedding of the single face in an image file."""
        from edge_verify.sources import read_image

        return self.observe_single(read_image(path), str(path)).embedding  # type: ignore[return-value]
