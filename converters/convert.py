"""Keras embedding model -> TFLite variants (fp32, fp16, dynamic, int8) -> model bundle."""

from __future__ import annotations

import json
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converters.edgetpu import check_edgetpu, compile_edgetpu, op_counts
from edge_verify.bundle import (
    BUNDLE_FORMAT,
    MODEL_EDGETPU,
    MODEL_FP32,
    MODEL_INT8,
    Preprocess,
    Threshold,
    compute_fingerprint,
    sha256_file,
)
from edge_verify.embedder import Embedder
from edge_verify.errors import InputError, ModelError
from edge_verify.metrics import pair_scores, verification_report
from edge_verify.operating import far_curve

VARIANTS = ("fp32", "fp16", "dynamic", "int8")
FILE_NAMES = {"fp32": MODEL_FP32, "fp16": "model_fp16.tflite", "dynamic": "model_dynamic.tflite", "int8": MODEL_INT8}


@dataclass
class ConvertOptions:
    name: str
    version: str = "1"
    io_dtype: str = "int8"  # int8 or uint8 model input/output
    variants: tuple[str, ...] = VARIANTS
    target_far: float = 1e-3
    max_calibration: int = 300
    ranges: str = "minmax"  # int8 activation ranges: minmax (TFLite's) or mse (converters/calibration.py)
    bias_correction: bool = False  # int8: correct biases for weight rounding (converters/bias_correction.py)
    float_ops: int = 0  # int8: the first N ops stay in float (closer to fp32; not EdgeTPU-mappable)


def check_embedding_model(model, sample: np.ndarray) -> None:
    """ModelError unless ``model`` maps images to unit-norm 1-D embeddings."""
    if len(model.outputs) != 1 or len(model.output_shape) != 2:
        raise ModelError(f"model output shape {model.output_shape} is not (batch, embedding): not an embedding model")
    if tuple(model.input_shape[1:]) != tuple(sample.shape[1:]):
        raise ModelError(f"model input {model.input_shape[1:]} does not match the images {sample.shape[1:]}")
    norms = np.linalg.norm(model.predict(sample[:8].astype(np.float32), verbose=0), axis=1)
    if not np.allclose(norms, 1.0, atol=1e-3):
        if type(model.layers[-1]).__name__ == "L2Normalize":
            raise ModelError(
                f"model activations before L2Normalize are ~0 (output norms {norms.min():.2g}): "
                "untrained, or vanishing activations"
            )
        raise ModelError("model output is not L2-normalised: end it with training.layers.L2Normalize")


def preprocess_for_model(model) -> Preprocess:
    """Whole-frame preprocessing for a generic (non-face) model from its input shape."""
    h, w, c = (int(d) for d in model.input_shape[1:])
    return Preprocess(size=(h, w), channels=c, color_order="GRAY" if c == 1 else "RGB", alignment="resize")


def face_preprocess(model) -> Preprocess:
    """5-landmark alignment for a face model: the default template (dlib's chip geometry, derived by
    scripts/build_default_bundle.py) scaled to the model's input size."""
    import json
    from importlib import resources

    h, w, c = (int(d) for d in model.input_shape[1:])
    template = json.loads((resources.files("converters") / "face_template.json").read_text())["template"]
    scaled = tuple((round(x * w / 150, 3), round(y * h / 150, 3)) for x, y in template)
    return Preprocess(
        size=(h, w), channels=c, color_order="GRAY" if c == 1 else "RGB", alignment="face5", template=scaled
    )


def _to_tflite(
    saved_model: Path,
    variant: str,
    calibration: np.ndarray,
    io_dtype: str,
    ranges: str = "minmax",
    keep_float: tuple[str, ...] = (),
    float_ops: int = 0,
) -> bytes:
    import tensorflow as tf

    from converters import calibration as activation_ranges

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if variant == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]

        def representative():
            for x in calibration:
                yield [x[None].astype(np.float32)]

        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        dtype = tf.uint8 if io_dtype == "uint8" else tf.int8
        converter.inference_input_type = dtype
        converter.inference_output_type = dtype
        if ranges == "mse" or keep_float or float_ops:
            converter._experimental_calibrate_only = True  # min/max per tensor, then our ranges
            calibrated = converter.convert()
            if ranges == "mse":
                calibrated = activation_ranges.clip_ranges(calibrated, calibration)
            keep_float = keep_float + activation_ranges.leading_ops(calibrated, float_ops)
            return activation_ranges.quantize(calibrated, io_dtype, keep_float)
    return converter.convert()


