"""The passive anti-spoofing model (edge_verify/antispoof.py): APCER/BPCER per data set at the
shipped threshold, time per face, and int8-vs-float agreement.

    python benchmarks/antispoof.py [--data ../shared/data] [--step 3]

A presentation is a track: one video, one NUAA session (subject, session, label), or one generated
print attack (tests/photo_attacks.py: a photo, one of its kinds of motion). Its faces are found by the
product's YuNet detector at the kiosk's working size (the largest face per frame), on every
``--step``-th frame. The decision statistic is the mean P(real) over the track's frames (the mean of
MiniFASNetV2's and V1SE's P(real) per frame when both are shipped), against the threshold in
model.json. APCER: share of attack tracks judged live; BPCER: share of bona fide tracks judged an
attack. Per-frame figures apply the same threshold to each frame alone. The float reference is the
Keras port of the upstream weights (equal to a numpy evaluation of them, tests/test_antispoof.py);
it needs TensorFlow and ../shared/models/minifasnet (skipped when absent).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from edge_verify.antispoof import AntiSpoof, crop  # noqa: E402
from edge_verify.detect import WORKING_SIDE, FaceDetector  # noqa: E402

SCALES = (2.7, 4.0)  # the crops every model may need: MiniFASNetV2, MiniFASNetV1SE
VIDEO_SUFFIXES = {".mp4", ".mov", ".3gp", ".webm"}
BONA_FIDE_SETS = ("liveness videos", "NUAA real", "replay_dev real")
ATTACK_SETS = ("NUAA print", "print attacks (generated)", "replay_dev replay")


@dataclass
class Track:
    """One presentation's face crops, per crop scale, (N, 80, 80, 3) uint8 BGR."""

    set: str
    name: str
    bona_fide: bool
    crops: dict[float, list[np.ndarray]] = field(default_factory=lambda: {s: [] for s in SCALES})

    @property
    def frames(self) -> int:
        return len(self.crops[SCALES[0]])


def video_frames(path: Path, step: int) -> Iterator[np.ndarray]:
    """Every ``step``-th frame of a video file, through the product's own capture source (``open_source``
    would take a .3gp file for an image)."""
    from edge_verify.sources import CaptureSource

    with CaptureSource(str(path), path.name, live=False) as source:
        for frame in source:
            if frame.index % step == 0:
                yield frame.image


def presentations(data: Path, step: int) -> Iterator[tuple[str, str, bool, Iterator[np.ndarray]]]:
    """(set, name, bona fide, frames) of every presentation in the shared data."""
    for path in sorted((data / "video" / "liveness").glob("*.mp4")):
        yield "liveness videos", path.stem, True, video_frames(path, step)
    nuaa = data / "antispoof" / "nuaa_train"
    sessions: dict[tuple[str, str, str], list[Path]] = defaultdict(list)
    for row in csv.DictReader(open(nuaa / "labels.csv")):
        sessions[(row["label"], row["subject"], row["session"])].append(nuaa / row["file"])
    for (label, subject, session), files in sorted(sessions.items()):
        files = sorted(files, key=lambda p: int(p.stem.rsplit("_", 1)[1]))
        real = label == "real"
        yield (f"NUAA {'real' if real else 'print'}", f"{subject}/{session}", real, (cv2.imread(str(p)) for p in files))
    for kind, real in (("real", True), ("replay", False)):
        for path in sorted((data / "antispoof" / "replay_dev" / kind).iterdir()):
            if path.suffix.lower() in VIDEO_SUFFIXES:
                yield f"replay_dev {kind}", path.stem, real, video_frames(path, step)
    yield from print_attacks(data, step)


