"""converters.bias_correction: the rounding it corrects for is the converter's own (with a scale and
a batch norm folded into the weights), and the correction gives the rounded weights the float
model's channel means on real images (host; slow)."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from converters.bias_correction import correct_weight_rounding, quantised_weights  # noqa: E402
from converters.convert import ConvertOptions, convert  # noqa: E402
from edge_verify.embedder import Embedder  # noqa: E402
from edge_verify.sources import list_images, read_image  # noqa: E402
from tests.conftest import SAMPLES  # noqa: E402

pytestmark = pytest.mark.slow
CORRECTED = ("conv", "depthwise", "pointwise")  # with a bias, with a bias, without one (batch norm)


def small_model():
    from training.layers import L2Normalize

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.ReLU()(keras.layers.Conv2D(16, 3, name="conv", bias_initializer="random_normal")(x))
    x = keras.layers.ReLU()(keras.layers.DepthwiseConv2D(3, name="depthwise")(x))
    norm = keras.layers.BatchNormalization(name="bn")
    x = norm(keras.layers.Conv2D(8, 1, use_bias=False, name="pointwise")(x))
    x = keras.layers.Dense(8)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, L2Normalize()(x))
    rng = np.random.default_rng(0)  # a trained batch norm: factors of both signs, folded in by the converter
    norm.set_weights([rng.choice([-1, 1], 8) * rng.uniform(0.5, 2, 8), rng.normal(0, 0.1, 8), rng.normal(0, 0.1, 8),
                      rng.uniform(0.5, 2, 8)])  # fmt: skip
    return model


@pytest.fixture(scope="module")
def images():
    """32x32 crops of the packaged photos (rows every 8 px, columns every 64)."""
    crops = []
    for path in list_images(SAMPLES):
        image = read_image(path)[:256, :256]
        crops += [image[y : y + 32, x : x + 32] for y in range(0, image.shape[0] - 31, 8) for x in range(0, 256, 64)]
    return np.stack([c for c in crops if c.shape[:2] == (32, 32)]).astype(np.float32)


def test_rounding_is_the_converters(images, tmp_path):
    """The int8 weights TFLite writes are those of ``quantised_weights`` on the Keras kernels, though
    the converter folds the input scaling and the batch norm into them first."""
    from ai_edge_litert.interpreter import Interpreter

    model = small_model()
    convert(model, images, tmp_path, ConvertOptions(name="rounding", variants=("int8",)))
    interpreter = Interpreter(model_path=str(tmp_path / "model_int8.tflite"))
    interpreter.allocate_tensors()
    convolutions = [op for op in interpreter._get_ops_details() if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert [op["op_name"] for op in convolutions] == ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D"]
    folded_signs = np.sign(model.get_layer("bn").get_weights()[0]).reshape(-1, 1, 1, 1)
    for name, op, signs in zip(CORRECTED, convolutions, (1, 1, folded_signs), strict=True):
        stored = interpreter.get_tensor(op["inputs"][1])
        assert np.array_equal(stored, signs * levels(model.get_layer(name).get_weights()[0], name == "depthwise")), name


def levels(kernel: np.ndarray, depthwise: bool) -> np.ndarray:
    """The integers of ``quantised_weights``, in TFLite's layout: (out, kh, kw, in) for a
    convolution, (1, kh, kw, channels) for a depthwise one (Keras: (kh, kw, in, out), (kh, kw, channels, 1))."""
    axis = 2 if depthwise else 3
    scale = np.abs(kernel).max(axis=tuple(i for i in range(4) if i != axis), keepdims=True) / 127
    return np.round(quantised_weights(kernel, depthwise) / scale).astype(np.int8).transpose(3, 0, 1, 2)


def test_corrected_biases_give_rounded_weights_the_float_means(images):
    model = small_model()
    original = {n: model.get_layer(n).get_weights() for n in CORRECTED}
    inputs = keras.Model(model.input, [model.get_layer(n).input for n in CORRECTED]).predict(images, verbose=0)
    float_means = {n: _channel_means(model.get_layer(n), x) for n, x in zip(CORRECTED, inputs, strict=True)}

    def rounded_means(name: str, x) -> np.ndarray:
        """Channel means with the weights rounded, plus the correction (a bias, or the batch norm's mean)."""
        layer = model.get_layer(name)
        weights = layer.get_weights()
        layer.set_weights([quantised_weights(weights[0], depthwise=name == "depthwise"), *weights[1:]])
        means = _channel_means(layer, x)
        layer.set_weights(weights)
        if name == "pointwise":
            means += original_mean - model.get_layer("bn").get_weights()[2]
        return means

    original_mean = model.get_layer("bn").get_weights()[2]
    before = {n: np.abs(rounded_means(n, x) - float_means[n]).max() for n, x in zip(CORRECTED, inputs, strict=True)}
    assert correct_weight_rounding(model, images) == 3
    for name, x in zip(CORRECTED, inputs, strict=True):
        assert np.array_equal(model.get_layer(name).get_weights()[0], original[name][0])  # kernels unchanged
        after = np.abs(rounded_means(name, x) - float_means[name]).max()
        assert before[name] > 1e-4 and after < before[name] / 50, (name, before[name], after)


def test_bias_corrected_conversion_keeps_the_model_as_fp32_reference(images, tmp_path):
    model = small_model()
    reference = model.predict(images, verbose=0)
    options = ConvertOptions(name="corrected", variants=("fp32", "int8"), bias_correction=True)
    meta = convert(model, images, tmp_path, options)
    fp32 = Embedder(tmp_path / "model_fp32.tflite").embed(images)
    assert np.abs(fp32 - reference).max() < 1e-5  # the correction went into the int8 model only
    assert np.array_equal(model.get_layer("conv").get_weights()[1], small_model().get_layer("conv").get_weights()[1])
    assert meta["report"]["variants"]["int8"]["cosine_vs_fp32"]["mean"] > 0.98


def _channel_means(layer, x) -> np.ndarray:
    out = np.asarray(layer(x))
    return out.reshape(-1, out.shape[-1]).mean(axis=0, dtype=np.float64)
