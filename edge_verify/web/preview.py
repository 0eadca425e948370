"""The kiosk loop's latest frame, shared with the web app: a JPEG preview encoded only when a
client asks, at most ``max_fps`` times a second, and the frames that live enrolment reads."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np


class FrameHub:
    def __init__(self, max_fps: float = 8.0, quality: int = 70, max_side: int = 640):
        self.max_fps = max_fps
        self.quality = quality
        self.max_side = max_side
        self._cond = threading.Condition()
        self._image: np.ndarray | None = None
        self._boxes: list[tuple[float, float, float, float]] = []
        self._colour = (255, 255, 255)
        self.seq = 0
        self._jpeg: bytes | None = None
        self._jpeg_seq = -1
        self._jpeg_time = -1e9
        self._encode_lock = threading.Lock()
        self.encoded = 0  # JPEGs made (the benchmark reports it)

    def put(self, image: np.ndarray, boxes=(), colour=(255, 255, 255)) -> None:
        """Called by the kiosk loop after each frame: keeps a reference, copies nothing."""
        with self._cond:
            self._image, self._boxes, self._colour = image, list(boxes), colour
            self.seq += 1
            self._cond.notify_all()

    def wait_frame(self, after: int, timeout_s: float) -> tuple[int, np.ndarray | None]:
        """The first frame newer than sequence number ``after`` (None after ``timeout_s``)."""
        with self._cond:
            self._cond.wait_for(lambda: self.seq > after, timeout_s)
            return (self.seq, self._image) if self.seq > after else (after, None)

    def jpeg(self) -> bytes | None:
        """The newest frame with the face boxes drawn, as JPEG; the cached one when the frame has not
        changed or the last was made less than 1/max_fps ago (so watchers never slow the loop much)."""
        with self._encode_lock:
            now = time.monotonic()
            with self._cond:
                image, boxes, colour, seq = self._image, self._boxes, self._colour, self.seq
            if image is None:
                return None
            if seq == self._jpeg_seq or now - self._jpeg_time < 1.0 / self.max_fps:
                return self._jpeg
            scale = min(1.0, self.max_side / max(image.shape[:2]))
            view = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image
            view = view.copy() if view is image else view
            for x, y, w, h in boxes:
                p1, p2 = (int(x * scale), int(y * scale)), (int((x + w) * scale), int((y + h) * scale))
                cv2.rectangle(view, p1, p2, colour, max(2, view.shape[1] // 200))
            ok, data = cv2.imencode(".jpg", view, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            if ok:
                self._jpeg, self._jpeg_seq, self._jpeg_time = data.tobytes(), seq, now
                self.encoded += 1
            return self._jpeg
