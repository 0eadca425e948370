"""Photo-puppet attack (issue 24) against today's liveness challenge: one held-out photo per shared
person (not the first photo, which enrolment would use), warped along the face mesh and driven by
the prompt the check shows, injected into the pipeline and filmed on a simulated screen.

    python benchmarks/puppet_attack.py [--data ../shared/data] [--n 6] [--seed 0]

Prints per person and mode the passes out of N random challenges (seeded) with the anti-spoofing
model on, the passes the challenge alone would have given (the model's verdict ignored), the model's
mean P(real) per attempt, why the others failed (by cue),
what the existing cues measured (the planarity depth of each turn against ``LivenessOptions.
min_depth``; blinks seen), and the time to render a frame. Each challenge takes 5-10 s of one core
(``--modes screen --n 100``: about 50 minutes); ``--people`` splits the work over processes. A seed
replays exactly: the same challenge, puppeteer, screen and noise whatever ran before it.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_verify.antispoof import AntiSpoof  # noqa: E402
from edge_verify.detect import FaceDetector  # noqa: E402
from edge_verify.landmarks import FaceMesh  # noqa: E402
from edge_verify.liveness import LivenessOptions  # noqa: E402
from edge_verify.sources import list_images  # noqa: E402
from tests.puppet_attacks import Puppet, PuppetActor, challenge_monitor, drive  # noqa: E402


def render_cost(puppet: Puppet, frames: int = 60) -> tuple[float, float, float]:
    """Median wall and CPU milliseconds of an uncached render (a new pose each frame), and of a cached one."""
    wall, cpu = [], []
    for i in range(frames):
        w, c = time.perf_counter(), time.process_time()
        puppet.render(yaw_deg=25 * np.sin(i / 7), pitch_deg=3 * np.cos(i / 5), eyes_closed=(i % 5) / 4)
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    cached = []
    for _ in range(20):
        w = time.perf_counter()
        puppet.render()
        cached.append(time.perf_counter() - w)
    return float(np.median(wall) * 1e3), float(np.median(cpu) * 1e3), float(np.median(cached) * 1e3)


def spread(values: list[float], digits: int = 3) -> str:
    if not values:
        return "n/a"
    v = np.array(values)
    return f"{v.min():.{digits}f} / {np.median(v):.{digits}f} / {v.max():.{digits}f} (n={len(v)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--n", type=int, default=6, help="random challenges per person and mode")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fps", type=float, default=15)
    parser.add_argument("--modes", default="injected,screen", help="comma-separated: injected, screen")
    parser.add_argument("--people", help="comma-separated folder names under faces/ (default: every shared person)")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    detector, mesh, antispoof = FaceDetector(), FaceMesh(), AntiSpoof()
    options = LivenessOptions()
    people = sorted(d for d in (args.data / "faces").iterdir() if d.is_dir())
    if args.people:
        people = [args.data / "faces" / name for name in args.people.split(",")]
    print(
        f"photo puppet vs the challenge ({options.length} actions, {options.min_turns} turns, reaction window "
        f"{options.react_min_s}-{options.step_timeout_s} s, min_depth {options.min_depth}) and the anti-spoofing "
        f"model (threshold {antispoof.threshold}),"
    )
    print(f"{args.n} seeded random challenges per person and mode, {args.fps:g} frames/s\n")
    header = (
        f"{'person':16} {'held-out photo':22} {'mode':9} {'passed':>7} {'challenge':>9} "
        f"{'model P(real) min/med/max':>26}  {'turn depth min/median/max':34} blinks"
    )
    print(header)
    print("-" * len(header))
    modes = [m for m in args.modes.split(",") if m]
    if not modes or set(modes) - {"injected", "screen"}:
        parser.error("--modes takes injected, screen or both")
    totals: dict[str, list[int]] = {m: [0, 0] for m in modes}
    reasons: dict[str, Counter] = {"injected": Counter(), "screen": Counter()}
    depths: dict[str, list[float]] = {"injected": [], "screen": []}
    frame_ms: dict[str, list[float]] = {"injected": [], "screen": []}
    costs = []
    started = time.perf_counter()
    for person in people:
        photos = list_images(person)
        if len(photos) < 2:
            continue
        photo = photos[1]  # not the first: enrolment would use it
        puppet = Puppet(cv2.imread(str(photo)), detector, mesh)
        costs.append(render_cost(puppet))
        for mode in modes:
            passed, challenge_only, turn_depths, blinks, reals = 0, 0, [], 0, []
            for i in range(args.n):
                seed = args.seed + 1000 * (mode == "screen") + i
                actor = PuppetActor(puppet, np.random.default_rng(seed), screen=mode == "screen", fps=args.fps)
                monitor = challenge_monitor(mesh, random.Random(seed), antispoof)
                result = drive(actor, monitor, detector, args.fps)
                passed += result.state == "passed"
                challenge_only += result.state == "passed" or result.reason.startswith("anti-spoofing model")
                if result.real is not None:
                    reals.append(result.real)
                if result.state != "passed":
                    reasons[mode][result.reason.split(":")[0].split(" (")[0].split(" in ")[0]] += 1
                turn_depths += [e.depth for e in result.events if e.kind != "blink" and e.depth is not None]
                blinks += sum(e.kind == "blink" for e in result.events)
                frame_ms[mode] += [s * 1e3 for s in actor.render_s]
            totals[mode][0] += passed
            totals[mode][1] += args.n
            depths[mode] += turn_depths
            print(
                f"{person.name:16} {photo.name:22} {mode:9} {passed:>3}/{args.n:<3} {challenge_only:>5}/{args.n:<3} "
                f"{spread(reals, 2):>26}  {spread(turn_depths):34} {blinks}"
            )
    print()
    for mode, (passed, n) in totals.items():
        print(f"{mode:9} passed {passed}/{n} ({passed / max(n, 1):.0%})", end="")
        print(f"; failures: {dict(reasons[mode]) or 'none'}")
    print()
    print(f"flat-picture cue: turn depth (planar residual, eye distances) must be >= {options.min_depth}:")
    for mode in totals:
        below = sum(d < options.min_depth for d in depths[mode])
        print(f"  {mode:9} min/median/max {spread(depths[mode])}, {below} below the bar")
    wall, cpu, cached = (float(np.median([c[i] for c in costs])) for i in range(3))
    print()
    print(
        f"render, 640x480 (median over people): {wall:.1f} ms wall, {cpu:.1f} ms CPU uncached; {cached:.1f} ms cached"
    )
    for mode in totals:
        print(f"  per frame in the loop, {mode}: {np.median(frame_ms[mode]):.1f} ms (puppet + screen/noise)")
    print(f"run time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
