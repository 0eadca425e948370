"""Face detection with YuNet, run by LiteRT (``converters/yunet_import.py`` makes the float model from
OpenCV Zoo's ONNX file; the decoding below is that of OpenCV's ``FaceDetectorYN``)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from edge_verify.errors import BundleError
from edge_verify.interpreter import make_interpreter

YUNET_FILE = "face_detection_yunet_2023mar_int8bq.onnx"  # the source (host), licence beside it
YUNET_SHA256 = "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10"
YUNET_TFLITE = "face_detection_yunet_2023mar.tflite"  # what the device runs: scripts/build_yunet.py
YUNET_TFLITE_SHA256 = "30a65a9beb5e13193768d2d7dccb774ac26b2194d1da303cab776f5305de9b58"
STRIDES = (8, 16, 32)  # the model's three output maps: (1, H/s, W/s, 16) = class, objectness, box, landmarks


@dataclass(frozen=True)
class Face:
    """A detected face: box (x, y, w, h), 5 landmarks (right eye, left eye, nose, right and left
    mouth corner, in image pixels) and the detector's score."""

    box: tuple[float, float, float, float]
    landmarks: np.ndarray  # (5, 2) float32
    score: float

    @property
    def size(self) -> float:
        return float(min(self.box[2], self.box[3]))


def yunet_path() -> Path:
    """The detector's TFLite model in the package."""
    return Path(str(resources.files("edge_verify") / "models" / "yunet" / YUNET_TFLITE))


def yunet_onnx_path() -> Path:
    """The ONNX file it is built from."""
    return yunet_path().with_name(YUNET_FILE)


WORKING_SIDE = 640  # a large frame is searched on a copy whose long side is about this
MIN_SEARCH_FACE_PX = 10.0  # ...but never so small that a face of ``min_face_px`` shrinks below this
REFINE_FACE_PX = 160.0  # landmarks are re-read on a full-resolution crop, the face at most this wide
REFINE_CONTEXT = 2.0  # that crop is this many face boxes wide
REFINES_BEFORE_OWN_INTERPRETER = 2  # a photo or two: refine with the search's interpreter (less memory)


class FaceDetector:
    """YuNet face detector; ``detect`` returns faces largest first, in the frame's pixels. The
    model's bytes are checked against ``YUNET_TFLITE_SHA256`` before they are run.

    With ``working_side`` (e.g. ``WORKING_SIDE``), a larger frame is searched on a scaled copy
    (long side ``working_side``, or larger so that a face of ``min_face_px`` is still
    ``MIN_SEARCH_FACE_PX``), then each face's box and landmarks are measured again by YuNet on a
    crop of the full-resolution frame around it, scaled so the face is at most ``REFINE_FACE_PX``
    wide: on big photos FRR and FAR as good as full-resolution search at a third of its cost
    (benchmarks/detection_size.py), though not the same embeddings, and a face that fills a large
    frame (which YuNet scores poorly at full size) is found. ``VerifierOptions.detect_side`` makes
    ``WORKING_SIDE`` the pipeline's default. ``working_side=None`` searches
    the frame itself, and only when it finds nothing in a frame larger than ``WORKING_SIDE``
    searches a copy of that size (a close-up at 1280x720: 27 of 263 frames found at full size).
    """

    def __init__(
        self,
        score_threshold: float = 0.7,
        nms_threshold: float = 0.3,
        top_k: int = 50,
        working_side: int | None = None,
        min_face_px: float = 40.0,
        backend: str | None = None,
        threads: int | None = None,
    ):
        model = yunet_path()
        try:
            content = model.read_bytes()
        except OSError:
            raise BundleError(f"{model}: face detector model missing; reinstall edge-verify") from None
        if hashlib.sha256(content).hexdigest() != YUNET_TFLITE_SHA256:
            raise BundleError(f"{model}: face detector model altered or damaged (sha256 differs); reinstall")
        self.loaded = make_interpreter(model, backend, threads, content=content)
        self._searcher = _Runner(self.loaded.interpreter)
        # On a stream, refining with the searcher would resize its input twice a frame (4 ms each at
        # 720p); from the third refine on, crops get an interpreter of their own (about 12 MB).
        self._refiner: _Runner | None = None
        self._refines = 0
        self._load_refiner = lambda: _Runner(make_interpreter(model, backend, threads, content=content).interpreter)
        self.score_threshold, self.nms_threshold, self.top_k = score_threshold, nms_threshold, top_k
        self.working_side = working_side
        self.min_face_px = min_face_px

    def detect(self, frame_bgr: np.ndarray) -> list[Face]:
        h, w = frame_bgr.shape[:2]
        scale = self.search_scale(w, h)
        if scale >= 1.0:
            faces = self.search(frame_bgr)
            if faces or max(h, w) <= WORKING_SIDE:
                return faces
            scale = WORKING_SIDE / max(h, w)  # a face that fills a large frame
            return [
                Face(tuple(v / scale for v in f.box), f.landmarks / np.float32(scale), f.score)  # type: ignore[arg-type]
                for f in self.search(_shrink(frame_bgr, scale))
            ]
        faces = [_scaled(f, 1 / scale) for f in self.search(_shrink(frame_bgr, scale))]
        return sorted((self._refine(frame_bgr, f) for f in faces), key=lambda f: f.box[2] * f.box[3], reverse=True)

    def search_scale(self, width: int, height: int) -> float:
        """Scale of the copy a ``width`` x ``height`` frame is searched on (1.0: the frame itself)."""
        if self.working_side is None or max(width, height) <= self.working_side:
            return 1.0
        return min(1.0, max(self.working_side / max(width, height), MIN_SEARCH_FACE_PX / self.min_face_px))

    def _refine(self, frame_bgr: np.ndarray, face: Face) -> Face:
        """``face`` measured again on a full-resolution crop around it (unchanged if not found there)."""
        x, y, bw, bh = face.box
        side = REFINE_CONTEXT * max(bw, bh)
        cx, cy = x + bw / 2, y + bh / 2
        x0, y0 = max(int(cx - side / 2), 0), max(int(cy - side / 2), 0)
        x1, y1 = min(int(cx + side / 2), frame_bgr.shape[1]), min(int(cy + side / 2), frame_bgr.shape[0])
        crop = frame_bgr[y0:y1, x0:x1]
        zoom = min(1.0, REFINE_FACE_PX / max(bw, bh))
        self._refines += 1
        if self._refiner is None and self._refines > REFINES_BEFORE_OWN_INTERPRETER:
            self._refiner = self._load_refiner()
        found = [_scaled(f, 1 / zoom, (x0, y0)) for f in self.search(_shrink(crop, zoom), self._refiner)]
        best = max(found, key=lambda f: _overlap(f.box, face.box), default=None)
        return best if best is not None and _overlap(best.box, face.box) > 0.5 else face

    def search(self, frame_bgr: np.ndarray, runner: _Runner | None = None) -> list[Face]:
        """Faces in ``frame_bgr`` searched at its own size (no scaled copy, no refine), largest first."""
        maps = (runner or self._searcher).run(frame_bgr)
        rows = np.concatenate([_decode(m, s, self.score_threshold) for m, s in zip(maps, STRIDES, strict=True)])
        if len(rows) > 1:
            boxes = rows[:, :4].astype(np.int32)  # truncated, as OpenCV's NMS sees them
            keep = cv2.dnn.NMSBoxes(boxes, rows[:, 14], self.score_threshold, self.nms_threshold, 1.0, self.top_k)
            rows = rows[np.asarray(keep, int).reshape(-1)]
        return sorted(_faces(rows), key=lambda f: f.box[2] * f.box[3], reverse=True)


