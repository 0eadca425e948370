"""Liveness figures: the cost of each stage, the chance that a recording which ignores the prompts
passes a random challenge (per video and playback speed, with its 95% upper bound), the time a
cooperative person needs, the passive mode on the liveness videos, the printed-photo attacks and each
passive cue's APCER/BPCER on NUAA. The anti-spoofing model's own APCER/BPCER per set, int8-vs-float
agreement and time per face: benchmarks/antispoof.py; the photo puppet: benchmarks/puppet_attack.py.

    python benchmarks/liveness.py [--data ../shared/data] [--attack-photos 25] [--seeds 100]

APCER: share of attack presentations (NUAA spoof sessions, generated print attacks) judged live.
BPCER: share of bona fide presentations (NUAA real sessions) judged an attack. The thresholds are the
shipped defaults (``LivenessOptions``), chosen on the liveness videos, not tuned on NUAA.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from edge_verify.antispoof import AntiSpoof  # noqa: E402
from edge_verify.detect import FaceDetector  # noqa: E402
from edge_verify.landmarks import FaceMesh  # noqa: E402
from edge_verify.liveness import (  # noqa: E402
    LivenessMonitor,
    LivenessOptions,
    make_check,
    planar_residual,
    sample,
    watch,
)
from edge_verify.pipeline import Verifier  # noqa: E402


def rate(flags: list[bool]) -> str:
    return f"{np.mean(flags):6.1%} ({sum(flags)}/{len(flags)})" if flags else "   n/a"


def nuaa(data: Path, detector: FaceDetector, mesh: FaceMesh, options: LivenessOptions) -> None:
    root = data / "antispoof" / "nuaa_train"
    groups: dict[tuple, list[tuple[int, Path]]] = defaultdict(list)
    for row in csv.DictReader(open(root / "labels.csv")):
        frame_no = int(Path(row["file"]).stem.rsplit("_", 1)[1])
        groups[(row["label"], row["subject"], row["session"])].append((frame_no, root / row["file"]))
    cues: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for (label, _, _), files in sorted(groups.items()):
        samples = []
        for t, (_, path) in enumerate(sorted(files)):
            image = cv2.imread(str(path))
            faces = detector.detect(image)
            if faces:
                samples.append(sample(mesh.landmarks(image, faces[0]), float(t), image))
        if len(samples) < 2:
            continue
        depth = max((planar_residual(samples[0], s) or 0.0) for s in samples[1:])
        motion = float(np.median([np.linalg.norm(b.points - a.points, axis=1).mean() / b.scale
                                  for a, b in zip(samples, samples[1:], strict=False)]))  # fmt: skip
        check = make_check("events", options)
        for s in samples:
            check.feed(s)
        blinked = any(e.kind == "blink" for e in check.result.events)
        judged_live = {
            f"depth >= {options.min_depth}": depth >= options.min_depth,
            "moves (landmark motion >= 0.002)": motion >= 0.002,
            "blink seen": blinked,
            "blink and depth": blinked and depth >= options.min_depth,
        }
        for cue, live in judged_live.items():
            cues[cue]["APCER" if label == "spoof" else "BPCER"].append(live if label == "spoof" else not live)
    n_real = sum(1 for k in groups if k[0] == "real")
    print(f"\nNUAA train sample: {len(groups)} sessions ({n_real} real, {len(groups) - n_real} printed photo)")
    print(f"  {'cue':<36}{'APCER':>20}{'BPCER':>20}")
    for cue, r in cues.items():
        print(f"  {cue:<36}{rate(r['APCER']):>20}{rate(r['BPCER']):>20}")


SPEEDS = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


def upper95(passes: int, trials: int) -> float:
    """One-sided 95% upper bound of a pass rate (exact binomial; 3/n when nothing passed)."""
    if passes >= trials:
        return 1.0
    lo, hi = passes / trials, 1.0
    for _ in range(60):  # bisection on the binomial tail P(X <= passes) = 0.05
        mid = (lo + hi) / 2
        tail = sum(math.comb(trials, k) * mid**k * (1 - mid) ** (trials - k) for k in range(passes + 1))
        lo, hi = (mid, hi) if tail > 0.05 else (lo, mid)
    return hi


def recordings(args, detector: FaceDetector, mesh: FaceMesh, options: LivenessOptions) -> None:
    """The challenge against recordings that ignore its prompts, and against a cooperative person."""
    from liveness_replay import chance_passes, cooperative_check, duration, followable, replay, video_samples

    videos = sorted((args.data / "video" / "liveness").glob("*.mp4"))
    videos += sorted(
        p for p in (args.data / "antispoof" / "replay_dev" / "real").glob("vendor_*") if p.suffix != ".csv"
    )
    print(
        f"\nrecorded videos that ignore the prompts: {args.seeds} random challenges per video and speed, each "
        f"from a random point of the recording looped 3 times (challenge: {options.length} actions, "
        f"{options.min_turns} turns, reaction window {options.react_min_s}-{options.step_timeout_s} s)"
    )
    total = trials = 0
    returns, cooperative = [], []
    for path in videos:
        samples = video_samples(path, detector, mesh)
        if len(samples) < 10:
            print(f"  {path.name:<40} too few frames with landmarks")
            continue
        cells = []
        for speed in SPEEDS:
            passed = chance_passes(samples, range(args.seeds), speed, loops=3, random_start=True, options=options)
            total, trials = total + len(passed), trials + args.seeds
            cells.append(f"{speed}x {len(passed)}")
        events = replay(make_check("events", options), samples).events
        kinds = " ".join(f"{e.kind[0]}{e.kind[5:6]}" for e in events)
        print(f"  {path.name[:40]:<40} {duration(samples):5.1f}s  passes: {', '.join(cells)}   [{kinds}]")
        returns += turn_returns(samples, options)
        chosen = followable(samples)
        if chosen:
            r = replay(cooperative_check(chosen, options=options), samples)
            cooperative.append((path.name, len(chosen), r.state, r.reason))
    print(
        f"  all: {total} passes in {trials} challenges = {total / trials:.2e} per attempt "
        f"(95% upper bound {upper95(total, trials):.1e})"
    )
    print("\ncooperative person (test hook: each prompt 0.6 s before the video's own movement):")
    for name, n, state, reason in cooperative:
        print(f"  {name[:40]:<40} {n} actions  {state} {reason}")
    back = float(np.median(returns)) if returns else 1.0
    waits = (sum(options.settle_s) + (options.length - 1) * sum(options.gap_s)) / 2
    took = waits + options.length * 0.6 + options.min_turns * back
    print(
        f"  time a cooperative person needs for a default challenge: about {took:.1f} s (mean waits {waits:.1f} s, "
        f"0.6 s reaction per action, {back:.2f} s per head turn to come back, median of {len(returns)} turns)"
    )


def turn_returns(samples, options: LivenessOptions) -> list[float]:
    """Seconds from each head turn (crossing ``turn_deg``) until the head was back at rest."""
    check, out, turned_at = make_check("events", options), [], None
    for s in samples:
        events = check.feed(s).events
        if events and events[-1].time == s.time and events[-1].kind != "blink":
            turned_at = s.time
        if turned_at is not None and check.detector.resting:
            out.append(s.time - turned_at)
            turned_at = None
    return out


def video_frames(path):
    """(time in seconds, frame) of a video file, through the product's own source."""
    from edge_verify.sources import open_source

    with open_source(str(path)) as source:
        yield from ((f.time, f.image) for f in source)


