"""Photo puppet: one still photo of a person, warped in 3-D along the product's own face mesh and
driven by the prompt the kiosk shows, answering the liveness challenge (issue 24). Used by the
liveness tests and benchmarks/puppet_attack.py; the same style as ``photo_attacks.py``.

- ``Puppet(photo)``: the photo's face, its 468 landmarks with depth, and ``render(yaw_deg, pitch_deg,
  eyes_closed, mouth_open)`` -> a 640x480 frame: the mesh rotated about the head centre, projected,
  and the photo warped piecewise-affinely along the mesh triangulation (far triangles first).
- ``on_screen(frame, rng)``: that frame as a phone or monitor filmed by the kiosk camera (bezel,
  perspective, pixel grid and moire, gamma and colour, glare, blur, noise); ``Screen`` keeps one
  device's parameters over a session.
- ``PuppetActor(puppet, rng)``: ``frame(t, prompt)``: reads the prompt text, reacts after a human
  delay, performs the action and returns to rest; nothing unprompted.
- ``run_puppet(photo, seed)``: the closed loop through ``FaceDetector`` and a ``LivenessMonitor``
  until the check decides; ``drive`` is the loop itself, for any monitor factory.

Directions are the user's own, as in ``edge_verify.liveness``: yaw > 0 is a turn to the user's left
(the nose moves to the right of the unmirrored image), pitch > 0 looks up (the nose moves up).
"""

from __future__ import annotations

import math
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from edge_verify import liveness
from edge_verify.detect import FaceDetector
from edge_verify.landmarks import FaceMesh, face_from_mesh

CANVAS = (640, 480)  # (width, height) of a rendered frame
FACE_PX = 190.0  # default face width (cheek to cheek, landmarks 234-454) in a rendered frame
FOCAL = 600.0  # pinhole focal length in pixels (a webcam's ~56 degree field of view at 640 wide)

# Face-mesh indices (MediaPipe's 468-point topology). Eyes: the lids of ``liveness.EYE_*`` extended to
# the corners' neighbours, in matching upper/lower order from the outer corner to the inner one.
UPPER_LIDS = ((246, 161, 160, 159, 158, 157, 173), (466, 388, 387, 386, 385, 384, 398))
LOWER_LIDS = ((7, 163, 144, 145, 153, 154, 155), (249, 390, 373, 374, 380, 381, 382))
EYE_CORNERS = ((33, 133), (263, 362))  # (outer, inner) of the image-left and image-right eye
UPPER_LIP = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LOWER_LIP = (146, 91, 181, 84, 17, 314, 405, 321, 375, 95, 88, 178, 87, 14, 317, 402, 318, 324)
MOUTH_CORNERS = (61, 291, 78, 308)
INNER_MOUTH = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)
CHEEKS = (liveness.CHEEK_IMAGE_LEFT, liveness.CHEEK_IMAGE_RIGHT)  # 234, 454: beside the ears
CHIN, FOREHEAD = 152, 10

MOUTH_BGR = (38, 28, 52)  # BGR of the dark mouth cavity when the mouth opens


