"""Quality gate, operating points, template statistic and 1:N of the packaged face bundles, measured
on the labelled development sets (faces_dev/celebs, faces_dev/yaleb, faces).

    python benchmarks/operating_points.py [--data ../shared/data] [--bundle fused|resnet29|sface|all]
                                          [--heldout-draws K]

Prints, per bundle, from the shipped int8 model(s) through the device pipeline:
1. the quality gate: per set, the share of images it refuses and by which cue; which Yale B images
   set the thresholds (single pairs, before and after the gate, by lighting direction);
2. each operating point on the captures the gate accepts (shipped threshold / recomputed now): FAR
   and FRR per set with 95% Wilson intervals, for templates of 5 photos against single probe photos
   (what the points are calibrated on) and for single photo pairs;
2b. the held-out check (``--heldout-draws K``, default 20; 0 skips it): FAR at each shipped point,
   pooled with a 95% Wilson interval, on trials not used to set it: K other template draws of the
   same people, and K random splits of each set's people (the calibration rerun without half, a
   ninth, or one of them and measured on the impostor trials involving those people), without and
   with the shipped held-out margin;
3. the template statistic: at equal FAR (the strictest per-set threshold at FAR 1e-3 for those
   counts), FRR of the mean cosine over every (probe, enrolment) pair against the cosine with the
   template's direction (shipped), for E = 1, 3, 5 enrolment photos and K = 1, 3 probe photos;
4. 1:N at N = 10, 50, 100, 1000 with the gallery-aware threshold: per-search FAR measured on
   galleries of distinct development identities where a set has that many (with and without the
   margin rule), and from the per-comparison FAR assuming independent entries (1 - (1 - FAR)^N);
5. for the default (fused) bundle: the issue's targets at `default`, each met or not.
Pairs and trials share images, so the intervals understate the real uncertainty.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from converters.operating_points import (  # noqa: E402
    DEV_SETS,
    HELDOUT_FOLDS,
    DevSet,
    calibrate_points,
    heldout,
    heldout_text,
)
from edge_verify.bundle import PACKAGED_BUNDLES  # noqa: E402
from edge_verify.errors import EdgeVerifyError  # noqa: E402
from edge_verify.matcher import MAX_TEMPLATE_FRAMES, unit  # noqa: E402
from edge_verify.metrics import pair_scores, template_scores  # noqa: E402
from edge_verify.operating import (  # noqa: E402
    ThresholdChoice,
    conservative_threshold,
    gallery_threshold,
    wilson_interval,
)
from edge_verify.pipeline import Verifier, VerifierOptions  # noqa: E402
from edge_verify.quality import QualityOptions, assess  # noqa: E402
from edge_verify.sources import list_images, read_image  # noqa: E402

OPEN_GATE = QualityOptions(
    min_sharpness=0, min_brightness=0, max_brightness=256, max_dark_share=1.0, min_evenness=0.0, max_yaw=1e9
)


@dataclass
class Embedded:
    """Every image with a face, embedded whatever the gate says, and the gate's verdict (first cue or '')."""

    name: str
    embeddings: np.ndarray
    labels: np.ndarray
    files: list[str]
    cues: np.ndarray
    no_face: int

    def gated(self) -> DevSet:
        ok = self.cues == ""
        refused = dict(Counter(self.cues[~ok].tolist()))
        files = [f for f, k in zip(self.files, ok, strict=True) if k]
        return DevSet(self.name, self.embeddings[ok], self.labels[ok], files, self.no_face, refused)


def embed_all(bundle: str, data: Path) -> list[Embedded]:
    verifier = Verifier(VerifierOptions(bundle=bundle, use_edgetpu=False, quality=OPEN_GATE))
    template = verifier.members[0][0].template
    out = []
    for sub, pad in DEV_SETS:
        root = data / sub
        if not root.is_dir():
            continue
        embs, labels, files, cues, no_face = [], [], [], [], 0
        for d in sorted(p for p in root.iterdir() if p.is_dir()):
            for path in list_images(d):
                image = read_image(path)
                if pad:
                    image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
                try:
                    obs = verifier.observe_single(image, str(path), largest=True)
                except EdgeVerifyError:
                    no_face += 1
                    continue
                report = assess(obs.chip, obs.face.size, QualityOptions(), template, obs.face.landmarks)
                embs.append(obs.embedding)
                labels.append(d.name)
                files.append(str(path.relative_to(root)))
                cues.append(report.cues[0] if report.cues else "")
        out.append(Embedded(sub, np.stack(embs), np.array(labels), files, np.array(cues), no_face))
    return out


