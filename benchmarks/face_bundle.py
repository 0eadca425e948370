"""The dlib ResNet's face bundle (resnet29) vs dlib's own pipeline on ../shared/data/faces: accuracy, latency, size.

    python benchmarks/face_bundle.py [--data ../shared/data] [--repeat 20]

A second, larger labelled set is built from the sample video without any face model, on the faces
that pass the device's quality gate: a face followed by box overlap (IoU >= 0.5 between
consecutive frames, tracks cut at scene changes) is the same person (genuine pairs, at least 15
frames apart); the clip (a Hamilton performance at the White House) certainly shows neither Kit
Harington nor Rose Leslie, so every video face against each of their photos is an impostor pair.
dlib's descriptor runs on the same detections (its 5-point shape predictor inside our YuNet box,
then its own get_face_chip).

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


def summary(g: np.ndarray, i: np.ndarray) -> dict:
    """Score ranges, separation, EER and TAR@FAR 1e-2 of genuine and impostor scores."""
    from edge_verify.metrics import verification_report

    r = verification_report(g, i)
    return {
        "genuine": (g.min(), g.max()),
        "impostor": (i.min(), i.max()),
        "eer": r.eer,
        "tar@1e-2": r.tar_at_far_1e2,
        "separated": g.min() > i.max(),
        "pairs": (len(g), len(i)),
    }


def ranges(embeddings: np.ndarray, labels: np.ndarray) -> dict:
    from edge_verify.metrics import pair_scores

    g, i = pair_scores(embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True), labels)
    return summary(g, i)


def _iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    return w * h / (aw * ah + bw * bh - w * h)


def video_faces(video: Path, detector, keep=None):
    """Faces of the video (frame index, frame, face) and their track ids (see the docstring)."""
    import cv2

    from edge_verify.sources import open_source

    faces, tracks, previous, thumb, next_track = [], [], [], None, 0
    with open_source(str(video)) as source:
        for frame in source:
            small = cv2.resize(cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY), (32, 18)).astype(np.float32)
            if thumb is not None and np.abs(small - thumb).mean() > 20:
                previous = []  # scene cut: no track continues across it
            thumb = small
            current = []
            found = [f for f in detector.detect(frame.image) if f.size >= 40]
            for face in (f for f in found if keep is None or keep(frame.image, f)):
                match = max(previous, key=lambda p: _iou(p[0].box, face.box), default=None)
                if match is not None and _iou(match[0].box, face.box) >= 0.5:
                    track = match[1]
                    previous.remove(match)
                else:
                    track, next_track = next_track, next_track + 1
                current.append((face, track))
                faces.append((frame.index, frame.image, face))
                tracks.append(track)
            previous = current
    return faces, np.array(tracks)


def video_pairs(frames: np.ndarray, tracks: np.ndarray, min_gap: int = 15):
    iu = np.triu_indices(len(tracks), k=1)
    genuine = (tracks[iu[0]] == tracks[iu[1]]) & (np.abs(frames[iu[0]] - frames[iu[1]]) >= min_gap)
    return iu[0][genuine], iu[1][genuine]


def pair_report(video: np.ndarray, genuine, strangers: np.ndarray) -> dict:
    """Genuine: same-track video pairs; impostor: every video face against every stranger photo."""
    e = video / np.linalg.norm(video, axis=1, keepdims=True)
    st = strangers / np.linalg.norm(strangers, axis=1, keepdims=True)
    g = np.sum(e[genuine[0]] * e[genuine[1]], axis=1)
    i = (e @ st.T).ravel()
    return summary(g, i)


def print_table(rows: dict) -> None:
    print(f"{'pipeline':<24} {'genuine range':>17} {'impostor range':>17} {'separated':>9} {'EER':>6} {'TAR@1e-2':>8}")
    for name, r in rows.items():
        print(
            f"{name:<24} {r['genuine'][0]:>8.4f}-{r['genuine'][1]:.4f} {r['impostor'][0]:>8.4f}-{r['impostor'][1]:.4f}"
            f" {str(r['separated']):>9} {100 * r['eer']:>5.2f}% {100 * r['tar@1e-2']:>7.2f}%"
        )


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
    from edge_verify.quality import QualityOptions, assess
    from edge_verify.sources import list_images, read_image

    dat = find_dlib_face_model()
    models = dat.parent
    bundle = load_bundle("resnet29")  # the dlib ResNet's bundle (the default one is fused)
    pre = bundle.preprocess
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

    # the video-derived pairs
    video = args.data / "video" / "short_hamilton_clip.mp4"
    all_faces, _ = video_faces(video, detector)

    # the device decides only on faces that pass its quality gate (dark, blurred audience faces do not)
    def gate(img, face) -> bool:  # as the device applies it (pipeline.Verifier.gate): head turn included
        return assess(align_face(img, face, pre), face.size, QualityOptions(), pre.template, face.landmarks).ok

    faces, tracks = video_faces(video, detector, keep=gate)
    genuine = video_pairs(np.array([f[0] for f in faces]), tracks)
    video_chips = np.stack([align_face(img, face, bundle.preprocess) for _, img, face in faces])
    dlib_video = []
    for _, img, face in faces:
        rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        x, y, w, h = (int(round(v)) for v in face.box)
        chip = dlib.get_face_chip(rgb, shape(rgb, dlib.rectangle(x, y, x + w, y + h)), size=150, padding=0.25)
        dlib_video.append(np.array(reference.compute_face_descriptor(chip)))
    strangers = np.isin(labels, [i for i, f in enumerate(folders) if f.name in ("kit_harington", "rose_leslie")])
    dlib_strangers = np.isin(dlib_labels, np.flatnonzero([f.name in ("kit_harington", "rose_leslie") for f in folders]))
    print(
        f"\nvideo: {len(faces)} of {len(all_faces)} faces pass the quality gate, {len(set(tracks))} tracks, "
        f"{len(genuine[0])} genuine pairs (same track), {len(faces) * int(strangers.sum())} impostor pairs "
        f"(video face x {int(strangers.sum())} photos of Kit Harington / Rose Leslie)"
    )
    video_rows = {
        "ours int8 (TFLite)": pair_report(int8.embed(video_chips), genuine, int8.embed(chips[strangers])),
        "ours fp32 (Keras port)": pair_report(
            keras_model.predict(video_chips.astype(np.float32), verbose=0),
            genuine,
            keras_model.predict(chips[strangers].astype(np.float32), verbose=0),
        ),
        "dlib pipeline": pair_report(np.stack(dlib_video), genuine, np.stack(dlib_desc)[dlib_strangers]),
    }
    print_table(video_rows)
    change = 100 * (video_rows["ours int8 (TFLite)"]["eer"] - video_rows["ours fp32 (Keras port)"]["eer"])
    print(f"int8 vs fp32 EER change on the video pairs: {change:+.2f} points")

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
