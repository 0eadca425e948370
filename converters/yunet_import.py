"""Import the YuNet face detector (ONNX, int8 block-quantised) into Keras and a float TFLite model
(host only), so that the device runs detection in LiteRT instead of OpenCV's DNN module.

The graph is small: Conv / depthwise Conv, ReLU, 2x2 MaxPool, a feature pyramid (nearest-neighbour
upsampling and Add) and, at strides 8, 16 and 32, four heads: class and objectness (sigmoid), box
(4) and landmarks (10). The importer dequantises the weights as ``sface_import`` does and rebuilds
every node in Keras with the same arithmetic; the heads of one stride are joined into one map of 16
channels, ``cls, obj, box, landmarks`` (``HEADS``), which ``edge_verify.detect`` decodes
as OpenCV's ``FaceDetectorYN`` does. Input: BGR 0..255, height and width any multiples of 32
(the model's spatial size is left open; the device pads to a multiple of 32 as OpenCV does).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from converters.sface_import import conv_layer, dequantize
from edge_verify.detect import STRIDES, YUNET_SHA256, yunet_onnx_path
from edge_verify.errors import ModelError

SUPPORTED = {"DequantizeLinear", "Reshape", "Conv", "Relu", "MaxPool", "Resize", "Add", "Transpose", "Sigmoid"}
HEADS = ("cls", "obj", "bbox", "kps")  # ONNX outputs per stride (cls_8, ...), joined in this order


def import_yunet(path: Path | None = None):
    """YuNet as a Keras model: (1, H, W, 3) BGR 0..255 -> one (1, H/s, W/s, 16) map per stride s."""
    import keras
    import onnx
    from onnx import numpy_helper

    path = Path(path or yunet_onnx_path())
    if not path.is_file():
        raise ModelError(f"{path}: YuNet ONNX file not found")
    if hashlib.sha256(path.read_bytes()).hexdigest() != YUNET_SHA256:
        raise ModelError(f"{path}: not the YuNet file this importer was written for (sha256 differs)")
    graph = onnx.load(str(path)).graph
    unknown = {n.op_type for n in graph.node} - SUPPORTED
    if unknown:
        raise ModelError(f"{path}: unsupported ONNX ops {sorted(unknown)}")
    const = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    inputs = keras.Input((None, None, 3), batch_size=1, name="bgr")
    tensors = {graph.input[0].name: inputs}
    heads: dict[str, object] = {}  # ONNX output name (cls_8, ...) -> its NHWC map before Transpose
    transposed: dict[str, str] = {}  # Transpose/Reshape outputs -> the NHWC map they rearrange

    for node in graph.node:
        op, ins, out = node.op_type, list(node.input), node.output[0]
        a = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
        name = out.replace("/", "_").replace(".", "_")
        if op == "DequantizeLinear":
            zero = const[ins[2]] if len(ins) > 2 and ins[2] else 0
            const[out] = dequantize(const[ins[0]], const[ins[1]], zero, a.get("axis", 1), a.get("block_size", 0))
        elif op == "Reshape" and ins[0] in const:
            const[out] = const[ins[0]].reshape(const[ins[1]])
        elif op == "Conv":
            bias = const.get(ins[2]) if len(ins) > 2 else None
            tensors[out] = conv_layer(keras, tensors[ins[0]], const[ins[1]], bias, a, f"c{name}")
        elif op == "Relu":
            tensors[out] = keras.layers.ReLU(name=f"relu{name}")(tensors[ins[0]])
        elif op == "MaxPool":
            if a.get("kernel_shape") != [2, 2] or a.get("strides") != [2, 2] or any(a.get("pads", [0])):
                raise ModelError(f"{path}: MaxPool {a} is not the 2x2/2 pooling this importer knows")
            tensors[out] = keras.layers.MaxPooling2D(2, name=f"pool{name}")(tensors[ins[0]])
        elif op == "Resize":
            if a.get("mode") != b"nearest":
                raise ModelError(f"{path}: Resize mode {a.get('mode')} is not nearest")
            tensors[out] = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"up{name}")(tensors[ins[0]])
        elif op == "Add":
            tensors[out] = keras.layers.Add(name=f"add{name}")([tensors[ins[0]], tensors[ins[1]]])
        elif op == "Transpose":  # NCHW -> NHWC: Keras maps already are
            transposed[out] = ins[0]
        elif op == "Reshape":  # (1, H*W, C): the decoder reads the NHWC map in that order
            transposed[out] = transposed[ins[0]]
        elif op == "Sigmoid":
            source = transposed[ins[0]]
            tensors[f"sigmoid_{out}"] = keras.layers.Activation("sigmoid", name=f"sig_{out}")(tensors[source])
            heads[out] = tensors[f"sigmoid_{out}"]
    for out in (o.name for o in graph.output):
        if out not in heads:
            heads[out] = tensors[transposed[out]]
    outputs = [keras.layers.Concatenate(name=f"stride_{s}")([heads[f"{k}_{s}"] for k in HEADS]) for s in STRIDES]
    return keras.Model(inputs, outputs, name="yunet")


def convert_yunet(model) -> bytes:
    """The float32 TFLite model of ``import_yunet``'s model, its height and width left open."""
    import tempfile

    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        model.export(tmp, verbose=False, input_signature=[tf.TensorSpec((1, None, None, 3), tf.float32)])
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        return converter.convert()
