"""MiniFASNet passive anti-spoofing models (Silent-Face-Anti-Spoofing, Apache-2.0) without PyTorch (host only).

The upstream files are PyTorch's legacy (pre-1.6) serialisation of a ``state_dict``: five pickles in
a row (magic number, protocol version, system info, the dict itself, the list of storage keys), then
each storage's raw bytes, an int64 element count first. Tensors in the dict are pickled as
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` with the storage a persistent
id ``("storage", type, key, location, numel, view)``. ``read_state_dict`` reads that with the stdlib
unpickler, an allow-list of globals, and numpy.

The networks (both 80x80 BGR 0..255 in, 3 logits out, softmax index 1 = real):

- a stem: 3x3/2 convolution, batch norm, PReLU; a 3x3 depthwise convolution, batch norm, PReLU;
- MobileFaceNet blocks: 1x1 expansion (BN, PReLU), 3x3 depthwise (stride 1 or 2, BN, PReLU), 1x1
  projection (BN); stride-1 blocks inside a stage add their input (MiniFASNetV1SE: the last block of
  each stage has a squeeze-excitation after the projection, before the residual add: average pool,
  1x1 convolution, BN, ReLU, 1x1 convolution, BN, sigmoid, channel scale);
- 1x1 convolution (BN, PReLU), a 5x5 valid depthwise convolution over the whole 5x5 map (BN),
  flatten, a linear layer without bias to 128, batch norm (1-D), then dropout (identity at inference)
  and the linear classifier to 3 logits.

Channel counts are read from the weight shapes: the two variants differ in widths and in SE.
``reference_forward`` is a plain numpy evaluation of the state_dict (no Keras), the fidelity
reference of the Keras port ``import_minifasnet``.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
import struct
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_verify.errors import ModelError

MODELS_DIR = Path(__file__).resolve().parents[2] / "shared" / "models" / "minifasnet"
SOURCE_REPO = "https://github.com/minivision-ai/Silent-Face-Anti-Spoofing"
SOURCE_COMMIT = "b6d5f04"
SOURCE_DIR = "resources/anti_spoof_models"
INPUT = 80
BN_EPS = 1e-5  # torch.nn.BatchNorm default (the checkpoint holds no epsilon)


@dataclass(frozen=True)
class Variant:
    """One upstream checkpoint: file, sha256, and the face-box scale of its crop."""

    name: str
    file: str
    sha256: str
    scale: float


VARIANTS = (
    Variant(
        "MiniFASNetV2",
        "2.7_80x80_MiniFASNetV2.pth",
        "a5eb02e1843f19b5386b953cc4c9f011c3f985d0ee2bb9819eea9a142099bec0",
        2.7,
    ),
    Variant(
        "MiniFASNetV1SE",
        "4_0_0_80x80_MiniFASNetV1SE.pth",
        "84ee1d37d96894d5e82de5a57df044ef80a58be2b218b5ed7cdfd875ec2f5990",
        4.0,
    ),
)

# The legacy format's dtype names -> numpy; only what a float checkpoint can hold.
_STORAGES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


@dataclass
class _Storage:
    key: str
    dtype: type
    numel: int
    data: np.ndarray | None = None


@dataclass
class _LazyTensor:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def array(self) -> np.ndarray:
        assert self.storage.data is not None
        itemsize = self.storage.data.itemsize
        if not self.size:
            return self.storage.data[self.offset].copy()
        return np.lib.stride_tricks.as_strided(
            self.storage.data[self.offset :], self.size, tuple(s * itemsize for s in self.stride), writeable=False
        ).copy()


def _rebuild_tensor(storage, offset, size, stride, *_):
    return _LazyTensor(storage, int(offset), tuple(size), tuple(stride))


class _Unpickler(pickle.Unpickler):
    """Builds tensors as ``_LazyTensor`` and refuses every global not on the allow-list."""

    def __init__(self, file, storages: dict[str, _Storage]):
        super().__init__(file, encoding="utf-8")
        self.storages = storages

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) in (("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor")):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGES:
            return name
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a weights file")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        _, kind, key, _location, numel = pid[:5]
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views are not supported")
        if kind not in _STORAGES:
            raise pickle.UnpicklingError(f"storage type {kind!r} not supported")
        if key not in self.storages:
            self.storages[key] = _Storage(key, _STORAGES[kind], int(numel))
        return self.storages[key]


def read_state_dict(path: Path) -> OrderedDict[str, np.ndarray]:
    """The ``state_dict`` of a legacy PyTorch file as numpy arrays (``module.`` prefix removed)."""
    path = Path(path)
    raw = path.read_bytes()
    f = io.BytesIO(raw)
    storages: dict[str, _Storage] = {}
    try:
        magic = pickle.load(f)
        if magic != _LEGACY_MAGIC:
            raise ModelError(f"{path}: not a legacy PyTorch file (zip-format checkpoints are not supported)")
        pickle.load(f)  # protocol version
        info = pickle.load(f)
        if not info.get("little_endian", True):
            raise ModelError(f"{path}: big-endian checkpoint")
        result = _Unpickler(f, storages).load()
        keys = pickle.load(f)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise ModelError(f"{path}: not a readable PyTorch state_dict ({exc})") from None
    for key in keys:
        storage = storages[key]
        (count,) = struct.unpack("<q", f.read(8))
        nbytes = count * np.dtype(storage.dtype).itemsize
        buf = f.read(nbytes)
        if count != storage.numel or len(buf) != nbytes:
            raise ModelError(f"{path}: storage {key} truncated or inconsistent")
        storage.data = np.frombuffer(buf, storage.dtype)
    if not isinstance(result, dict):
        raise ModelError(f"{path}: holds a {type(result).__name__}, not a state_dict")
    out: OrderedDict[str, np.ndarray] = OrderedDict()
    for name, value in result.items():
        if not isinstance(value, _LazyTensor):
            raise ModelError(f"{path}: entry {name} is not a tensor")
        out[name.removeprefix("module.")] = value.array()
    return out


def load_variant(variant: Variant, models_dir: Path = MODELS_DIR, verify_hash: bool = True):
    """The state_dict of an upstream checkpoint, its sha256 checked first."""
    path = Path(models_dir) / variant.file
    if not path.is_file():
        raise ModelError(f"{path}: MiniFASNet checkpoint not found ({SOURCE_REPO} {SOURCE_DIR})")
    if verify_hash and hashlib.sha256(path.read_bytes()).hexdigest() != variant.sha256:
        raise ModelError(f"{path}: sha256 differs from the {variant.name} checkpoint this importer was written for")
    return read_state_dict(path)


# ---------------------------------------------------------------- architecture from the state_dict


@dataclass
class ConvBN:
    """A convolution without bias, its batch norm and (optionally) a PReLU: one upstream ``Conv_block``
    (``prelu``) or ``Linear_block`` (none). ``groups`` > 1: depthwise."""

    prefix: str
    stride: int
    padding: int
    groups: int
    prelu: bool


@dataclass
class Block:
    """An inverted residual: expand (ConvBN), depthwise (ConvBN), project (ConvBN without PReLU),
    an optional squeeze-excitation prefix, and whether the input is added."""

    expand: ConvBN
    depthwise: ConvBN
    project: ConvBN
    se: str | None
    residual: bool


@dataclass
class Network:
    """The layer plan: ConvBN and Block in forward order (stem, stages, 1x1 ConvBN, 5x5 depthwise
    ConvBN); ``linear``, ``bn`` (1-D) and ``prob`` follow them in every variant."""

    layers: list = field(default_factory=list)


# The upstream modules in forward order: name, kind (a ConvBN, a downsampling block, or a stage of
# residual blocks ``name.model.i``) and stride.
_PLAN = (
    ("conv1", "stem", 2),
    ("conv2_dw", "stem_dw", 1),
    ("conv_23", "block", 2),
    ("conv_3", "stage", 1),
    ("conv_34", "block", 2),
    ("conv_4", "stage", 1),
    ("conv_45", "block", 2),
    ("conv_5", "stage", 1),
    ("conv_6_sep", "conv", 1),
    ("conv_6_dw", "head_dw", 1),
)


def network_plan(state: dict[str, np.ndarray]) -> Network:
    """The layer plan of a MiniFASNet state_dict, read from its names and shapes; ModelError if a
    weight the plan needs is missing or the dict holds modules the plan does not know."""
    net = Network()

    def conv(prefix: str, stride: int, prelu: bool) -> ConvBN:
        w = state.get(f"{prefix}.conv.weight")
        if w is None:
            raise ModelError(f"state_dict has no {prefix}.conv.weight")
        groups = w.shape[0] if w.shape[1] == 1 and w.shape[0] > 1 and w.shape[2] > 1 else 1
        padding = 0 if prefix.startswith("conv_6_dw") or w.shape[2] == 1 else w.shape[2] // 2
        return ConvBN(prefix, stride, padding, groups, prelu)

    def block(prefix: str, stride: int, residual: bool) -> Block:
        se = f"{prefix}.se_module" if f"{prefix}.se_module.fc1.weight" in state else None
        return Block(
            conv(f"{prefix}.conv", 1, True),
            conv(f"{prefix}.conv_dw", stride, True),
            conv(f"{prefix}.project", 1, False),
            se,
            residual,
        )

    for name, kind, stride in _PLAN:
        if kind in ("stem", "stem_dw", "conv"):
            net.layers.append(conv(name, stride, True))
        elif kind == "head_dw":
            net.layers.append(conv(name, 1, False))
        elif kind == "block":
            net.layers.append(block(name, stride, False))
        else:
            indices = sorted({int(m.group(1)) for k in state if (m := re.match(rf"{name}\.model\.(\d+)\.", k))})
            if not indices:
                raise ModelError(f"state_dict has no blocks in {name}")
            net.layers.extend(block(f"{name}.model.{i}", 1, True) for i in indices)
    used = {k for k in state if k.startswith(tuple(n for n, _, _ in _PLAN))}
    rest = set(state) - used - {"linear.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"}
    rest -= {"bn.num_batches_tracked", "prob.weight", "prob.bias"}
    if rest:
        raise ModelError(f"state_dict holds weights this port does not use: {sorted(rest)[:5]}")
    for key in ("linear.weight", "bn.weight", "prob.weight"):
        if key not in state:
            raise ModelError(f"state_dict has no {key}")
    return net


def batch_norm(state: dict[str, np.ndarray], prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """Batch norm ``prefix`` as a per-channel scale and shift (inference)."""
    scale = state[f"{prefix}.weight"] / np.sqrt(state[f"{prefix}.running_var"] + BN_EPS)
    return scale, state[f"{prefix}.bias"] - state[f"{prefix}.running_mean"] * scale


# ---------------------------------------------------------------- numpy reference (no Keras)


def _np_conv(x: np.ndarray, w: np.ndarray, stride: int, padding: int, groups: int) -> np.ndarray:
    """NCHW convolution of one image ``x`` (C, H, W) with torch weights (O, C/groups, kh, kw)."""
    out_ch, _, kh, kw = w.shape
    x = np.pad(x, ((0, 0), (padding, padding), (padding, padding)))
    _, h, wd = x.shape
    oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::stride, ::stride][:, :oh, :ow]
    if groups == 1:
        return np.einsum("chwij,ocij->ohw", windows, w, optimize=True)
    if groups == out_ch == x.shape[0]:
        return np.einsum("chwij,cij->chw", windows, w[:, 0], optimize=True)
    raise ModelError(f"grouped convolution with {groups} groups is not supported")


def _np_convbn(state, x: np.ndarray, c: ConvBN) -> np.ndarray:
    y = _np_conv(x, state[f"{c.prefix}.conv.weight"].astype(np.float64), c.stride, c.padding, c.groups)
    scale, shift = batch_norm(state, f"{c.prefix}.bn")
    y = y * scale[:, None, None] + shift[:, None, None]
    if c.prelu:
        a = state[f"{c.prefix}.prelu.weight"].reshape(-1, 1, 1)
        y = np.where(y > 0, y, a * y)
    return y


def _np_se(state, x: np.ndarray, prefix: str) -> np.ndarray:
    s = x.mean(axis=(1, 2))
    s = state[f"{prefix}.fc1.weight"][:, :, 0, 0] @ s
    scale, shift = batch_norm(state, f"{prefix}.bn1")
    s = np.maximum(s * scale + shift, 0)
    s = state[f"{prefix}.fc2.weight"][:, :, 0, 0] @ s
    scale, shift = batch_norm(state, f"{prefix}.bn2")
    s = 1 / (1 + np.exp(-(s * scale + shift)))
    return x * s[:, None, None]


def reference_forward(state: dict[str, np.ndarray], image_bgr: np.ndarray) -> np.ndarray:
    """Softmax probabilities (3,) of one 80x80x3 BGR 0..255 crop, straight from the state_dict in
    float64 numpy: the float original the Keras port and the int8 model are checked against."""
    x = np.asarray(image_bgr, np.float64).transpose(2, 0, 1)
    for layer in network_plan(state).layers:
        if isinstance(layer, ConvBN):
            x = _np_convbn(state, x, layer)
            continue
        y = _np_convbn(state, _np_convbn(state, x, layer.expand), layer.depthwise)
        y = _np_convbn(state, y, layer.project)
        if layer.se:
            y = _np_se(state, y, layer.se)
        x = x + y if layer.residual else y
    v = state["linear.weight"] @ x.reshape(-1)
    scale, shift = batch_norm(state, "bn")
    logits = state["prob.weight"] @ (v * scale + shift) + state.get("prob.bias", 0.0)
    e = np.exp(logits - logits.max())
    return e / e.sum()


# ---------------------------------------------------------------- Keras port


def _folded(state, c: ConvBN) -> tuple[np.ndarray, np.ndarray]:
    """Keras kernel and bias of convolution ``c`` with its batch norm folded in."""
    w = state[f"{c.prefix}.conv.weight"]
    scale, shift = batch_norm(state, f"{c.prefix}.bn")
    if c.groups > 1:  # depthwise: (kh, kw, channels, 1)
        return (w[:, 0] * scale[:, None, None]).transpose(1, 2, 0)[..., None], shift
    return (w * scale[:, None, None, None]).transpose(2, 3, 1, 0), shift


PRELU_MODES = ("layer", "once", "split")


def _keras_convbn(keras, state, x, c: ConvBN, prelu: str = "layer"):
    """Convolution ``c`` (batch norm folded) and its PReLU, written as ``prelu``: ``layer`` a Keras
    PReLU (TFLite PRELU); ``once`` ``c + relu((a - 1) * c)`` (every slope a < 1 here), a 1x1 depthwise
    scale with a fused ReLU and an Add; ``split`` ``relu(c) - a * relu(-c)``, the convolution twice."""
    name = c.prefix.replace(".", "_")
    if c.padding:
        x = keras.layers.ZeroPadding2D(c.padding, name=f"{name}_pad")(x)  # torch pads both sides
    kernel, bias = _folded(state, c)
    kh, kw = kernel.shape[:2]

    def convolution(suffix: str, sign: float, activation: str | None):
        if c.groups > 1:
            layer = keras.layers.DepthwiseConv2D((kh, kw), c.stride, activation=activation, name=name + suffix)
        else:
            layer = keras.layers.Conv2D(kernel.shape[-1], (kh, kw), c.stride, activation=activation, name=name + suffix)
        y = layer(x)
        layer.set_weights([(sign * kernel).astype(np.float32), (sign * bias).astype(np.float32)])
        return y

    def channel_scale(y, factors: np.ndarray, suffix: str, activation: str | None):
        layer = keras.layers.DepthwiseConv2D(1, use_bias=False, activation=activation, name=name + suffix)
        out = layer(y)
        layer.set_weights([factors.reshape(1, 1, -1, 1).astype(np.float32)])
        return out

    if not c.prelu:
        return convolution("", 1.0, None)
    alpha = state[f"{c.prefix}.prelu.weight"].reshape(-1)
    if prelu == "layer":
        layer = keras.layers.PReLU(shared_axes=[1, 2], name=f"{name}_prelu")
        y = layer(convolution("", 1.0, None))
        layer.set_weights([alpha.reshape(1, 1, -1)])
        return y
    if prelu == "once" and np.all(alpha < 1):
        y = convolution("", 1.0, None)
        return keras.layers.Add(name=f"{name}_prelu")([y, channel_scale(y, alpha - 1, "_neg", "relu")])
    if prelu not in PRELU_MODES:
        raise ValueError(f"prelu must be one of {PRELU_MODES}")
    positive, negative = convolution("_pos", 1.0, "relu"), convolution("_neg", -1.0, "relu")
    return keras.layers.Add(name=f"{name}_prelu")([positive, channel_scale(negative, -alpha, "_scale", None)])


def _keras_se(keras, state, x, prefix: str):
    name = prefix.replace(".", "_")
    s = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
    for fc, bn, activation in (("fc1", "bn1", "relu"), ("fc2", "bn2", "sigmoid")):
        w = state[f"{prefix}.{fc}.weight"]
        scale, shift = batch_norm(state, f"{prefix}.{bn}")
        layer = keras.layers.Conv2D(w.shape[0], 1, activation=activation, name=f"{name}_{fc}")
        s = layer(s)
        layer.set_weights([(w * scale[:, None, None, None]).transpose(2, 3, 1, 0), shift])
    return keras.layers.Multiply(name=f"{name}_scale")([x, s])


def import_minifasnet(state: dict[str, np.ndarray], name: str = "minifasnet", prelu: str = "layer"):
    """The network of a MiniFASNet state_dict as a Keras model: (None, 80, 80, 3) BGR 0..255 ->
    (None, 3) softmax probabilities (index 1 = real). Batch norms are folded into the convolutions
    and linear layers before them (inference arithmetic, same function)."""
    import keras

    inputs = keras.Input((INPUT, INPUT, 3), name="bgr")
    x = inputs
    for layer in network_plan(state).layers:
        if isinstance(layer, ConvBN):
            x = _keras_convbn(keras, state, x, layer, prelu)
            continue
        y = _keras_convbn(keras, state, x, layer.expand, prelu)
        y = _keras_convbn(keras, state, y, layer.depthwise, prelu)
        y = _keras_convbn(keras, state, y, layer.project, prelu)
        if layer.se:
            y = _keras_se(keras, state, y, layer.se)
        x = keras.layers.Add(name=layer.project.prefix.replace(".", "_") + "_add")([x, y]) if layer.residual else y
    x = keras.layers.Flatten(name="flatten")(x)  # (1, 1, 512): no order to fold
    scale, shift = batch_norm(state, "bn")
    linear = keras.layers.Dense(state["linear.weight"].shape[0], name="linear")
    x = linear(x)
    linear.set_weights([(state["linear.weight"] * scale[:, None]).T, shift])
    weight, bias = state["prob.weight"], state.get("prob.bias", np.zeros(len(state["prob.weight"]), np.float32))
    prob = keras.layers.Dense(weight.shape[0], name="logits")
    x = prob(x)
    prob.set_weights([weight.T, bias])
    outputs = keras.layers.Softmax(name="prob")(x)
    return keras.Model(inputs, outputs, name=name)


def convert_minifasnet(
    model, calibration: np.ndarray, variant: str = "int8", io_dtype: str = "int8", ranges: str = "minmax"
) -> bytes:
    """``model`` as a TFLite model with a static batch of 1, by the product's converter
    (``converters.convert``): ``int8`` full-integer calibrated on ``calibration`` (N, 80, 80, 3) BGR
    0..255 crops, or ``fp32``."""
    import tempfile

    import tensorflow as tf

    from converters.convert import _to_tflite

    with tempfile.TemporaryDirectory() as tmp:
        signature = [tf.TensorSpec((1, INPUT, INPUT, 3), tf.float32)]
        model.export(tmp, verbose=False, input_signature=signature)
        return _to_tflite(Path(tmp), variant, np.asarray(calibration, np.float32), io_dtype, ranges)
