"""Operating points of a packaged face bundle, measured on the labelled development sets.

    python benchmarks/operating_points.py [--data ../shared/data] [--bundle resnet29|sface|fused|DIR]

Prints, in one run, from the shipped int8 model through the device pipeline:
1. each operating point's threshold, and FAR / FRR with pair counts and 95% Wilson intervals per set
   (recomputed here; the build script wrote the same figures into bundle.json);
2. the decision statistic (mean cosine of K probe frames vs a template of E enrolment frames) at
   K = 1, 3, 5 and E = 1, 5: photos of one person standing in for frames, and real video tracks;
3. 1:N per-search FAR at N = 10, 100, 1000 with the gallery-aware threshold, galleries simulated
   from the development identities (threshold rule only: see the note printed with it).
Pairs share images, so the intervals understate the real uncertainty.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from converters.operating_points import calibrate_points, load_dev_sets  # noqa: E402
from edge_verify.errors import EdgeVerifyError  # noqa: E402
from edge_verify.matcher import mean_template, unit  # noqa: E402
from edge_verify.operating import ThresholdChoice, gallery_threshold, wilson_interval  # noqa: E402
from edge_verify.pipeline import Verifier, VerifierOptions  # noqa: E402
from edge_verify.sources import open_source  # noqa: E402


def rate(events: int, trials: int) -> str:
    lo, hi = wilson_interval(events, trials)
    return f"{events / max(trials, 1):.2e} [{lo:.1e}, {hi:.1e}] ({events}/{trials})"


def photo_frames(sets, points, rng, repeats=10):
    """K photos of one person as the probe frames, E photos as the template."""
    print("\n2a. statistic on photos (K probe photos vs E-photo template; FAR / FRR at each point)")
    for s in sets[:2]:
        ids = sorted(set(s.labels.tolist()))
        for e in (1, 5):
            for k in (1, 3, 5):
                gen, imp = [], []
                for _ in range(repeats):
                    for identity in ids:
                        idx = rng.permutation(np.flatnonzero(s.labels == identity))
                        if len(idx) < e + k:
                            continue
                        template = mean_template(s.embeddings[idx[:e]])
                        rest = idx[e:]
                        n = len(rest) // k
                        gen.append(unit(s.embeddings[rest[: n * k]]).reshape(n, k, -1).mean(1) @ template)
                        other = rng.permutation(np.flatnonzero(s.labels != identity))
                        m = len(other) // k
                        imp.append(unit(s.embeddings[other[: m * k]]).reshape(m, k, -1).mean(1) @ template)
                gen, imp = np.concatenate(gen), np.concatenate(imp)
                cells = [f"{name} FAR {np.mean(imp >= t):.1e} FRR {np.mean(gen < t):.3f}" for name, t in points.items()]
                print(f"  {s.name:<18} E={e} K={k} ({len(gen)} gen / {len(imp)} imp)  " + "  ".join(cells))


def video_frames(verifier, data: Path, celebs, points, rng):
    """Real video tracks: consecutive frames of one person (correlated, unlike photos)."""
    print("\n2b. statistic on real video tracks (K consecutive frames vs 5-photo celebrity templates)")
    videos = sorted((data / "video" / "liveness").glob("*.mp4"))
    ids = sorted(set(celebs.labels.tolist()))
    templates = {}
    for identity in ids:
        idx = rng.permutation(np.flatnonzero(celebs.labels == identity))[:5]
        templates[identity] = mean_template(celebs.embeddings[idx])
    tracks = {}
    for video in videos:
        embs = []
        with open_source(str(video)) as source:
            for frame in source:
                try:
                    embs.append(verifier.observe_single(frame.image, frame.name, largest=True).embedding)
                except EdgeVerifyError:
                    pass
        tracks[video.stem] = np.stack(embs) if embs else np.zeros((0, 128))
    for k in (1, 3, 5):
        gen, imp = [], []
        for name, embs in tracks.items():
            n = len(embs) // k
            if n == 0:
                continue
            windows = unit(embs[: n * k]).reshape(n, k, -1).mean(1)
            for identity, template in templates.items():
                same = name.startswith("obama") and identity == "Barack_Obama"
                (gen if same else imp).append(windows @ template)
        gen, imp = np.concatenate(gen), np.concatenate(imp)
        cells = [f"{p} FAR {np.mean(imp >= t):.1e} FRR {np.mean(gen < t):.3f}" for p, t in points.items()]
        print(f"  K={k} ({len(gen)} genuine windows of Obama's address, {len(imp)} impostor)  " + "  ".join(cells))


def one_to_n(bundle, sets, rng, probes_n=2000, draws=3):
    print("\n3. 1:N per-search FAR, unenrolled probe vs a gallery of N others (default point, FAR 1e-3/search)")
    labels = np.concatenate([[f"{s.name}/{lab}" for lab in s.labels] for s in sets])
    pool = np.concatenate([s.embeddings for s in sets])
    point = bundle.operating_point()
    base = ThresholdChoice(point.threshold, point.name, point.far, curve=bundle.far_curve)
    probes = rng.choice(len(pool), min(probes_n, len(pool)), replace=False)
    sims = unit(pool[probes]) @ unit(pool).T
    for n in (10, 100, 1000):
        choice = gallery_threshold(base, n, bundle.margin_1n)
        false, trials = 0, 0
        for _ in range(draws):
            for row, p in enumerate(probes):
                others = np.flatnonzero(labels != labels[p])
                gallery = rng.choice(others, n, replace=False)
                false += int(sims[row, gallery].max() >= choice.value)
                trials += 1
        resolved = "" if choice.far_resolved else " (below the measured curve: strictest threshold)"
        print(
            f"  N={n:<5} threshold {choice.value:.4f}{resolved}: per-search FAR {rate(false, trials)}; "
            f"1:1 FAR x N at the 1:1 threshold would be ~{min(1.0, n * point.far):.0e}"
        )
    print(
        "  galleries draw single photos of the other development identities (56 people), so entries repeat a "
        "person;\n  the margin rule is left out here (it would only lower these figures)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--draws", type=int, default=3, help="galleries drawn per probe for the 1:N figures")
    parser.add_argument("--bundle", default=None, help="a packaged bundle's name or a directory (default: the default)")
    args = parser.parse_args()
    if not (args.data / "faces_dev").is_dir():
        sys.exit(f"{args.data}: faces_dev/ not found (the labelled development sets)")
    rng = np.random.default_rng(0)
    verifier = Verifier(VerifierOptions(bundle=args.bundle, use_edgetpu=False))
    bundle = verifier.bundle
    start = time.perf_counter()
    sets = load_dev_sets(verifier, args.data)
    print(f"embedded {sum(len(s.files) for s in sets)} images in {time.perf_counter() - start:.1f}s")
    fresh = calibrate_points(sets)
    print("\n1. operating points (threshold shipped in bundle.json / recomputed now)")
    for name, point in bundle.operating_points.items():
        again = fresh["operating_points"][name]["threshold"]
        print(f"  {name:<10} {point.threshold:.4f} / {again:.4f} at FAR {point.far:g}")
        for m in fresh["operating_points"][name]["measured"]:
            fa, fr = round(m["far"] * m["impostor_pairs"]), round(m["frr"] * m["genuine_pairs"])
            print(
                f"    {m['set']:<18} {m['identities']:>3} ids  FAR {rate(fa, m['impostor_pairs'])}  "
                f"FRR {rate(fr, m['genuine_pairs'])}"
            )
    points = {name: p.threshold for name, p in bundle.operating_points.items()}
    photo_frames(sets, points, rng)
    video_frames(verifier, args.data, sets[0], points, rng)
    one_to_n(bundle, sets, rng, draws=args.draws)


if __name__ == "__main__":
    main()
