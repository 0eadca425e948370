"""Quality gate: reject chips a verification decision should not be made on, and say why."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np


@dataclass(frozen=True)
class QualityOptions:
    min_face_px: float = 40.0  # detected face box, shorter side, in frame pixels
    min_sharpness: float = 15.0  # variance of the Laplacian on the grey chip
    min_brightness: float = 40.0  # mean grey level of the chip
    max_brightness: float = 220.0


@dataclass(frozen=True)
class QualityReport:
    ok: bool
    face_px: float | None
    sharpness: float
    brightness: float
    reasons: tuple[str, ...] = field(default=())


def assess(chip: np.ndarray, face_px: float | None, options: QualityOptions = QualityOptions()) -> QualityReport:
    """Measure size, blur and brightness of a chip; ``ok`` is False with reasons when any fails."""
    grey = chip[..., 0] if chip.shape[-1] == 1 else cv2.cvtColor(np.ascontiguousarray(chip), cv2.COLOR_RGB2GRAY)
    sharpness = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    brightness = float(grey.mean())
    reasons = []
    if face_px is not None and face_px < options.min_face_px:
        reasons.append(f"face too small ({face_px:.0f}px < {options.min_face_px:.0f}px)")
    if sharpness < options.min_sharpness:
        reasons.append(f"too blurred (sharpness {sharpness:.1f} < {options.min_sharpness:.1f})")
    if brightness < options.min_brightness:
        reasons.append(f"too dark (brightness {brightness:.0f} < {options.min_brightness:.0f})")
    if brightness > options.max_brightness:
        reasons.append(f"too bright (brightness {brightness:.0f} > {options.max_brightness:.0f})")
    return QualityReport(not reasons, face_px, sharpness, brightness, tuple(reasons))
