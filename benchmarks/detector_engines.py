"""Whole-loop frames/s with the face detector on LiteRT vs OpenCV's DNN module, in one run.

    python benchmarks/detector_engines.py [--data ../shared/data] [--rounds 3] [--frames 275]

The baseline is the detector this version replaced: ``cv2.FaceDetectorYN`` on the same YuNet model
(the packaged ONNX file), patched into ``FaceDetector.search`` for the baseline runs only. Each run
is ``edge-verify bench --json`` in a fresh process (detect, align, embed and match every face), on
the sample clip (640x360: detection searches the frame itself) and a 1280x720 talking-head video
(searched on a 640 copy, then refined). Runs alternate between the two detectors; the figures are
medians over ``--rounds``, and the ratio is LiteRT / OpenCV. Faces found must be equal.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ("video/short_hamilton_clip.mp4", "video/liveness/obama_weekly_address_talking.mp4")

# Runs the CLI with FaceDetector.search done by OpenCV's FaceDetectorYN on the ONNX file.
OPENCV_SEARCH = """
import sys, cv2
from edge_verify.detect import FaceDetector, _faces, yunet_onnx_path
from edge_verify.cli import main

def search(self, frame, runner=None):  # runner: the LiteRT refine interpreter, unused here
    h, w = frame.shape[:2]
    if getattr(self, "_cv_size", None) != (w, h):
        if not hasattr(self, "_cv"):
            self._cv = cv2.FaceDetectorYN.create(str(yunet_onnx_path()), "", (w, h), self.score_threshold,
                                                 self.nms_threshold, self.top_k)
        self._cv.setInputSize((w, h))
        self._cv_size = (w, h)
    return sorted(_faces(self._cv.detect(frame)[1]), key=lambda f: f.box[2] * f.box[3], reverse=True)

FaceDetector.search = search
sys.exit(main(sys.argv[1:]))
"""


def bench(engine: str, video: Path, bundle: str, frames: int) -> dict:
    args = ["bench", "--source", str(video), "--frames", str(frames), "--bundle", bundle, "--json"]
    cmd = [sys.executable, "-m", "edge_verify.cli", *args]
    if engine == "opencv":
        cmd = [sys.executable, "-c", OPENCV_SEARCH, *args]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=275)
    parser.add_argument("--bundles", default="resnet29,fused")
    args = parser.parse_args()
    print(f"{'video':<34} {'bundle':<9} {'faces':>11} {'OpenCV fps':>10} {'LiteRT fps':>10} {'ratio':>6}"
          f" {'detect ms OpenCV/LiteRT':>24}")  # fmt: skip
    for name in VIDEOS:
        video = args.data / name
        if not video.is_file():
            print(f"{name}: absent, skipped")
            continue
        for bundle in args.bundles.split(","):
            runs: dict[str, list[dict]] = {"opencv": [], "litert": []}
            for _ in range(args.rounds):
                for engine in runs:
                    runs[engine].append(bench(engine, video, bundle, args.frames))
            fps = {e: statistics.median(r["fps"] for r in rs) for e, rs in runs.items()}
            detect = {e: statistics.median(r["ms_per_frame"]["detect"] for r in rs) for e, rs in runs.items()}
            faces = {e: {r["faces"] for r in rs} for e, rs in runs.items()}
            found = "/".join(str(sorted(f)[0]) for f in faces.values())
            print(
                f"{Path(name).name:<34} {bundle:<9} {found:>11} {fps['opencv']:>10.1f} {fps['litert']:>10.1f}"
                f" {fps['litert'] / fps['opencv']:>5.2f}x {detect['opencv']:>11.2f} / {detect['litert']:.2f}",
                flush=True,
            )
            if faces["opencv"] != faces["litert"]:
                print(f"  faces differ: OpenCV {sorted(faces['opencv'])}, LiteRT {sorted(faces['litert'])}")


if __name__ == "__main__":
    main()
