"""Embedding architectures that quantise well and map fully onto the EdgeTPU.

Only Conv2D / DepthwiseConv2D / BatchNormalization (folded by the converter) / ReLU / ReLU6 /
pooling / Dense, raw 0..255 input scaled inside the model, and L2Normalize at the end.
"""

from __future__ import annotations

import keras

from training.layers import L2Normalize


def _conv_bn_relu(x, filters: int, kernel: int = 3, strides: int = 1, name: str = ""):
    x = keras.layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu6")(x)


def _separable(x, filters: int, strides: int, name: str):
    # He init with the true fan-in of a depthwise 3x3 (9): Keras's default counts the channels as
    # fan-in, which shrinks activations ~20x per block until they vanish.
    init = keras.initializers.RandomNormal(stddev=(2.0 / 9.0) ** 0.5)
    x = keras.layers.DepthwiseConv2D(
        3, strides=strides, padding="same", use_bias=False, depthwise_initializer=init, name=f"{name}_dw"
    )(x)
    x = keras.layers.BatchNormalization(name=f"{name}_dw_bn")(x)
    x = keras.layers.ReLU(6.0, name=f"{name}_dw_relu6")(x)
    return _conv_bn_relu(x, filters, 1, name=f"{name}_pw")


def small_cnn(input_shape=(28, 28, 1), embedding_size: int = 256, dropout: float = 0.3) -> keras.Model:
    """The TF Addons triplet-loss tutorial network, EdgeTPU-friendly (conv-ReLU, L2Normalize)."""
    inputs = keras.Input(input_shape, name="pixels_0_255")
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    x = keras.layers.Conv2D(64, 2, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Dropout(dropout)(x)
    x = keras.layers.Conv2D(32, 2, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Dropout(dropout)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(embedding_size)(x)
    return keras.Model(inputs, L2Normalize(name="l2_normalize")(x), name="small_cnn")


def mobile_embedder(input_shape=(96, 96, 3), embedding_size: int = 128, width: int = 32) -> keras.Model:
    """MobileNet-v1 style separable stack (ReLU6, BN) for camera-sized inputs."""
    inputs = keras.Input(input_shape, name="pixels_0_255")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    x = _conv_bn_relu(x, width, 3, 2, name="stem")
    for i, (mult, stride) in enumerate([(2, 1), (4, 2), (4, 1), (8, 2), (8, 1), (16, 2), (16, 1)]):
        x = _separable(x, width * mult, stride, name=f"block{i}")
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(embedding_size)(x)
    return keras.Model(inputs, L2Normalize(name="l2_normalize")(x), name="mobile_embedder")


ARCHITECTURES = {"small_cnn": small_cnn, "mobile": mobile_embedder}
