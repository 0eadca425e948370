"""Calibrate a face bundle's operating points on labelled development sets (no TensorFlow).

Every image goes through the device pipeline (YuNet, 5-point alignment, quality gate, int8
embedding); the points are calibrated on the captures the quality gate accepts (what it refuses
gets an instruction at the door, never a score), and each set records what the gate refused. Each
point is the strictest per-set threshold at its FAR plus a held-out margin (``heldout``): a
threshold set on some people lets in more than its FAR of people it never saw.
Pre-aligned 112x112 chips (``faces_dev/celebs``) are padded with a replicated border first so
that the detector sees a whole face. Scores are templates of 5 photos against single probe photos
(``template_scores``): the statistic every decision uses, at its most permissive frame counts;
single photo pairs are recorded beside them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge_verify.errors import EdgeVerifyError
from edge_verify.matcher import MAX_TEMPLATE_FRAMES, unit
from edge_verify.metrics import pair_scores, template_draws, template_scores
from edge_verify.operating import (
    MIN_EVENTS,
    STATISTIC,
    conservative_threshold,
    conservative_thresholds,
    far_curve,
    measure,
    resolvable,
    wilson_interval,
)
from edge_verify.quality import QualityOptions
from edge_verify.sources import list_images, read_image

POINTS = {"strict": 1e-4, "default": 1e-3, "convenient": 1e-2}
# Held-out margin: each set's people are split into HELDOUT_FOLDS groups (3 of Yale B's 27 per group),
# HELDOUT_REPEATS times; the calibration runs without one group and is measured on the impostor
# trials that involve someone of it. A threshold rises by the smallest MARGIN_STEP multiple that
# keeps the pooled held-out FAR at or below its FAR on every set.
HELDOUT_FOLDS = 9
HELDOUT_REPEATS = 100
MARGIN_STEP = 1e-3
MAX_MARGIN = 0.1
# (name, folder under the shared data, border to add before detection)
DEV_SETS = (("faces_dev/celebs", 40), ("faces_dev/yaleb", 40), ("faces", 0))


@dataclass
class DevSet:
    name: str
    embeddings: np.ndarray
    labels: np.ndarray
    files: list[str]
    unusable: int  # no face found (or only one below the size gate)
    refused: dict[str, int] = field(default_factory=dict)  # refused by the quality gate, per first failed cue

    @property
    def gate_refused(self) -> int:
        return sum(self.refused.values())

    @property
    def gate_share(self) -> float:
        """Share of the images with a face that the quality gate refused."""
        return self.gate_refused / max(len(self.files) + self.gate_refused, 1)

    @property
    def identities(self) -> int:
        return len(set(self.labels.tolist()))

    def scores(self) -> tuple[np.ndarray, np.ndarray]:
        """Genuine and impostor scores of the decision statistic (``template_scores``)."""
        return template_scores(self.embeddings, self.labels)

    def pair_scores(self) -> tuple[np.ndarray, np.ndarray]:
        """Single image pairs (a template of one photo, one probe photo)."""
        return pair_scores(self.embeddings, self.labels)


def embed_folder(verifier, root: Path, pad: int, name: str, progress=None) -> DevSet:
    """Embed every image of a folder-per-identity set through the device pipeline; images the
    quality gate refuses are counted per cue, not scored."""
    embeddings, labels, files, unusable, refused = [], [], [], 0, Counter()
    paths = [(d.name, p) for d in sorted(root.iterdir()) if d.is_dir() for p in list_images(d)]
    for identity, path in progress(paths) if progress else paths:
        image = read_image(path)
        if pad:
            image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        try:
            obs = verifier.observe_one(image, str(path), largest=True)
        except EdgeVerifyError:
            unusable += 1
            continue
        if obs.embedding is None:
            refused[obs.quality.cues[0]] += 1
            continue
        embeddings.append(obs.embedding)
        labels.append(identity)
        files.append(str(path.relative_to(root)))
    return DevSet(name, np.stack(embeddings), np.array(labels), files, unusable, dict(refused))


def load_dev_sets(verifier, data: Path, progress=None) -> list[DevSet]:
    """The development sets present under ``data`` (the shared data folder)."""
    return [embed_folder(verifier, data / sub, pad, sub, progress) for sub, pad in DEV_SETS if (data / sub).is_dir()]


@dataclass
class HeldOut:
    """Thresholds calibrated without some people, and the impostor trials involving those people."""

    fars: tuple[float, ...]
    folds: list[dict[float, float]] = field(default_factory=list)  # per fold: FAR -> threshold set without it
    impostors: list[dict[str, np.ndarray]] = field(default_factory=list)  # per fold: set -> held-out scores

    def events(self, far: float, margin: float = 0.0) -> dict[str, tuple[int, int]]:
        """Per set, (false accepts, trials) pooled over the folds at each fold's threshold + ``margin``."""
        out: dict[str, tuple[int, int]] = {}
        for thresholds, scores in zip(self.folds, self.impostors, strict=True):
            t = round(thresholds[far] + margin, 6)
            for name, imp in scores.items():
                fa, n = out.get(name, (0, 0))
                out[name] = (fa + int(np.sum(imp >= t)), n + len(imp))
        return out

    def margin(self, far: float) -> float:
        """The smallest MARGIN_STEP multiple keeping every set's pooled held-out FAR at or below
        ``far`` (at or below the smallest FAR its held-out trials resolve, where they resolve less)."""
        for k in range(int(round(MAX_MARGIN / MARGIN_STEP)) + 1):
            margin = round(k * MARGIN_STEP, 6)
            if all(fa <= max(far, MIN_EVENTS / n) * n for fa, n in self.events(far, margin).values() if n):
                return margin
        return MAX_MARGIN


