"""Online triplet losses for L2-normalised embeddings (Keras 3, TensorFlow backend).

``squared=False`` (default) uses Euclidean distances, as TF Addons' TripletSemiHardLoss does with
its default ``distance_metric="L2"``; ``squared=True`` uses squared distances, as FaceNet's paper.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def pairwise_squared_distances(embeddings: tf.Tensor) -> tf.Tensor:
    """(B, D) -> (B, B) squared Euclidean distances, clipped at 0, exact zeros on the diagonal."""
    sq = tf.reduce_sum(tf.square(embeddings), axis=1)
    d = sq[:, None] - 2.0 * tf.matmul(embeddings, embeddings, transpose_b=True) + sq[None, :]
    d = tf.maximum(d, 0.0)
    return d * (1.0 - tf.eye(tf.shape(embeddings)[0], dtype=d.dtype))


def pairwise_distances(embeddings: tf.Tensor, squared: bool) -> tf.Tensor:
    """Squared or plain Euclidean distances; the sqrt has a finite gradient at zero distance."""
    d = pairwise_squared_distances(embeddings)
    if squared:
        return d
    zero = tf.cast(tf.equal(d, 0.0), d.dtype)
    return tf.sqrt(d + zero * 1e-16) * (1.0 - zero)


def semi_hard_triplet_loss(
    labels: tf.Tensor, embeddings: tf.Tensor, margin: float = 1.0, squared: bool = False
) -> tf.Tensor:
    """FaceNet semi-hard triplet loss (the definition of TF Addons' TripletSemiHardLoss).

    For each anchor-positive pair (a, p), the negative is the closest n with d(a,n) > d(a,p);
    if none exists, the farthest negative of a. Loss: mean over all pairs of
    max(d(a,p) - d(a,n) + margin, 0).
    """
    labels = tf.reshape(tf.cast(labels, tf.int64), [-1])
    d = pairwise_distances(tf.cast(embeddings, tf.float32), squared)
    batch = tf.shape(labels)[0]
    same = tf.equal(labels[:, None], labels[None, :])
    neg_mask = tf.logical_not(same)  # [a, n]
    pos_mask = tf.logical_and(same, tf.logical_not(tf.eye(batch, dtype=tf.bool)))  # [a, p]

    big = tf.reduce_max(d) + 1.0
    # d_an[a, n] tiled over p: [a, p, n]
    d_an = d[:, None, :]
    d_ap = d[:, :, None]
    semi = tf.logical_and(neg_mask[:, None, :], d_an > d_ap)  # [a, p, n]
    closest_semi = tf.reduce_min(tf.where(semi, d_an, big), axis=2)  # [a, p]
    has_semi = tf.reduce_any(semi, axis=2)
    farthest_neg = tf.reduce_max(tf.where(neg_mask, d, -big), axis=1)  # [a]
    d_neg = tf.where(has_semi, closest_semi, farthest_neg[:, None])

    loss = tf.maximum(d - d_neg + margin, 0.0)
    pos = tf.cast(pos_mask, tf.float32)
    # anchors without any negative in the batch contribute nothing
    has_neg = tf.cast(tf.reduce_any(neg_mask, axis=1), tf.float32)[:, None]
    pos = pos * has_neg
    return tf.math.divide_no_nan(tf.reduce_sum(loss * pos), tf.reduce_sum(pos))


def batch_hard_triplet_loss(
    labels: tf.Tensor, embeddings: tf.Tensor, margin: float = 1.0, squared: bool = False
) -> tf.Tensor:
    """Batch-hard triplet loss (Hermans et al.): per anchor, hardest positive vs hardest negative.

    Anchors without a positive or without a negative in the batch are left out of the mean.
    """
    labels = tf.reshape(tf.cast(labels, tf.int64), [-1])
    d = pairwise_distances(tf.cast(embeddings, tf.float32), squared)
    batch = tf.shape(labels)[0]
    same = tf.equal(labels[:, None], labels[None, :])
    pos_mask = tf.logical_and(same, tf.logical_not(tf.eye(batch, dtype=tf.bool)))
    neg_mask = tf.logical_not(same)
    big = tf.reduce_max(d) + 1.0
    hardest_pos = tf.reduce_max(tf.where(pos_mask, d, 0.0), axis=1)
    hardest_neg = tf.reduce_min(tf.where(neg_mask, d, big), axis=1)
    valid = tf.cast(tf.logical_and(tf.reduce_any(pos_mask, 1), tf.reduce_any(neg_mask, 1)), tf.float32)
    loss = tf.maximum(hardest_pos - hardest_neg + margin, 0.0) * valid
    return tf.math.divide_no_nan(tf.reduce_sum(loss), tf.reduce_sum(valid))


@keras.saving.register_keras_serializable(package="edge_verify")
class TripletLoss(keras.losses.Loss):
    """Keras loss wrapper: ``TripletLoss("semi_hard" | "batch_hard", margin)``."""

    def __init__(
        self, strategy: str = "semi_hard", margin: float = 1.0, squared: bool = False, name: str | None = None, **kwargs
    ):
        if strategy not in ("semi_hard", "batch_hard"):
            raise ValueError(f"unknown triplet strategy {strategy!r}")
        super().__init__(name=name or f"triplet_{strategy}", **kwargs)
        self.strategy = strategy
        self.margin = margin
        self.squared = squared

    def call(self, y_true, y_pred):
        fn = semi_hard_triplet_loss if self.strategy == "semi_hard" else batch_hard_triplet_loss
        return fn(y_true, y_pred, self.margin, self.squared)

    def get_config(self):
        return {**super().get_config(), "strategy": self.strategy, "margin": self.margin, "squared": self.squared}
