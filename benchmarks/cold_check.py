"""Cold-process ``edge-verify check`` on one image: wall time and peak RSS.

    python benchmarks/cold_check.py [--runs 10]

Each run is a new Python process (enrolment done once beforehand). The baseline measured in the
same run is a cold `python -c "import numpy, cv2"`, the floor any OpenCV-based tool pays.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[1] / "edge_verify" / "samples"


def timed(cmd: list[str]) -> tuple[float, float, int]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(peak, before) / 1024, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = ["--store", os.path.join(tmp, "s.db")]
        cli = [sys.executable, "-m", "edge_verify.cli"]
        subprocess.run(
            [*cli, "enroll", "astronaut", "--source", str(SAMPLES / "astronaut_enroll.jpg"), *store],
            check=True,
            capture_output=True,
        )
        check = [*cli, "check", "astronaut", "--source", str(SAMPLES / "astronaut_check.jpg"), *store]
        base = [sys.executable, "-c", "import numpy, cv2"]
        walls, rss, base_walls = [], [], []
        for _ in range(args.runs):
            w, _, _ = timed(base)
            base_walls.append(w)
        for _ in range(args.runs):
            # RUSAGE_CHILDREN's maxrss is the max over all children so far; measure RSS in a child
            out = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "import resource, subprocess, sys, time; t=time.perf_counter(); "
                    "r=subprocess.run(sys.argv[1:], capture_output=True).returncode; "
                    "print(time.perf_counter()-t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r)",
                    *check,
                ],
                capture_output=True,
                text=True,
            ).stdout.split()
            walls.append(float(out[0]))
            rss.append(int(out[1]) / 1024)
            assert out[2] == "0", "check rejected the same person"
    med, base_med = statistics.median(walls), statistics.median(base_walls)
    print(f"cold `edge-verify check` (one image, default bundle), {args.runs} runs:")
    print(f"  wall median {med * 1000:.0f} ms (min {min(walls) * 1000:.0f}, max {max(walls) * 1000:.0f})")
    print(f"  peak RSS median {statistics.median(rss):.0f} MB (max {max(rss):.0f})")
    print(
        f"  baseline `python -c 'import numpy, cv2'`: {base_med * 1000:.0f} ms"
        f" -> check costs {med / base_med:.1f}x that"
    )


if __name__ == "__main__":
    main()