def heldout(
    sets: list[DevSet], fars, folds: int = HELDOUT_FOLDS, repeats: int = HELDOUT_REPEATS, seed: int = 1
) -> HeldOut:
    """Calibrate (strictest per-set threshold at each FAR) without a group of each set's people, and
    keep the impostor trials in which someone of that group takes part (a template of theirs, or a
    probe photo of theirs): ``folds`` groups, ``repeats`` random splits. Templates as ``template_scores``."""
    rng = np.random.default_rng(seed)
    out = HeldOut(tuple(fars))
    for r in range(repeats):
        matrices = []
        for s in sets:
            draws = template_draws(s.embeddings, s.labels, seed=seed + r)
            owners = np.array([identity for identity, _, _ in draws])
            scores = unit(s.embeddings) @ np.stack([d for _, _, d in draws]).T
            groups = np.array_split(rng.permutation(sorted(set(s.labels.tolist()))), folds)
            matrices.append((s, scores, owners, s.labels[:, None] != owners[None, :], groups))
        for f in range(folds):
            calibration, held = [], {}
            for s, scores, owners, impostor, groups in matrices:
                out_probe, out_template = np.isin(s.labels, groups[f]), np.isin(owners, groups[f])
                involved = out_probe[:, None] | out_template[None, :]
                calibration.append(scores[impostor & ~involved])
                held[s.name] = scores[impostor & involved]
            out.folds.append(dict(zip(out.fars, conservative_thresholds(calibration, out.fars), strict=True)))
            out.impostors.append(held)
    return out


def heldout_text(events: tuple[int, int]) -> str:
    """Pooled held-out FAR with its 95% Wilson interval and counts."""
    fa, n = events
    lo, hi = wilson_interval(fa, n)
    return f"{fa / max(n, 1):.2e} [{lo:.1e}, {hi:.1e}] ({fa}/{n})"


def calibrate_points(sets: list[DevSet], points: dict[str, float] = POINTS, held: HeldOut | None = None) -> dict:
    """bundle.json decision fields: operating points (each the strictest per-set threshold at its
    FAR plus its held-out margin, ``heldout``), the 1:N FAR curve (with the same margins), the
    statistic, and per-set FAR/FRR with intervals."""
    scores = {s.name: s.scores() for s in sets}
    singles = {s.name: s.pair_scores() for s in sets}
    impostors = [imp for _, imp in scores.values()]
    curve = far_curve(impostors)
    fars = sorted({*points.values(), *(entry[0] for entry in curve)}, reverse=True)
    held = held or heldout(sets, fars)
    margins = {far: held.margin(far) for far in fars}
    thresholds: dict[float, float] = {}
    for far in fars:  # largest FAR first: a smaller FAR never gets a looser threshold
        value = round(conservative_threshold(impostors, far) + margins[far], 4)
        thresholds[far] = max([value, *thresholds.values()])
    out: dict = {"operating_points": {}, "default_operating_point": "default"}
    for name, far in points.items():
        threshold = thresholds[far]
        events = held.events(far, margins[far])
        measured = [
            measure(
                gen,
                imp,
                threshold,
                s.name,
                identities=s.identities,
                images=len(s.files),
                unusable_images=s.unusable,
                gate_refused=s.gate_refused,
                gate_refused_share=round(s.gate_share, 4),
                gate_refused_by_cue=s.refused,
                resolves_far=resolvable(len(imp), far),
                single_pairs={  # one enrolment photo, one probe photo: a template made from a single photo
                    k: v
                    for k, v in measure(*singles[s.name], threshold, s.name).items()
                    if k in ("genuine_pairs", "impostor_pairs", "far", "far_ci", "frr", "frr_ci")
                },
                heldout={  # impostor trials of people left out of the calibration, at its threshold + margin
                    "impostor_trials": events[s.name][1],
                    "far": events[s.name][0] / max(events[s.name][1], 1),
                    "far_ci": [round(v, 7) for v in wilson_interval(*events[s.name])],
                },
            )
            for s, (gen, imp) in zip(sets, scores.values(), strict=True)
        ]
        out["operating_points"][name] = {
            "threshold": threshold,
            "far": far,
            "heldout_margin": margins[far],
            "measured": measured,
            "source": "strictest per-set threshold at this FAR over "
            + ", ".join(s.name for s in sets)
            + f" (captures the quality gate accepts; templates of {MAX_TEMPLATE_FRAMES} photos vs single photos)"
            + f", plus a held-out margin of {margins[far]:.3f} (FAR of people left out of the calibration,"
            f" {HELDOUT_FOLDS} groups x {HELDOUT_REPEATS} splits)",
        }
    out["far_curve"] = [[far, thresholds[far], resolved] for far, _, resolved in curve]
    out["quality_gate"] = asdict(QualityOptions())
    out["statistic"] = (
        STATISTIC + f"; calibrated on templates of E = {MAX_TEMPLATE_FRAMES} photos against single probe photos (K = 1)"
    )
    return out
