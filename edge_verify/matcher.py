"""Compare embeddings with templates and decide.

A template is the mean of its unit enrolment embeddings (at most ``MAX_TEMPLATE_FRAMES``), stored
unnormalised. ``score(probes, template)`` is the mean, over the probe frames of one track, of each
frame's cosine with the template's direction (the unit mean of the enrolment frames): averaging the
enrolment frames removes their own lighting and pose, which at equal FAR turns away far fewer
people than the mean cosine over every (probe, enrolment) pair (``benchmarks/operating_points.py``
measures both). The operating points are calibrated on templates of ``MAX_TEMPLATE_FRAMES`` frames
and single probe frames: fewer enrolment frames, or more probe frames, only lower the FAR.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Decision:
    identity: str | None  # claimed (1:1) or best match (1:N); None when unknown
    score: float
    threshold: float
    accepted: bool
    second: str | None = None  # 1:N: the runner-up and its score (the margin rule)
    second_score: float | None = None
    frames: int = 1  # probe frames the score averages
    nearest: str | None = None  # 1:N: the best-scoring identity, accepted or not (``score`` is its score)

    @classmethod
    def refused(cls, threshold: float = float("nan")) -> Decision:
        """A rejection made before any score (a failed liveness check)."""
        return cls(None, float("nan"), threshold, False, frames=0)


def unit(vectors: np.ndarray) -> np.ndarray:
    v = np.atleast_2d(np.asarray(vectors, np.float64))
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(unit(a)[0] @ unit(b)[0])


MAX_TEMPLATE_FRAMES = 5  # the operating points were calibrated on templates of this many frames


def mean_template(embeddings: np.ndarray) -> np.ndarray:
    """Enrolment template: the mean of the unit enrolment embeddings (not renormalised)."""
    return unit(embeddings).mean(0).astype(np.float32)


def score(probes: np.ndarray, template: np.ndarray) -> float:
    """Mean over the probe frames of their cosine with the template's direction."""
    return float(unit(probes).mean(0) @ unit(template)[0])


def agreement(embeddings: np.ndarray) -> np.ndarray:
    """For each frame, its mean cosine with every other frame (how well it agrees with the rest)."""
    u = unit(embeddings)
    n = len(u)
    if n < 2:
        return np.ones(n)
    sims = u @ u.T
    return (sims.sum(1) - np.diag(sims)) / (n - 1)


def odd_frames(embeddings: np.ndarray, threshold: float) -> list[int]:
    """Frames that do not show the same person as the rest: drop the frame that agrees least
    until every remaining frame's mean score with the others reaches ``threshold``."""
    if len(embeddings) < 2:
        return []
    keep = list(range(len(embeddings)))
    odd = []
    while len(keep) > 1:
        agree = agreement(np.asarray(embeddings)[keep])
        worst = int(np.argmin(agree))
        if agree[worst] >= threshold:
            break
        odd.append(keep.pop(worst))
    return sorted(odd) if len(keep) > 1 else sorted(range(len(embeddings)))


def verify(probes: np.ndarray, template: np.ndarray, threshold: float, identity: str) -> Decision:
    """1:1 on one track: the mean score of its frames decides (never the best single frame)."""
    s = score(probes, template)
    return Decision(identity, s, threshold, s >= threshold, frames=len(np.atleast_2d(probes)))


class Gallery:
    """Templates of N identities as one float32 matrix: 1:N scoring is a single matrix product.

    The product runs in float32 (half the memory traffic: 10^5 templates in a few ms); the few
    best candidates are then scored again in float64, exactly as ``verify`` scores a claim, so a
    1:N decision never differs from the 1:1 decision on the same template."""

    def __init__(self, templates: dict[str, np.ndarray]):
        self.names = list(templates)
        self.matrix = (
            np.stack([np.asarray(t, np.float32) for t in templates.values()])
            if templates
            else np.zeros((0, 0), np.float32)
        )
        # a template's score is with its direction: (row . probe) / |row|, as ``score`` computes it
        # (float32, for the approximate product in ``best``; the exact rescoring normalises itself)
        self.norms = np.maximum(np.linalg.norm(self.matrix.astype(np.float64), axis=1), 1e-12).astype(np.float32)

    def __len__(self) -> int:
        return len(self.names)

    def scores(self, probes: np.ndarray) -> np.ndarray:
        """Every template's exact score (float64)."""
        if not self.names:
            return np.zeros(0)
        return unit(self.matrix.astype(np.float64)) @ unit(probes).mean(0)

    def best(self, probes: np.ndarray, k: int = 2) -> list[tuple[int, float]]:
        """(index, exact score) of the ``k`` best templates, best first."""
        if not self.names or k < 1:
            return []
        probe = unit(probes).mean(0)
        approx = (self.matrix @ probe.astype(np.float32)) / self.norms
        m = k + 2  # a margin for float32 near-ties, settled by the exact scores below
        candidates = np.argpartition(-approx, m - 1)[:m] if len(approx) > m else np.arange(len(approx))
        exact = unit(self.matrix[candidates].astype(np.float64)) @ probe
        order = np.argsort(-exact, kind="stable")[:k]
        return [(int(candidates[i]), float(exact[i])) for i in order]

    def rank(self, probes: np.ndarray, top: int | None = None) -> list[tuple[str, float]]:
        """(identity, score), best first; only the best ``top`` when given."""
        if top is not None:
            return [(self.names[i], s) for i, s in self.best(probes, top)]
        s = self.scores(probes)
        return [(self.names[i], float(s[i])) for i in np.argsort(-s, kind="stable")]


def identify(probes: np.ndarray, gallery: Gallery, threshold: float, margin: float = 0.0) -> Decision:
    """1:N on one track: the best identity if its mean score reaches ``threshold`` and beats the
    runner-up by ``margin``; otherwise unknown."""
    frames = len(np.atleast_2d(probes))
    if len(gallery) == 0:
        return Decision(None, float("nan"), threshold, False, frames=frames)
    (best_index, best_score), *rest = gallery.best(probes, 2)
    best = gallery.names[best_index]
    second, second_score = (gallery.names[rest[0][0]], rest[0][1]) if rest else (None, None)
    accepted = best_score >= threshold and (second_score is None or best_score - second_score >= margin)
    return Decision(best if accepted else None, best_score, threshold, accepted, second, second_score, frames, best)
