"""Rebuild the face detector the device runs (edge_verify/models/yunet/face_detection_yunet_2023mar.tflite).

    pip install -e '.[host]'
    python scripts/build_yunet.py

The source is the packaged ONNX file (its provenance and licences: edge_verify/models/yunet/LICENSE.md).
converters/yunet_import.py rebuilds it in Keras with dequantised weights and TensorFlow converts
it to a float32 TFLite model whose height and width are left open. The script checks that the
Keras port gives OpenCV's own outputs on a real photo, writes the model and prints its sha256,
which edge_verify/detect.py pins (YUNET_TFLITE_SHA256).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from converters.yunet_import import HEADS, convert_yunet, import_yunet  # noqa: E402
from edge_verify.detect import STRIDES, yunet_onnx_path, yunet_path  # noqa: E402
from edge_verify.sources import read_image  # noqa: E402


def opencv_heads(image: np.ndarray) -> list[np.ndarray]:
    """OpenCV DNN's outputs of the ONNX file on ``image``, joined per stride as the port joins them."""
    net = cv2.dnn.readNet(str(yunet_onnx_path()))
    net.setInput(cv2.dnn.blobFromImage(image))
    names = [f"{head}_{s}" for s in STRIDES for head in HEADS]
    out = dict(zip(names, net.forward(names), strict=True))
    return [np.concatenate([out[f"{h}_{s}"].reshape(-1, out[f"{h}_{s}"].shape[-1]) for h in HEADS], 1) for s in STRIDES]


def main() -> None:
    model = import_yunet()
    image = read_image(yunet_path().parents[2] / "samples" / "astronaut_check.jpg")
    image = cv2.copyMakeBorder(image, 0, -image.shape[0] % 32, 0, -image.shape[1] % 32, cv2.BORDER_CONSTANT, 0)
    ours = model.predict(image[None].astype(np.float32), verbose=0)
    worst = max(float(np.abs(o.reshape(r.shape) - r).max()) for o, r in zip(ours, opencv_heads(image), strict=True))
    print(f"Keras port vs OpenCV DNN on {image.shape[1]}x{image.shape[0]}: max abs difference {worst:.2e}")
    if worst > 1e-4:
        sys.exit("the port does not match OpenCV; model not written")
    content = convert_yunet(model)
    yunet_path().write_bytes(content)
    print(f"wrote {yunet_path()} ({len(content)} bytes), sha256 {hashlib.sha256(content).hexdigest()}")


if __name__ == "__main__":
    main()
