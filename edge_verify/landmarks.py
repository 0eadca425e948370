"""468 face-mesh landmarks from MediaPipe's face landmark model, run with LiteRT (no mediapipe).

The crop follows MediaPipe's face-mesh input: a square around the detected face, 1.5 times its size,
rotated so the eyes are level, resized to 192x192, RGB in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from edge_verify.detect import Face
from edge_verify.errors import BundleError
from edge_verify.interpreter import make_interpreter

MESH_FILE = "face_landmark.tflite"
MESH_INPUT = 192
ROI_SCALE = 1.5


@dataclass(frozen=True)
class Mesh:
    """468 landmarks (x, y in frame pixels; z in the same units, smaller = nearer the camera) and the
    model's probability that the crop holds a face."""

    points: np.ndarray  # (468, 3) float32
    presence: float


def mesh_path() -> Path:
    return Path(str(resources.files("edge_verify") / "models" / "face_mesh" / MESH_FILE))


def roi_matrix(face: Face, size: int = MESH_INPUT) -> tuple[np.ndarray, float]:
    """2x3 affine from frame pixels to the ``size`` x ``size`` crop, and the crop's side in frame pixels."""
    x, y, w, h = face.box
    right_eye, left_eye = face.landmarks[0], face.landmarks[1]
    angle = float(np.degrees(np.arctan2(left_eye[1] - right_eye[1], left_eye[0] - right_eye[0])))
    side = max(w, h) * ROI_SCALE
    center = (x + w / 2, y + h / 2)
    matrix = cv2.getRotationMatrix2D(center, angle, size / side)
    matrix[:, 2] += np.array([size / 2, size / 2]) - np.array(center)
    return matrix, side


class FaceMesh:
    """``landmarks(frame, face)`` -> Mesh. One interpreter, one face at a time."""

    def __init__(self, model: Path | None = None, backend: str | None = None, threads: int | None = None):
        model = model or mesh_path()
        if not model.is_file():
            raise BundleError(f"{model}: face mesh model missing; reinstall edge-verify")
        self.loaded = make_interpreter(model, backend, threads)
        interp = self.loaded.interpreter
        self._input = interp.get_input_details()[0]["index"]
        outputs = {tuple(d["shape"]): d["index"] for d in interp.get_output_details()}
        self._points = outputs[(1, 1, 1, 1404)]
        self._presence = outputs[(1, 1, 1, 1)]

    def landmarks(self, frame_bgr: np.ndarray, face: Face) -> Mesh:
        matrix, side = roi_matrix(face)
        crop = cv2.warpAffine(frame_bgr, matrix, (MESH_INPUT, MESH_INPUT), flags=cv2.INTER_LINEAR)
        rgb = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
        interp = self.loaded.interpreter
        interp.set_tensor(self._input, rgb[None])
        interp.invoke()
        raw = interp.get_tensor(self._points).reshape(468, 3)
        logit = float(interp.get_tensor(self._presence).reshape(()))
        inverse = cv2.invertAffineTransform(matrix)
        xy = raw[:, :2] @ inverse[:, :2].T + inverse[:, 2]
        z = raw[:, 2:] * (side / MESH_INPUT)
        points = np.hstack([xy, z]).astype(np.float32)
        return Mesh(points, float(1.0 / (1.0 + np.exp(-logit))))


def face_from_mesh(mesh: Mesh) -> Face:
    """A face box and eye points from the previous frame's landmarks, to place the next crop (as
    MediaPipe tracks): steadier than the detector's box on close-ups and turned heads."""
    p = mesh.points[:, :2]
    x0, y0 = p.min(0)
    x1, y1 = p.max(0)
    eyes = np.array([p[[33, 133]].mean(0), p[[263, 362]].mean(0)], np.float32)
    landmarks = np.vstack([eyes, np.zeros((3, 2), np.float32)])
    return Face((float(x0), float(y0), float(x1 - x0), float(y1 - y0)), landmarks, mesh.presence)
