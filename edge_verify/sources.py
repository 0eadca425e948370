"""Frame sources behind one interface: image, directory, video, camera, stream URL, picamera2."""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import stat
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import numpy as np

from edge_verify.errors import InputError, SourceError, SourceUnavailableError
from edge_verify.limits import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
from edge_verify.redaction import redact_url

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}
VIDEO_EXTENSIONS = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mjpg", ".mjpeg", ".3gp"}


@dataclass
class Frame:
    image: np.ndarray  # BGR uint8
    index: int
    name: str  # file name, or "<source>#index"
    time: float = 0.0  # seconds: position in a video file, monotonic clock for live sources


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as BGR uint8; InputError with the path if it is missing, not an image, or
    larger than the limits (``MAX_IMAGE_BYTES`` on disk, ``MAX_IMAGE_PIXELS`` decoded: checked in
    the header, before anything is decoded)."""
    path = Path(path)
    try:
        info = os.stat(path)
    except OSError:
        info = None
    if info is None or not stat.S_ISREG(info.st_mode):
        raise InputError(f"{path}: no such image file")
    if info.st_size > MAX_IMAGE_BYTES:
        raise InputError(f"{path}: {info.st_size / 1e6:.0f} MB, more than the {MAX_IMAGE_BYTES / 1e6:.0f} MB allowed")
    with open(path, "rb") as f:
        data = f.read(MAX_IMAGE_BYTES + 1)
    size = image_size(data)
    if size is not None and size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise InputError(
            f"{path}: {size[0]}x{size[1]} pixels, more than the {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels allowed"
        )
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    except cv2.error:  # OpenCV's own limits (formats whose header is not read here)
        image = None
    if image is None:
        raise InputError(f"{path}: not a readable image (supported: {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return image


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG, BMP, WebP, PGM or PPM header; None for other formats or
    a header too damaged to say (OpenCV then decides)."""
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            return struct.unpack(">II", data[16:24])
        if data[:2] == b"BM":
            width, height = struct.unpack("<ii", data[18:26])
            return abs(width), abs(height)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp_size(data)
        if data[:2] == b"\xff\xd8":
            return _jpeg_size(data)
        header = re.match(rb"P[1-6](?:\s+|#[^\n]*\n)+(\d+)(?:\s+|#[^\n]*\n)+(\d+)", data[:512])
        if header:
            return int(header[1]), int(header[2])
    except struct.error:
        return None
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # padding
            i += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


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


def _quiet_opencv() -> None:
    """OpenCV and FFmpeg print their own warnings ("[ WARN:0@0.5] ... can't open camera by index")
    around the one-line error that says the same; shown only with -v (logging at INFO)."""
    if logging.getLogger().isEnabledFor(logging.INFO):
        return
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET, read when FFmpeg is first used
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


class CaptureSource(FrameSource):
    """OpenCV VideoCapture: video file, camera index, /dev/videoN, RTSP/HTTP URL."""

    def __init__(self, target: str | int, name: str, live: bool, timeout_s: float = 5.0):
        self.target = target
        self.name = name
        self.live = live
        self.timeout_s = timeout_s
        self._cap: cv2.VideoCapture | None = None
        self._reader: threading.Thread | None = None
        self._stop = threading.Event()

    def open(self) -> cv2.VideoCapture:
        _quiet_opencv()
        params = []
        if self.live:
            ms = int(self.timeout_s * 1000)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        if isinstance(self.target, str) and self.target.partition("://")[0].lower() in TLS_STREAMS:
            # FFmpeg before 9 accepts any certificate unless asked: a stand-in camera would be believed
            os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "tls_verify;1")
        cap = cv2.VideoCapture(self.target, cv2.CAP_ANY, params)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{self.name}: cannot open (check the device/URL and permissions)")
        self._cap = cap
        return cap

    def frames(self) -> Iterator[Frame]:
        cap = self._cap or self.open()
        if self.live:
            yield from self._newest_frames(cap)
            return
        index = 0
        while True:
            ok, image = cap.read()
            if not ok or image is None:
                return
            yield Frame(image, index, f"{self.name}#{index}", cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0)
            index += 1

    def _newest_frames(self, cap: cv2.VideoCapture) -> Iterator[Frame]:
        """A thread reads the camera continuously and keeps only the newest frame, so a slow loop
        decides on what is in front of the camera now, not on frames queued seconds ago (indices
        then skip). No frame for ``timeout_s``: SourceError."""
        newest: list[Frame] = []
        failure: list[SourceError] = []
        ready = threading.Condition()

        def read() -> None:
            index, deadline = 0, time.monotonic() + self.timeout_s
            while not self._stop.is_set():
                ok, image = cap.read()
                now = time.monotonic()
                if not ok or image is None:
                    if now > deadline:
                        with ready:
                            failure.append(
                                SourceError(f"{self.name}: no frame for {self.timeout_s:.0f}s (camera disconnected?)")
                            )
                            ready.notify()
                        return
                    time.sleep(0.05)
                    continue
                deadline = now + self.timeout_s
                with ready:
                    newest[:] = [Frame(image, index, f"{self.name}#{index}", now)]
                    ready.notify()
                index += 1

        self._stop.clear()
        self._reader = threading.Thread(target=read, name=f"capture {self.name}", daemon=True)
        self._reader.start()
        last = -1
        while True:
            with ready:
                ready.wait_for(lambda seen=last: failure or (newest and newest[0].index > seen), self.timeout_s + 1)
                if failure:
                    raise failure[0]
                if not newest or newest[0].index <= last:
                    raise SourceError(f"{self.name}: no frame for {self.timeout_s:.0f}s (camera disconnected?)")
                frame = newest[0]
            last = frame.index
            yield frame

    def close(self) -> None:
        self._stop.set()
        if self._reader is not None:
            self._reader.join(self.timeout_s + 1)  # the reader must be out of cap.read() before release
            self._reader = None
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
            raise SourceUnavailableError(
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


TLS_STREAMS = {"rtsps", "https"}  # camera streams over TLS; CaptureSource asks FFmpeg to verify the certificate


def unencrypted_stream(spec: str) -> str | None:
    """The scheme of a network camera stream that travels without TLS (``rtsp``, ``http``, ``udp``, ...):
    anyone on its network path can replace the picture. None for cameras, files, TLS streams and a
    stream from this machine itself (a restreamer on 127.0.0.1 that serves a camera wired to it)."""
    scheme, sep, _ = spec.partition("://")
    scheme = scheme.strip().lower()
    if not sep or scheme in TLS_STREAMS or scheme == "file":
        return None
    try:
        host = urlsplit(spec.strip()).hostname or ""
        if host == "localhost" or ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:  # not an address literal, or not a URL at all
        pass
    return scheme


def open_source(spec: str, timeout_s: float = 5.0) -> FrameSource:
    """Open ``spec``: an image, a folder of images, a video file, a camera index or /dev/videoN,
    an rtsp/http(s) URL, or ``picamera2[:N]``."""
    if spec.startswith("picamera2"):
        _, _, num = spec.partition(":")
        return PiCameraSource(int(num or 0))
    if "://" in spec:
        return CaptureSource(spec, redact_url(spec), live=True, timeout_s=timeout_s)
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
    mode = path.stat().st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISCHR(mode)):  # a FIFO or socket may never end: never wait on one
        raise InputError(f"{spec}: not a regular file or a device (a FIFO or socket); give a video, image or camera")
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return CaptureSource(str(path), str(path), live=False)
    return ImageSource([path], str(path))
