"""Turn a frame (and a face) into the model's input chip, as the bundle's preprocessing says."""

from __future__ import annotations

import cv2
import numpy as np

from edge_verify.bundle import Preprocess
from edge_verify.detect import Face


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src points to dst.

    Umeyama's closed form; returns a 2x3 matrix for ``cv2.warpAffine``.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    scale = (sig * sign).sum() / s.var(0).sum()
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]])


def _to_color_order(image_bgr: np.ndarray, color_order: str) -> np.ndarray:
    if color_order == "RGB":
        return cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    if color_order == "GRAY":
        return cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)[..., None]
    return image_bgr


def align_face(frame_bgr: np.ndarray, face: Face, pre: Preprocess) -> np.ndarray:
    """Warp the face so its landmarks land on the bundle's template; returns (H, W, C) uint8."""
    h, w = pre.size
    matrix = similarity_transform(face.landmarks, np.array(pre.template))
    chip = cv2.warpAffine(frame_bgr, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return _to_color_order(chip, pre.color_order)


def resize_frame(frame_bgr: np.ndarray, pre: Preprocess) -> np.ndarray:
    """Whole-frame input for non-face bundles: resize to the model's size."""
    h, w = pre.size
    chip = cv2.resize(frame_bgr, (w, h), interpolation=cv2.INTER_AREA)
    return _to_color_order(chip, pre.color_order)
