"""What int8 costs SFace, and what the importer and converter do about it.

    python benchmarks/sface_int8.py [--data ../shared/data]

SFace's published weights are int8 already (blocks of 16 per channel); our int8 model quantises
them again (per channel, batch norm folded in) and quantises every activation. Four conversions of
the same Keras port, each calibrated on 300 chips of faces_dev/celebs and measured on 100 other
chips of it (every 8th image, offset 3): mean and lowest cosine between the int8 and the fp32
embedding, the time of one int8 embedding (LiteRT, 1 thread, median of 30) and how many pieces
XNNPACK splits the graph into.
  - PReLU op, TFLite min..max ranges (what a plain conversion gives);
  - PReLU op, ranges clipped for least squared error (converters/calibration.py, "mse");
  - split PReLU (converters/sface_import.split_prelu), min..max;
  - split PReLU, mse (what scripts/build_default_bundle.py --model sface ships).
Chips are the set's own 112x112 aligned crops, resized; no detector runs.

Then the shipped model (edge_verify/models/face-sface-v1) against the fp32 port on the chips a
device makes: faces YuNet finds in the shared photos, in the group photos of scenes/ and in every
10th frame of the sample video (640x360, compressed), aligned to SFace's template as the device
does, and the 100 held-out celebrity chips shrunk to 28 px and enlarged again. The video's faces
lose the most to int8; the last row is the resnet29 bundle on the same video faces, for scale.
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

    from converters.convert import _to_tflite
    from converters.sface_import import fetch_sface, import_sface
    from edge_verify.embedder import Embedder
    from edge_verify.sources import list_images, read_image

    files = [p for d in sorted((args.data / "faces_dev" / "celebs").iterdir()) for p in list_images(d)]

    def chips(paths):
        rgb = [cv2.cvtColor(cv2.resize(read_image(p), (112, 112)), cv2.COLOR_BGR2RGB) for p in paths]
        return np.stack(rgb).astype(np.float32)

    calibration, held = chips(files[::8][:300]), chips(files[3::8][:100])
    path = fetch_sface()
    print(f"{'model':<12} {'ranges':<7} {'cos mean':>8} {'cos min':>8} {'ms/embed':>9} {'pieces':>6}")
    for decompose in (False, True):
        model = import_sface(path, decompose=decompose)
        reference = model.predict(held, verbose=0)
        with tempfile.TemporaryDirectory() as tmp:
            saved = Path(tmp) / "saved"
            model.export(str(saved), verbose=False, input_signature=[tf.TensorSpec((1, 112, 112, 3), tf.float32)])
            for ranges in ("minmax", "mse"):
                tflite = Path(tmp) / f"{ranges}.tflite"
                tflite.write_bytes(_to_tflite(saved, "int8", calibration, "int8", ranges))
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
                    f"{'split PReLU' if decompose else 'PReLU op':<12} {ranges:<7} {cosine.mean():>8.4f}"
                    f" {cosine.min():>8.4f} {1000 * statistics.median(times):>9.1f} {pieces:>6}",
                    flush=True,
                )
    shipped_on_device_chips(args.data, held, model)  # the split port: the same function as the PReLU graph


def shipped_on_device_chips(data: Path, held: np.ndarray, reference_model) -> None:
    """Mean and lowest cosine, shipped int8 vs the fp32 port, on real device chips and small faces."""
    import cv2

    from converters.dlib_import import find_dlib_face_model, import_dlib_face_model
    from edge_verify.pipeline import Verifier, VerifierOptions
    from edge_verify.sources import list_images, open_source, read_image

    def device_chips(verifier: Verifier, frames) -> np.ndarray:
        """Every face of at least 40 px, detected and aligned by the device pipeline."""
        faces = ((f, face) for f in frames for face in verifier.detect(f) if face.size >= 40)
        return np.stack([verifier.align(f, face)[0] for f, face in faces]).astype(np.float32)

    def row(name: str, verifier: Verifier, chips: np.ndarray, reference) -> None:
        cosine = np.sum(verifier.embed_chips([[c] for c in chips]) * reference.predict(chips, verbose=0), axis=1)
        print(f"{name:<32} {len(chips):>4} {cosine.mean():>8.4f} {cosine.min():>8.4f}", flush=True)

    sface = Verifier(VerifierOptions(bundle="sface", use_edgetpu=False))
    with open_source(str(data / "video" / "short_hamilton_clip.mp4")) as video:
        video_frames = [f.image for f in video if f.index % 10 == 0]
    photos = [read_image(p) for d in sorted((data / "faces").iterdir()) for p in list_images(d)]
    small = [cv2.resize(cv2.resize(c, (28, 28), interpolation=cv2.INTER_AREA), (112, 112)) for c in held]
    print(f"\nshipped face-sface-v1 int8 vs fp32 port\n{'chips':<32} {'n':>4} {'cos mean':>8} {'cos min':>8}")
    row("shared photos (faces/)", sface, device_chips(sface, photos), reference_model)
    row(
        "group photos (scenes/)",
        sface,
        device_chips(sface, map(read_image, list_images(data / "scenes"))),
        reference_model,
    )
    row("sample video, every 10th frame", sface, device_chips(sface, video_frames), reference_model)
    row("held-out celebrities at 28 px", sface, np.stack(small).astype(np.float32), reference_model)
    resnet = Verifier(VerifierOptions(bundle="resnet29", use_edgetpu=False))
    dlib_fp32 = import_dlib_face_model(find_dlib_face_model())
    row("video, resnet29 int8 vs fp32", resnet, device_chips(resnet, video_frames), dlib_fp32)


if __name__ == "__main__":
    main()