def rate(events: int, trials: int, percent: bool = False) -> str:
    lo, hi = wilson_interval(events, trials)
    if percent:
        return f"{events / max(trials, 1):.1%} [{lo:.1%}, {hi:.1%}] ({events}/{trials})"
    return f"{events / max(trials, 1):.2e} [{lo:.1e}, {hi:.1e}] ({events}/{trials})"


def frr_text(genuine: np.ndarray, t: float) -> str:
    fr = int(np.sum(genuine < t))
    lo, hi = wilson_interval(fr, len(genuine))
    return f"{fr / max(len(genuine), 1):6.1%} [{lo:.1%}, {hi:.1%}]"


# -- 1. the gate ----------------------------------------------------------------------------------
def gate_section(sets: list[Embedded]) -> None:
    print("\n1. quality gate (limits: " + ", ".join(f"{k} {v:g}" for k, v in vars(QualityOptions()).items()) + ")")
    for s in sets:
        refused = s.cues != ""
        by_cue = ", ".join(f"{c} {n}" for c, n in Counter(s.cues[refused].tolist()).most_common())
        print(
            f"  {s.name:<18} {len(s.files) + s.no_face:5} images, no face {s.no_face:4}; gate refuses "
            f"{refused.mean():6.1%} of the faces ({refused.sum()}/{len(s.files)}: {by_cue or 'none'})"
        )
    yale = next((s for s in sets if s.name.endswith("yaleb")), None)
    if yale is None:
        return
    print("  which Yale B images set the thresholds (single pairs, FAR 1e-3):")
    light = np.array([abs(int(re.search(r"A([+-]\d+)", f)[1])) for f in yale.files])
    frontal = light <= 20
    masks = {
        "all faces": np.ones(len(light), bool),
        "passed by the gate": yale.cues == "",
        "frontal light only (|azimuth| <= 20)": frontal,
        "refused by the gate": yale.cues != "",
    }
    for label, mask in masks.items():
        g, i = pair_scores(yale.embeddings[mask], yale.labels[mask])
        t = conservative_threshold([i], 1e-3)
        print(f"    {label:<38} {mask.sum():4} images: threshold {t:.4f}, FRR there {np.mean(g < t):6.1%}")
    g, i = pair_scores(yale.embeddings, yale.labels)
    t = conservative_threshold([i], 1e-3)
    sims = unit(yale.embeddings) @ unit(yale.embeddings).T
    a, b = np.triu_indices(len(light), 1)
    high = (yale.labels[a] != yale.labels[b]) & (sims[a, b] >= t)
    involved = np.unique(np.r_[a[high], b[high]])
    print(
        f"    the {high.sum()} impostor pairs at or above {t:.4f} involve {len(involved)} images: "
        f"{np.mean(frontal[involved]):.0%} lit from the front (|azimuth| <= 20), "
        f"{np.mean(yale.cues[involved] != ''):.0%} refused by the gate"
    )


# -- 2. operating points --------------------------------------------------------------------------
def points_section(bundle, sets: list[Embedded]) -> dict:
    gated = [s.gated() for s in sets]
    fresh = calibrate_points(gated)
    print(f"\n2. operating points on gated captures (E = {MAX_TEMPLATE_FRAMES} photos vs single probes; single pairs)")
    for name, point in bundle.operating_points.items():
        again = fresh["operating_points"][name]
        print(
            f"  {name:<10} shipped {point.threshold:.4f} / recomputed {again['threshold']:.4f} at FAR {point.far:g}"
            f" (held-out margin {again['heldout_margin']:+.3f})"
        )
        for m in again["measured"]:
            fa, fr = round(m["far"] * m["impostor_pairs"]), round(m["frr"] * m["genuine_pairs"])
            sp = m["single_pairs"]
            sfa, sfr = round(sp["far"] * sp["impostor_pairs"]), round(sp["frr"] * sp["genuine_pairs"])
            print(
                f"    {m['set']:<18} gate refuses {m['gate_refused_share']:5.1%}  template: FAR "
                f"{rate(fa, m['impostor_pairs'])} FRR {rate(fr, m['genuine_pairs'], True)}\n"
                f"    {'':<18} {'':<18} single pairs: FAR {rate(sfa, sp['impostor_pairs'])} "
                f"FRR {rate(sfr, sp['genuine_pairs'], True)}"
            )
    return fresh


