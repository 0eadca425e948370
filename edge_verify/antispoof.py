"""Passive anti-spoofing: MiniFASNet's probability that a face is a live person, run with LiteRT.

The models (``models/antispoof/``, built by scripts/build_antispoof.py from the upstream PyTorch
weights, Apache-2.0) see a crop of the frame around the face: the face box scaled about its centre
(2.7x for MiniFASNetV2, 4.0x for MiniFASNetV1SE, less if the frame is smaller than that), moved back
inside the frame where it would leave it, and resized to 80x80, BGR, 0..255. They learned a
screen's moiré and glare and a print's texture; they cannot see an injected video feed. A face's
score is the mean of the models' P(real); a track's decision is the mean over its frames against
``AntiSpoof.threshold``. That threshold was measured on whole videos: phone replays hold 2-4 s
stretches that score near 1, so a mean over a few seconds of a track does not reject them
(benchmarks/antispoof.py prints the mean over N consecutive frames).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from edge_verify.bundle import read_bundle_file, read_checked
from edge_verify.detect import Face
from edge_verify.errors import BundleError
from edge_verify.interpreter import make_interpreter

INPUT = 80
REAL = 1  # softmax index of the live class


def antispoof_dir() -> Path:
    return Path(str(resources.files("edge_verify") / "models" / "antispoof"))


def crop_box(frame_shape: tuple[int, ...], box: tuple[float, float, float, float], scale: float) -> tuple[int, ...]:
    """(x0, y0, x1, y1), inclusive, of the face ``box`` (x, y, w, h) scaled by ``scale`` about its centre
    in a frame of ``frame_shape``: the scale is lowered until the box fits the frame, and a box that
    crosses an edge is moved back inside (not cut), so the face keeps its size in the crop."""
    height, width = frame_shape[:2]
    x, y, w, h = (float(v) for v in box)
    w, h = max(w, 1.0), max(h, 1.0)
    scale = min(scale, (height - 1) / h, (width - 1) / w)
    cx, cy, nw, nh = x + w / 2, y + h / 2, w * scale, h * scale
    x0, y0, x1, y1 = cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2
    if x0 < 0:
        x0, x1 = 0.0, x1 - x0
    if y0 < 0:
        y0, y1 = 0.0, y1 - y0
    if x1 > width - 1:
        x0, x1 = x0 - (x1 - width + 1), float(width - 1)
    if y1 > height - 1:
        y0, y1 = y0 - (y1 - height + 1), float(height - 1)
    return int(x0), int(y0), int(x1), int(y1)


def crop(frame_bgr: np.ndarray, face: Face, scale: float) -> np.ndarray:
    """The model input for ``face``: ``crop_box`` of the frame resized to 80x80 (uint8 BGR)."""
    x0, y0, x1, y1 = crop_box(frame_bgr.shape, face.box, scale)
    return cv2.resize(frame_bgr[y0 : y1 + 1, x0 : x1 + 1], (INPUT, INPUT))


@dataclass
class _Member:
    scale: float
    interpreter: object
    input: dict
    output: dict

    def probabilities(self, chip: np.ndarray) -> np.ndarray:
        """Softmax output (3,) for one 80x80 BGR uint8 chip."""
        x = chip.astype(np.float32)[None]
        scale, zero = self.input["quantization"]
        if scale:
            x = np.clip(np.round(x / scale + zero), *_limits(self.input["dtype"]))
        self.interpreter.set_tensor(self.input["index"], x.astype(self.input["dtype"]))
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self.output["index"]).reshape(-1).astype(np.float32)
        scale, zero = self.output["quantization"]
        return (y - zero) * scale if scale else y


def _limits(dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


class AntiSpoof:
    """``score(frame, face)`` -> P(real) of that face, the mean over the shipped models; ``threshold``:
    a track whose mean score is below it is judged an attack. Each model's sha256 is checked against
    model.json before it is run."""

    def __init__(self, backend: str | None = None, threads: int | None = None, folder: Path | None = None):
        folder = Path(folder) if folder is not None else antispoof_dir()
        try:
            self.meta = json.loads(read_bundle_file(folder / "model.json", 1 << 20))
            self.threshold = float(self.meta["threshold"]["value"])
            entries = [(folder / m["file"], m["sha256"], float(m["crop_scale"])) for m in self.meta["models"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise BundleError(f"{folder / 'model.json'}: not an anti-spoofing model description ({exc})") from None
        self.members = []
        for path, digest, scale in entries:
            loaded = make_interpreter(path, backend, threads, content=read_checked(path, digest))
            interp = loaded.interpreter
            self.members.append(_Member(scale, interp, interp.get_input_details()[0], interp.get_output_details()[0]))

    def score(self, frame_bgr: np.ndarray, face: Face) -> float:
        """P(real) of ``face`` in ``frame_bgr``: the mean of each model's on its own crop."""
        return float(np.mean([m.probabilities(crop(frame_bgr, face, m.scale))[REAL] for m in self.members]))


@dataclass
class TrackScore:
    """Running mean of one track's scores; ``live(threshold)`` once ``min_frames`` were seen (how many
    a decision needs is the integrator's call: see the module docstring on short stretches)."""

    total: float = 0.0
    frames: int = 0
    min_frames: int = 5

    def add(self, score: float) -> None:
        self.total += score
        self.frames += 1

    @property
    def mean(self) -> float | None:
        return self.total / self.frames if self.frames else None

    def live(self, threshold: float) -> bool | None:
        """True/False against ``threshold``; None until ``min_frames`` scores were added."""
        return None if self.frames < self.min_frames else self.total / self.frames >= threshold
