"""Compare embeddings with templates and decide."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Decision:
    identity: str | None  # claimed (1:1) or best match (1:N); None when unknown
    score: float
    threshold: float
    accepted: bool


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64).reshape(-1)
    b = np.asarray(b, np.float64).reshape(-1)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def mean_template(embeddings: np.ndarray) -> np.ndarray:
    """Enrolment template: the renormalised mean of unit embeddings."""
    m = np.asarray(embeddings, np.float64).mean(0)
    return (m / max(np.linalg.norm(m), 1e-12)).astype(np.float32)


def verify(embeddings: np.ndarray, template: np.ndarray, threshold: float, identity: str) -> Decision:
    """1:1 over one or more captures: the best score decides."""
    score = max(cosine(e, template) for e in np.atleast_2d(embeddings))
    return Decision(identity, score, threshold, score >= threshold)


def rank(embedding: np.ndarray, templates: dict[str, np.ndarray]) -> list[tuple[str, float]]:
    """All enrolled identities by descending similarity."""
    return sorted(((name, cosine(embedding, t)) for name, t in templates.items()), key=lambda x: -x[1])


def identify(embedding: np.ndarray, templates: dict[str, np.ndarray], threshold: float) -> Decision:
    """1:N: the best match if it reaches the threshold, else unknown."""
    ranked = rank(embedding, templates)
    if not ranked:
        return Decision(None, float("nan"), threshold, False)
    name, score = ranked[0]
    return Decision(name if score >= threshold else None, score, threshold, score >= threshold)
