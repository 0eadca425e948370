"""P x K class-balanced batches: P identities, K samples each, so every batch has positives."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from edge_verify.errors import InputError


class PKSampler:
    """Yields index batches of P classes x K samples; classes with fewer than K samples are drawn
    with replacement. Use ``batches(n)`` or ``dataset(images, labels)`` for Keras."""

    def __init__(self, labels: np.ndarray, p: int, k: int, seed: int = 0):
        labels = np.asarray(labels)
        self.classes, inverse = np.unique(labels, return_inverse=True)
        if len(self.classes) < 2:
            raise InputError("P x K sampling needs at least 2 identities")
        self.p = min(p, len(self.classes))
        self.k = k
        self.by_class = [np.flatnonzero(inverse == c) for c in range(len(self.classes))]
        self.rng = np.random.default_rng(seed)

    @property
    def batch_size(self) -> int:
        return self.p * self.k

    def batch(self) -> np.ndarray:
        chosen = self.rng.choice(len(self.classes), size=self.p, replace=False)
        parts = []
        for c in chosen:
            pool = self.by_class[c]
            parts.append(self.rng.choice(pool, size=self.k, replace=len(pool) < self.k))
        return np.concatenate(parts)

    def batches(self, n: int) -> Iterator[np.ndarray]:
        for _ in range(n):
            yield self.batch()