def run_check(frames, detector, mesh, mode, options, antispoof=None):
    """The product's check on a video: a random challenge (or passive), with the model when given."""
    return watch(
        LivenessMonitor(mesh, make_check(mode, options), antispoof if mode != "events" else None), detector, frames
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--attack-photos", type=int, default=25)
    parser.add_argument("--seeds", type=int, default=100, help="random challenges per recording and speed")
    args = parser.parse_args()
    detector, mesh, options = FaceDetector(), FaceMesh(), LivenessOptions()
    verifier = Verifier()
    antispoof = AntiSpoof()

    video = args.data / "video" / "liveness" / "woman_headturns_wink_expressions.mp4"
    frames = [f for _, f in video_frames(video)][:100]
    faces = [detector.detect(f)[0] for f in frames]
    timings = {}
    for name, fn in (
        ("YuNet detect (baseline)", lambda f, face: detector.detect(f)),
        ("face mesh landmarks", lambda f, face: mesh.landmarks(f, face)),
        ("anti-spoofing model (2 models)", lambda f, face: antispoof.score(f, face)),
        ("face embedding (align + invoke)", lambda f, face: verifier.observe(f, [face])),
    ):
        start = time.perf_counter()
        for f, face in zip(frames, faces, strict=True):
            fn(f, face)
        timings[name] = (time.perf_counter() - start) / len(frames) * 1000
    print(f"time per frame on this machine ({frames[0].shape[1]}x{frames[0].shape[0]} video, 1 face):")
    base = timings["YuNet detect (baseline)"]
    for name, ms in timings.items():
        print(f"  {name:<34}{ms:7.2f} ms  ({ms / base:.2f}x detect)")

    recordings(args, detector, mesh, options)
    for name in sorted(p.name for p in (args.data / "video" / "liveness").glob("*.mp4")):
        r = run_check(
            video_frames(args.data / "video" / "liveness" / name), detector, mesh, "passive", options, antispoof
        )
        done = f"{r.finished:.1f}s from the first frame" if r.state == "passed" else r.reason or "video ended first"
        print(f"  passive  {name:<40}{r.state:<8}{done}")

    from photo_attacks import KINDS, attack_frames

    photos = sorted(p for p in (args.data / "faces").glob("*/*") if p.suffix.lower() in {".jpg", ".png"})
    photos = photos[: args.attack_photos]
    passed: dict[str, list[bool]] = defaultdict(list)
    depths: dict[str, list[float]] = defaultdict(list)
    for i, photo in enumerate(photos):
        image = cv2.imread(str(photo))
        for kind in KINDS:
            recorded = list(attack_frames(image, kind, seed=i))
            for mode in ("challenge", "passive", "events"):
                r = run_check(recorded, detector, mesh, mode, options, antispoof)
                if mode == "events":
                    depths[kind] += [e.depth or 0.0 for e in r.events if e.kind != "blink"]
                else:
                    passed[f"{mode} {kind}"].append(r.state == "passed")
    print(f"\nprint attacks from {len(photos)} shared photos (tests/photo_attacks.py), with the model, APCER:")
    for key, flags in passed.items():
        print(f"  {key:<24}{rate(flags)}")
    for kind, d in depths.items():
        if d:
            print(f"  {kind}: {len(d)} turn(s) seen, depth max {max(d):.4f} (a live turn needs {options.min_depth})")

    nuaa(args.data, detector, mesh, options)


if __name__ == "__main__":
    main()