def print_attacks(data: Path, step: int) -> Iterator[tuple[str, str, bool, Iterator[np.ndarray]]]:
    """The generated print attacks of tests/photo_attacks.py over the packaged sample photos and the
    shared face photos: each photo held static, moved, tilted and warped for 6 s at 15 frames/s."""
    from photo_attacks import KINDS, attack_frames

    samples = sorted((ROOT / "edge_verify" / "samples").glob("*.jpg"))
    faces = sorted(p for p in (data / "faces").glob("*/*") if p.suffix.lower() in {".jpg", ".png"})
    for i, photo in enumerate(samples + faces):
        image = cv2.imread(str(photo))
        for kind in KINDS:
            frames = (f for j, (_, f) in enumerate(attack_frames(image, kind, seed=i)) if j % step == 0)
            yield "print attacks (generated)", f"{photo.stem} {kind}", False, frames


def collect(data: Path, step: int = 3, sets: tuple[str, ...] | None = None, progress=None) -> list[Track]:
    """Every presentation's crops at both scales around the largest face YuNet finds (kiosk settings);
    frames without a face are skipped, tracks without any face dropped."""
    detector = FaceDetector(working_side=WORKING_SIDE, threads=1)
    tracks = []
    for set_name, name, real, frames in presentations(data, step):
        if sets is not None and set_name not in sets:
            continue
        track = Track(set_name, name, real)
        for frame in frames:
            faces = detector.detect(frame)
            if faces:
                for s in SCALES:
                    track.crops[s].append(crop(frame, faces[0], s))
        if progress:
            progress(f"{set_name:<26} {name:<45} {track.frames:4d} frames with a face")
        if track.frames:
            tracks.append(track)
    return tracks


def member_scores(members: list, tracks: list[Track]) -> list[np.ndarray]:
    """Per track, (frames, members) P(real) of each model (``AntiSpoof.members``) on its own crops."""
    return [
        np.array([[m.probabilities(c)[1] for m, c in zip(members, cs, strict=True)]
                  for cs in zip(*(t.crops[m.scale] for m in members), strict=True)])
        for t in tracks
    ]  # fmt: skip


def int8_members(antispoof: AntiSpoof, folder: Path) -> list | None:
    """The int8 builds of the shipped models that scripts/build_antispoof.py leaves in ``folder``
    (measured, not shipped); None if absent."""
    from edge_verify.antispoof import _Member
    from edge_verify.interpreter import make_interpreter

    members = []
    for entry, shipped in zip(antispoof.meta["models"], antispoof.members, strict=True):
        path = folder / entry["file"].replace("_fp16", "_int8")
        if not path.is_file():
            return None
        interp = make_interpreter(path, "litert", 1).interpreter
        members.append(_Member(shipped.scale, interp, interp.get_input_details()[0], interp.get_output_details()[0]))
    return members


def agreement(label: str, names: list[str], ours: list[np.ndarray], reference: list[np.ndarray], threshold: float):
    """|dP(real)| per model and frame, and decisions at ``threshold`` (mean over models) that agree."""
    diff = np.concatenate([np.abs(a - b) for a, b in zip(ours, reference, strict=True)])
    mine, theirs = [o.mean(axis=1) for o in ours], [r.mean(axis=1) for r in reference]
    frames = np.concatenate([(a >= threshold) == (b >= threshold) for a, b in zip(mine, theirs, strict=True)])
    tracks = [(a.mean() >= threshold) == (b.mean() >= threshold) for a, b in zip(mine, theirs, strict=True)]
    track_diff = max(abs(a.mean() - b.mean()) for a, b in zip(mine, theirs, strict=True))
    print(f"  {label}:")
    for i, name in enumerate(names):
        print(f"    {name:<26} |dP(real)| per frame: mean {diff[:, i].mean():.4f}, "
              f"p99 {np.percentile(diff[:, i], 99):.4f}, max {diff[:, i].max():.4f}")  # fmt: skip
    print(f"    score at {threshold}: frame decisions agree {frames.mean():.2%}, track decisions "
          f"{sum(tracks)}/{len(tracks)}; track mean |dP| max {track_diff:.4f}")  # fmt: skip


