"""A straight frame around the face: the border of a phone, monitor or print held up to the camera.

A screen or a print shown to the camera puts its own straight edges (bezel, paper edge) around the
face, on three or four sides; a person's head has a room behind it and a body below it.
``framing_sides`` counts the sides of the face box beyond which one straight edge runs (within 10
degrees of the frame's axes, over 1.2 face widths or heights, with a steady strong gradient).

Measured (``benchmarks/framing.py``): no frame of the 24 bona fide videos shows more than two such
sides; simulated phones and monitors show three or more in nearly every frame, and the phone and
monitor replays of ``antispoof/replay_dev`` in 22-93% of their frames. A person standing in a
doorway whose frame shows above and on both sides of the head would show three: mount the camera
so that it does not.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

ANGLES = tuple(math.radians(a) for a in range(-10, 11, 2))
MIN_GRADIENT = 25.0  # mean step along the edge, grey levels (a bezel against a room: 40-75)
MIN_CONTINUITY = 0.6  # share of the edge's length where the step is at least half that mean
WIDTH = 320  # the picture is measured at this width (or its own, if smaller)
BLACK = 16  # rows and columns at the frame's borders darker than this are letterbox bars, not edges


def _strongest_line(gradient: np.ndarray) -> tuple[float, float]:
    """(mean, continuity) of the strongest near-horizontal straight line through a (rows, cols)
    map of the gradient across it; (0, 0) for a region too small to hold one."""
    rows, cols = gradient.shape
    if rows < 3 or cols < 10:
        return 0.0, 0.0
    offsets = np.arange(cols) - cols / 2
    best = (0.0, 0.0)
    for angle in ANGLES:
        index = np.arange(rows)[:, None] + np.round(offsets * math.tan(angle)).astype(int)[None, :]
        inside = ((index >= 0) & (index < rows)).all(axis=1)
        if not inside.any():
            continue
        lines = np.take_along_axis(gradient, np.clip(index, 0, rows - 1), axis=0)
        means = np.where(inside, lines.mean(axis=1), 0.0)
        row = int(means.argmax())
        if means[row] > best[0]:
            best = (float(means[row]), float((lines[row] >= 0.5 * means[row]).mean()))
    return best


def _content(grey: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the picture inside black letterbox or pillarbox bars."""
    rows, cols = np.flatnonzero(grey.max(axis=1) > BLACK), np.flatnonzero(grey.max(axis=0) > BLACK)
    if not len(rows) or not len(cols):
        return 0, grey.shape[0], 0, grey.shape[1]
    return int(rows[0]) + 3, int(rows[-1]) - 2, int(cols[0]) + 3, int(cols[-1]) - 2


def framing_sides(frame_bgr: np.ndarray, box: tuple[float, ...]) -> int:
    """How many sides of the face ``box`` (x, y, w, h) have a straight edge beyond them (0-4)."""
    grey = frame_bgr if frame_bgr.ndim == 2 else cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
    scale = min(1.0, WIDTH / grey.shape[1])
    if scale < 1.0:  # long edges survive a smaller picture; the cost falls with its area
        grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        box = tuple(float(v) * scale for v in box[:4])
    top, bottom, left, right = _content(grey)
    smooth = cv2.GaussianBlur(grey.astype(np.float32), (0, 0), 1.0)
    across_rows = np.abs(cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)) / 4
    across_cols = np.abs(cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)) / 4
    x, y, w, h = (float(v) for v in box[:4])
    cx, cy = x + w / 2, y + h / 2
    c0, c1 = int(max(cx - 0.6 * w, left)), int(min(cx + 0.6 * w, right))
    r0, r1 = int(max(cy - 0.6 * h, top)), int(min(cy + 0.6 * h, bottom))
    regions = (
        across_rows[top : int(max(y - 0.1 * h, top)), c0:c1],
        across_rows[int(min(y + 1.1 * h, bottom)) : bottom, c0:c1],
        across_cols[r0:r1, left : int(max(x - 0.1 * w, left))].T,
        across_cols[r0:r1, int(min(x + 1.1 * w, right)) : right].T,
    )
    found = 0
    for region in regions:
        mean, continuity = _strongest_line(region)
        found += mean >= MIN_GRADIENT and continuity >= MIN_CONTINUITY
    return found
