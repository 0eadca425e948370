"""Print attacks made from a still photo: the frames a camera would see when someone holds a picture
of an enrolled person in front of it. Used by the liveness tests and benchmarks/liveness.py."""

from __future__ import annotations

import math

import cv2
import numpy as np

KINDS = ("static", "moved", "tilted", "warped")
CANVAS = (640, 480)


def _plane_homography(w: int, h: int, yaw: float, pitch: float, roll: float, shift, scale: float) -> np.ndarray:
    """Homography of a w x h picture rotated in 3-D about its centre and seen by a pinhole camera."""
    f = 700.0
    corners = np.array([[-w / 2, -h / 2, 0], [w / 2, -h / 2, 0], [w / 2, h / 2, 0], [-w / 2, h / 2, 0]], float)
    cy, sy, cp, sp, cr, sr = (
        math.cos(yaw),
        math.sin(yaw),
        math.cos(pitch),
        math.sin(pitch),
        math.cos(roll),
        math.sin(roll),
    )
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    pts = (ry @ rx @ rz @ (corners * scale).T).T + [0, 0, 2.2 * f]
    proj = pts[:, :2] * f / pts[:, 2:] + np.array([CANVAS[0] / 2 + shift[0], CANVAS[1] / 2 + shift[1]])
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    return cv2.getPerspectiveTransform(src, proj.astype(np.float32))


def attack_frames(photo: np.ndarray, kind: str, seconds: float = 6.0, fps: float = 15.0, seed: int = 0):
    """Yield (time_s, frame) for a held print of ``photo``: ``static`` (on a stand), ``moved``
    (shifted, rotated, scaled in the image plane), ``tilted`` (swung left and right about its vertical
    axis, as if turning a head) or ``warped`` (random perspective: yaw, pitch and roll together)."""
    rng = np.random.default_rng(seed)
    h, w = photo.shape[:2]
    fit = min(CANVAS[0] * 0.8 / w, CANVAS[1] * 0.8 / h)
    background = np.full((CANVAS[1], CANVAS[0], 3), 120, np.uint8)
    phase = rng.uniform(0, 2 * math.pi, 6)
    for i in range(int(seconds * fps)):
        t = i / fps
        yaw = pitch = roll = 0.0
        shift, scale = (0.0, 0.0), fit
        if kind == "moved":
            shift = (40 * math.sin(2 * t + phase[0]), 25 * math.sin(1.3 * t + phase[1]))
            roll = math.radians(10) * math.sin(1.7 * t + phase[2])
            scale = fit * (1 + 0.08 * math.sin(1.1 * t + phase[3]))
        elif kind == "tilted":
            yaw = math.radians(40) * math.sin(2 * math.pi * t / 3)
        elif kind == "warped":
            yaw = math.radians(35) * math.sin(2.1 * t + phase[0])
            pitch = math.radians(25) * math.sin(1.6 * t + phase[1])
            roll = math.radians(12) * math.sin(1.2 * t + phase[2])
            shift = (30 * math.sin(1.5 * t + phase[3]), 20 * math.sin(0.9 * t + phase[4]))
        elif kind != "static":
            raise ValueError(kind)
        m = _plane_homography(w, h, yaw, pitch, roll, shift, scale)
        frame = cv2.warpPerspective(photo, m, CANVAS, dst=background.copy(), borderMode=cv2.BORDER_TRANSPARENT)
        noise = rng.normal(0, 2.0, frame.shape)  # sensor noise: a real camera never sees identical frames
        yield t, np.clip(frame + noise, 0, 255).astype(np.uint8)