def float_scores(antispoof: AntiSpoof, tracks: list[Track], models_dir: Path) -> list[np.ndarray] | None:
    """The same with the float Keras ports of the upstream weights; None without TensorFlow or weights."""
    try:
        from converters.minifasnet_import import VARIANTS, import_minifasnet, load_variant
    except ImportError:
        return None
    by_scale = {v.scale: v for v in VARIANTS}
    try:
        models = [import_minifasnet(load_variant(by_scale[m.scale], models_dir)) for m in antispoof.members]
    except Exception as exc:  # no TensorFlow, no weights
        print(f"float reference skipped: {exc}")
        return None
    return [
        np.stack([model.predict(np.asarray(t.crops[m.scale], np.float32), verbose=0, batch_size=256)[:, 1]
                  for model, m in zip(models, antispoof.members, strict=True)], axis=1)
        for t in tracks
    ]  # fmt: skip


def rate(flags: list[bool]) -> str:
    return f"{np.mean(flags):6.1%} ({sum(flags)}/{len(flags)})" if flags else "n/a"


def error_table(tracks: list[Track], scores: list[np.ndarray], threshold: float) -> list[str]:
    """APCER or BPCER per set, per track (mean P(real)) and per frame, plus the range of track means."""
    lines = [f"  {'set':<26}{'tracks':>7}{'frames':>7}  {'error per track':<22}{'per frame':<26}track means"]
    for set_name in BONA_FIDE_SETS + ATTACK_SETS:
        rows = [(t, s) for t, s in zip(tracks, scores, strict=True) if t.set == set_name]
        if not rows:
            continue
        real = rows[0][0].bona_fide
        means = [float(s.mean()) for _, s in rows]
        frames = np.concatenate([s for _, s in rows])
        wrong = [(m < threshold) if real else (m >= threshold) for m in means]
        wrong_frames = list((frames < threshold) if real else (frames >= threshold))
        label = "BPCER" if real else "APCER"
        lines.append(
            f"  {set_name:<26}{len(rows):>7}{len(frames):>7}  {label} {rate(wrong):<16}{label} {rate(wrong_frames):<20}"
            f"{min(means):.3f}..{max(means):.3f}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--models", type=Path, default=ROOT.parent / "shared" / "models" / "minifasnet")
    parser.add_argument("--int8", type=Path, default=ROOT / "build" / "antispoof", help="int8 builds to compare")
    parser.add_argument("--step", type=int, default=3, help="use every N-th video frame (default 3)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every track's mean")
    args = parser.parse_args()
    antispoof = AntiSpoof(threads=1)
    threshold = antispoof.threshold
    names = [Path(m["file"]).stem for m in antispoof.meta["models"]]
    print(f"shipped: {' + '.join(names)}, threshold {threshold} on the track's mean P(real)")

    start = time.perf_counter()
    tracks = collect(args.data, args.step, progress=print if args.verbose else None)
    print(f"{len(tracks)} tracks, {sum(t.frames for t in tracks)} faces (video frames: every {args.step}), "
          f"detection and cropping {time.perf_counter() - start:.0f} s")  # fmt: skip
    members = member_scores(antispoof.members, tracks)
    shipped = [m.mean(axis=1) for m in members]

    print(f"\nshipped models at threshold {threshold}: APCER = attacks judged live, BPCER = bona fide judged attacks")
    print("\n".join(error_table(tracks, shipped, threshold)))
    for t, s in sorted(zip(tracks, shipped, strict=True), key=lambda x: x[1].mean()):
        wrong = (s.mean() < threshold) == t.bona_fide
        if wrong and (t.set != "print attacks (generated)" or args.verbose):
            print(f"  wrong: {t.set:<26} {t.name:<36} mean P(real) {s.mean():.3f} over {t.frames} frames")
    generated = [(t, s.mean()) for t, s in zip(tracks, shipped, strict=True) if t.set == "print attacks (generated)"]
    for kind in sorted({t.name.rsplit(" ", 1)[1] for t, _ in generated}):
        passed = [m >= threshold for t, m in generated if t.name.endswith(" " + kind)]
        print(f"  generated print attacks, {kind:<8} judged live: {rate(passed)}")
    if args.verbose:
        for t, s in zip(tracks, shipped, strict=True):
            print(f"    {t.set:<26} {t.name:<45} {s.mean():.3f} ({t.frames} frames)")
    print(f"  threshold midway between the highest replay/NUAA-print track and the next bona fide one: "
          f"{safe_threshold(tracks, shipped):.3f}")  # fmt: skip
    windows(tracks, shipped, threshold)
    if len(names) > 1:
        for i, name in enumerate(names):
            alone = [m[:, i] for m in members]
            own = safe_threshold(tracks, alone)
            print(f"\n{name} alone, at its own threshold {own:.3f} (chosen as above):")
            print("\n".join(error_table(tracks, alone, own)))

    reference = float_scores(antispoof, tracks, args.models)
    if reference is not None:
        print(f"\nagreement with float (Keras port of the upstream weights) on {sum(t.frames for t in tracks)} crops:")
        agreement("shipped models", names, members, reference, threshold)
        int8 = int8_members(antispoof, args.int8)
        if int8 is None:
            print(f"  int8: not built ({args.int8}: run scripts/build_antispoof.py)")
        else:
            int8_scores = member_scores(int8, tracks)
            int8_names = [n.replace("_fp16", "_int8") for n in names]
            agreement("int8 full-integer builds (not shipped)", int8_names, int8_scores, reference, threshold)
            print("  int8 at the same threshold:")
            print("\n".join(error_table(tracks, [s.mean(axis=1) for s in int8_scores], threshold)))

    chips = [np.asarray(tracks[0].crops[s][0]) for s in SCALES]
    face_frame = next(video_frames(args.data / "video" / "liveness" / "woman_headturns_wink_expressions.mp4", 1))
    face = FaceDetector(working_side=WORKING_SIDE, threads=1).detect(face_frame)[0]
    print(f"\ntime per face, 1 thread, median of 200 ({face_frame.shape[1]}x{face_frame.shape[0]} frame):")
    for label, fn in [(f"{n} invoke" , (lambda m=m, c=chips[SCALES.index(m.scale)]: m.probabilities(c)))
                      for n, m in zip(names, antispoof.members, strict=True)] + [
                     ("score(): crops + all models", lambda: antispoof.score(face_frame, face))]:  # fmt: skip
        times = []
        for _ in range(200):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000)
        print(f"  {label:<34}{statistics.median(times):6.2f} ms")
    print(f"total {time.perf_counter() - start:.0f} s")


