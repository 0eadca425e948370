"""Quality gate: refuse a capture the operating points were not calibrated for, with an instruction
the person can act on ("more light on your face", "come closer", "look at the camera").

The cues are measured on the face region of the aligned chip (eyes to mouth, from the bundle's
landmark template) and on the detector's landmarks. Their limits were set on the development sets
(``benchmarks/operating_points.py`` prints what each refuses): they refuse 1.6% of the in-the-wild
celebrity photos and 40% of Yale B (its near-black and side-lit images), and every operating point
is calibrated on the captures they accept. A refused capture gets an instruction, never a score.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

DARK_LEVEL = 40  # a face-region pixel darker than this counts as dark
REGION_SIDE = 64  # sharpness is measured on the face region resized to this, so chip size does not matter

INSTRUCTIONS = {
    "small": "Come closer to the camera",
    "dark": "More light on your face",
    "bright": "Less light on your face: move out of direct light",
    "uneven": "Light your face evenly: turn towards the light",
    "turned": "Look straight at the camera",
    "blurred": "Hold still",
}


@dataclass(frozen=True)
class QualityOptions:
    min_face_px: float = 40.0  # detected face box, shorter side, in frame pixels
    min_sharpness: float = 25.0  # variance of the Laplacian of the face region at 64x64
    min_brightness: float = 50.0  # mean grey level of the face region
    max_brightness: float = 225.0
    max_dark_share: float = 0.4  # share of face-region pixels darker than DARK_LEVEL
    min_evenness: float = 0.3  # mean of the darker half of the face / mean of the brighter half
    max_yaw: float = 1.0  # nose offset from the eyes' midpoint along the eye line / eye distance (near profile)


@dataclass(frozen=True)
class QualityReport:
    ok: bool
    face_px: float | None
    sharpness: float
    brightness: float
    reasons: tuple[str, ...] = field(default=())
    dark_share: float = 0.0
    evenness: float = 1.0
    yaw: float | None = None
    cues: tuple[str, ...] = field(default=())  # the failed cues, keys of INSTRUCTIONS, in reasons' order

    @property
    def instruction(self) -> str | None:
        """What the person can do about the first failed cue; None when the capture passed."""
        return INSTRUCTIONS[self.cues[0]] if self.cues else None


def face_region(grey: np.ndarray, template=None) -> np.ndarray:
    """Eyes-to-mouth region of an aligned grey chip (its landmark ``template``); the whole chip without one."""
    if template is None:
        return grey
    t = np.asarray(template, np.float64)
    d = t[1, 0] - t[0, 0]
    x0, x1 = int(t[0, 0] - 0.4 * d), int(round(t[1, 0] + 0.4 * d))
    y0, y1 = int(t[0, 1] - 0.4 * d), int(round(t[3, 1] + 0.25 * d))
    h, w = grey.shape
    return grey[max(y0, 0) : min(y1, h), max(x0, 0) : min(x1, w)]


def yaw_ratio(landmarks: np.ndarray) -> float:
    """Head turn from 5 landmarks: the nose's offset from the eyes' midpoint along the eye line,
    in eye distances (about 0 frontal, +-0.5 well turned); independent of roll and scale."""
    lm = np.asarray(landmarks, np.float64)
    eyes = lm[1] - lm[0]
    distance = max(float(np.linalg.norm(eyes)), 1e-6)
    return float((lm[2] - (lm[0] + lm[1]) / 2) @ (eyes / distance) / distance)


def assess(
    chip: np.ndarray,
    face_px: float | None,
    options: QualityOptions = QualityOptions(),
    template=None,
    landmarks: np.ndarray | None = None,
) -> QualityReport:
    """Measure a chip (and the face's ``landmarks``, for the head turn); ``ok`` is False with
    reasons and instructions when a cue is outside the limits the operating points were calibrated on."""
    grey = chip[..., 0] if chip.shape[-1] == 1 else cv2.cvtColor(np.ascontiguousarray(chip), cv2.COLOR_RGB2GRAY)
    region = face_region(grey, template).astype(np.float64)
    small = cv2.resize(region.astype(np.uint8), (REGION_SIDE, REGION_SIDE), interpolation=cv2.INTER_AREA)
    sharpness = float(cv2.Laplacian(small, cv2.CV_64F).var())
    brightness = float(region.mean())
    dark = float((region < DARK_LEVEL).mean())
    half = region.shape[1] // 2
    sides = (region[:, :half].mean(), region[:, region.shape[1] - half :].mean())
    evenness = float(min(sides) / max(max(sides), 1e-6))
    yaw = None if landmarks is None else yaw_ratio(landmarks)
    failed: list[tuple[str, str]] = []
    if face_px is not None and face_px < options.min_face_px:
        failed.append(("small", f"face too small ({face_px:.0f}px < {options.min_face_px:.0f}px)"))
    if brightness < options.min_brightness or dark > options.max_dark_share:
        failed.append(("dark", f"too dark (brightness {brightness:.0f}, {dark:.0%} of the face dark)"))
    if brightness > options.max_brightness:
        failed.append(("bright", f"too bright (brightness {brightness:.0f} > {options.max_brightness:.0f})"))
    if evenness < options.min_evenness:
        failed.append(("uneven", f"lit from one side (evenness {evenness:.2f} < {options.min_evenness:.2f})"))
    if yaw is not None and abs(yaw) > options.max_yaw:
        failed.append(("turned", f"head turned (yaw {yaw:+.2f}, limit {options.max_yaw:.2f})"))
    if sharpness < options.min_sharpness:
        failed.append(("blurred", f"too blurred (sharpness {sharpness:.1f} < {options.min_sharpness:.1f})"))
    return QualityReport(
        not failed,
        face_px,
        sharpness,
        brightness,
        tuple(f"{text}: {INSTRUCTIONS[cue].lower()}" for cue, text in failed),
        dark,
        evenness,
        yaw,
        tuple(cue for cue, _ in failed),
    )