def convert(
    model,
    calibration: np.ndarray,
    out_dir: str | Path,
    options: ConvertOptions,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    preprocess: Preprocess | None = None,
    threshold: Threshold | None = None,
    source_hash: str = "",
    progress=None,
) -> dict:
    """Convert ``model`` into a bundle at ``out_dir`` and return the fidelity report (also in bundle.json).

    ``calibration``: real inputs (N, H, W, C) in 0..255 for int8 calibration (100-500 used).
    ``validation``: (images, labels) for the fidelity report and the threshold at ``target_far``.
    """
    import keras
    import tensorflow as tf

    out_dir = Path(out_dir)
    if len(calibration) == 0:
        raise InputError("calibration set is empty: give 100-500 real images")
    calibration = np.asarray(calibration)
    check_embedding_model(model, calibration)
    preprocess = preprocess or preprocess_for_model(model)
    rng = np.random.default_rng(0)
    calib = calibration[rng.permutation(len(calibration))[: options.max_calibration]]
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict = {"variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "saved_model"
        # A static batch of 1: the EdgeTPU needs static shapes, and a dynamic batch turns Flatten
        # into SHAPE/STRIDED_SLICE/PACK ops that split the EdgeTPU graph.
        signature = [tf.TensorSpec((1, *model.input_shape[1:]), tf.float32)]
        model.export(str(saved), verbose=False, input_signature=signature)
        saved_int8 = saved
        if options.bias_correction and "int8" in options.variants:
            saved_int8 = Path(tmp) / "saved_model_int8"
            corrected, layers = _bias_corrected(model, calib)
            corrected.export(str(saved_int8), verbose=False, input_signature=signature)
            report["bias_correction"] = {"convolutions": layers, "on": f"{len(calib)} calibration inputs"}
            if progress:
                progress(f"int8 weight rounding corrected in the biases of {layers} convolutions")
        for variant in options.variants:
            if progress:
                progress(f"converting {variant}")
            path = out_dir / FILE_NAMES[variant]
            source = saved_int8 if variant == "int8" else saved
            path.write_bytes(
                _to_tflite(source, variant, calib, options.io_dtype, options.ranges, float_ops=options.float_ops)
            )
            report["variants"][variant] = {"file": path.name, "bytes": path.stat().st_size, "ops": op_counts(path)}
        if options.float_ops and "int8" in options.variants:
            report["float_ops"] = options.float_ops
    int8_path = out_dir / MODEL_INT8
    int8_impostor = None  # validation impostor scores of the int8 model: the 1:N FAR curve
    if progress:
        progress("fidelity on " + ("the validation set" if validation is not None else "calibration images"))
    if validation is not None:
        int8_impostor = _fidelity(out_dir, options, validation, report)
        int8_eval = report["variants"]["int8"].get("verification")
        if threshold is None and int8_eval:
            far = options.target_far
            key = "threshold_at_far_1e3" if far <= 1e-3 else "threshold_at_far_1e2"
            threshold = Threshold(float(int8_eval[key]), far, "int8 model on the validation set")
    else:  # no labels: only how far each variant's embeddings are from fp32's
        _cosine_vs_fp32(out_dir, options, calib[:300], report)
    threshold = threshold or Threshold(0.5, None, "default (not calibrated): run `edge-verify calibrate`")
    edgetpu = check_edgetpu(int8_path)
    compiled = compile_edgetpu(int8_path, out_dir, edgetpu)
    report["edgetpu"] = edgetpu.as_dict()
    files = {p: sha256_file(out_dir / p) for p in (FILE_NAMES[v] for v in options.variants)}
    if compiled is not None:
        compiled.rename(out_dir / MODEL_EDGETPU)
        files[MODEL_EDGETPU] = sha256_file(out_dir / MODEL_EDGETPU)
    embedding_size = int(model.output_shape[-1])
    meta = {
        "format": BUNDLE_FORMAT,
        "name": options.name,
        "version": options.version,
        "embedding_size": embedding_size,
        "metric": "cosine",
        "input": {"shape": [int(d) for d in model.input_shape[1:]], "dtype": options.io_dtype, "range": [0, 255]},
        "preprocess": preprocess.as_dict(),
        "threshold": {"value": threshold.value, "far": threshold.far, "source": threshold.source},
        **({"far_curve": far_curve([int8_impostor])} if int8_impostor is not None and len(int8_impostor) else {}),
        "files": files,
        "fingerprint": compute_fingerprint(files[MODEL_INT8], preprocess),
        "source_model_sha256": source_hash,
        "tools": {"tensorflow": tf.__version__, "keras": keras.__version__, "python": platform.python_version()},
        "report": report,
    }
    if progress:
        progress("recording the known-answer self-test")
    meta["self_test"] = _record_self_test(out_dir, meta, calib)
    return meta


def _bias_corrected(model, calibration: np.ndarray) -> tuple:
    """A copy of ``model`` whose biases make up for int8 weight rounding, and how many convolutions
    were corrected; the fp32 variant and the fidelity report keep ``model`` itself as the reference."""
    import keras

    from converters.bias_correction import correct_weight_rounding

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy, correct_weight_rounding(copy, calibration)


def _record_self_test(out_dir: Path, meta: dict, calibration: np.ndarray) -> dict:
    """Write bundle.json with the self-test (selftest.py) of the new bundle: the packaged sample
    photos for a face bundle, else 4 calibration inputs kept in the bundle as self_test.npy."""
    from edge_verify import selftest
    from edge_verify.pipeline import Verifier, VerifierOptions

    if meta["preprocess"]["alignment"] != "face5":
        np.save(out_dir / selftest.INPUTS_FILE, np.asarray(calibration[:4], np.float32), allow_pickle=False)
        meta["files"][selftest.INPUTS_FILE] = sha256_file(out_dir / selftest.INPUTS_FILE)
    (out_dir / "bundle.json").write_text(json.dumps(meta, indent=2) + "\n")
    record = selftest.record(Verifier(VerifierOptions(bundle=out_dir, use_edgetpu=False)))
    meta["self_test"] = record
    (out_dir / "bundle.json").write_text(json.dumps(meta, indent=2) + "\n")
    return record


def _cosine_vs_fp32(out_dir: Path, options: ConvertOptions, images: np.ndarray, report: dict) -> None:
    if "fp32" not in options.variants:
        return
    embeddings = {v: Embedder(out_dir / FILE_NAMES[v], backend="litert").embed(images) for v in options.variants}
    for variant, emb in embeddings.items():
        cos = np.sum(embeddings["fp32"] * emb, axis=1)
        report["variants"][variant]["cosine_vs_fp32"] = {
            "mean": float(cos.mean()),
            "min": float(cos.min()),
            "on": f"{len(images)} calibration images (no labels: no EER)",
        }


def _fidelity(out_dir: Path, options: ConvertOptions, validation, report: dict) -> np.ndarray:
    """Fill ``report`` with each variant's verification figures; returns the int8 impostor scores."""
    images, labels = validation
    embeddings = {}
    int8_impostor = np.zeros(0)
    for variant in options.variants:
        embedder = Embedder(out_dir / FILE_NAMES[variant], backend="litert")
        embeddings[variant] = embedder.embed(images)
        genuine, impostor = pair_scores(embeddings[variant], labels)
        report["variants"][variant]["verification"] = verification_report(genuine, impostor).as_dict()
        if variant == "int8":
            int8_impostor = impostor
    if "fp32" in embeddings:
        ref = embeddings["fp32"]
        for variant, emb in embeddings.items():
            cos = np.sum(ref * emb, axis=1)
            report["variants"][variant]["cosine_vs_fp32"] = {"mean": float(cos.mean()), "min": float(cos.min())}
            report["variants"][variant]["eer_change_points"] = 100 * (
                report["variants"][variant]["verification"]["eer"] - report["variants"]["fp32"]["verification"]["eer"]
            )
    return int8_impostor


def format_fidelity(meta: dict) -> str:
    """The fidelity table printed by ``edge-verify convert``."""
    rep = meta["report"]
    lines = [
        f"bundle {meta['name']} v{meta['version']}  fingerprint {meta['fingerprint']}",
        f"  {'variant':<8} {'size':>10}  {'cos mean':>8} {'cos min':>8}  {'EER':>7} {'TAR@1e-3':>8}",
    ]
    for name, v in rep["variants"].items():
        cos = v.get("cosine_vs_fp32", {})
        ver = v.get("verification", {})
        cos_text = f"{cos['mean']:>8.4f} {cos['min']:>8.4f}" if cos else f"{'-':>8} {'-':>8}"
        ver_text = f"{100 * ver['eer']:>6.2f}% {100 * ver['tar_at_far_1e3']:>7.2f}%" if ver else f"{'-':>7} {'-':>8}"
        lines.append(f"  {name:<8} {v['bytes'] / 1e6:>8.2f}MB  {cos_text}  {ver_text}")
    tpu = rep["edgetpu"]
    if tpu["mappable"]:
        lines.append("  EdgeTPU static check: every op mappable")
    else:
        f = tpu["first_unmapped"]
        lines.append(f"  EdgeTPU static check: graph would split at op #{f['index']} {f['op']} ({f['reason']})")
    lines.append(
        f"  edgetpu_compiler: {tpu['compiler']}" + (f" - {tpu['compiler_log']}" if tpu["compiler"] == "absent" else "")
    )
    thr = meta["threshold"]
    lines.append(f"  threshold {thr['value']:.4f} (FAR {thr['far']}, {thr['source']})")
    if not any(v.get("verification") for v in rep["variants"].values()):
        lines.append("  EER and TAR need labelled data: add --validation")
    return "\n".join(lines)