class _Runner:
    """One YuNet interpreter; its input follows the frame's size, padded to a multiple of 32."""

    def __init__(self, interpreter):
        self.interpreter = interpreter
        self._input = interpreter.get_input_details()[0]["index"]
        self._padded: tuple[int, int] | None = None
        self._outputs: list[int] = []

    def run(self, frame_bgr: np.ndarray) -> list[np.ndarray]:
        """The (H/s, W/s, 16) maps of strides 8, 16 and 32."""
        h, w = frame_bgr.shape[:2]
        padded = (-(-h // 32) * 32, -(-w // 32) * 32)  # zero-padded below and right, as OpenCV pads
        interp = self.interpreter
        if self._padded != padded:
            interp.resize_tensor_input(self._input, [1, *padded, 3])
            interp.allocate_tensors()
            maps = sorted(interp.get_output_details(), key=lambda d: -int(d["shape"][1]))  # strides 8, 16, 32
            self._outputs, self._padded = [d["index"] for d in maps], padded
        blob = np.zeros((1, *padded, 3), np.float32)
        blob[0, :h, :w] = frame_bgr
        interp.set_tensor(self._input, blob)
        interp.invoke()
        return [interp.get_tensor(i)[0] for i in self._outputs]


def _decode(head: np.ndarray, stride: int, score_threshold: float) -> np.ndarray:
    """(n, 15) rows (box x, y, w, h, 5 landmarks, score) of one stride's (H/s, W/s, 16) map."""
    cols = head.shape[1]
    head = head.reshape(-1, 16)
    score = np.sqrt(np.clip(head[:, 0], 0, 1) * np.clip(head[:, 1], 0, 1))
    keep = np.flatnonzero(score >= score_threshold)
    head, score = head[keep], score[keep]
    cell = np.stack([keep % cols, keep // cols], axis=1).astype(np.float32)  # (c, r)
    s = np.float32(stride)
    centre = (cell + head[:, 2:4]) * s
    size = np.exp(head[:, 4:6]) * s
    landmarks = (head[:, 6:16].reshape(-1, 5, 2) + cell[:, None]) * s
    return np.concatenate([centre - size / 2, size, landmarks.reshape(-1, 10), score[:, None]], axis=1)


def _faces(rows: np.ndarray | None) -> list[Face]:
    if rows is None:
        return []
    return [
        Face(box=tuple(float(v) for v in r[:4]), landmarks=r[4:14].reshape(5, 2).astype(np.float32), score=float(r[14]))
        for r in rows
    ]


def _shrink(image: np.ndarray, scale: float) -> np.ndarray:
    """``image`` scaled by ``scale`` <= 1 (area averaging); itself when ``scale`` is 1."""
    if scale >= 1.0:
        return image
    h, w = image.shape[:2]
    return cv2.resize(image, (max(round(w * scale), 1), max(round(h * scale), 1)), interpolation=cv2.INTER_AREA)


def _scaled(face: Face, factor: float, offset: tuple[float, float] = (0.0, 0.0)) -> Face:
    """``face`` from a copy scaled by 1/``factor`` (and cropped at ``offset``) back in frame pixels."""
    ox, oy = offset
    x, y, w, h = face.box
    landmarks = face.landmarks * np.float32(factor) + np.asarray([ox, oy], np.float32)
    return Face((x * factor + ox, y * factor + oy, w * factor, h * factor), landmarks, face.score)


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter + 1e-9)
