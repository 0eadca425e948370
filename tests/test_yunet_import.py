"""The detector the device runs is rebuilt from the packaged YuNet ONNX file by
converters/yunet_import.py (host; slow): the port gives OpenCV's outputs and the rebuilt TFLite
model computes what the shipped one computes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("onnx")

from converters.yunet_import import HEADS, convert_yunet, import_yunet  # noqa: E402
from edge_verify.detect import STRIDES, yunet_onnx_path, yunet_path  # noqa: E402
from edge_verify.errors import ModelError  # noqa: E402
from edge_verify.sources import read_image  # noqa: E402
from tests.conftest import SAMPLES  # noqa: E402

pytestmark = pytest.mark.slow


def run_tflite(content: bytes, image: np.ndarray) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, [1, *image.shape])
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, image[None].astype(np.float32))
    interpreter.invoke()
    maps = sorted(interpreter.get_output_details(), key=lambda d: -int(d["shape"][1]))
    return [interpreter.get_tensor(d["index"]) for d in maps]


def test_port_matches_opencv_and_rebuilds_the_shipped_detector():
    image = read_image(SAMPLES / "astronaut_enroll.jpg")
    image = cv2.copyMakeBorder(image, 0, -image.shape[0] % 32, 0, -image.shape[1] % 32, cv2.BORDER_CONSTANT, 0)
    model = import_yunet()
    net = cv2.dnn.readNet(str(yunet_onnx_path()))
    net.setInput(cv2.dnn.blobFromImage(image))
    names = [f"{head}_{stride}" for stride in STRIDES for head in HEADS]
    heads = dict(zip(names, net.forward(names), strict=True))
    ours = model.predict(image[None].astype(np.float32), verbose=0)
    for stride, mine in zip(STRIDES, ours, strict=True):
        parts = [heads[f"{head}_{stride}"] for head in HEADS]
        theirs = np.concatenate([o.reshape(o.shape[1], -1) for o in parts], axis=1)
        assert np.abs(mine.reshape(theirs.shape) - theirs).max() < 1e-5
    rebuilt = run_tflite(convert_yunet(model), image)
    shipped = run_tflite(yunet_path().read_bytes(), image)
    for a, b in zip(rebuilt, shipped, strict=True):
        assert np.abs(a - b).max() < 1e-5


def test_a_different_onnx_file_is_refused(tmp_path):
    other = tmp_path / "yunet.onnx"
    other.write_bytes(yunet_onnx_path().read_bytes()[:-1])
    with pytest.raises(ModelError, match="sha256 differs"):
        import_yunet(other)
