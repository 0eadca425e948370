"""The Python API: a handful of functions on images (file paths or BGR numpy arrays).

    import edge_verify as ev

    faces = ev.detect("group.jpg")                  # [Face(box, landmarks, score), ...]
    vectors = ev.embed("alice.jpg")                 # one unit vector per usable face
    score = ev.compare("alice_1.jpg", "alice_2.jpg")  # mean cosine; same person if >= ev.threshold()
    with ev.open_store("doors.db") as store:
        ev.enroll("alice", ["alice_1.jpg", "alice_2.jpg"], store)
        decision = ev.verify("door_camera.jpg", "alice", store)   # decision.accepted, .score

The same pipeline and errors as the command line (``EdgeVerifyError`` subclasses: NoFaceError,
MultipleFacesError, QualityError, ...), and only those, whatever the arguments: an argument of the
wrong type, shape, dtype or size (arrays have the files' pixel limit) is an InputError or UsageError.
Each distinct ``Options`` loads its model bundle once.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_verify.detect import Face
from edge_verify.enrolment import Enrolment, enrol
from edge_verify.errors import AlreadyEnrolledError, EdgeVerifyError, InputError, UsageError
from edge_verify.limits import MAX_IMAGE_PIXELS
from edge_verify.matcher import Decision, mean_template, score
from edge_verify.matcher import verify as verify_probes
from edge_verify.pipeline import Verifier, VerifierOptions, resolve_threshold
from edge_verify.store import TemplateStore, check_identity_name

Image = str | Path | np.ndarray  # a file path, or an 8-bit BGR (or grey) array as OpenCV gives
MIN_IMAGE_SIDE = 16  # pixels: smaller arrays hold no usable face (and some backends fail on them)


@dataclass(frozen=True)
class Options:
    """How images are turned into decisions (like MediaPipe Tasks' option objects)."""

    bundle: str | None = None  # model bundle directory; None: the built-in face bundle
    backend: str | None = None  # litert, tflite_runtime or tensorflow; None: the first that loads
    threads: int | None = None
    use_edgetpu: bool = True
    largest_face: bool = False  # several faces in an image: use the largest instead of refusing
    operating_point: str | None = None  # strict, default, convenient; None: site calibration or default


DEFAULT = Options()


def verifier(options: Options = DEFAULT) -> Verifier:
    """The pipeline for ``options`` (loaded once, then reused)."""
    if not isinstance(options, Options):
        raise UsageError(f"options must be edge_verify.Options, not {type(options).__name__}")
    return _verifier(options)


@functools.lru_cache(maxsize=4)
def _verifier(options: Options) -> Verifier:
    return Verifier(
        VerifierOptions(
            bundle=options.bundle, backend=options.backend, threads=options.threads, use_edgetpu=options.use_edgetpu
        )
    )


def load_image(image: Image) -> tuple[np.ndarray, str]:
    """(BGR array, a name for messages) from a path or an array; InputError for anything else, for an
    array of another type or shape, and for one outside the sizes files are allowed."""
    from edge_verify.sources import read_image

    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)):
            raise InputError(f"image array of shape {image.shape} and type {image.dtype}: need 8-bit BGR or grey")
        height, width = image.shape[:2]
        if height * width > MAX_IMAGE_PIXELS:
            raise InputError(
                f"image array of {width}x{height} pixels, more than the {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels allowed"
            )
        if min(height, width) < MIN_IMAGE_SIDE:
            raise InputError(f"image array of {width}x{height} pixels: need at least {MIN_IMAGE_SIDE} on each side")
        if image.ndim == 2 or image.shape[2] == 1:
            import cv2

            image = cv2.cvtColor(np.ascontiguousarray(image.reshape(image.shape[:2])), cv2.COLOR_GRAY2BGR)
        return np.ascontiguousarray(image), "<array>"
    if not isinstance(image, str | os.PathLike) or isinstance(image, bytes) or "\0" in str(image):
        raise InputError(f"not an image: {type(image).__name__} (give a file path or an 8-bit BGR array)")
    return read_image(image), str(image)


def detect(image: Image, options: Options = DEFAULT) -> list[Face]:
    """Faces large enough to use, largest first, in the image's pixels."""
    return verifier(options).detect(load_image(image)[0])


