"""Bias correction for int8 weight rounding (host only).

TFLite's converter rounds a convolution's weights to int8 per output channel (symmetric, scale
max|w| / 127). The rounding errors of a channel's few weights do not cancel (a 3x3 depthwise
channel has nine), so on real inputs each output channel's mean moves by mean(conv(x, W - Q(W))).
Adding that shift, measured on calibration inputs, to the float bias gives the int8 model back
the float model's channel means (Nagel et al., "Data-Free Quantization", 2019, empirical bias
correction). The converter folds constant and per-channel factors (a Rescaling before the first
convolution, a batch norm after one) into the weights first; scaling an output channel scales its
int8 scale alike, so the rounded integers, and the correction, stay the same. A convolution without
a bias whose only reader is a batch norm is corrected in the batch norm's moving mean.
Measured on SFace (benchmarks/sface_int8.py).
"""

from __future__ import annotations

import numpy as np

from converters.equalize import evenly_spaced, readers


def quantised_weights(kernel: np.ndarray, depthwise: bool) -> np.ndarray:
    """``kernel`` (Keras layout) rounded as TFLite's int8 converter rounds it: per output channel
    (a depthwise kernel's input channel), symmetric, scale max|w| / 127."""
    axis = 2 if depthwise else kernel.ndim - 1
    others = tuple(i for i in range(kernel.ndim) if i != axis)
    scale = np.max(np.abs(kernel), axis=others, keepdims=True) / 127.0
    scale = np.where(scale == 0, 1.0, scale)
    return (np.round(kernel / scale) * scale).astype(kernel.dtype)


def correct_weight_rounding(model, chips: np.ndarray, batch: int = 20) -> int:
    """Make up, in place, for the mean output shift that rounding each convolution's weights to int8
    causes on ``chips``; returns how many convolutions were corrected."""
    import keras

    targets = [(layer, target) for layer in model.layers if (target := _correction_target(model, layer, keras))]
    if not targets:
        return 0
    layers = [layer for layer, _ in targets]
    chips = evenly_spaced(chips)
    probe = keras.Model(model.input, [layer.input for layer in layers])
    errors = []
    for layer in layers:
        config = {**layer.get_config(), "activation": None, "use_bias": False, "name": f"{layer.name}_rounding"}
        error = layer.__class__.from_config(config)
        error.build(layer.input.shape)
        kernel = layer.get_weights()[0]
        error.set_weights([kernel - quantised_weights(kernel, isinstance(layer, keras.layers.DepthwiseConv2D))])
        errors.append(error)
    shifts = [0.0] * len(layers)
    for start in range(0, len(chips), batch):
        inputs = probe(chips[start : start + batch])
        for i, (error, x) in enumerate(zip(errors, inputs if isinstance(inputs, list) else [inputs], strict=True)):
            out = np.asarray(error(x))
            shifts[i] = shifts[i] + out.reshape(-1, out.shape[-1]).sum(axis=0, dtype=np.float64)
    for (layer, target), shift in zip(targets, shifts, strict=True):
        shift = shift / _positions(layer, len(chips))
        if target is layer:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, bias + shift])
        else:  # the batch norm that reads it sees Q(W) x; (x + shift - mean) == (x - (mean - shift))
            weights = target.get_weights()  # [gamma], [beta], moving mean, moving variance
            weights[-2] = weights[-2] - shift
            target.set_weights(weights)
    return len(targets)


def _positions(layer, n: int) -> int:
    """Output values per channel over ``n`` inputs."""
    return n * int(np.prod(layer.output.shape[1:-1]))


def _correction_target(model, layer, keras):
    """Where ``layer``'s correction goes: itself (its bias), the batch norm that alone reads it, or
    None (not a convolution the converter quantises per channel as it stands, or nowhere to put it)."""
    if type(layer) not in (keras.layers.Conv2D, keras.layers.DepthwiseConv2D):
        return None
    if getattr(layer, "groups", 1) != 1 or getattr(layer, "depth_multiplier", 1) != 1:
        return None
    if layer.use_bias:
        return layer
    following = readers(model, layer)
    if len(following) == 1 and type(following[0]) is keras.layers.BatchNormalization:
        return following[0]
    return None
