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


if __name__ == "__main__":
    main()
