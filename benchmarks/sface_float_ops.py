"""What it takes to bring the shipped SFace's int8 model within 0.995 of fp32 on a device's chips.

    python benchmarks/sface_float_ops.py [--data ../shared/data]

The shipped recipe (scripts/build_default_bundle.py --model sface: the same calibration chips, the
same equalised port, the same ConvertOptions) converted again with its first N ops left in float
(``ConvertOptions.float_ops``, ``edge-verify convert --float-ops N``), N = 0 (the shipped model; the
script says whether it reproduced it byte for byte), 9 (the input shift and the first two PReLU
blocks), 20 (and the next one and a half) and 39 (the first third). For each: mean and lowest
cosine between the int8 and the fp32 model's embeddings of the same chips, made by the device
pipeline (YuNet, SFace's alignment): every image of the development sets that the operating points
use (faces_dev/celebs, faces_dev/yaleb; quality gate as there), the faces of at least 40 px in the
shared photos, in every 10th frame of the sample video and every 15th frame of the six liveness
videos; then one int8 embedding's time (LiteRT, 1 thread, median of 50) and where the EdgeTPU
static check stops. Takes about 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "benchmarks"))

FLOAT_OPS = (0, 9, 20, 39)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    from build_default_bundle import SFACE_OPTIONS, calibration_chips, sface_port, sface_preprocess
    from sface_int8 import device_chips, device_frames

    from converters.convert import convert
    from converters.operating_points import load_dev_sets
    from edge_verify.bundle import bundle_path
    from edge_verify.embedder import Embedder
    from edge_verify.pipeline import Verifier, VerifierOptions

    frames = device_frames(args.data)

    def embeddings(bundle: Path, variant: str) -> dict[str, np.ndarray]:
        verifier = Verifier(VerifierOptions(bundle=bundle, variant=variant, use_edgetpu=False, threads=2))
        out = {s.name.split("/")[-1]: (s.embeddings, s.files) for s in load_dev_sets(verifier, args.data)[:2]}
        for name, images in frames.items():
            out[name] = (verifier.embed_chips(device_chips(verifier, images)), None)
        return out

    pre = sface_preprocess()
    calib = calibration_chips(args.data, pre)
    model = sface_port(calib)
    shipped = (bundle_path("sface") / "model_int8.tflite").read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for n in FLOAT_OPS:
            out = Path(tmp) / f"float{n}"
            variants = ("fp32", "int8") if n == 0 else ("int8",)
            options = dataclasses.replace(SFACE_OPTIONS, variants=variants, float_ops=n)
            meta = convert(model, calib, out, options, preprocess=pre)
            if n == 0:
                same = (out / "model_int8.tflite").read_bytes() == shipped
                print(f"N = 0 reproduces the shipped model_int8.tflite byte for byte: {'yes' if same else 'NO'}")
                reference = embeddings(out, "fp32")
            int8 = embeddings(out, "int8")
            cosines = {}
            for name, (ref, files) in reference.items():
                emb, int8_files = int8[name]
                assert files == int8_files and len(emb) == len(ref), name  # the same faces passed the same gate
                c = np.sum(emb * ref, axis=1)
                cosines[name] = (float(c.mean()), float(c.min()), len(c))
            timed, chip = Embedder(out / "model_int8.tflite", threads=1), calib[:1]
            times = []
            for _ in range(50):
                t = time.perf_counter()
                timed.embed(chip)
                times.append(time.perf_counter() - t)
            first = meta["report"]["edgetpu"]["first_unmapped"]
            edgetpu = "all mapped" if first is None else f"stops at op #{first['index']} {first['op']}"
            rows.append((n, cosines, 1000 * statistics.median(times), edgetpu))
    names = list(rows[0][1])
    print("\nint8 vs fp32 on device chips: mean / lowest cosine (faces)")
    print(
        f"{'float ops':>9} "
        + " ".join(f"{n + ' (' + str(rows[0][1][n][2]) + ')':>18}" for n in names)
        + "  ms/embed  EdgeTPU"
    )
    for n, cosines, ms, edgetpu in rows:
        cells = " ".join(f"{cosines[k][0]:>9.5f} / {cosines[k][1]:.3f}" for k in names)
        print(f"{n:>9} {cells} {ms:>9.1f}  {edgetpu}", flush=True)


if __name__ == "__main__":
    main()
