"""Size limits on what the device reads from outside (images; bundles keep theirs in bundle.py)."""

from __future__ import annotations

import os

MAX_IMAGE_BYTES = 64 * 1024 * 1024  # an image file larger than this is refused before it is read
MAX_IMAGE_PIXELS = 40_000_000  # width x height, checked in the header before decoding

# OpenCV's own limit, for the formats whose header read_image does not parse; OpenCV reads it
# once, when it loads: edge_verify/__init__.py imports this module first.
_opencv_limit = int(os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", MAX_IMAGE_PIXELS) or MAX_IMAGE_PIXELS)
os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(min(_opencv_limit, MAX_IMAGE_PIXELS))
