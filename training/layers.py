"""Custom Keras layers shared by training and the converters (host only)."""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="edge_verify")
class L2Normalize(keras.layers.Layer):
    """L2-normalise the last axis.

    Calls ``tf.math.l2_normalize`` so that the TFLite converter emits the int8
    ``L2_NORMALIZATION`` op (``keras.layers.UnitNormalization`` leaves a float island).
    """

    def call(self, inputs):
        return tf.math.l2_normalize(inputs, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape
