"""P x K sampling and the verification metrics (numpy, device-safe)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_verify.errors import InputError
from edge_verify.metrics import eer, pair_scores, rates, recall_at_1, roc_auc, threshold_at_far
from training.sampling import PKSampler


def test_pk_batches_have_p_classes_of_k():
    labels = np.repeat(np.arange(10), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    sampler = PKSampler(labels, p=4, k=3, seed=1)
    for idx in sampler.batches(50):
        assert len(idx) == 12
        classes, counts = np.unique(labels[idx], return_counts=True)
        assert len(classes) == 4 and set(counts) == {3}


def test_pk_needs_two_classes():
    with pytest.raises(InputError):
        PKSampler(np.zeros(5), 2, 2)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1, 1), min_size=1, max_size=200), st.sampled_from([1e-3, 1e-2, 0.1, 0.5]))
def test_threshold_at_far_never_exceeds_target(impostor, far):
    impostor = np.array(impostor)
    t = threshold_at_far(impostor, far)
    assert np.mean(impostor >= t) <= far + 1e-12
    # and it is the smallest such threshold: lowering it to the next impostor would exceed
    above = impostor[impostor < t]
    if above.size:
        assert np.mean(impostor >= above.max()) > far


def test_roc_auc_matches_brute_force():
    rng = np.random.default_rng(0)
    g, i = rng.normal(1, 1, 60), rng.normal(0, 1, 80)
    brute = np.mean([(a > b) + 0.5 * (a == b) for a in g for b in i])
    assert roc_auc(g, i) == pytest.approx(brute)


def test_eer_of_separable_scores_is_zero_and_of_identical_is_half():
    assert eer(np.array([0.9, 0.8]), np.array([0.1, 0.2]))[0] == 0.0
    same = np.linspace(0, 1, 101)
    assert eer(same, same)[0] == pytest.approx(0.5, abs=0.02)


def test_pair_scores_and_recall():
    emb = np.eye(4, dtype=np.float32)[[0, 0, 1, 1]]
    genuine, impostor = pair_scores(emb, np.array([0, 0, 1, 1]))
    assert list(genuine) == [1.0, 1.0] and len(impostor) == 4 and impostor.max() == 0.0
    assert recall_at_1(emb, np.array([0, 0, 1, 1])) == 1.0
    assert rates(genuine, impostor, 0.5) == (1.0, 0.0)
