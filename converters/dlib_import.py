"""Import dlib's face recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) into Keras.

dlib serialises a network recursively: the loss layer first, then each ``add_layer`` writes its
version, its whole sub-network, and only then its own layer details. Tag and skip layers write a
version and their sub-network; their tag ids are template arguments and are not in the stream. So
the stream alone does not say where the residual branches join: the architecture is declared here
(``RESNET_V1``, transcribed from dlib's ``dnn_face_recognition_ex.cpp``) and the stream is read
along it, checking every version string and tensor shape on the way.

Numbers: integers are a control byte (byte count, 0x80 = negative) then little-endian bytes;
floats are an integer mantissa and exponent; tensors are raw little-endian float32; bools are
ASCII '0'/'1'; strings are a length then bytes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_verify.errors import ModelError

DLIB_FACE_MODEL_NAME = "dlib_face_recognition_resnet_model_v1.dat"


class DlibStream:
    """Reads dlib's serialisation primitives from a byte buffer."""

    def __init__(self, data: bytes, source: str = "<bytes>"):
        self._buf = io.BytesIO(data)
        self._source = source

    def _fail(self, what: str) -> ModelError:
        return ModelError(f"{self._source}: not a dlib network file ({what} at byte {self._buf.tell()})")

    def _take(self, n: int) -> bytes:
        data = self._buf.read(n)
        if len(data) != n:
            raise self._fail("unexpected end of file")
        return data

    def int(self) -> int:
        control = self._take(1)[0]
        size = control & 0x0F
        if size == 0 or size > 8 or control & 0x70:
            raise self._fail(f"bad integer control byte 0x{control:02x}")
        value = int.from_bytes(self._take(size), "little")
        return -value if control & 0x80 else value

    def float(self) -> float:
        mantissa = self.int()
        exponent = self.int()
        specials = {32000: float("inf"), 32001: float("-inf"), 32002: float("nan")}
        if exponent in specials:
            return specials[exponent]
        return float(np.ldexp(float(mantissa), exponent))

    def bool(self) -> bool:
        ch = self._take(1)
        if ch not in (b"0", b"1"):
            raise self._fail(f"bad bool byte {ch!r}")
        return ch == b"1"

    def string(self) -> str:
        n = self.int()
        if n < 0 or n > 256:
            raise self._fail(f"implausible string length {n}")
        return self._take(n).decode("ascii", errors="replace")

    def version(self, *expected: int | str) -> int | str:
        value = self.string() if isinstance(expected[0], str) else self.int()
        if value not in expected:
            raise self._fail(f"version {value!r}, expected one of {expected}")
        return value

    def tensor(self) -> np.ndarray:
        self.version(2)
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        if count < 0 or count > 50_000_000:
            raise self._fail(f"implausible tensor shape {shape}")
        return np.frombuffer(self._take(4 * count), dtype="<f4").reshape(shape).astype(np.float32)

    def alias_tensor(self) -> tuple[int, int, int, int]:
        self.version(1)
        return tuple(self.int() for _ in range(4))  # type: ignore[return-value]

    def at_end(self) -> bool:
        return self._buf.read(1) == b""


# ---- architecture -------------------------------------------------------------------------------
# Each entry is a layer from the input side to the output side:
#   ("con", filters, kernel, stride)  ("affine",)  ("relu",)  ("max_pool", k, s)  ("avg_pool", k, s)
#   ("avg_pool_all",)  ("fc_no_bias", n)  ("tag", id)  ("skip", id)  ("add_prev", id)


def _block(n: int, stride: int) -> list[tuple]:
    return [("con", n, 3, stride), ("affine",), ("relu",), ("con", n, 3, 1), ("affine",)]


def _ares(n: int) -> list[tuple]:
    return [("tag", 1), *_block(n, 1), ("add_prev", 1), ("relu",)]


def _ares_down(n: int) -> list[tuple]:
    return [("tag", 1), *_block(n, 2), ("tag", 2), ("skip", 1), ("avg_pool", 2, 2), ("add_prev", 2), ("relu",)]


