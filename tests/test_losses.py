"""Triplet losses against an independent plain-numpy implementation of the same definitions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

tf = pytest.importorskip("tensorflow")

from training.losses import TripletLoss, batch_hard_triplet_loss, semi_hard_triplet_loss  # noqa: E402


def _dist(e: np.ndarray, squared: bool) -> np.ndarray:
    d = np.array([[np.sum((a - b) ** 2) for b in e] for a in e], np.float64)
    return d if squared else np.sqrt(d)


def numpy_semi_hard(labels, emb, margin, squared=False) -> float:
    """Loop-by-loop FaceNet semi-hard: for each (a, p), the closest negative farther than p,
    else the farthest negative; anchors with no negative are left out."""
    d = _dist(emb, squared)
    losses = []
    for a in range(len(labels)):
        negatives = [n for n in range(len(labels)) if labels[n] != labels[a]]
        if not negatives:
            continue
        for p in range(len(labels)):
            if p == a or labels[p] != labels[a]:
                continue
            semi = [d[a, n] for n in negatives if d[a, n] > d[a, p]]
            d_neg = min(semi) if semi else max(d[a, n] for n in negatives)
            losses.append(max(d[a, p] - d_neg + margin, 0.0))
    return float(np.mean(losses)) if losses else 0.0


def numpy_batch_hard(labels, emb, margin, squared=False) -> float:
    d = _dist(emb, squared)
    losses = []
    for a in range(len(labels)):
        pos = [d[a, p] for p in range(len(labels)) if p != a and labels[p] == labels[a]]
        neg = [d[a, n] for n in range(len(labels)) if labels[n] != labels[a]]
        if pos and neg:
            losses.append(max(max(pos) - min(neg) + margin, 0.0))
    return float(np.mean(losses)) if losses else 0.0


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


batches = st.integers(min_value=0, max_value=2**31 - 1).flatmap(
    lambda seed: st.tuples(st.just(seed), st.integers(2, 24), st.integers(2, 6), st.integers(2, 16))
)


@pytest.mark.parametrize(
    ("ours", "reference"), [(semi_hard_triplet_loss, numpy_semi_hard), (batch_hard_triplet_loss, numpy_batch_hard)]
)
@settings(max_examples=40, deadline=None)
@given(batch=batches, margin=st.sampled_from([0.2, 1.0]), squared=st.booleans())
def test_loss_matches_numpy(ours, reference, batch, margin, squared):
    seed, n, classes, dim = batch
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    emb = _unit(rng.normal(size=(n, dim))).astype(np.float32)
    # The semi-hard choice is discontinuous where a negative's distance ties a positive's: there float32
    # (TensorFlow) and float64 (the reference) may pick different negatives. Test away from ties.
    d = _dist(emb.astype(np.float64), squared)
    same = labels[:, None] == labels[None, :]
    gaps = [
        abs(d[a, p] - d[a, q]) for a in range(n) for p in range(n) for q in range(n) if same[a, p] and not same[a, q]
    ]
    assume(not gaps or min(gaps) > 1e-4)
    value = float(ours(tf.constant(labels), tf.constant(emb), margin, squared))
    assert abs(value - reference(labels, emb.astype(np.float64), margin, squared)) <= 1e-5


def test_anchor_without_semi_hard_negative_uses_farthest_negative():
    # class 0 spread out, negative sits between: no negative is farther than the positive
    emb = _unit(np.array([[1.0, 0.0], [-1.0, 0.05], [0.0, 1.0]]))
    labels = np.array([0, 0, 1])
    d = _dist(emb, squared=False)
    assert d[0, 2] < d[0, 1]  # the precondition: no semi-hard negative for anchor 0
    expected = numpy_semi_hard(labels, emb, 0.5)
    ours = float(semi_hard_triplet_loss(tf.constant(labels), tf.constant(emb, tf.float32), 0.5))
    assert ours == pytest.approx(expected, abs=1e-5)
    assert ours > 0


def test_class_with_single_sample_contributes_no_positive_pair():
    rng = np.random.default_rng(3)
    emb = _unit(rng.normal(size=(5, 4))).astype(np.float32)
    labels = np.array([0, 0, 1, 1, 2])  # class 2 has one sample
    for fn, ref in ((semi_hard_triplet_loss, numpy_semi_hard), (batch_hard_triplet_loss, numpy_batch_hard)):
        ours = float(fn(tf.constant(labels), tf.constant(emb), 1.0))
        assert ours == pytest.approx(ref(labels, emb.astype(np.float64), 1.0), abs=1e-5)


def test_single_class_batch_gives_zero_not_nan():
    emb = _unit(np.random.default_rng(0).normal(size=(4, 3))).astype(np.float32)
    labels = np.zeros(4, np.int64)
    for fn in (semi_hard_triplet_loss, batch_hard_triplet_loss):
        assert float(fn(tf.constant(labels), tf.constant(emb), 1.0)) == 0.0


def test_gradient_is_finite_with_duplicate_embeddings():
    emb = tf.Variable(_unit(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])).astype(np.float32))
    labels = tf.constant([0, 0, 1, 1])
    with tf.GradientTape() as tape:
        loss = semi_hard_triplet_loss(labels, emb, 1.0)
    assert np.all(np.isfinite(tape.gradient(loss, emb).numpy()))


def test_keras_loss_wrapper_round_trips_config():
    loss = TripletLoss("batch_hard", margin=0.3, squared=True)
    clone = TripletLoss.from_config(loss.get_config())
    assert (clone.strategy, clone.margin, clone.squared) == ("batch_hard", 0.3, True)
    with pytest.raises(ValueError):
        TripletLoss("random")
