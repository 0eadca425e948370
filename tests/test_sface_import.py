"""SFace (OpenCV Zoo, ONNX int8 block-quantised) imported into Keras: equal to onnxruntime on real
face chips, and quantised again by our converter (host; slow)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from converters.sface_import import TEMPLATE, dequantize, fetch_sface, import_sface  # noqa: E402
from edge_verify.align import align_face  # noqa: E402
from edge_verify.bundle import Preprocess  # noqa: E402
from edge_verify.errors import ModelError  # noqa: E402
from edge_verify.sources import read_image  # noqa: E402
from tests.conftest import SAMPLES  # noqa: E402

pytestmark = pytest.mark.slow
PRE = Preprocess(size=(112, 112), channels=3, color_order="RGB", alignment="face5", template=TEMPLATE)


@pytest.fixture(scope="module")
def sface():
    path = fetch_sface()
    return path, import_sface(path)


@pytest.fixture(scope="module")
def chips(verifier):
    """SFace's chips of the packaged photos, aligned as on the device, plus mirrored copies."""
    faces = []
    for name in ("astronaut_enroll.jpg", "astronaut_check.jpg", "cameraman.jpg"):
        image = read_image(SAMPLES / name)
        faces.append(align_face(image, verifier.detect(image)[0], PRE))
    faces = np.stack(faces)
    return np.concatenate([faces, faces[:, :, ::-1]]).astype(np.float32)


def onnxruntime_embeddings(path, chips: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options)
    # the file still declares its float weights as (unused) graph inputs; they must be fed
    unused = {
        i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32)
        for i in session.get_inputs()
        if i.name != "data"
    }
    out = np.concatenate([session.run(None, {"data": c.transpose(2, 0, 1)[None], **unused})[0] for c in chips])
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_keras_port_equals_onnxruntime_on_real_chips(sface, chips):
    path, model = sface
    reference = onnxruntime_embeddings(path, chips)
    ours = model.predict(chips, verbose=0)
    assert np.abs(ours - reference).max() < 1e-5
    same, other = float(ours[0] @ ours[1]), float(ours[0] @ ours[2])
    assert same > 0.8 and other < 0.4  # astronaut vs astronaut, astronaut vs cameraman


def test_block_dequantisation_matches_onnx_reference():
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(0)
    q = rng.integers(-128, 128, (8, 130), dtype=np.int8)
    scale = rng.uniform(0.001, 0.1, (8, 3)).astype(np.float32)
    zero = rng.integers(-5, 5, (8, 3), dtype=np.int8)
    node = onnx.helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=1, block_size=64)
    graph = onnx.helper.make_graph(
        [node],
        "dq",
        [
            onnx.helper.make_tensor_value_info("q", onnx.TensorProto.INT8, q.shape),
            onnx.helper.make_tensor_value_info("s", onnx.TensorProto.FLOAT, scale.shape),
            onnx.helper.make_tensor_value_info("z", onnx.TensorProto.INT8, zero.shape),
        ],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, q.shape)],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 21)])
    (expected,) = ReferenceEvaluator(model).run(None, {"q": q, "s": scale, "z": zero})
    assert np.allclose(dequantize(q, scale, zero, axis=1, block_size=64), expected)


def test_int8_conversion_is_edgetpu_mappable_and_close_to_fp32(sface, chips, tmp_path):
    """Both activation-range methods, the shipped recipe (equalised channels, then ``mse``) and the
    same with biases corrected for weight rounding give an EdgeTPU-mappable model close to fp32,
    without the PRELU op that LiteRT's XNNPACK cannot run in int8; the shipped recipe is closer than
    ``mse`` alone."""
    from converters.convert import ConvertOptions, convert
    from converters.equalize import equalize_activations
    from converters.sface_import import split_prelu

    path, model = sface
    calibration = np.concatenate([chips, chips[:, ::-1], np.roll(chips, 3, axis=2)])
    equalised = import_sface(path, decompose=False)
    equalize_activations(equalised, calibration)
    cosine = {}
    for name, ranges, port in (
        ("minmax", "minmax", model),
        ("mse", "mse", model),
        ("shipped", "mse", split_prelu(equalised)),
        ("bias-corrected", "mse", split_prelu(equalised)),
    ):
        options = ConvertOptions(
            name="sface-test", variants=("fp32", "int8"), ranges=ranges, bias_correction=name == "bias-corrected"
        )
        meta = convert(port, calibration, tmp_path / name, options, preprocess=PRE)
        int8 = meta["report"]["variants"]["int8"]
        assert meta["report"]["edgetpu"]["mappable"] and "PRELU" not in int8["ops"]
        # the weights were quantised once already (int8 blocks); our int8 costs this much more
        assert int8["cosine_vs_fp32"]["mean"] >= 0.985, (name, int8["cosine_vs_fp32"])
        cosine[name] = int8["cosine_vs_fp32"]["mean"]
    assert cosine["shipped"] > cosine["mse"], cosine  # equalised channels lose less to int8


def test_split_prelu_is_the_same_function_in_both_forms(sface, chips):
    import keras

    from converters.sface_import import split_prelu

    path, split = sface
    plain = import_sface(path, decompose=False)
    assert any(type(layer).__name__ == "PReLU" for layer in plain.layers)
    assert not any(type(layer).__name__ == "PReLU" for layer in split.layers)

    def convolutions(model) -> int:
        """Convolutions that compute (not the 1x1 per-channel scales the split adds)."""
        kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
        return sum(isinstance(layer, kinds) and layer.kernel_size != (1, 1) or type(layer) is keras.layers.Conv2D
                   for layer in model.layers)  # fmt: skip

    steep = sum(type(layer).__name__ == "PReLU" and layer.get_weights()[0].max() >= 1 for layer in plain.layers)
    assert steep == 2  # SFace's first two PReLUs have a slope >= 1: those convolutions run twice in both forms
    once = split_prelu(plain, convolution_once=True)
    assert convolutions(split) == 2 * convolutions(plain)  # a PReLU follows every convolution
    assert convolutions(once) == convolutions(plain) + steep
    assert np.abs(once.predict(chips, verbose=0) - split.predict(chips, verbose=0)).max() < 1e-5
    assert np.abs(plain.predict(chips, verbose=0) - split.predict(chips, verbose=0)).max() < 1e-5
    assert np.abs(split_prelu(plain).predict(chips, verbose=0) - split.predict(chips, verbose=0)).max() < 1e-6


def test_equalised_port_is_the_same_function_with_even_channels(sface, chips):
    """Equalisation changes no embedding, and evens the channel ranges an int8 tensor must share."""
    import keras

    from converters.equalize import QUANTILE, equalize_activations

    path, _ = sface
    plain, equalised = import_sface(path, decompose=False), import_sface(path, decompose=False)
    assert equalize_activations(equalised, chips) == 26  # every PReLU between two convolutions

    def spread(model) -> float:
        """Widest over narrowest channel range before the first PReLU (a 3x3 depthwise reads its output)."""
        out = keras.Model(model.input, model.get_layer("conv_1_batchnorm").output).predict(chips, verbose=0)
        ranges = np.quantile(np.abs(out.reshape(-1, out.shape[-1])), QUANTILE, axis=0)
        return float(ranges.max() / ranges.min())

    assert np.abs(plain.predict(chips, verbose=0) - equalised.predict(chips, verbose=0)).max() < 1e-5
    assert spread(plain) > 5 and spread(equalised) < 1.05


def test_wrong_file_is_refused(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="not the SFace file"):
        import_sface(bad)
    with pytest.raises(ModelError, match="not an ONNX model"):
        import_sface(bad, verify_hash=False)