RESNET_V1: list[tuple] = [
    ("con", 32, 7, 2), ("affine",), ("relu",), ("max_pool", 3, 2),
    *_ares(32), *_ares(32), *_ares(32),
    *_ares_down(64), *_ares(64), *_ares(64), *_ares(64),
    *_ares_down(128), *_ares(128), *_ares(128),
    *_ares_down(256), *_ares(256), *_ares(256),
    *_ares_down(256),
    ("avg_pool_all",), ("fc_no_bias", 128),
]  # fmt: skip


@dataclass
class DlibLayer:
    kind: str
    spec: tuple
    weights: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class DlibNetwork:
    """The layers of a dlib network (input side first) with their weights, and its input mean."""

    layers: list[DlibLayer]
    input_size: int
    input_mean_rgb: tuple[float, float, float]
    loss: str


def _read_con(s: DlibStream, spec: tuple) -> dict[str, np.ndarray]:
    version = s.version("con_4", "con_5", "con_6")
    params = s.tensor().reshape(-1)
    filters = s.int()
    nr, nc, stride_y, stride_x = s.int(), s.int(), s.int(), s.int()
    pad_y, pad_x = s.int(), s.int()
    w_shape = s.alias_tensor()
    b_shape = s.alias_tensor()
    for _ in range(4):
        s.float()
    use_bias = s.bool() if version in ("con_5", "con_6") else True
    if version == "con_6" and s.bool():
        raise ModelError("dlib con layer with fused relu is not supported")
    _, n, k, ks = spec
    if (filters, nr, nc, stride_y, stride_x) != (n, k, k, ks, ks):
        raise ModelError(f"dlib con layer {(filters, nr, nc, stride_y, stride_x)} does not match {spec}")
    n_w = int(np.prod(w_shape))
    kernel = params[:n_w].reshape(w_shape)  # (filters, in_channels, nr, nc)
    bias = params[n_w : n_w + int(np.prod(b_shape))] if use_bias else np.zeros(filters, np.float32)
    return {"kernel": kernel, "bias": bias.reshape(-1), "padding": np.array([pad_y, pad_x])}


def _read_affine(s: DlibStream) -> dict[str, np.ndarray]:
    version = s.version("affine_", "affine_2", "bn_con2")
    if version == "bn_con2":
        s.tensor()  # params are aliased by gamma/beta below
        gamma, beta = s.tensor(), s.tensor()
        s.tensor(), s.tensor()  # batch means / invstds
        running_mean, running_var = s.tensor(), s.tensor()
        s.int(), s.int()
        for _ in range(4):
            s.float()
        eps = s.float()
        scale = gamma.reshape(-1) / np.sqrt(running_var.reshape(-1) + eps)
        return {"gamma": scale, "beta": beta.reshape(-1) - running_mean.reshape(-1) * scale}
    params = s.tensor().reshape(-1)
    g_shape = s.alias_tensor()
    s.alias_tensor()
    s.int()  # mode (conv / fc): per-channel either way for this network
    if version == "affine_2" and s.bool():
        return {
            "gamma": np.ones(int(np.prod(g_shape)), np.float32),
            "beta": np.zeros(int(np.prod(g_shape)), np.float32),
        }
    n = int(np.prod(g_shape))
    return {"gamma": params[:n], "beta": params[n : 2 * n]}


def _read_pool(s: DlibStream, name: str, spec: tuple) -> None:
    s.version(name)
    nr, nc, sy, sx, py, px = (s.int() for _ in range(6))
    expected = (0, 1) if spec[0] == "avg_pool_all" else (spec[1], spec[2])
    if (nr, sy) != expected or (nc, sx) != expected or (py, px) != (0, 0):
        raise ModelError(f"dlib {name} layer {(nr, nc, sy, sx, py, px)} does not match {spec}")


def _read_fc(s: DlibStream, spec: tuple) -> dict[str, np.ndarray]:
    version = s.version("fc_2", "fc_3")
    outputs, inputs = s.int(), s.int()
    params = s.tensor().reshape(-1)
    s.alias_tensor(), s.alias_tensor()
    s.int()  # bias mode
    for _ in range(4):
        s.float()
    if version == "fc_3":
        s.bool()
    if outputs != spec[1]:
        raise ModelError(f"dlib fc layer has {outputs} outputs, expected {spec[1]}")
    return {"kernel": params[: inputs * outputs].reshape(inputs, outputs)}


