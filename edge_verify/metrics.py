"""Verification metrics on similarity scores (numpy only; shared by device and host)."""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np

from edge_verify.matcher import unit


def pair_scores(embeddings: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores of all genuine and all impostor pairs of unit-norm embeddings."""
    labels = np.asarray(labels)
    sims = embeddings @ embeddings.T
    iu = np.triu_indices(len(labels), k=1)
    same = labels[iu[0]] == labels[iu[1]]
    scores = sims[iu]
    return scores[same], scores[~same]


def template_draws(
    embeddings: np.ndarray, labels: np.ndarray, frames: int = 5, draws: int = 20, seed: int = 0
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(identity, photo indices, direction) of each template ``template_scores`` scores: up to
    ``draws`` distinct draws of ``frames`` photos per identity (all but one photo for an identity
    with fewer); the direction is the unit mean, as ``matcher.score`` takes it. Deterministic for a
    given ``seed``."""
    rng = np.random.default_rng(seed)
    u = unit(embeddings)
    labels = np.asarray(labels)
    out = []
    for identity in sorted(set(labels.tolist())):
        mine = np.flatnonzero(labels == identity)
        if len(mine) < 2:
            continue
        e = min(frames, len(mine) - 1)
        if math.comb(len(mine), e) <= draws:
            subsets = [np.array(c) for c in itertools.combinations(mine, e)]
        else:
            subsets = [rng.choice(mine, e, replace=False) for _ in range(draws)]
        out += [(identity, subset, unit(u[subset].mean(0))[0]) for subset in subsets]
    return out


def template_scores(
    embeddings: np.ndarray, labels: np.ndarray, frames: int = 5, draws: int = 20, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the decision statistic at the counts that accept most impostors: each template of
    ``template_draws`` scored against every other photo of its identity (genuine) and every photo
    of the other identities (impostor)."""
    u = unit(embeddings)
    labels = np.asarray(labels)
    genuine, impostor = [], []
    for identity, subset, direction in template_draws(u, labels, frames, draws, seed):
        mine = np.flatnonzero(labels == identity)
        genuine.append(u[np.setdiff1d(mine, subset)] @ direction)
        impostor.append(u[labels != identity] @ direction)
    if not genuine:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(genuine), np.concatenate(impostor)


def threshold_at_far(impostor: np.ndarray, far: float) -> float:
    """Smallest threshold with false-accept rate <= far (accept when score >= threshold)."""
    return thresholds_at_fars(impostor, [far])[0]


def thresholds_at_fars(impostor: np.ndarray, fars) -> list[float]:
    """``threshold_at_far`` for each of ``fars``, sorting the scores once."""
    imp = np.sort(np.asarray(impostor, np.float64))[::-1]
    if imp.size == 0:
        return [float("nan")] * len(fars)
    out = []
    for far in fars:
        allowed = int(np.floor(far * imp.size))  # impostors that may be accepted
        out.append(float(imp[-1]) if allowed >= imp.size else float(np.nextafter(imp[allowed], np.inf)))
    return out


def rates(genuine: np.ndarray, impostor: np.ndarray, threshold: float) -> tuple[float, float]:
    """(TAR, FAR) at ``threshold``."""
    return float(np.mean(genuine >= threshold)), float(np.mean(impostor >= threshold))


def roc_auc(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """Probability that a genuine score exceeds an impostor score (ties count half)."""
    scores = np.concatenate([genuine, impostor])
    ranks = _average_ranks(scores)
    n_g, n_i = len(genuine), len(impostor)
    return float((ranks[:n_g].sum() - n_g * (n_g + 1) / 2) / (n_g * n_i))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.arange(1, len(x) + 1)
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    return sums[inv] / counts[inv]


def eer(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    """Equal error rate and the threshold where FRR and FAR cross."""
    thresholds = np.unique(np.concatenate([genuine, impostor]))
    g = np.sort(genuine)
    i = np.sort(impostor)
    frr = np.searchsorted(g, thresholds, side="left") / len(g)
    far = 1.0 - np.searchsorted(i, thresholds, side="left") / len(i)
    k = int(np.argmin(np.abs(frr - far)))
    return float((frr[k] + far[k]) / 2), float(thresholds[k])


def recall_at_1(embeddings: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose nearest other sample has the same label."""
    sims = embeddings @ embeddings.T
    np.fill_diagonal(sims, -np.inf)
    return float(np.mean(np.asarray(labels)[sims.argmax(1)] == np.asarray(labels)))


@dataclass
class VerificationReport:
    pairs_genuine: int
    pairs_impostor: int
    roc_auc: float
    eer: float
    eer_threshold: float
    tar_at_far_1e2: float
    threshold_at_far_1e2: float
    tar_at_far_1e3: float
    threshold_at_far_1e3: float
    recall_at_1: float | None = None
    genuine_min: float = float("nan")
    impostor_max: float = float("nan")

    def as_dict(self) -> dict:
        return asdict(self)


def verification_report(genuine: np.ndarray, impostor: np.ndarray, recall: float | None = None) -> VerificationReport:
    e, e_thr = eer(genuine, impostor)
    t2 = threshold_at_far(impostor, 1e-2)
    t3 = threshold_at_far(impostor, 1e-3)
    return VerificationReport(
        pairs_genuine=len(genuine),
        pairs_impostor=len(impostor),
        roc_auc=roc_auc(genuine, impostor),
        eer=e,
        eer_threshold=e_thr,
        tar_at_far_1e2=rates(genuine, impostor, t2)[0],
        threshold_at_far_1e2=t2,
        tar_at_far_1e3=rates(genuine, impostor, t3)[0],
        threshold_at_far_1e3=t3,
        recall_at_1=recall,
        genuine_min=float(np.min(genuine)),
        impostor_max=float(np.max(impostor)),
    )


def format_report(report: VerificationReport, title: str = "") -> str:
    rows = [
        ("pairs (genuine / impostor)", f"{report.pairs_genuine} / {report.pairs_impostor}"),
        ("ROC AUC", f"{report.roc_auc:.4f}"),
        ("EER", f"{100 * report.eer:.2f}% (threshold {report.eer_threshold:.4f})"),
        ("TAR @ FAR 1e-2", f"{100 * report.tar_at_far_1e2:.2f}% (threshold {report.threshold_at_far_1e2:.4f})"),
        ("TAR @ FAR 1e-3", f"{100 * report.tar_at_far_1e3:.2f}% (threshold {report.threshold_at_far_1e3:.4f})"),
        ("genuine min / impostor max", f"{report.genuine_min:.4f} / {report.impostor_max:.4f}"),
    ]
    if report.recall_at_1 is not None:
        rows.append(("recall@1", f"{100 * report.recall_at_1:.2f}%"))
    width = max(len(r[0]) for r in rows)
    lines = [title] if title else []
    lines += [f"  {name:<{width}}  {value}" for name, value in rows]
    return "\n".join(lines)