def windows(tracks: list[Track], scores: list[np.ndarray], threshold: float) -> None:
    """The mean over a short stretch of a track, as a decision made after a few seconds would see it:
    the highest such mean in any replay and the lowest in any bona fide video."""
    print("  mean over N consecutive scored frames (a decision taken before the track ends):")
    for n in (10, 30, 60, 120):
        replay = [np.convolve(s, np.ones(n) / n, "valid") for t, s in zip(tracks, scores, strict=True)
                  if t.set == "replay_dev replay" and len(s) >= n]  # fmt: skip
        real = [np.convolve(s, np.ones(n) / n, "valid") for t, s in zip(tracks, scores, strict=True)
                if t.bona_fide and t.set != "NUAA real" and len(s) >= n]  # fmt: skip
        passed = sum(bool((w >= threshold).any()) for w in replay)
        highest, lowest = max(map(np.max, replay)), min(map(np.min, real))
        print(f"    N={n:<4} replays with a window >= threshold: {passed}/{len(replay)} (highest {highest:.3f}); "
              f"lowest bona fide video window {lowest:.3f}")  # fmt: skip


def safe_threshold(tracks: list[Track], scores: list[np.ndarray]) -> float:
    """Midway between the highest track mean of a captured attack (replay_dev replay, NUAA print) and
    the lowest bona fide track mean above it: how the shipped threshold was chosen."""
    means = [(t, float(s.mean())) for t, s in zip(tracks, scores, strict=True)]
    attack = max(m for t, m in means if t.set in ("replay_dev replay", "NUAA print"))
    return (attack + min(m for t, m in means if t.bona_fide and m > attack)) / 2


if __name__ == "__main__":
    main()
