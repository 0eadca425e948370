"""What int8 costs SFace, and what the importer and converter do about it.

    python benchmarks/sface_int8.py [--data ../shared/data]

SFace's published weights are int8 already (blocks of 16 per channel); our int8 model quantises
them again (per channel, batch norm folded in) and quantises every activation. Seven conversions of
the same Keras port, each calibrated on 300 chips of faces_dev/celebs and measured on 100 other
chips of it (every 8th image, offset 3): mean and lowest cosine between the int8 and the fp32
embedding, the time of one int8 embedding (LiteRT, 1 thread, median of 30) and how many pieces
XNNPACK splits the graph into.
  - PReLU op, TFLite min..max ranges (what a plain conversion gives);
  - PReLU op, ranges clipped for least squared error (converters/calibration.py, "mse");
  - split PReLU (converters/sface_import.split_prelu: each convolution twice, once per sign),
    min..max;
  - split PReLU, mse;
  - channel ranges equalised (converters/equalize.py), split PReLU, mse: what
    scripts/build_default_bundle.py --model sface ships;
  - the same with biases corrected for weight rounding (converters/bias_correction.py);
  - the same as the shipped recipe with each convolution computed once (split_prelu's
    convolution_once).
Neither of the last two is shipped: bundles built with them (the second with bias correction too)
rejected more genuine pairs at the operating points (benchmarks/bundles.py; docs/measurements.md).
Chips are the set's own 112x112 aligned crops, resized; no detector runs.

Then the shipped model (edge_verify/models/face-sface-v1) against the fp32 port on the chips a
device makes: faces YuNet finds in the shared photos, in the group photos of scenes/ and in every
10th frame of the sample video (640x360, compressed), aligned to SFace's template as the device
does, and the 100 held-out celebrity chips shrunk to 28 px and enlarged again. The shipped model
was calibrated on the photos, scenes and sample video; the six liveness videos (every 15th frame)
are faces it has not seen. The video's faces lose the most to int8; the last row is the resnet29
bundle on the sample video's faces, for scale.

Last, what reaching 0.995 would cost (held-out celebrities, the same 28 px chips, the video faces;
ms per embedding, 1 thread): the shipped recipe; the same with the input shift and the first two
PReLU blocks (9 ops) left in float (``float_ops``), which no EdgeTPU maps (its first op would run on
the CPU, and with it everything after; benchmarks/sface_float_ops.py measures more of them on the
device's chips); and 16-bit activations (TFLite's 16x8 mode: no L2_NORMALIZATION kernel,
so the model ends before it and the output is normalised here), which XNNPACK does not run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    import cv2
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from converters.convert import _bias_corrected, _to_tflite
    from converters.equalize import equalize_activations
    from converters.sface_import import fetch_sface, import_sface, split_prelu
    from edge_verify.embedder import Embedder
    from edge_verify.sources import list_images, read_image

    files = [p for d in sorted((args.data / "faces_dev" / "celebs").iterdir()) for p in list_images(d)]

    def chips(paths):
        rgb = [cv2.cvtColor(cv2.resize(read_image(p), (112, 112)), cv2.COLOR_BGR2RGB) for p in paths]
        return np.stack(rgb).astype(np.float32)

    calibration, held = chips(files[::8][:300]), chips(files[3::8][:100])
    path = fetch_sface()
    equalised_prelu = import_sface(path, decompose=False)
    equalize_activations(equalised_prelu, calibration)
    equalised = split_prelu(equalised_prelu)
    ports = (
        ("PReLU op", import_sface(path, decompose=False), ("minmax", "mse")),
        ("split PReLU", import_sface(path), ("minmax", "mse")),
        ("equalised", equalised, ("mse",)),
        ("+ bias corr.", _bias_corrected(equalised, calibration)[0], ("mse",)),
        ("conv once", split_prelu(equalised_prelu, convolution_once=True), ("mse",)),
    )
    reference = equalised.predict(held, verbose=0)  # the same function as every port (bias corrections aside)
    print(f"{'model':<12} {'ranges':<7} {'cos mean':>8} {'cos min':>8} {'ms/embed':>9} {'pieces':>6}")
    for label, model, range_methods in ports:
        with tempfile.TemporaryDirectory() as tmp:
            saved = Path(tmp) / "saved"
            model.export(str(saved), verbose=False, input_signature=[tf.TensorSpec((1, 112, 112, 3), tf.float32)])
            for ranges in range_methods:
                tflite = Path(tmp) / f"{ranges}.tflite"
                content = _to_tflite(saved, "int8", calibration, "int8", ranges)
                tflite.write_bytes(content)
                embedder = Embedder(tflite, threads=1)
                cosine = np.sum(embedder.embed(held) * reference, axis=1)
                times = []
                for _ in range(30):
                    t = time.perf_counter()
                    embedder.embed(held[:1])
                    times.append(time.perf_counter() - t)
                interpreter = Interpreter(model_path=str(tflite), num_threads=1)
                interpreter.allocate_tensors()
                pieces = sum(op["op_name"] == "DELEGATE" for op in interpreter._get_ops_details())
                print(
                    f"{label:<12} {ranges:<7} {cosine.mean():>8.4f}"
                    f" {cosine.min():>8.4f} {1000 * statistics.median(times):>9.1f} {pieces:>6}",
                    flush=True,
                )
                if label == "equalised":
                    shipped = content
    # the equalised split port (the same function as the PReLU graph) is the fp32 reference from here on
    small, video = shipped_on_device_chips(args.data, held, equalised)
    alternatives(equalised, shipped, calibration, {"held-out": held, "28 px": small, "video": video})


def device_frames(data: Path) -> dict[str, list[np.ndarray]]:
    """The frames whose faces measure int8 on a device's chips: the shared photos, every 10th frame
    of the sample video, every 15th of the six liveness videos."""
    from edge_verify.sources import list_images, open_source, read_image

    frames = {"photos": [read_image(p) for d in sorted((data / "faces").iterdir()) for p in list_images(d)]}
    with open_source(str(data / "video" / "short_hamilton_clip.mp4")) as video:
        frames["video"] = [f.image for f in video if f.index % 10 == 0]
    frames["liveness"] = []
    for clip in sorted((data / "video" / "liveness").glob("*.mp4")):
        with open_source(str(clip)) as video:
            frames["liveness"] += [f.image for f in video if f.index % 15 == 0]
    return frames


def device_chips(verifier, frames) -> list[list[np.ndarray]]:
    """Every face of at least 40 px, detected and aligned by the device pipeline (``align``'s chips)."""
    return [verifier.align(f, face) for f in frames for face in verifier.detect(f) if face.size >= 40]


def shipped_on_device_chips(data: Path, held: np.ndarray, reference_model) -> tuple[np.ndarray, np.ndarray]:
    """Mean and lowest cosine, shipped int8 vs the fp32 port, on real device chips and small faces;
    returns the 28 px chips and the video's chips."""
    import cv2

    from converters.dlib_import import find_dlib_face_model, import_dlib_face_model
    from edge_verify.pipeline import Verifier, VerifierOptions
    from edge_verify.sources import list_images, read_image

    def first_chips(verifier: Verifier, frames) -> np.ndarray:
        return np.stack([chips[0] for chips in device_chips(verifier, frames)]).astype(np.float32)

    def row(name: str, verifier: Verifier, chips: np.ndarray, reference) -> None:
        cosine = np.sum(verifier.embed_chips([[c] for c in chips]) * reference.predict(chips, verbose=0), axis=1)
        print(f"{name:<32} {len(chips):>4} {cosine.mean():>8.4f} {cosine.min():>8.4f}", flush=True)

    sface = Verifier(VerifierOptions(bundle="sface", use_edgetpu=False))
    frames = device_frames(data)
    small = [cv2.resize(cv2.resize(c, (28, 28), interpolation=cv2.INTER_AREA), (112, 112)) for c in held]
    print(f"\nshipped face-sface-v1 int8 vs fp32 port\n{'chips':<32} {'n':>4} {'cos mean':>8} {'cos min':>8}")
    row("shared photos (faces/)", sface, first_chips(sface, frames["photos"]), reference_model)
    row(
        "group photos (scenes/)",
        sface,
        first_chips(sface, map(read_image, list_images(data / "scenes"))),
        reference_model,
    )
    video = first_chips(sface, frames["video"])
    row("sample video, every 10th frame", sface, video, reference_model)
    row("liveness videos, every 15th", sface, first_chips(sface, frames["liveness"]), reference_model)
    small_chips = np.stack(small).astype(np.float32)
    row("held-out celebrities at 28 px", sface, small_chips, reference_model)
    resnet = Verifier(VerifierOptions(bundle="resnet29", use_edgetpu=False))
    dlib_fp32 = import_dlib_face_model(find_dlib_face_model())
    row("video, resnet29 int8 vs fp32", resnet, first_chips(resnet, frames["video"]), dlib_fp32)
    return small_chips, video


FLOAT_STEM = 9  # ops: the input shift and the first two PReLU blocks


def alternatives(model, shipped: bytes, calibration: np.ndarray, sets: dict[str, np.ndarray]) -> None:
    """Mean cosine to fp32 per set and ms per embedding: ``shipped`` (the shipped recipe's int8
    model of ``model``), the same with a float stem, 16x8."""
    import keras
    import tensorflow as tf

    from converters.convert import _to_tflite
    from edge_verify.embedder import Embedder

    references = {name: model.predict(chips, verbose=0) for name, chips in sets.items()}
    signature = [tf.TensorSpec((1, 112, 112, 3), tf.float32)]
    print(f"\nwhat 0.995 would cost\n{'conversion':<28} " + " ".join(f"{n:>9}" for n in sets) + f" {'ms/embed':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        saved, unnormalised = Path(tmp) / "saved", Path(tmp) / "unnormalised"
        model.export(str(saved), verbose=False, input_signature=signature)
        before_l2 = keras.Model(model.input, model.layers[-2].output)
        before_l2.export(str(unnormalised), verbose=False, input_signature=signature)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(unnormalised))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x[None]] for x in calibration)
        ops = tf.lite.OpsSet
        converter.target_spec.supported_ops = [ops.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        conversions = {
            "int8, mse (shipped recipe)": shipped,
            f"int8, first {FLOAT_STEM} ops float": _to_tflite(
                saved, "int8", calibration, "int8", "mse", float_ops=FLOAT_STEM
            ),
            "16x8 (int16 activations)": converter.convert(),
        }
        for label, content in conversions.items():
            tflite = Path(tmp) / "model.tflite"
            tflite.write_bytes(content)
            embedder, timed = Embedder(tflite), Embedder(tflite, threads=1)
            cosines = []
            for name, chips in sets.items():
                out = embedder.embed(chips)
                out /= np.linalg.norm(out, axis=1, keepdims=True)
                cosines.append(float(np.mean(np.sum(out * references[name], axis=1))))
            times = []
            one = next(iter(sets.values()))[:1]
            for _ in range(5):
                t = time.perf_counter()
                timed.embed(one)
                times.append(time.perf_counter() - t)
            print(f"{label:<28} " + " ".join(f"{c:>9.4f}" for c in cosines) + f" {1000 * min(times):>9.1f}", flush=True)


if __name__ == "__main__":
    main()