# -- 2b. held-out check ----------------------------------------------------------------------------
def heldout_section(bundle, gated: list[DevSet], draws: int) -> bool:
    """FAR at each shipped point on trials not used to set it; True when `default` keeps FAR <= its
    target on every set in every check."""
    points = bundle.operating_points
    fars = sorted({p.far for p in points.values()})
    impostors = [s.scores()[1] for s in gated]
    margins = {n: round(p.threshold - conservative_threshold(impostors, p.far), 4) for n, p in points.items()}
    print(
        f"\n2b. held-out check at the shipped points (FAR pooled over {draws} draws, 95% Wilson; "
        "trials share images, so the intervals are optimistic)"
    )
    print(f"  a) other template draws (seeds 1..{draws}; the points were set on seed 0), same people and photos:")
    events = {(n, s.name): [0, 0] for n in points for s in gated}
    for s in gated:
        for seed in range(1, draws + 1):
            imp = template_scores(s.embeddings, s.labels, seed=seed)[1]
            for n, p in points.items():
                events[(n, s.name)][0] += int(np.sum(imp >= p.threshold))
                events[(n, s.name)][1] += len(imp)
    for n, p in points.items():
        cells = "  ".join(f"{s.name.split('/')[-1]} {heldout_text(events[(n, s.name)])}" for s in gated)
        print(f"    {n:<10} {p.threshold:.4f} (FAR {p.far:g}): {cells}")
    ok = all(fa <= points["default"].far * n for (name, _), (fa, n) in events.items() if name == "default")
    print(
        "  b) people left out: each set's people split into groups; the calibration (strictest per-set threshold"
        " at the FAR) rerun without one group, measured on the impostor trials involving someone of it"
        f" ({draws} random splits, other splits than the ones that set the margin); the shipped margin is"
        " the shipped threshold minus the plain threshold recomputed on all the people:"
    )
    splits = (
        (2, "half the people"),
        (HELDOUT_FOLDS, f"1/{HELDOUT_FOLDS} of the people"),
        (max(s.identities for s in gated), "one person"),
    )
    for folds, label in splits:
        held = heldout(gated, fars, folds=folds, repeats=draws, seed=1001)
        for n, p in points.items():
            plain, shipped = held.events(p.far), held.events(p.far, margins[n])
            print(f"    left out {label}, {n} (FAR {p.far:g}; margin needed here {held.margin(p.far):+.3f}):")
            for s in gated:
                print(
                    f"      {s.name:<18} plain {heldout_text(plain[s.name])}  "
                    f"with the shipped margin {margins[n]:+.3f}: {heldout_text(shipped[s.name])}"
                )
            if n == "default" and folds > 2:  # calibrations from nearly all the people, as the shipped one
                ok &= all(fa <= p.far * t for fa, t in shipped.values())
    verdict = "met" if ok else "NOT met"
    print(
        f"  held-out FAR at `default` <= {points['default'].far:g} on every set, calibrated without a ninth or"
        f" without one of the people: {verdict} (without half of them: see above)"
    )
    return ok


