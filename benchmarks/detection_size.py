"""Detection on large photos: a scaled search plus full-resolution landmarks, against searching
the whole frame at full size (the baseline, measured in the same run).

    python benchmarks/detection_size.py [--data ../shared/data]

Prints:
1. the shared face photos (16, up to 2333x1434): ms per photo (detect, align, embed), FRR and FAR
   at the default operating point over every pair, mean genuine and highest impostor score, and
   how close each photo's embedding is to the baseline's;
2. faces found in the shared scene photos and frames/s plus faces embedded on the sample video
   (640x360: at or below the working size, so both ways search the same frame);
3. (with faces_dev) the same on up to 8 photos of each of 40 celebrities, upscaled 8x to 1536x1536;
4. cold `edge-verify compare obama_1.jpg obama_3.jpg --detect-size 0|640` in a fresh interpreter:
   wall time and peak memory (RSS), both ways. 640 is the default (`--detect-size 0`: full size).
   What varies between machines: the times (these are one x86-64 core pair); the ratios and the
   accuracy figures should not.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_verify.bundle import load_bundle  # noqa: E402
from edge_verify.detect import WORKING_SIDE  # noqa: E402
from edge_verify.errors import EdgeVerifyError  # noqa: E402
from edge_verify.metrics import pair_scores  # noqa: E402
from edge_verify.pipeline import Verifier, VerifierOptions  # noqa: E402
from edge_verify.sources import list_images, open_source, read_image  # noqa: E402

# Peak RSS of a command, measured by a small launcher: a child forked from this (large) process
# would count this process's memory in its own peak.
PEAK = (
    "import os, subprocess, sys; p = subprocess.Popen(sys.argv[1:]);"
    "_, _, usage = os.wait4(p.pid, 0); print(usage.ru_maxrss, file=sys.stderr)"
)
WAYS = {"full size (baseline)": None, f"search at {WORKING_SIDE} + refine": WORKING_SIDE}


def photos(data: Path) -> None:
    files = [p for d in sorted((data / "faces").iterdir()) if d.is_dir() for p in list_images(d)]
    images = [read_image(p) for p in files]
    labels = np.array([p.parent.name for p in files])
    threshold = load_bundle().operating_point().threshold
    print(f"1. {len(files)} shared face photos, default point {threshold:.4f}")
    reference = None
    for label, side in WAYS.items():
        verifier = Verifier(VerifierOptions(detect_side=side))
        start = time.perf_counter()
        emb = np.stack(
            [verifier.observe_single(im, str(p), largest=True).embedding for im, p in zip(images, files, strict=True)]
        )
        ms = 1000 * (time.perf_counter() - start) / len(files)
        genuine, impostor = pair_scores(emb, labels)
        line = (
            f"   {label:<24} {ms:6.1f} ms/photo  FRR {np.sum(genuine < threshold)}/{len(genuine)}"
            f"  FAR {np.sum(impostor >= threshold)}/{len(impostor)}  mean genuine {genuine.mean():.4f}"
            f"  highest impostor {impostor.max():.4f}"
        )
        if reference is None:
            reference, base_ms = emb, ms
        else:
            cos = np.sum(emb * reference, axis=1)
            line += f"  ({base_ms / ms:.1f}x faster; cosine to baseline min {cos.min():.4f} mean {cos.mean():.4f})"
        print(line)


def scenes_and_video(data: Path) -> None:
    print("2. faces found")
    scenes = list_images(data / "scenes")
    with open_source(str(data / "video" / "short_hamilton_clip.mp4")) as video:
        frames = [f.image for f in video]
    for label, side in WAYS.items():
        verifier = Verifier(VerifierOptions(detect_side=side))
        found = [len(verifier.detect(read_image(p))) for p in scenes]
        start = time.perf_counter()
        embedded = sum(o.embedding is not None for f in frames for o in verifier.observe(f))
        fps = len(frames) / (time.perf_counter() - start)
        print(f"   {label:<24} scenes {found}  video: {embedded} faces embedded in {len(frames)} frames, {fps:.1f} fps")


def upscaled_celebrities(data: Path, people: int = 40, per_person: int = 8) -> None:
    """Big photos with labels: celebrity chips (padded by 40 px) upscaled 8x to 1536x1536."""
    import cv2

    folders = sorted((data / "faces_dev" / "celebs").iterdir())[:people]
    files = [p for d in folders for p in list_images(d)[:per_person]]
    images = [
        cv2.resize(cv2.copyMakeBorder(read_image(p), 40, 40, 40, 40, cv2.BORDER_REPLICATE), None, fx=8, fy=8)
        for p in files
    ]
    labels = np.array([p.parent.name for p in files])
    threshold = load_bundle().operating_point().threshold
    print(f"3. {len(files)} celebrity photos of {people} people upscaled to {images[0].shape[1]}x{images[0].shape[0]}")
    for label, side in WAYS.items():
        verifier = Verifier(VerifierOptions(detect_side=side))
        start = time.perf_counter()
        emb, kept = [], []
        for image, path, identity in zip(images, files, labels, strict=True):
            try:
                emb.append(verifier.observe_single(image, str(path), largest=True).embedding)
                kept.append(identity)
            except EdgeVerifyError:
                pass
        ms = 1000 * (time.perf_counter() - start) / len(files)
        genuine, impostor = pair_scores(np.stack(emb), np.array(kept))
        print(
            f"   {label:<24} {ms:6.1f} ms/photo  usable {len(kept)}  FRR {np.sum(genuine < threshold)}/{len(genuine)}"
            f"  FAR {np.sum(impostor >= threshold)}/{len(impostor)}  highest impostor {impostor.max():.4f}"
        )


def cold_compare(data: Path) -> None:
    a, b = data / "faces" / "obama" / "obama_1.jpg", data / "faces" / "obama" / "obama_3.jpg"
    print(f"4. cold compare {a.name} ({read_image(a).shape[1]}x{read_image(a).shape[0]}) "
          f"{b.name} ({read_image(b).shape[1]}x{read_image(b).shape[0]}), best of 3")  # fmt: skip
    for label, side in WAYS.items():
        runs = []
        for _ in range(3):
            start = time.perf_counter()
            size = ["--detect-size", str(side or 0)]
            command = [sys.executable, "-m", "edge_verify.cli", "compare", str(a), str(b), *size]
            r = subprocess.run([sys.executable, "-c", PEAK, *command], cwd=ROOT, capture_output=True, text=True)
            runs.append((time.perf_counter() - start, int(r.stderr.split()[-1]) / 1024, r.stdout.strip()))
        wall, rss, verdict = min(runs)
        print(f"   {label:<24} {wall:.2f} s, peak RSS {rss:.0f} MB: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    if not (args.data / "faces").is_dir():
        sys.exit(f"{args.data}: the shared face photos are needed")
    photos(args.data)
    scenes_and_video(args.data)
    if (args.data / "faces_dev" / "celebs").is_dir():
        upscaled_celebrities(args.data)
    cold_compare(args.data)


if __name__ == "__main__":
    main()