def embed(image: Image, options: Options = DEFAULT) -> np.ndarray:
    """(N, D) unit vectors: one per face that passes the quality gate, largest first (N may be 0)."""
    v = verifier(options)
    vectors = [o.embedding for o in v.observe(load_image(image)[0]) if o.embedding is not None]
    return np.stack(vectors) if vectors else np.zeros((0, v.bundle.embedding_size), np.float32)


def embed_one(image: Image, options: Options = DEFAULT) -> np.ndarray:
    """The embedding of the one face in ``image`` (NoFaceError, MultipleFacesError, QualityError)."""
    frame, name = load_image(image)
    return verifier(options).observe_single(frame, name, largest=options.largest_face).embedding


def compare(a: Image | np.ndarray, b: Image | np.ndarray, options: Options = DEFAULT) -> float:
    """Score between the faces of two images (or two embeddings): the same person if it reaches
    ``threshold(options)``."""
    return float(score(_vector(a, options)[None], _vector(b, options)))


def threshold(options: Options = DEFAULT, store: TemplateStore | None = None) -> float:
    """The threshold decisions use: the options' operating point, else the store's site calibration,
    else the bundle's default point."""
    if store is not None:
        _check_store(store)
    return resolve_threshold(verifier(options).bundle, store, operating_point=options.operating_point).value


def open_store(
    path: str | Path | None = None, key_file: str | Path | None = None, create: bool = True
) -> TemplateStore:
    """The encrypted template store (default: the user data directory). Use as a context manager."""
    return TemplateStore(path, key_file=key_file, create=create)


def enroll(
    name: str,
    images: list[Image],
    store: TemplateStore,
    options: Options = DEFAULT,
    replace: bool = False,
    force: bool = False,
) -> Enrolment:
    """Enrol ``name`` from photos of that one person, with the command line's checks."""
    check_identity_name(name)
    _check_store(store)
    if not isinstance(images, list | tuple) or not images:
        raise UsageError(f"images must be a non-empty list of image paths or arrays, not {type(images).__name__}")
    if not isinstance(replace, bool) or not isinstance(force, bool):
        raise UsageError("replace and force must be True or False")
    bundle = verifier(options).bundle
    try:
        if not replace and any(t.identity == name for t in store.list()):
            raise _already_enrolled(name)
        frames = [load_image(i) for i in images]
        embeddings = np.stack([embed_one(frame, options) for frame, _ in frames])
        store.pin_bundle(bundle)
        try:
            return enrol(store, bundle, name, embeddings, [n for _, n in frames], replace, force, source="python")
        except AlreadyEnrolledError:  # enrolled by another process meanwhile; the store's message names the CLI flag
            raise _already_enrolled(name) from None
    except EdgeVerifyError as exc:  # a refused enrolment is audited, as on the command line
        store.audit_refusal("enroll", bundle.fingerprint, exc, claimed=name, source="python")
        raise


def _already_enrolled(name: str) -> AlreadyEnrolledError:
    return AlreadyEnrolledError(f"{name!r} is already enrolled; pass replace=True to overwrite its template")


def verify(image: Image, name: str, store: TemplateStore, options: Options = DEFAULT) -> Decision:
    """1:1: is the one face in ``image`` the enrolled ``name``? Audited like ``edge-verify check``
    (a single image: no liveness check, so never the only thing guarding a door)."""
    check_identity_name(name)
    _check_store(store)
    bundle = verifier(options).bundle
    store.pin_bundle(bundle)
    template = store.get(name, bundle.fingerprint)
    decision = verify_probes(embed_one(image, options)[None], template, threshold(options, store), name)
    store.record("verify", bundle.fingerprint, decision, claimed=name, source="python")
    return decision


def _vector(item: Image | np.ndarray, options: Options) -> np.ndarray:
    if isinstance(item, np.ndarray) and item.ndim == 1:
        size = verifier(options).bundle.embedding_size
        if item.dtype.kind not in "fiu" or item.size != size:
            raise InputError(f"an embedding has {size} numbers, not {item.size} of type {item.dtype}")
        vector = item.astype(np.float64)
        if not np.isfinite(vector).all() or not np.any(vector):
            raise InputError("an embedding must be finite and not all zero")
        return mean_template(vector[None])
    return embed_one(item, options)


def _check_store(store) -> None:
    if not isinstance(store, TemplateStore):
        raise UsageError(f"store must be a TemplateStore (edge_verify.open_store), not {type(store).__name__}")