def _read_details(s: DlibStream, spec: tuple) -> dict[str, np.ndarray]:
    kind = spec[0]
    if kind == "con":
        return _read_con(s, spec)
    if kind == "affine":
        return _read_affine(s)
    if kind == "relu":
        if s.version("relu_", "relu_2") == "relu_2" and s.bool():
            raise ModelError("disabled dlib relu layers are not supported")
    elif kind == "max_pool":
        _read_pool(s, "max_pool_2", spec)
    elif kind in ("avg_pool", "avg_pool_all"):
        _read_pool(s, "avg_pool_2", spec)
    elif kind == "add_prev":
        s.version("add_prev_")
    elif kind == "fc_no_bias":
        return _read_fc(s, spec)
    else:
        raise ModelError(f"unsupported dlib layer {kind}")
    return {}


def _read_layer_trailer(s: DlibStream, version: int, is_input_layer: bool) -> None:
    s.bool(), s.bool(), s.bool()
    s.tensor(), s.tensor()  # x_grad, cached_output
    if is_input_layer:
        s.tensor()  # grad_final
        if version >= 3:
            s.int()  # sample expansion factor
    elif version == 2:
        s.tensor()  # params_grad


def read_dlib_network(path: str | Path, architecture: list[tuple] = RESNET_V1) -> DlibNetwork:
    """Parse a dlib ``loss_metric`` network file along ``architecture``; raise ModelError if it differs."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read dlib model ({exc.strerror})") from exc
    s = DlibStream(data, str(path))
    s.version(1)
    loss = s.version("loss_metric_", "loss_metric_2")
    if loss == "loss_metric_2":
        s.float(), s.float()  # margin, distance threshold

    outer_to_inner = list(reversed(architecture))
    versions = []
    for spec in outer_to_inner[:-1]:
        versions.append(s.version(1, 2) if spec[0] not in ("tag", "skip") else s.version(1))

    first = architecture[0]
    input_version = s.version(2, 3)
    s.version("input_rgb_image_sized")
    mean_rgb = (s.float(), s.float(), s.float())
    size = (s.int(), s.int())
    if size[0] != size[1]:
        raise ModelError(f"{path}: non-square dlib input {size}")
    layers = [DlibLayer(first[0], first, _read_details(s, first))]
    _read_layer_trailer(s, input_version, is_input_layer=True)

    for spec, version in zip(reversed(outer_to_inner[:-1]), reversed(versions), strict=True):
        if spec[0] in ("tag", "skip"):
            layers.append(DlibLayer(spec[0], spec))
            continue
        layers.append(DlibLayer(spec[0], spec, _read_details(s, spec)))
        _read_layer_trailer(s, version, is_input_layer=False)
    if not s.at_end():
        raise ModelError(f"{path}: trailing data after the network: architecture mismatch")
    return DlibNetwork(layers=layers, input_size=size[0], input_mean_rgb=mean_rgb, loss=str(loss))


def build_keras_model(net: DlibNetwork, name: str = "dlib_face_resnet_v1"):
    """Build a Keras 3 model computing the same function as ``net``, plus L2 normalisation.

    Input: raw RGB pixels 0..255, shape (size, size, 3). dlib's input scaling ((x - mean) / 256)
    is folded into the first convolution, exact because that convolution has no padding. Each
    affine (frozen batch norm) is folded into the convolution before it. dlib adds tensors of
    different shapes by zero-filling the smaller one; a channel shortcut therefore becomes a fixed
    1x1 identity convolution and a spatial one a bottom/right zero pad. The model's layer
    ``descriptor`` gives dlib's raw 128-D output; the model output is that vector L2-normalised.
    """
    import keras

    from training.layers import L2Normalize

    size = net.input_size
    inputs = keras.Input((size, size, 3), name="rgb_0_255")
    x = inputs
    tags: dict[int, object] = {}
    layers = net.layers
    i = 0
    n_conv = 0
    while i < len(layers):
        layer = layers[i]
        if layer.kind == "con":
            kernel = layer.weights["kernel"].transpose(2, 3, 1, 0).astype(np.float64)
            bias = layer.weights["bias"].astype(np.float64)
            if i + 1 < len(layers) and layers[i + 1].kind == "affine":
                gamma, beta = layers[i + 1].weights["gamma"], layers[i + 1].weights["beta"]
                kernel = kernel * gamma
                bias = bias * gamma + beta
                i += 1
            if n_conv == 0:
                if layer.weights["padding"].any():
                    raise ModelError("cannot fold dlib input scaling into a padded first convolution")
                mean = np.array(net.input_mean_rgb, np.float64)
                bias = bias - np.einsum("hwio,i->o", kernel, mean) / 256.0
                kernel = kernel / 256.0
            k, stride = layer.spec[2], layer.spec[3]
            pad = int(layer.weights["padding"][0])
            if pad:
                x = keras.layers.ZeroPadding2D(pad, name=f"pad{n_conv}")(x)
            conv = keras.layers.Conv2D(layer.spec[1], k, strides=stride, padding="valid", name=f"conv{n_conv}")
            x = conv(x)
            conv.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
            n_conv += 1
        elif layer.kind == "affine":
            raise ModelError("dlib affine layer not after a convolution is not supported")
        elif layer.kind == "relu":
            x = keras.layers.ReLU()(x)
        elif layer.kind == "max_pool":
            x = keras.layers.MaxPooling2D(layer.spec[1], layer.spec[2], padding="valid")(x)
        elif layer.kind == "avg_pool":
            x = keras.layers.AveragePooling2D(layer.spec[1], layer.spec[2], padding="valid")(x)
        elif layer.kind == "avg_pool_all":
            x = keras.layers.GlobalAveragePooling2D()(x)
        elif layer.kind == "tag":
            tags[layer.spec[1]] = x
        elif layer.kind == "skip":
            x = tags[layer.spec[1]]
        elif layer.kind == "add_prev":
            x = keras.layers.Add()(_zero_fill_to_common_shape(x, tags[layer.spec[1]]))
        elif layer.kind == "fc_no_bias":
            dense = keras.layers.Dense(layer.spec[1], use_bias=False, name="descriptor")
            x = dense(x)
            dense.set_weights([layer.weights["kernel"]])
        i += 1
    outputs = L2Normalize(name="l2_normalize")(x)
    return keras.Model(inputs, outputs, name=name)


def _zero_fill_to_common_shape(a, b):
    """Pad a and b (NHWC) with zeros at the bottom/right and in the channels to their common shape."""
    import keras

    h = max(a.shape[1], b.shape[1])
    w = max(a.shape[2], b.shape[2])
    c = max(a.shape[3], b.shape[3])
    out = []
    for t in (a, b):
        if t.shape[3] < c:
            eye = np.zeros((1, 1, t.shape[3], c), np.float32)
            eye[0, 0, np.arange(t.shape[3]), np.arange(t.shape[3])] = 1.0
            widen = keras.layers.Conv2D(c, 1, use_bias=False, trainable=False)
            t = widen(t)
            widen.set_weights([eye])
        if t.shape[1] < h or t.shape[2] < w:
            t = keras.layers.ZeroPadding2D(((0, h - t.shape[1]), (0, w - t.shape[2])))(t)
        out.append(t)
    return out


def import_dlib_face_model(path: str | Path):
    """Read dlib's face ResNet file and return the equivalent Keras model."""
    return build_keras_model(read_dlib_network(path))


def find_dlib_face_model() -> Path | None:
    """Locate ``dlib_face_recognition_resnet_model_v1.dat`` from the ``face_recognition_models`` package."""
    try:
        import face_recognition_models
    except ImportError:
        return None
    path = Path(face_recognition_models.__file__).parent / "models" / DLIB_FACE_MODEL_NAME
    return path if path.exists() else None
