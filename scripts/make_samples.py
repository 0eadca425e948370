"""Regenerate edge_verify/samples/ (the README demo images) from scikit-image's public-domain data.

    pip install scikit-image opencv-python-headless && python scripts/make_samples.py

- astronaut_enroll.jpg: skimage.data.astronaut() - Eileen Collins, NASA photo, public domain.
- astronaut_check.jpg: the same photo re-framed (scaled 0.8, rotated 7 degrees, mirrored, cropped,
  darker, JPEG quality 80). No second public-domain photo of her installs offline, so this
  stands in for "a second capture": the face is re-detected and re-aligned from different pixels.
- cameraman.jpg: skimage.data.camera() - CC0 photo by Lav Varshney: someone else.
"""

from pathlib import Path

import cv2
import numpy as np
import skimage.data

OUT = Path(__file__).resolve().parents[1] / "edge_verify" / "samples"


def main() -> None:
    OUT.mkdir(exist_ok=True)
    astronaut = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(OUT / "astronaut_enroll.jpg"), astronaut, [cv2.IMWRITE_JPEG_QUALITY, 90])
    h, w = astronaut.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 3), 7, 0.8)
    moved = cv2.warpAffine(astronaut, m, (w, h), borderMode=cv2.BORDER_REFLECT)[:, ::-1]
    moved = moved[20 : h - 60, 40 : w - 20]
    moved = np.clip(moved.astype(np.float32) * 0.8 + 10, 0, 255).astype(np.uint8)
    cv2.imwrite(str(OUT / "astronaut_check.jpg"), moved, [cv2.IMWRITE_JPEG_QUALITY, 80])
    cv2.imwrite(str(OUT / "cameraman.jpg"), skimage.data.camera(), [cv2.IMWRITE_JPEG_QUALITY, 90])


if __name__ == "__main__":
    main()
