"""Default face bundle vs dlib's own pipeline on ../shared/data/faces: accuracy, latency, size.

    python benchmarks/face_bundle.py [--data ../shared/data] [--repeat 20]

Prints, for our int8 TFLite pipeline (YuNet + similarity alignment + int8 ResNet), our fp32 port
(the Keras model the int8 one was converted from) and dlib's pipeline (HOG detector + 5-point
shape predictor + compute_face_descriptor): same/different score ranges, EER, TAR@FAR, and
per-embedding latency on the same aligned chips, measured side by side in this run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def ranges(embeddings: np.ndarray, labels: np.ndarray) -> dict:
    from edge_verify.metrics import pair_scores, verification_report

    g, i = pair_scores(embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True), labels)
    r = verification_report(g, i)
    return {
        "genuine": (g.min(), g.max()),
        "impostor": (i.min(), i.max()),
        "eer": r.eer,
        "tar@1e-2": r.tar_at_far_1e2,
        "separated": g.min() > i.max(),
        "pairs": (len(g), len(i)),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    import cv2
    import dlib
    import keras

    from converters.dlib_import import find_dlib_face_model, import_dlib_face_model
    from edge_verify.align import align_face
    from edge_verify.bundle import load_bundle
    from edge_verify.detect import FaceDetector
    from edge_verify.embedder import Embedder
    from edge_verify.sources import list_images, read_image

    dat = find_dlib_face_model()
    models = dat.parent
    bundle = load_bundle()
    detector = FaceDetector()
    hog = dlib.get_frontal_face_detector()
    shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    reference = dlib.face_recognition_model_v1(str(dat))

    ours_chips, ours_labels, dlib_desc, dlib_labels, dlib_chips = [], [], [], [], []
    folders = sorted(p for p in (args.data / "faces").iterdir() if p.is_dir())
    for label, folder in enumerate(folders):
        for path in list_images(folder):
            bgr = read_image(path)
            faces = [f for f in detector.detect(bgr) if f.size >= 40]
            if faces:
                ours_chips.append(align_face(bgr, faces[0], bundle.preprocess))
                ours_labels.append(label)
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            rects = hog(rgb, 1)
            if rects:
                chip = dlib.get_face_chip(rgb, shape(rgb, rects[0]), size=150, padding=0.25)
                dlib_chips.append(chip)
                dlib_desc.append(np.array(reference.compute_face_descriptor(chip)))
                dlib_labels.append(label)
    chips = np.stack(ours_chips)
    labels = np.array(ours_labels)
    int8 = Embedder.for_bundle(bundle, use_edgetpu=False)
    keras_model = import_dlib_face_model(dat)
    rows = {
        "ours int8 (TFLite)": ranges(int8.embed(chips), labels),
        "ours fp32 (Keras port)": ranges(keras_model.predict(chips.astype(np.float32), verbose=0), labels),
        "dlib pipeline": ranges(np.stack(dlib_desc), np.array(dlib_labels)),
    }
    print(
        f"faces: ours {len(chips)} / dlib {len(dlib_desc)} of {sum(len(list_images(f)) for f in folders)} photos, "
        f"{len(folders)} identities"
    )
    print(f"{'pipeline':<24} {'genuine range':>17} {'impostor range':>17} {'separated':>9} {'EER':>6} {'TAR@1e-2':>8}")
    for name, r in rows.items():
        print(
            f"{name:<24} {r['genuine'][0]:>8.4f}-{r['genuine'][1]:.4f} {r['impostor'][0]:>8.4f}-{r['impostor'][1]:.4f}"
            f" {str(r['separated']):>9} {100 * r['eer']:>5.2f}% {100 * r['tar@1e-2']:>7.2f}%"
        )
    print(f"bundle threshold {bundle.threshold.value:.4f} ({bundle.threshold.source})")
    ref = keras_model.predict(chips.astype(np.float32), verbose=0)
    cos = np.sum(ref * int8.embed(chips), axis=1)
    print(f"int8 vs fp32 Keras port on {len(chips)} real chips: mean cosine {cos.mean():.5f}, min {cos.min():.5f}")

    # latency: the same chips, one at a time, alternating so load changes hit both equally
    threads = os.cpu_count()
    same = np.stack(dlib_chips[: min(8, len(dlib_chips))])
    t_ours, t_dlib = [], []
    int8.embed(same[:1])
    reference.compute_face_descriptor(same[0])
    for _ in range(args.repeat):
        for chip in same:
            t0 = time.perf_counter()
            int8.embed(chip[None])
            t1 = time.perf_counter()
            reference.compute_face_descriptor(chip)
            t2 = time.perf_counter()
            t_ours.append(t1 - t0)
            t_dlib.append(t2 - t1)
    mo, md = 1000 * np.median(t_ours), 1000 * np.median(t_dlib)
    print(
        f"latency per embedding ({threads} threads, {len(t_ours)} runs, median): ours int8 {mo:.2f} ms, "
        f"dlib {md:.2f} ms -> ours is {md / mo:.1f}x faster"
    )
    sizes = {"ours int8 .tflite": bundle.model_path("int8").stat().st_size, "dlib .dat (float32)": dat.stat().st_size}
    print("model size: " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sizes.items()))
    del keras


if __name__ == "__main__":
    main()
