"""The packaged face bundles side by side: the dlib ResNet port, SFace, and the two fused.

    python benchmarks/bundles.py [--data ../shared/data] [--repeat 30]

For each bundle, through the device pipeline (YuNet, alignment, int8 model(s), quality gate), in one
run on this machine: EER and TAR at FAR 1e-3 and 1e-4 on faces_dev/celebs, faces_dev/yaleb, the
shared faces and the video-derived pairs (benchmarks/face_bundle.py: same-track faces of the sample
clip at least 15 frames apart are genuine; every clip face against every photo of the two people
certainly not in it is an impostor pair), then the time to align and embed one face (median of
--repeat, the same detections for every bundle; detection itself is shared and timed once).
When build/sface-bundle exists (scripts/build_default_bundle.py --model sface), SFace's fp32 model
is run too: what the int8 conversion costs. A TAR at a FAR the set cannot resolve (fewer than
3/FAR impostor pairs) is printed in brackets.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.face_bundle import video_faces, video_pairs  # noqa: E402
from converters.operating_points import DEV_SETS, embed_folder  # noqa: E402
from edge_verify.metrics import eer, rates, threshold_at_far  # noqa: E402
from edge_verify.pipeline import Verifier, VerifierOptions  # noqa: E402
from edge_verify.sources import read_image  # noqa: E402

BUNDLES = ("resnet29", "sface", "fused")
STRANGERS = ("kit_harington", "rose_leslie")  # certainly not in the sample clip
FARS = (1e-3, 1e-4)


def tar(genuine: np.ndarray, impostor: np.ndarray, far: float) -> str:
    accepted = rates(genuine, impostor, threshold_at_far(impostor, far))[0]
    text = f"{100 * accepted:.2f}%"
    return text if len(impostor) * far >= 3 else f"({text})"


def video_scores(verifier: Verifier, data: Path, strangers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    faces, tracks = video_faces(
        data / "video" / "short_hamilton_clip.mp4",
        verifier.detector,
        keep=lambda img, face: verifier.gate(verifier.align(img, face)[0], face).ok,
    )
    a, b = video_pairs(np.array([f[0] for f in faces]), tracks)
    e = verifier.embed_chips([verifier.align(img, face) for _, img, face in faces])
    return np.sum(e[a] * e[b], axis=1), (e @ strangers.T).ravel()


def face_time(verifier: Verifier, faces: list, repeat: int) -> float:
    """Median ms to align and embed one face."""
    times = []
    for _ in range(repeat):
        for image, face in faces:
            t = time.perf_counter()
            verifier.embed_chips([verifier.align(image, face)])
            times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    from tqdm import tqdm

    verifiers = {name: Verifier(VerifierOptions(bundle=name, use_edgetpu=False)) for name in BUNDLES}
    fp32_bundle = ROOT / "build" / "sface-bundle"
    if (fp32_bundle / "model_fp32.tflite").is_file():
        options = VerifierOptions(bundle=fp32_bundle, use_edgetpu=False, variant="fp32")
        verifiers["sface fp32 (host)"] = Verifier(options)
    sample = [read_image(p) for p in sorted((args.data / "faces").glob("*/*"))[:8]]
    detector = verifiers["resnet29"].detector
    t = time.perf_counter()
    faces = [(image, detector.detect(image)[0]) for image in sample]
    detect_ms = 1000 * (time.perf_counter() - t) / len(sample)

    rows = {}
    for name, verifier in verifiers.items():
        scores = {}
        for sub, pad in DEV_SETS:
            bar = partial(tqdm, desc=f"{name} {sub}", leave=False)
            dev = embed_folder(verifier, args.data / sub, pad, sub, bar)
            scores[sub] = dev.scores()
            if sub == "faces":
                strangers = dev.embeddings[np.isin(dev.labels, STRANGERS)]
        scores["video pairs"] = video_scores(verifier, args.data, strangers)
        rows[name] = (scores, face_time(verifier, faces, args.repeat))

    print(f"{'bundle':<18} {'set':<17} {'genuine':>8} {'impostor':>9} {'EER':>7} {'TAR@1e-3':>9} {'TAR@1e-4':>9}")
    for name, (scores, _) in rows.items():
        for sub, (g, i) in scores.items():
            print(
                f"{name:<18} {sub:<17} {len(g):>8} {len(i):>9} {100 * eer(g, i)[0]:>6.2f}%"
                + "".join(f" {tar(g, i, far):>9}" for far in FARS)
            )
    print(f"\ndetection (shared, YuNet on {len(sample)} photos of faces/): {detect_ms:.1f} ms per photo")
    base = rows["resnet29"][1]
    for name, (_, ms) in rows.items():
        print(f"{name:<18} align + embed one face: {ms:6.1f} ms  ({ms / base:.2f}x resnet29)")


if __name__ == "__main__":
    main()
