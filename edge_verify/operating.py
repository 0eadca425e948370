"""Operating points: named thresholds with the false-accept rate they were measured at, and the
rules that pick the one in force (command line, site calibration, bundle; 1:N gallery size).

A score is the mean, over the probe frames of one track, of their cosine with the direction of a
template (the unit mean of its E <= 5 enrolment frames; ``matcher.score``). Thresholds are
calibrated at the counts that accept most impostors: templates of 5 photos, single probe photos.
Fewer enrolment frames or more probe frames lower the false-accept rate at the same threshold
(``benchmarks/operating_points.py`` measures it), so one threshold serves every count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from edge_verify.errors import UsageError
from edge_verify.metrics import thresholds_at_fars

STATISTIC = (
    "mean over the K probe frames of one track of their cosine with the unit mean of the template's "
    "E <= 5 enrolment frames"
)
# FARs at which a threshold curve is tabulated (1:N picks its threshold from it).
FAR_GRID = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6)
MIN_EVENTS = 10  # a FAR is resolved by a set with at least MIN_EVENTS / FAR impostor pairs
DEFAULT_MARGIN = 0.02  # 1:N: best identity must beat the second best by this much


@dataclass(frozen=True)
class OperatingPoint:
    """A named threshold, the FAR it was calibrated at and what it was measured on."""

    name: str
    threshold: float
    far: float | None  # None: not measured (e.g. a bundle converted without validation data)
    measured: tuple[dict, ...] = ()  # per data set: pairs, FAR and FRR with confidence intervals
    source: str = ""

    def as_dict(self) -> dict:
        return {
            "threshold": self.threshold,
            "far": self.far,
            "measured": list(self.measured),
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, name: str, d: dict) -> OperatingPoint:
        far = d.get("far")
        return cls(
            name=name,
            threshold=check_threshold(d["threshold"], f"operating point {name!r}"),
            far=None if far is None else check_far(far, f"operating point {name!r}"),
            measured=tuple(d.get("measured", ())),
            source=str(d.get("source", "")),
        )


@dataclass(frozen=True)
class ThresholdChoice:
    """The threshold a decision uses, where it came from, and the 1:N rules that went into it."""

    value: float
    origin: str
    far: float | None
    margin: float = 0.0  # 1:N only
    gallery_size: int = 1
    far_resolved: bool = True  # False: the per-search FAR asked for is below what the data measured
    curve: tuple[tuple, ...] = field(default=(), repr=False)  # (FAR, threshold[, resolved]) for 1:N

    def as_dict(self) -> dict:
        d = {"threshold": self.value, "origin": self.origin, "far": self.far}
        if self.gallery_size > 1:
            d.update(gallery_size=self.gallery_size, margin=self.margin, per_search_far_resolved=self.far_resolved)
        return d


def check_threshold(value, where: str) -> float:
    """A cosine threshold: a number in (0, 1]; anything else is a UsageError naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UsageError(f"{where}: threshold must be a number in (0, 1], got {value!r}")
    if not 0.0 < value <= 1.0:
        raise UsageError(f"{where}: threshold must be in (0, 1], got {value!r}")
    return float(value)


def check_far(value, where: str) -> float:
    """A false-accept rate: a number in (0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UsageError(f"{where}: FAR must be a number in (0, 1), got {value!r}")
    if not 0.0 < value < 1.0:
        raise UsageError(f"{where}: FAR must be in (0, 1), got {value!r}")
    return float(value)


def wilson_interval(events: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a rate ``events / trials`` (pairs share images, so it is a
    lower bound on the real uncertainty)."""
    if trials == 0:
        return (0.0, 1.0)
    p = events / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def round_up(threshold: float) -> float:
    """A threshold to 4 decimals, rounded up: never looser than measured."""
    return math.ceil(threshold * 1e4) / 1e4


def resolvable(impostor_pairs: int, far: float) -> bool:
    return impostor_pairs * far >= MIN_EVENTS


def measure(genuine: np.ndarray, impostor: np.ndarray, threshold: float, set_name: str, **extra) -> dict:
    """FAR and FRR of one data set at ``threshold``, with pair counts and 95% intervals."""
    fa = int(np.sum(impostor >= threshold))
    fr = int(np.sum(genuine < threshold))
    return {
        "set": set_name,
        **extra,
        "genuine_pairs": int(len(genuine)),
        "impostor_pairs": int(len(impostor)),
        "far": fa / max(len(impostor), 1),
        "far_ci": [round(v, 7) for v in wilson_interval(fa, len(impostor))],
        "frr": fr / max(len(genuine), 1),
        "frr_ci": [round(v, 5) for v in wilson_interval(fr, len(genuine))],
    }


def conservative_threshold(impostor_sets: list[np.ndarray], far: float) -> float:
    """The strictest of the per-set thresholds at ``far``; a set too small to resolve ``far`` gives
    its threshold at the smallest FAR it does resolve (a lower bound on what it would need)."""
    return conservative_thresholds(impostor_sets, [far])[0]


def conservative_thresholds(impostor_sets: list[np.ndarray], fars) -> list[float]:
    """``conservative_threshold`` at each of ``fars``, sorting each set once."""
    values = [
        thresholds_at_fars(impostor, [max(far, MIN_EVENTS / len(impostor)) for far in fars])
        for impostor in impostor_sets
        if len(impostor)
    ]
    if not values:
        raise ValueError("no impostor scores")
    return [round_up(max(per_set)) for per_set in zip(*values, strict=True)]


def far_curve(impostor_sets: list[np.ndarray]) -> list[list]:
    """[[FAR, threshold, resolved], ...] on FAR_GRID down to the smallest FAR the largest set
    resolves; ``resolved`` is False where a smaller set (one that resolves at least 1e-2) only
    bounds the threshold from below."""
    sizes = [len(i) for i in impostor_sets if len(i)]
    counted = [n for n in sizes if resolvable(n, 1e-2)] or sizes
    return [
        [far, conservative_threshold(impostor_sets, far), all(resolvable(n, far) for n in counted)]
        for far in FAR_GRID
        if resolvable(max(sizes), far)
    ]


def threshold_for_far(curve, far: float) -> tuple[float, bool]:
    """Threshold from a curve for ``far``: the entry at the largest tabulated FAR <= ``far``
    (stricter than needed, never looser). Returns (threshold, resolved); when the curve does not
    reach down to ``far`` (or every data set does not) resolved is False, and below the curve the
    strictest threshold is returned."""
    points = sorted((float(p[0]), float(p[1]), bool(p[2]) if len(p) > 2 else True) for p in curve)
    eligible = [(t, r) for f, t, r in points if f <= far * (1 + 1e-9)]
    if eligible:
        return eligible[-1]
    return max(t for _, t, _ in points), False


def gallery_threshold(base: ThresholdChoice, gallery_size: int, margin: float) -> ThresholdChoice:
    """1:N: per-search false accepts grow about N times the 1:1 FAR, so look up the threshold for
    FAR / N on the curve; never looser than the 1:1 threshold."""
    if gallery_size <= 1:
        return ThresholdChoice(base.value, base.origin, base.far, margin, 1, True, base.curve)
    if base.far is None or not base.curve:  # an explicit threshold, or a bundle without a curve
        return ThresholdChoice(base.value, base.origin, base.far, margin, gallery_size, False, base.curve)
    value, resolved = threshold_for_far(base.curve, base.far / gallery_size)
    origin = f"{base.origin}, 1:N over {gallery_size} (FAR {base.far:g} per search)"
    return ThresholdChoice(max(value, base.value), origin, base.far, margin, gallery_size, resolved, base.curve)
