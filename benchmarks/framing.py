"""The border cue (edge_verify/framing.py): how often a straight edge runs beyond three or more sides of
the face, per video and per set, what the liveness check decides from it, and its time per frame.

    python benchmarks/framing.py [--data ../shared/data] [--step 3] [--screens 100]

A video fails the cue when at least ``LivenessOptions.max_framed_share`` of its frames with a face
(every ``--step``-th frame, largest face) show ``framed_sides`` or more sides, as a check does over
the frames its anti-spoofing model scores. Bona fide: the liveness videos and replay_dev/real;
attacks: the phone and monitor replays of replay_dev/replay, and ``--screens`` simulated phones and
monitors (tests/puppet_attacks.py) showing a packaged sample face. Time: median of 200 calls on a
640x480 frame, 1 thread, beside the face detector's on the same frame.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_verify.detect import FaceDetector  # noqa: E402
from edge_verify.framing import framing_sides  # noqa: E402
from edge_verify.liveness import LivenessOptions  # noqa: E402
from tests.conftest import SAMPLES  # noqa: E402
from tests.puppet_attacks import on_screen  # noqa: E402

OPTIONS = LivenessOptions()


def frames(path: Path, step: int):
    capture = cv2.VideoCapture(str(path))
    index = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            return
        if index % step == 0:
            if frame.shape[1] > 960:  # the kiosk's cameras deliver 640-wide frames
                frame = cv2.resize(frame, None, fx=640 / frame.shape[1], fy=640 / frame.shape[1])
            yield frame
        index += 1


def video_share(detector: FaceDetector, path: Path, step: int) -> tuple[int, int]:
    framed = measured = 0
    for frame in frames(path, step):
        faces = detector.detect(frame)
        if faces:
            framed += framing_sides(frame, faces[0].box) >= OPTIONS.framed_sides
            measured += 1
    return framed, measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--step", type=int, default=3)
    parser.add_argument("--screens", type=int, default=100)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    detector = FaceDetector()
    replay_dev = args.data / "antispoof" / "replay_dev"
    sets = {
        "liveness videos (bona fide)": sorted((args.data / "video" / "liveness").glob("*.mp4")),
        "replay_dev real (bona fide)": sorted(p for p in (replay_dev / "real").iterdir() if p.suffix != ".csv"),
        "replay_dev replay (attack)": sorted(p for p in (replay_dev / "replay").iterdir() if p.suffix != ".csv"),
    }
    print(
        f"a frame is framed with >= {OPTIONS.framed_sides} sides; a video fails the cue at >= "
        f"{OPTIONS.max_framed_share:.0%} framed frames (every {args.step}th frame)\n"
    )
    for name, videos in sets.items():
        failed, shares = 0, []
        for path in videos:
            framed, measured = video_share(detector, path, args.step)
            share = framed / max(measured, 1)
            shares.append(share)
            failed += measured > 0 and share >= OPTIONS.max_framed_share
            print(f"  {name.split(' (')[0]:18} {path.name[:44]:44} {framed:4d}/{measured:<4d} framed ({share:.0%})")
        print(f"{name}: {failed}/{len(videos)} fail the cue; framed share max {max(shares):.0%}\n")
    face = cv2.resize(cv2.imread(str(SAMPLES / "astronaut_check.jpg")), (640, 480))
    framed = found = 0
    for seed in range(args.screens):
        frame = on_screen(face, np.random.default_rng(seed))
        faces = detector.detect(frame)
        if faces:
            found += 1
            framed += framing_sides(frame, faces[0].box) >= OPTIONS.framed_sides
    print(f"simulated phones and monitors (one frame each): {framed}/{found} framed\n")
    faces = detector.detect(face)
    cue, detect = [], []
    for _ in range(200):
        t = time.perf_counter()
        framing_sides(face, faces[0].box)
        cue.append(time.perf_counter() - t)
        t = time.perf_counter()
        detector.detect(face)
        detect.append(time.perf_counter() - t)
    c, d = statistics.median(cue) * 1e3, statistics.median(detect) * 1e3
    print(
        f"time per frame, 640x480, 1 thread: border cue {c:.2f} ms, face detection {d:.2f} ms "
        f"(ratio {c / d:.2f}); the check runs the cue on every other scored frame"
    )


if __name__ == "__main__":
    main()