def _rotation(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """Rotation of head points (x right, y down, z away from the camera) for a pose in the user's own
    directions: yaw > 0 moves the nose to image right, pitch > 0 moves it up, roll > 0 is clockwise."""
    a, b, c = (math.radians(v) for v in (-yaw_deg, -pitch_deg, roll_deg))
    ry = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _delaunay(points: np.ndarray, rect: tuple[int, int, int, int]) -> np.ndarray:
    """(K, 3) vertex indices of the Delaunay triangles of ``points`` (all inside ``rect``)."""
    subdiv = cv2.Subdiv2D(rect)
    for x, y in points:
        subdiv.insert((float(x), float(y)))
    corners = subdiv.getTriangleList().reshape(-1, 3, 2)
    x0, y0, w, h = rect
    inside = np.all((corners[..., 0] >= x0) & (corners[..., 0] < x0 + w), axis=1)
    inside &= np.all((corners[..., 1] >= y0) & (corners[..., 1] < y0 + h), axis=1)
    corners = corners[inside]
    distance = np.linalg.norm(corners.reshape(-1, 1, 2) - points[None].astype(np.float32), axis=2)
    return distance.argmin(1).reshape(-1, 3)


class Puppet:
    """One photo's face, ready to be posed. ``render`` returns a BGR frame of ``CANVAS`` size.

    ``face_px`` is the face's width in the rendered frame (cheek to cheek); ``centre`` where its
    centre lands (default: the canvas centre, a little low). Rendered maps are cached per pose
    (quantised), so a pose seen again costs only the final ``cv2.remap``."""

    def __init__(
        self,
        photo_bgr: np.ndarray,
        detector: FaceDetector | None = None,
        mesh: FaceMesh | None = None,
        *,
        face_px: float = FACE_PX,
        centre: tuple[float, float] | None = None,
        grid_step: int = 2,
        cache_size: int = 16,
    ):
        self.detector = detector or FaceDetector()
        self.mesh = mesh or FaceMesh()
        faces = self.detector.detect(photo_bgr)
        if not faces:
            raise ValueError("no face found in the photo")
        found = self.mesh.landmarks(photo_bgr, faces[0])
        again = self.mesh.landmarks(photo_bgr, face_from_mesh(found))  # crop placed by the landmarks
        found = again if again.presence >= found.presence else found
        if found.presence < 0.5:
            raise ValueError(f"the face mesh does not see a face in the photo (presence {found.presence:.2f})")
        p = found.points.astype(np.float64)
        width = float(np.linalg.norm(p[CHEEKS[0], :2] - p[CHEEKS[1], :2]))
        scale = face_px / width
        w, h = CANVAS
        target = np.array(centre if centre is not None else (w / 2, h * 0.52))
        middle = (p[:, :2].min(0) + p[:, :2].max(0)) / 2
        # the photo scaled once (area filter), placed so the face lands on ``target``: canvas + margin
        self.margin = margin = 96
        shift = target - middle * scale + margin
        small = cv2.resize(
            photo_bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        )
        m = np.array([[1.0, 0, shift[0]], [0, 1.0, shift[1]]])  # photo pixel p lands at p * scale + shift
        self.base = cv2.warpAffine(small, m, (w + 2 * margin, h + 2 * margin), borderMode=cv2.BORDER_REPLICATE)
        # 3-D landmarks in canvas pixels (z in the same units, larger = farther)
        self.points = np.column_stack([p[:, :2] * scale + shift - margin, p[:, 2] * scale])
        self.photo_mesh = found
        self.scale = scale
        pts = self.points
        self.width = face_px
        # the head's pivot: between the cheeks beside the ears, at their depth (a neck's yaw axis)
        self.pivot = np.array([*pts[list(CHEEKS), :2].mean(0), pts[list(CHEEKS), 2].mean()])
        self.pivot[1] = (pts[FOREHEAD, 1] + pts[CHIN, 1]) / 2
        # control points: mesh, a ring around the face that follows the head (hair, ears, neck) and a
        # fixed outer frame (background)
        lo, hi = pts[:, :2].min(0), pts[:, :2].max(0)
        centre_xy, half = (lo + hi) / 2, (hi - lo) / 2
        angles = np.linspace(0, 2 * np.pi, 36, endpoint=False)
        ring = centre_xy + np.column_stack([np.cos(angles), np.sin(angles)]) * half * 1.3
        # each ring point moves with the face's edge next to it (hair, ears and neck go with the head),
        # so the stretch of a turn falls between the ring and the fixed frame, on the background
        nearest = np.linalg.norm(ring[:, None] - pts[None, :, :2], axis=2).argmin(1)
        ring_z = pts[nearest, 2]
        xs = np.linspace(-margin / 2, w + margin / 2, 7)
        ys = np.linspace(-margin / 2, h + margin / 2, 5)
        frame_pts = np.array([(x, y) for x in xs for y in ys if x in (xs[0], xs[-1]) or y in (ys[0], ys[-1])])
        self.n_mesh, self.n_ring = len(pts), len(ring)
        self.src3 = np.vstack([pts, np.column_stack([ring, ring_z])])
        self.src = np.vstack([self.src3[:, :2], frame_pts])
        self.frame_z = 1e6  # the fixed frame is farthest: its triangles are drawn first
        rect = (-margin - 8, -margin - 8, w + 2 * margin + 16, h + 2 * margin + 16)
        self.triangles = _delaunay(self.src, rect)
        tri = self.src[self.triangles]  # (K, 3, 2)
        # the face's edge: the oval and its neighbours, where the mesh's depth is least certain and a
        # turn stretches the photo most; their motion is smoothed over their neighbours
        n = len(self.src)
        adjacency = np.zeros((n, n), np.float32)
        for a, b in ((0, 1), (1, 2), (2, 0)):
            adjacency[self.triangles[:, a], self.triangles[:, b]] = 1
            adjacency[self.triangles[:, b], self.triangles[:, a]] = 1
        oval = np.zeros(n, bool)
        oval[list(liveness.RIGID[:36])] = True
        edge = (oval | (adjacency[:, oval].sum(1) > 0))[: self.n_mesh + self.n_ring]
        edge[self.n_mesh :] = True
        self._edge = np.flatnonzero(edge)
        self._smooth = (adjacency / np.maximum(adjacency.sum(1, keepdims=True), 1))[self._edge][:, : len(edge)]
        self._src_affine = np.transpose(tri, (0, 2, 1))  # (K, 2, 3): columns are the source vertices
        e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
        self._src_sign = np.sign(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
        self.cull = True
        # coarse grid on which the inverse map is computed (pixel centres of a 1/step image)
        self.step = grid_step
        gw, gh = math.ceil(w / grid_step), math.ceil(h / grid_step)
        gx = (np.arange(gw) + 0.5) * grid_step - 0.5
        gy = (np.arange(gh) + 0.5) * grid_step - 0.5
        self._grid = np.meshgrid(gx.astype(np.float32), gy.astype(np.float32))
        self._cache: OrderedDict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = OrderedDict()
        self.cache_size = cache_size
        self._jaw = self._jaw_weights()
        self._smile = self._smile_field()

    # -- expressions as displacements of the resting mesh ----------------------------------------
    def _face_frame(self) -> tuple[np.ndarray, np.ndarray]:
        p = self.points[:, :2]
        u = p[263] - p[33]
        u = u / np.linalg.norm(u)
        return u, np.array([-u[1], u[0]])  # along the eyes, down the face

    def _jaw_weights(self) -> np.ndarray:
        """How far each point follows the chin when the mouth opens (0 above the mouth, 1 at the
        chin, falling off towards the jaw's corners)."""
        p = self.points[:, :2]
        u, v = self._face_frame()
        mouth = (p[13] + p[14]) / 2
        half_mouth = abs(float((p[291] - p[61]) @ u)) / 2
        a, b = (p - mouth) @ u, (p - mouth) @ v
        below = np.clip(b / (0.06 * self.width), 0, 1)
        lateral = np.clip(1 - (a / (0.55 * self.width)) ** 2, 0, 1)
        w = below**2 * (3 - 2 * below) * lateral
        lip = np.array(LOWER_LIP)
        w[lip] = np.clip(1 - (a[lip] / max(half_mouth, 1e-6)) ** 2, 0, 1) ** 0.5
        w[list(UPPER_LIP)] = 0
        w[list(MOUTH_CORNERS)] = 0
        return w

    def _smile_field(self) -> np.ndarray:
        p = self.points[:, :2]
        u, v = self._face_frame()
        mouth_w = abs(float((p[291] - p[61]) @ u))
        move = np.zeros_like(self.points)
        for corner, sign in ((61, -1.0), (291, 1.0)):
            d2 = np.sum((p - p[corner]) ** 2, axis=1)
            weight = np.exp(-d2 / (2 * (0.3 * mouth_w) ** 2))
            move[:, :2] += weight[:, None] * (sign * 0.12 * mouth_w * u - 0.07 * mouth_w * v)
        return move

    # -- rendering ---------------------------------------------------------------------------------
    def pose_points(
        self,
        yaw_deg: float = 0.0,
        pitch_deg: float = 0.0,
        eyes_closed: float = 0.0,
        mouth_open: float = 0.0,
        *,
        roll_deg: float = 0.0,
        smile: float = 0.0,
        shift: tuple[float, float] = (0.0, 0.0),
    ) -> tuple[np.ndarray, np.ndarray]:
        """Where the control points land in the frame, and their depth (mesh, then the ring). The
        eyelids are painted over the warped frame (``render``), not moved here."""
        src = self.src3.copy()
        mesh = src[: self.n_mesh]
        if smile:
            mesh += float(np.clip(smile, 0, 1)) * self._smile
        if mouth_open:
            _, v = self._face_frame()
            drop = float(np.clip(mouth_open, 0, 1)) * 0.14 * self.width
            mesh[:, :2] += self._jaw[:, None] * drop * v
        r = _rotation(yaw_deg, pitch_deg, roll_deg)
        moved = (src - self.pivot) @ r.T + self.pivot
        moved[:, :2] += shift
        # perspective: the change of each point's projection (the photo itself is the rest pose)
        cx, cy = CANVAS[0] / 2, CANVAS[1] / 2
        rel = FOCAL / (FOCAL + moved[:, 2:] - self.pivot[2])
        rel0 = FOCAL / (FOCAL + self.src3[:, 2:] - self.pivot[2])
        centre = np.array([cx, cy])
        motion = (moved[:, :2] - centre) * rel - (self.src3[:, :2] - centre) * rel0
        for _ in range(3):  # the edge's motion smoothed over its neighbours (the fixed frame does not move)
            motion[self._edge] = 0.5 * motion[self._edge] + 0.5 * self._smooth @ motion
        return self.src3[:, :2] + motion, moved[:, 2]

    def maps(self, **pose) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(map_x, map_y) into ``base`` for ``cv2.remap`` at full canvas size, the mouth's polygon
        (None when closed) and the eyes' lids and corners in the frame; cached per quantised pose."""
        key = tuple(round(float(pose.get(name, 0.0)) / q) for name, q in _QUANTA)
        key += tuple(round(float(s) / 0.25) for s in pose.get("shift", (0.0, 0.0)))
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        dst_ring, depth = self.pose_points(**pose)
        dst = np.vstack([dst_ring, self.src[len(dst_ring) :]])
        depth = np.concatenate([depth, np.full(len(self.src) - len(depth), self.frame_z)])
        tri = dst[self.triangles]  # (K, 3, 2)
        d = np.concatenate([np.transpose(tri, (0, 2, 1)), np.ones((len(tri), 1, 3))], axis=1)  # (K, 3, 3)
        det = np.linalg.det(d)
        ok = np.abs(det) > 1e-3
        if self.cull:  # a triangle turned over (its far side towards the camera) is hidden
            ok &= np.sign(det) == self._src_sign
        affine = np.zeros((len(tri) + 1, 2, 3))
        affine[:-1][ok] = self._src_affine[ok] @ np.linalg.inv(d[ok])
        affine[-1] = [[1, 0, 0], [0, 1, 0]]  # pixels no triangle covers: unchanged
        order = np.argsort(-depth[self.triangles].mean(1), kind="stable")
        order = order[ok[order]]
        coef = affine.reshape(-1, 6).astype(np.float32).T  # (6, K + 1): the six coefficients per triangle
        w, h = CANVAS
        mx, my = self._map_region(tri, order, coef, (0, 0, w, h), self.step)
        if self.step > 1:
            mx = cv2.resize(mx, CANVAS, interpolation=cv2.INTER_LINEAR)
            my = cv2.resize(my, CANVAS, interpolation=cv2.INTER_LINEAR)
        mouth = dst_ring[list(INNER_MOUTH)] if pose.get("mouth_open", 0.0) > 0.05 else None
        eyes = [dst_ring[list(e)] for e in (*UPPER_LIDS, *LOWER_LIDS, *EYE_CORNERS)]
        hit = (mx, my, mouth, eyes)
        self._cache[key] = hit
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return hit

    def _map_region(
        self, tri: np.ndarray, order: np.ndarray, coef: np.ndarray, rect: tuple[int, int, int, int], step: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Source coordinates (in ``base``) of the pixel centres of a 1/``step`` grid over ``rect``
        (x, y, w, h): each sample takes the nearest triangle that covers it (triangles in ``order``,
        far first; ``coef`` their dst -> src affines, the last one the identity)."""
        x0, y0, w, h = rect
        gw, gh = math.ceil(w / step), math.ceil(h / step)
        index = np.full((gh, gw), coef.shape[1] - 1, np.int32)
        fixed = np.round(((tri - (x0, y0) + 0.5) / step - 0.5) * 16).astype(np.int32)
        if w < CANVAS[0] or h < CANVAS[1]:  # only the triangles that reach the region
            lo, hi = fixed.min(1), fixed.max(1)
            reach = (hi[:, 0] >= 0) & (lo[:, 0] < gw * 16) & (hi[:, 1] >= 0) & (lo[:, 1] < gh * 16)
            order = order[reach[order]]
        for k in order:
            cv2.fillConvexPoly(index, fixed[k], int(k), cv2.LINE_8, 4)
        gaps = index == coef.shape[1] - 1  # between thin triangles (a closing lid): a neighbour's mapping
        if gaps.any():
            near = cv2.dilate(np.where(gaps, -1, index).astype(np.float32), np.ones((3, 3), np.uint8))
            index = np.where(gaps & (near >= 0), near.astype(np.int32), index)
        if step == self.step and (w, h) == CANVAS:
            gx, gy = self._grid
        else:
            gx, gy = np.meshgrid(
                x0 + (np.arange(gw, dtype=np.float32) + 0.5) * step - 0.5,
                y0 + (np.arange(gh, dtype=np.float32) + 0.5) * step - 0.5,
            )
        a00, a01, a02, a10, a11, a12 = (np.take(row, index) for row in coef)
        return a00 * gx + a01 * gy + (a02 + self.margin), a10 * gx + a11 * gy + (a12 + self.margin)

    def render(
        self,
        yaw_deg: float = 0.0,
        pitch_deg: float = 0.0,
        eyes_closed: float = 0.0,
        mouth_open: float = 0.0,
        *,
        roll_deg: float = 0.0,
        smile: float = 0.0,
        shift: tuple[float, float] = (0.0, 0.0),
    ) -> np.ndarray:
        """The photo posed: yaw/pitch/roll in degrees (user's own directions), ``eyes_closed``,
        ``mouth_open`` and ``smile`` from 0 to 1, ``shift`` in pixels. BGR, ``CANVAS`` size."""
        mx, my, mouth, eyes = self.maps(
            yaw_deg=yaw_deg,
            pitch_deg=pitch_deg,
            eyes_closed=eyes_closed,
            mouth_open=mouth_open,
            roll_deg=roll_deg,
            smile=smile,
            shift=shift,
        )
        frame = cv2.remap(self.base, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if mouth is not None:
            _paint_mouth(frame, mouth)
        closed = float(np.clip(eyes_closed, 0, 1))
        if closed > 0.02:
            for side in (0, 1):
                _paint_lid(frame, eyes[side], eyes[2 + side], eyes[4 + side], closed)
        return frame


_QUANTA = (
    ("yaw_deg", 0.1),
    ("pitch_deg", 0.1),
    ("roll_deg", 0.1),
    ("eyes_closed", 0.02),
    ("mouth_open", 0.02),
    ("smile", 0.02),
)


def _mirror_band(
    frame: np.ndarray, edge: np.ndarray, line: np.ndarray, corners: np.ndarray, skin_from: str, height: float
) -> None:
    """Cover the band between ``edge`` (a lid's rest line, lashes included) and ``line`` (where the
    lid's edge is now) with the skin beyond ``edge``, read mirrored (``skin_from`` "above" or "below":
    no seam at ``edge``), in the tone of the skin under the eye, in place."""
    sign = -1.0 if skin_from == "above" else 1.0
    outer = np.vstack([corners[:1], edge, corners[1:]])
    inner = np.vstack([corners[:1], line, corners[1:]])
    reach = 0.8 * height + 2
    x0, x1 = int(np.floor(outer[:, 0].min())) - 2, int(np.ceil(outer[:, 0].max())) + 3
    ys = np.concatenate([outer[:, 1], inner[:, 1], outer[:, 1] + sign * reach])
    y0, y1 = int(np.floor(ys.min())) - 2, int(np.ceil(ys.max())) + 3
    h, w = frame.shape[:2]
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h or x1 - x0 < 3:
        return
    by_x = np.argsort(outer[:, 0])
    xs = np.arange(x0, x1, dtype=np.float32)
    yy = np.arange(y0, y1, dtype=np.float32)[:, None]
    edge_y = np.interp(xs, outer[by_x, 0], outer[by_x, 1]).astype(np.float32)[None]
    map_y = (edge_y + sign * 0.7 * np.abs(yy - edge_y) + sign * 0.5).astype(np.float32)
    map_x = np.broadcast_to(xs[None], map_y.shape).astype(np.float32)
    skin = cv2.remap(frame, map_x, map_y, cv2.INTER_LINEAR).astype(np.float32)
    mask = np.zeros((y1 - y0, x1 - x0), np.float32)
    outline = np.vstack([outer, inner[::-1]]) - (x0, y0)
    cv2.fillPoly(mask, [np.round(outline * 4).astype(np.int32)], 1.0, cv2.LINE_AA, 2)
    mask = cv2.GaussianBlur(mask, (0, 0), 0.7)[..., None]
    inside = mask[..., 0] > 0.5
    below = corners.mean(0) + (0, 0.9 * height + 3)  # the skin under the eye sets the lid's tone
    bx, by, r = int(round(below[0])), int(round(below[1])), max(2, int(height * 0.6))
    cheek = frame[max(by - r, 0) : by + r, max(bx - 2 * r, 0) : bx + 2 * r].reshape(-1, 3)
    if len(cheek) and inside.any():
        skin += (cheek.mean(0) * 0.97 - skin[inside].mean(0)) * 0.8
    roi = frame[y0:y1, x0:x1].astype(np.float32)
    frame[y0:y1, x0:x1] = np.clip(roi * (1 - mask) + skin * mask, 0, 255).astype(np.uint8)


def _paint_lid(frame: np.ndarray, upper: np.ndarray, lower: np.ndarray, corners: np.ndarray, closed: float) -> None:
    """Close the eye by ``closed`` (0-1), in place: the upper lid comes down most of the way and the
    lower lid rises to meet it; each band they cover shows the skin beyond it (eyelid above, lid
    below), and the lashes' dark line follows the meeting edge."""
    height = float(np.max(np.linalg.norm(upper - lower, axis=1)))
    margin = 0.35 * height + 1.0  # the lashes lie beyond the lids' landmarks
    up = np.array([0.0, margin])
    meet = lower + 0.3 * (upper - lower)
    upper_line = upper + closed * (meet - upper)
    lower_line = lower + closed * (meet - lower) + (0.0, 0.5)
    _mirror_band(frame, upper - up, upper_line, corners, "above", height)
    _mirror_band(frame, lower + 0.6 * up, lower_line, corners, "below", height)
    edge = np.vstack([corners[:1], upper_line, corners[1:]])
    x0, y0 = np.floor(edge.min(0)).astype(int) - 3
    x1, y1 = np.ceil(edge.max(0)).astype(int) + 4
    h, w = frame.shape[:2]
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
        return
    lash = np.zeros((y1 - y0, x1 - x0), np.float32)
    thick = max(1, int(round(height * 0.2)))
    cv2.polylines(lash, [np.round((edge - (x0, y0)) * 4).astype(np.int32)], False, 1.0, thick, cv2.LINE_AA, 2)
    lash = cv2.GaussianBlur(lash, (0, 0), 0.6)[..., None] * (0.6 * min(1.0, 2 * closed))
    roi = frame[y0:y1, x0:x1].astype(np.float32)
    frame[y0:y1, x0:x1] = np.clip(roi * (1 - lash) + lash * roi * 0.3, 0, 255).astype(np.uint8)


def _paint_mouth(frame: np.ndarray, polygon: np.ndarray) -> None:
    """Darken the opened mouth's inside (a gradient, soft edge) in place."""
    x0, y0 = np.floor(polygon.min(0)).astype(int) - 3
    x1, y1 = np.ceil(polygon.max(0)).astype(int) + 4
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, frame.shape[1]), min(y1, frame.shape[0])
    if x1 - x0 < 3 or y1 - y0 < 3:
        return
    mask = np.zeros((y1 - y0, x1 - x0), np.float32)
    cv2.fillPoly(mask, [np.round((polygon - (x0, y0)) * 4).astype(np.int32)], 1.0, cv2.LINE_AA, 2)
    mask = cv2.GaussianBlur(mask, (0, 0), 1.0)[..., None]
    shade = np.linspace(1.3, 0.7, y1 - y0, dtype=np.float32)[:, None, None]  # lighter under the upper teeth
    roi = frame[y0:y1, x0:x1].astype(np.float32)
    roi = roi * (1 - mask) + mask * np.array(MOUTH_BGR, np.float32) * shade
    frame[y0:y1, x0:x1] = np.clip(roi, 0, 255).astype(np.uint8)


# -- a screen filmed by the kiosk ----------------------------------------------------------------------
@dataclass(frozen=True)
class Screen:
    """One phone or monitor held in front of the kiosk camera: where it is, how it renders and what
    the room adds. ``draw(rng)`` picks plausible parameters; ``apply`` films one frame on it."""

    kind: str  # "phone" or "monitor"
    homography: np.ndarray  # content pixels -> camera pixels
    bezel_px: int  # bezel width in content pixels
    bezel_bgr: tuple[float, float, float]
    gain: np.ndarray  # per-channel (B, G, R) white point of the display
    gamma: float  # display tone curve against the camera's
    black: float  # the screen's black level in the room (0-255)
    pattern: np.ndarray  # (h, w, 3) float32 multiplicative pixel grid and moire, content pixels
    glare_bgr: np.ndarray  # (h, w, 3) float32 additive reflection, content pixels
    room: np.ndarray  # (480, 640, 3) uint8: what the camera sees around the screen
    blur_sigma: float
    noise_sigma: float
    shake: np.ndarray  # (2, 3): amplitude (px), frequency (Hz) and phase of the hand's x and y motion

    @classmethod
    def draw(cls, rng: np.random.Generator, size: tuple[int, int] = CANVAS) -> Screen:
        w, h = size
        kind = "phone" if rng.random() < 0.5 else "monitor"
        # where the screen is: content scaled into the camera view, slightly turned, tilted and rolled
        scale = rng.uniform(0.8, 0.95)
        yaw, pitch, roll = rng.uniform(-8, 8), rng.uniform(-8, 8), rng.uniform(-4, 4)
        centre = np.array([w / 2 + rng.uniform(-15, 15), h / 2 + rng.uniform(-12, 12)])
        corners = np.array([[-w / 2, -h / 2, 0], [w / 2, -h / 2, 0], [w / 2, h / 2, 0], [-w / 2, h / 2, 0]]) * scale
        r = _rotation(yaw, pitch, roll)
        moved = corners @ r.T + [0, 0, 2.5 * FOCAL]
        projected = moved[:, :2] * (2.5 * FOCAL) / moved[:, 2:] + centre
        src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
        homography = cv2.getPerspectiveTransform(src, projected.astype(np.float32))
        # the display: white point, tone curve, black level lifted by room light
        tint = np.array([1.06, 1.0, 0.93]) if kind == "phone" else np.array([1.0, 1.0, 1.0])
        gain = tint * rng.uniform(0.9, 1.02, 3) * rng.uniform(0.85, 1.0)
        gamma = rng.uniform(0.85, 1.2)
        black = rng.uniform(6, 22)
        # pixel grid: the sub-pixel stripes (R, G, B side by side), aliased by the camera's sensor into
        # low-frequency moire fringes, plus a fine grid where it is just resolved
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        angle = rng.uniform(-0.15, 0.15)
        u, v = xx * math.cos(angle) + yy * math.sin(angle), -xx * math.sin(angle) + yy * math.cos(angle)
        period = rng.uniform(2.2, 3.6)  # camera pixels per screen pixel, after aliasing
        beat = rng.uniform(0.015, 0.05), rng.uniform(0.01, 0.04)  # moire fringe frequencies (1/px)
        depth = rng.uniform(0.015, 0.045)  # modulation depth
        pattern = np.empty((h, w, 3), np.float32)
        for c, shift in enumerate((0.0, 2 * math.pi / 3, 4 * math.pi / 3)):  # B, G, R stripes
            fine = np.cos(2 * math.pi * u / period + shift)
            fringes = np.cos(2 * math.pi * (beat[0] * u + beat[1] * v) + shift / 3)
            rows = np.cos(2 * math.pi * v / period)
            pattern[..., c] = 1 + depth * (0.5 * fine + 0.7 * fringes + 0.3 * rows)
        # glare: a soft reflection of a window or lamp, somewhere on the glass
        gx, gy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
        sx, sy = rng.uniform(0.15, 0.4) * w, rng.uniform(0.1, 0.3) * h
        tilt = rng.uniform(-1, 1)
        d = ((xx - gx) + tilt * (yy - gy)) ** 2 / sx**2 + (yy - gy) ** 2 / sy**2
        glare = (rng.uniform(12, 45) * np.exp(-d / 2) + rng.uniform(0, 8) * (1 - yy / h)).astype(np.float32)
        glare = np.repeat(glare[..., None], 3, axis=2)
        # the room around the screen: smooth, dim, coloured
        light = rng.uniform(50, 140) + rng.uniform(-25, 25, (4, 5, 1)) + rng.uniform(-10, 10, (4, 5, 3))
        room = cv2.resize(light.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
        room = np.clip(room + rng.normal(0, 3, (h, w, 3)), 0, 255).astype(np.uint8)
        bezel = tuple(float(x) for x in rng.uniform(8, 35) * rng.uniform(0.9, 1.1, 3))
        bezel_px = int(rng.integers(10, 22) if kind == "phone" else rng.integers(14, 34))
        shake = np.array([rng.uniform(0.3, 1.5, 2), rng.uniform(0.3, 1.2, 2), rng.uniform(0, 2 * math.pi, 2)]).T * (
            1.0 if kind == "phone" else 0.3
        )
        return cls(
            kind, homography, bezel_px, bezel, gain, gamma, black, pattern, glare, room,
            rng.uniform(0.5, 1.1), rng.uniform(1.5, 3.5), shake,
        )  # fmt: skip

    def apply(self, frame: np.ndarray, rng: np.random.Generator, t: float = 0.0) -> np.ndarray:
        """``frame`` (BGR, the screen's content) shown on this screen and filmed at time ``t``."""
        h, w = frame.shape[:2]
        levels = (np.arange(256) / 255.0)[:, None] ** self.gamma * self.gain * (255 - self.black) + self.black
        lut = np.clip(levels, 0, 255).astype(np.uint8)[:, None, :]  # (256, 1, 3): tone curve per channel
        content = cv2.LUT(frame, lut).astype(np.float32)
        content = cv2.add(cv2.multiply(content, self.pattern), self.glare_bgr)
        b = self.bezel_px
        surface = np.empty((h + 2 * b, w + 2 * b, 3), np.uint8)
        surface[:] = self.bezel_bgr
        surface[b : b + h, b : b + w] = np.clip(content, 0, 255)
        # the bezel's edge catches a little light
        cv2.rectangle(surface, (1, 1), (w + 2 * b - 2, h + 2 * b - 2), tuple(c + 25 for c in self.bezel_bgr), 1)
        amplitude, frequency, phase = self.shake[:, 0], self.shake[:, 1], self.shake[:, 2]
        dx, dy = amplitude * np.sin(2 * math.pi * frequency * t + phase)
        move = np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1]]) @ self.homography
        move = move @ np.array([[1, 0, -b], [0, 1, -b], [0, 0, 1]])  # surface pixels -> content pixels first
        out = self.room.copy()
        cv2.warpPerspective(surface, move, (w, h), dst=out, borderMode=cv2.BORDER_TRANSPARENT)
        out = cv2.GaussianBlur(out, (0, 0), self.blur_sigma)
        return add_noise(out, rng, self.noise_sigma)


_NOISE: dict[tuple, np.ndarray] = {}


def add_noise(image: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """``image`` plus Gaussian sensor noise of about ``sigma`` (one of a few stored noise fields, drawn
    with a random sign and strength: drawing a fresh field costs more than the rest of a frame)."""
    key = (image.shape, round(sigma, 1))
    if key not in _NOISE:
        bank = np.empty((8, *image.shape), np.int16)
        cv2.setRNGSeed(hash(key) & 0x7FFFFFFF)  # the same fields whatever ran before: a seed replays exactly
        for field in bank:
            cv2.randn(field, 0, sigma)
        _NOISE[key] = bank
    field = _NOISE[key][rng.integers(8)]
    if rng.random() < 0.5:
        return cv2.add(image, field, dtype=cv2.CV_8U)
    return cv2.subtract(image, field, dtype=cv2.CV_8U)


def on_screen(frame: np.ndarray, rng: np.random.Generator, screen: Screen | None = None, t: float = 0.0) -> np.ndarray:
    """``frame`` as the kiosk camera would film it shown on a phone or monitor. Without ``screen`` one
    is drawn from ``rng`` for this frame alone; pass the same ``Screen`` for a whole session."""
    screen = screen or Screen.draw(rng, (frame.shape[1], frame.shape[0]))
    return screen.apply(frame, rng, t)


# -- the puppeteer ---------------------------------------------------------------------------------------
def _smooth(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3 - 2 * x)


def _out_hold_back(t: float, out: float, hold: float, back: float) -> float:
    """0 -> 1 over ``out`` seconds, 1 for ``hold``, back to 0 over ``back`` (smooth)."""
    if t < out:
        return _smooth(t / out)
    if t < out + hold:
        return 1.0
    return 1.0 - _smooth((t - out - hold) / back)


@dataclass(frozen=True)
class Motion:
    """One performance of an action: ``pose(t)`` (seconds since it began) -> render keywords."""

    action: str
    duration: float
    amplitude: float
    out: float
    hold: float

    def pose(self, t: float) -> dict[str, float]:
        back = self.duration - self.out - self.hold
        x = _out_hold_back(t, self.out, self.hold, back) * self.amplitude
        return {_CHANNELS[self.action][0]: _CHANNELS[self.action][1] * x}


_CHANNELS = {  # action -> (render keyword, sign)
    "turn_left": ("yaw_deg", 1.0),
    "turn_right": ("yaw_deg", -1.0),
    "look_up": ("pitch_deg", 1.0),
    "look_down": ("pitch_deg", -1.0),
    "blink": ("eyes_closed", 1.0),
    "open_mouth": ("mouth_open", 1.0),
    "smile": ("smile", 1.0),
}
ACTIONS = tuple(_CHANNELS)  # what a puppet can perform (more than the product asks for today)


def draw_motion(action: str, rng: np.random.Generator) -> Motion:
    """A human-like performance of ``action``: turns of 20-30 degrees (~0.5 s out, a short hold, back),
    looks up/down of 15-22, a blink of ~0.25-0.4 s (fully closed for 0.12-0.2 s), the mouth ~0.6 s."""
    if action in ("turn_left", "turn_right"):
        out, hold, back = rng.uniform(0.4, 0.6), rng.uniform(0.2, 0.5), rng.uniform(0.4, 0.6)
        return Motion(action, out + hold + back, rng.uniform(20, 30), out, hold)
    if action in ("look_up", "look_down"):
        out, hold, back = rng.uniform(0.4, 0.6), rng.uniform(0.2, 0.5), rng.uniform(0.4, 0.6)
        return Motion(action, out + hold + back, rng.uniform(15, 22), out, hold)
    if action == "blink":
        out, hold, back = rng.uniform(0.06, 0.09), rng.uniform(0.12, 0.2), rng.uniform(0.07, 0.1)
        return Motion(action, out + hold + back, 1.0, out, hold)
    if action == "open_mouth":
        out, hold, back = rng.uniform(0.15, 0.25), rng.uniform(0.15, 0.3), rng.uniform(0.15, 0.25)
        return Motion(action, out + hold + back, rng.uniform(0.8, 1.0), out, hold)
    if action == "smile":
        out, hold, back = rng.uniform(0.2, 0.3), rng.uniform(0.3, 0.5), rng.uniform(0.2, 0.3)
        return Motion(action, out + hold + back, rng.uniform(0.8, 1.0), out, hold)
    raise ValueError(f"the puppet cannot perform {action!r}")


def prompted_action(prompt: str | None) -> str | None:
    """The action a prompt text asks for, read from ``liveness.PROMPTS`` at call time (actions added
    there later are understood); None for an empty, unknown or "look at the camera" prompt."""
    if not prompt:
        return None
    for action, text in liveness.PROMPTS.items():
        if text == prompt and action in _CHANNELS:
            return action
    return None


class PuppetActor:
    """The puppeteer: ``frame(t, prompt)`` -> the frame the camera (or an injected feed) delivers at
    time ``t`` while the kiosk shows ``prompt``.

    A new prompt is answered after a reaction delay (0.3-0.8 s, drawn) and once any action in progress
    has ended; the action is performed once, smoothly, and the head returns to rest. If the same
    action is still asked ``repeat_after_s`` after it ended (a missed event, or a sequence that asks
    twice), it is performed again, as a person would. At rest the head drifts a fraction of a degree
    and a pixel. Nothing is performed unprompted. ``screen``: filmed on a phone or monitor
    (``Screen``, drawn once for the session) instead of injected."""

    def __init__(
        self,
        puppet: Puppet,
        rng: np.random.Generator,
        screen: bool | Screen = False,
        fps: float = 15,
        *,
        reaction_s: tuple[float, float] = (0.3, 0.8),
        repeat_after_s: float | None = 1.5,
        noise_sigma: float = 1.5,
    ):
        self.puppet, self.rng, self.fps = puppet, rng, fps
        puppet._cache.clear()  # a cached pose stands for its neighbours: start each session alike, so a seed replays
        self.screen = screen if isinstance(screen, Screen) else Screen.draw(rng) if screen else None
        self.reaction_s, self.repeat_after_s, self.noise_sigma = reaction_s, repeat_after_s, noise_sigma
        self._prompt: str | None = None
        self._pending: tuple[str, float] | None = None  # (action, earliest start)
        self._current: tuple[Motion, float] | None = None  # (motion, start)
        self._last: tuple[str, float] | None = None  # (action, end) of the last performance
        self.performed: list[tuple[str, float]] = []  # (action, start): what was acted, for tests
        # rest jitter: a few slow sinusoids per degree of freedom
        self._jitter = {
            key: (rng.uniform(0.2, 1.2, 3), rng.uniform(0, 2 * math.pi, 3), amplitude * rng.uniform(0.5, 1.0, 3) / 3)
            for key, amplitude in (("yaw_deg", 0.4), ("pitch_deg", 0.3), ("roll_deg", 0.3), ("x", 0.8), ("y", 0.6))
        }
        self.render_s: list[float] = []  # time spent rendering each frame (puppet + screen)

    def _wiggle(self, key: str, t: float) -> float:
        freq, phase, amp = self._jitter[key]
        return float(np.sum(amp * np.sin(2 * math.pi * freq * t + phase)))

    def pose(self, t: float, prompt: str | None) -> dict:
        """Render keywords for time ``t`` (advances the puppeteer's state: call with increasing t)."""
        if prompt != self._prompt:
            self._prompt = prompt
            action = prompted_action(prompt)
            delay = self.rng.uniform(*self.reaction_s)
            self._pending = (action, t + delay) if action else None
        if self._current is not None and t >= self._current[1] + self._current[0].duration:
            motion, start = self._current
            self._last = (motion.action, start + motion.duration)
            self._current = None
        if self._current is None and self._pending is None and self._last and self.repeat_after_s is not None:
            action = prompted_action(self._prompt)
            if action == self._last[0] and t >= self._last[1] + self.repeat_after_s:
                self._pending = (action, t)  # still asked: again
        if self._current is None and self._pending is not None and t >= self._pending[1]:
            motion = draw_motion(self._pending[0], self.rng)
            self._current, self._pending = (motion, t), None
            self._last = None
            self.performed.append((motion.action, t))
        pose = {k: self._wiggle(k, t) for k in ("yaw_deg", "pitch_deg", "roll_deg")}
        pose["shift"] = (self._wiggle("x", t), self._wiggle("y", t))
        if self._current is not None:
            motion, start = self._current
            for key, value in motion.pose(t - start).items():
                pose[key] = pose.get(key, 0.0) + value
        return pose

    def frame(self, t: float, prompt: str | None) -> np.ndarray:
        pose = self.pose(t, prompt)
        started = time.perf_counter()
        image = self.puppet.render(**pose)
        if self.screen is not None:
            image = self.screen.apply(image, self.rng, t)
        elif self.noise_sigma:
            image = add_noise(image, self.rng, self.noise_sigma)  # a camera's sensor noise
        self.render_s.append(time.perf_counter() - started)
        return image


# -- the closed loop -------------------------------------------------------------------------------------
def challenge_monitor(mesh: FaceMesh, rng: random.Random, antispoof=None):
    """The product's random challenge (actions and moments drawn from ``rng``), with the
    anti-spoofing model when ``antispoof`` (an ``edge_verify.antispoof.AntiSpoof``) is given."""
    options = liveness.LivenessOptions()
    return liveness.LivenessMonitor(mesh, liveness.make_check("challenge", options, rng=rng), antispoof)


def drive(actor: PuppetActor, monitor, detector: FaceDetector, fps: float = 15, max_seconds: float = 40):
    """Closed loop: each frame is made for the prompt the check shows now, the largest face found by
    ``detector`` goes to ``monitor.feed(frame, face, time)``, until ``monitor.check.result.state`` is
    no longer pending (only ``.prompt`` and ``.state`` of the result are read). A check still pending
    after ``max_seconds`` is given up (``check.give_up``) when it can be."""
    check = monitor.check
    for i in range(int(max_seconds * fps)):
        t = i / fps
        frame = actor.frame(t, check.result.prompt)
        faces = detector.detect(frame)
        monitor.feed(frame, faces[0] if faces else None, t)
        if check.result.state != "pending":
            return check.result
    if hasattr(check, "give_up"):
        check.give_up(f"the puppet ran for {max_seconds:.0f}s without a decision")
    return check.result


def run_puppet(
    photo_bgr: np.ndarray | Puppet,
    seed: int,
    *,
    screen: bool = False,
    fps: float = 15,
    max_seconds: float = 40,
    make_monitor: Callable[[FaceMesh, random.Random], object] = challenge_monitor,
    detector: FaceDetector | None = None,
    mesh: FaceMesh | None = None,
):
    """One photo-puppet attempt against a fresh check from ``make_monitor(mesh, random.Random(seed))``
    (default: today's random challenge). ``photo_bgr`` may be a ready ``Puppet`` (faster for many
    runs). Returns the check's result."""
    puppet = photo_bgr if isinstance(photo_bgr, Puppet) else Puppet(photo_bgr, detector, mesh)
    detector, mesh = detector or puppet.detector, mesh or puppet.mesh
    actor = PuppetActor(puppet, np.random.default_rng(seed), screen=screen, fps=fps)
    return drive(actor, make_monitor(mesh, random.Random(seed)), detector, fps, max_seconds)
