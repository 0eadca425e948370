"""Frame sources behind one interface: image, directory, video, camera, stream URL, picamera2."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_verify.errors import InputError, SourceError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}
VIDEO_EXTENSIONS = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mjpg", ".mjpeg"}


@dataclass
class Frame:
    image: np.ndarray  # BGR uint8
    index: int
    name: str  # file name, or "<source>#index"
    time: float = 0.0  # seconds: position in a video file, monotonic clock for live sources


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as BGR uint8; InputError with the path if it is missing or not an image."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such image file")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise InputError(f"{path}: not a readable image (supported: {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return image


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


class FrameSource:
    """Iterate frames; ``close`` releases the device. Use as a context manager."""

    name = "source"
    live = False  # a camera or stream (frames keep coming, reads can time out), not a file

    def frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    def close(self) -> None:
        pass

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ImageSource(FrameSource):
    def __init__(self, paths: list[Path], name: str):
        self.paths = paths
        self.name = name

    def frames(self) -> Iterator[Frame]:
        for i, path in enumerate(self.paths):
            yield Frame(read_image(path), i, str(path), float(i))


class CaptureSource(FrameSource):
    """OpenCV VideoCapture: video file, camera index, /dev/videoN, RTSP/HTTP URL."""

    def __init__(self, target: str | int, name: str, live: bool, timeout_s: float = 5.0):
        self.target = target
        self.name = name
        self.live = live
        self.timeout_s = timeout_s
        self._cap: cv2.VideoCapture | None = None

    def open(self) -> cv2.VideoCapture:
        params = []
        if self.live:
            ms = int(self.timeout_s * 1000)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        cap = cv2.VideoCapture(self.target, cv2.CAP_ANY, params)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{self.name}: cannot open (check the device/URL and permissions)")
        self._cap = cap
        return cap

    def frames(self) -> Iterator[Frame]:
        cap = self._cap or self.open()
        index = 0
        deadline = time.monotonic() + self.timeout_s
        while True:
            ok, image = cap.read()
            if not ok or image is None:
                if not self.live:
                    return
                if time.monotonic() > deadline:
                    raise SourceError(f"{self.name}: no frame for {self.timeout_s:.0f}s (camera disconnected?)")
                time.sleep(0.05)
                continue
            now = time.monotonic()
            deadline = now + self.timeout_s
            stamp = now if self.live else cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            yield Frame(image, index, f"{self.name}#{index}", stamp)
            index += 1

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class PiCameraSource(FrameSource):
    """Raspberry Pi camera through picamera2 (from Raspberry Pi OS apt, not pip)."""

    live = True

    def __init__(self, camera: int = 0, size: tuple[int, int] = (640, 480)):
        self.name = f"picamera2:{camera}"
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise SourceError(
                "picamera2 is not installed: on Raspberry Pi OS run `sudo apt install python3-picamera2` "
                "and create the venv with --system-site-packages"
            ) from None
        try:
            self._cam = Picamera2(camera)
            self._cam.configure(self._cam.create_preview_configuration(main={"size": size, "format": "BGR888"}))
            self._cam.start()
        except Exception as exc:  # picamera2 raises RuntimeError/IndexError for a missing camera
            raise SourceError(f"{self.name}: cannot start camera ({exc})") from None

    def frames(self) -> Iterator[Frame]:
        index = 0
        while True:
            yield Frame(self._cam.capture_array(), index, f"{self.name}#{index}", time.monotonic())
            index += 1

    def close(self) -> None:
        self._cam.stop()


def open_source(spec: str, timeout_s: float = 5.0) -> FrameSource:
    """Open ``spec``: an image, a folder of images, a video file, a camera index or /dev/videoN,
    an rtsp/http(s) URL, or ``picamera2[:N]``."""
    if spec.startswith("picamera2"):
        _, _, num = spec.partition(":")
        return PiCameraSource(int(num or 0))
    if "://" in spec:
        return CaptureSource(spec, spec.split("@")[-1], live=True, timeout_s=timeout_s)
    if spec.isdigit():
        return CaptureSource(int(spec), f"camera {spec}", live=True, timeout_s=timeout_s)
    path = Path(spec)
    if spec.startswith("/dev/video"):
        if not path.exists():
            raise SourceError(f"{spec}: no such camera device")
        return CaptureSource(spec, spec, live=True, timeout_s=timeout_s)
    if path.is_dir():
        images = list_images(path)
        if not images:
            raise InputError(f"{path}: folder has no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        return ImageSource(images, str(path))
    if not path.exists():
        raise InputError(f"{spec}: no such file, folder, camera or URL")
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return CaptureSource(str(path), str(path), live=False)
    return ImageSource([path], str(path))