# -- 3. the template statistic ----------------------------------------------------------------------
def unit_rows(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


STATISTICS = {  # t: (E, D) enrolment frames; p: (..., K, D) probe windows
    "mean cosine over every pair": lambda t, p: unit_rows(p).mean(-2) @ unit_rows(t).mean(0),
    "cosine with the direction": lambda t, p: unit_rows(p).mean(-2) @ unit_rows(unit_rows(t).mean(0)),
}


def statistic_trials(s: DevSet, e: int, k: int, draws: int, rng) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Genuine and impostor scores per statistic: a template of ``e`` photos of one identity against
    windows of ``k`` other photos of it, and windows of ``k`` photos of each other identity."""
    ids = sorted(set(s.labels.tolist()))
    by_id = {i: rng.permutation(np.flatnonzero(s.labels == i)) for i in ids}
    out = {name: ([], []) for name in STATISTICS}
    for identity in ids:
        mine = by_id[identity]
        if len(mine) < e + k:
            continue
        for _ in range(draws):
            pick = rng.permutation(mine)
            template = s.embeddings[pick[:e]]
            rest = pick[e:]
            n = len(rest) // k
            genuine = s.embeddings[rest[: n * k]].reshape(n, k, -1)
            impostor = [
                s.embeddings[by_id[j][: len(by_id[j]) // k * k]].reshape(-1, k, s.embeddings.shape[1])
                for j in ids
                if j != identity
            ]
            impostor = np.concatenate(impostor)
            for name, f in STATISTICS.items():
                out[name][0].append(f(template, genuine))
                out[name][1].append(f(template, impostor))
    return {n: (np.concatenate(g), np.concatenate(i)) for n, (g, i) in out.items() if g}


def statistic_section(bundle, gated: list[DevSet], rng) -> dict:
    default = bundle.operating_point().threshold
    print(
        "\n3. template statistic: FRR at equal FAR (strictest per-set threshold at FAR 1e-3 for these counts), "
        f"and FAR / FRR at the shipped default ({default:.4f})"
    )
    results = {}
    for e, k in ((1, 1), (3, 1), (5, 1), (5, 3)):
        trials = {s.name: statistic_trials(s, e, k, 10 if len(s.files) > 1000 else 40, rng) for s in gated}
        trials = {n: t for n, t in trials.items() if t}
        for stat in STATISTICS:
            t = conservative_threshold([tr[stat][1] for tr in trials.values()], 1e-3)
            cells = "  ".join(
                f"{n.split('/')[-1]} {frr_text(tr[stat][0], t)} (at default FAR {np.mean(tr[stat][1] >= default):.1e}"
                f" FRR {np.mean(tr[stat][0] < default):.1%})"
                for n, tr in trials.items()
            )
            print(f"  E={e} K={k} {stat:<28} threshold {t:.4f}: FRR {cells}")
            results[(e, k, stat)] = {n: tr[stat] for n, tr in trials.items()}
    return results


# -- 4. 1:N ---------------------------------------------------------------------------------------
def one_to_n_section(bundle, gated: list[DevSet], rng) -> None:
    point = bundle.operating_point()
    base = ThresholdChoice(point.threshold, point.name, point.far, curve=bundle.far_curve)
    margin = bundle.margin_1n
    print(f"\n4. 1:N at per-search FAR {point.far:g} ({point.name} point; margin rule {margin:g})")
    templates = {}
    for s in gated:
        for identity in sorted(set(s.labels.tolist())):
            idx = rng.permutation(np.flatnonzero(s.labels == identity))
            if len(idx) > MAX_TEMPLATE_FRAMES:
                templates[(s.name, identity)] = (unit(unit(s.embeddings[idx[:MAX_TEMPLATE_FRAMES]]).mean(0))[0], idx)
    for n in (10, 50, 100, 1000):
        choice = gallery_threshold(base, n, margin)
        note = "" if choice.far_resolved else " (below what every set resolved; warned)"
        print(f"  N={n:<5} threshold {choice.value:.4f}{note}")
        for s in gated:
            ids = [i for (name, i) in templates if name == s.name]
            if len(ids) < 2:
                continue
            impostor = (
                np.concatenate([unit(s.embeddings[s.labels != i]) @ templates[(s.name, i)][0] for i in ids])
                if ids
                else np.zeros(0)
            )
            if len(impostor):
                f = float(np.mean(impostor >= choice.value))
                hi = wilson_interval(int(np.sum(impostor >= choice.value)), len(impostor))[1]
                print(
                    f"    {s.name:<18} per-comparison FAR {f:.1e} (95% up to {hi:.1e}, {len(impostor)} trials) -> "
                    f"independent entries: per-search {1 - (1 - f) ** n:.1e} (up to {1 - (1 - hi) ** n:.1e})"
                )
            if len(ids) > n:  # galleries of distinct identities: measured, with and without the margin
                plain = with_margin = searches = 0
                for probe_id in ids:
                    others = [i for i in ids if i != probe_id]
                    probes = unit(s.embeddings[s.labels == probe_id])
                    for _ in range(20):
                        chosen = rng.choice(len(others), n, replace=False)
                        matrix = np.stack([templates[(s.name, others[c])][0] for c in chosen])
                        scores = np.sort(probes @ matrix.T, axis=1)
                        best, second = scores[:, -1], scores[:, -2]
                        plain += int(np.sum(best >= choice.value))
                        with_margin += int(np.sum((best >= choice.value) & (best - second >= margin)))
                        searches += len(probes)
                print(
                    f"    {s.name:<18} measured on galleries of {n} distinct identities: per-search FAR "
                    f"{rate(plain, searches)} without the margin, {rate(with_margin, searches)} with it"
                )


# -- 5. targets -----------------------------------------------------------------------------------
def targets(bundle, fresh: dict, stats: dict, gated: list[DevSet], heldout_ok: bool | None) -> None:
    default = bundle.operating_point().threshold
    measured = {m["set"]: m for m in fresh["operating_points"]["default"]["measured"]}
    print("\n5. targets at `default` (fused)")
    worst = max(m["far_ci"][1] for m in measured.values())
    ok = all(m["far"] <= 1e-3 for m in measured.values())
    print(
        f"  FAR <= 1e-3 on every set after the gate: {'met' if ok else 'NOT met'} "
        + ", ".join(f"{n.split('/')[-1]} {m['far']:.1e}" for n, m in measured.items())
        + f" (upper 95% {worst:.1e})"
    )
    if heldout_ok is not None:
        print(f"  the same on trials not used to set it (2b): {'met' if heldout_ok else 'NOT met'}")
    celebs = measured.get("faces_dev/celebs")
    if celebs:
        single = celebs["single_pairs"]["frr"]
        print(
            f"  celebrity single pairs FRR <= 25% with the gate refusing <= 5%: "
            f"{'met' if single <= 0.25 and celebs['gate_refused_share'] <= 0.05 else 'NOT met'} "
            f"(FRR {single:.1%}, gate refuses {celebs['gate_refused_share']:.1%}; with a 5-photo template "
            f"and single probes FRR {celebs['frr']:.1%})"
        )
    yale = stats.get((5, 3, "cosine with the direction"), {}).get("faces_dev/yaleb")
    if yale is not None:
        frr = float(np.mean(yale[0] < default))
        print(
            f"  Yale B gated, 5-photo template and 3 probe frames, FRR <= 5%: {'met' if frr <= 0.05 else 'NOT met'} "
            f"({frr:.1%} of {len(yale[0])} trials)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--bundle", default="fused", help="fused, resnet29, sface, a directory, or all")
    parser.add_argument(
        "--heldout-draws",
        type=int,
        default=20,
        metavar="K",
        help="held-out check (2b): K other template draws and K people splits per set (0: skip it; default 20)",
    )
    args = parser.parse_args()
    if not (args.data / "faces_dev").is_dir():
        sys.exit(f"{args.data}: faces_dev/ not found (the labelled development sets)")
    names = [n for n in PACKAGED_BUNDLES if n != "default"] if args.bundle == "all" else [args.bundle]
    for name in names:
        rng = np.random.default_rng(0)
        start = time.perf_counter()
        verifier = Verifier(VerifierOptions(bundle=name, use_edgetpu=False))
        bundle = verifier.bundle
        sets = embed_all(name, args.data)
        print(
            f"\n=== {bundle.name} v{bundle.version}: embedded {sum(len(s.files) for s in sets)} faces "
            f"in {time.perf_counter() - start:.0f}s"
        )
        gate_section(sets)
        fresh = points_section(bundle, sets)
        gated = [s.gated() for s in sets]
        heldout_ok = heldout_section(bundle, gated, args.heldout_draws) if args.heldout_draws > 0 else None
        stats = statistic_section(bundle, gated, rng)
        one_to_n_section(bundle, gated, rng)
        if bundle.name == "face-fused-v1":
            targets(bundle, fresh, stats, gated, heldout_ok)


if __name__ == "__main__":
    main()
