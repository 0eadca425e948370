"""Train an embedding model with an online triplet loss on P x K batches."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.sampling import PKSampler


@dataclass
class TrainOptions:
    architecture: str = "small_cnn"
    embedding_size: int = 256  # the TF Addons tutorial's Dense(256)
    epochs: int = 5
    steps_per_epoch: int | None = None  # default: one pass over the data
    p: int = 8  # identities per batch
    k: int = 4  # samples per identity
    loss: str = "semi_hard"  # or batch_hard
    margin: float = 1.0
    learning_rate: float = 1e-3
    seed: int = 0


def train(
    images: np.ndarray, labels: np.ndarray, options: TrainOptions, out: str | Path | None = None, progress: bool = True
):
    """Fit a new model on uint8 images (N, H, W, C) and labels; save to ``out`` (.keras) if given."""
    import keras
    import tensorflow as tf
    from tqdm import tqdm

    from training.losses import TripletLoss
    from training.models import ARCHITECTURES

    keras.utils.set_random_seed(options.seed)
    model = ARCHITECTURES[options.architecture](input_shape=images.shape[1:], embedding_size=options.embedding_size)
    sampler = PKSampler(labels, options.p, options.k, seed=options.seed)
    steps = options.steps_per_epoch or max(1, len(images) // sampler.batch_size)
    loss_fn = TripletLoss(options.loss, options.margin)
    optimizer = keras.optimizers.Adam(options.learning_rate)

    @tf.function(reduce_retracing=True)
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    history = []
    for epoch in range(options.epochs):
        losses = []
        bar = tqdm(
            sampler.batches(steps),
            total=steps,
            desc=f"epoch {epoch + 1}/{options.epochs}",
            disable=not progress or not sys.stderr.isatty(),
            leave=False,
        )
        for idx in bar:
            losses.append(float(step(tf.constant(images[idx], tf.float32), tf.constant(labels[idx]))))
            if len(losses) % 20 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        history.append(float(np.mean(losses)))
        if progress:
            print(f"epoch {epoch + 1}/{options.epochs}: loss {history[-1]:.4f}")
    if out is not None:
        model.save(str(out))
    return model, history


def embed_with_keras(model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    return model.predict(images.astype(np.float32), batch_size=batch_size, verbose=0)
