"""Host pipeline on Fashion-MNIST: train (triplet loss), convert, and compare variants.

    python benchmarks/fashion_mnist.py [--epochs 5] [--eval 2000]

Reproduces the TF Addons TripletSemiHardLoss tutorial setup (its small CNN, batch 32, Adam 1e-3,
5 epochs, semi-hard loss) with P x K batches (8 x 4), then evaluates every TFLite variant on the
first --eval images of the held-out t10k split: mean/min cosine vs fp32, EER and its change, TAR
at FAR 1e-2 / 1e-3, recall@1, sizes, and the EdgeTPU static check.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--eval", type=int, default=2000)
    args = parser.parse_args()
    from converters.convert import ConvertOptions, convert, format_fidelity
    from edge_verify.embedder import Embedder
    from edge_verify.metrics import recall_at_1
    from training.data import load_fashion_mnist
    from training.fit import TrainOptions, train

    (x, y), (xt, yt) = load_fashion_mnist("train"), load_fashion_mnist("t10k")
    t0 = time.perf_counter()
    model, history = train(x, y, TrainOptions(epochs=args.epochs), progress=False)
    t_train = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as out:
        meta = convert(
            model, x, out, ConvertOptions(name="fashion-mnist-small-cnn"), validation=(xt[: args.eval], yt[: args.eval])
        )
        print(f"trained {args.epochs} epochs in {t_train:.0f}s, loss {history[0]:.4f} -> {history[-1]:.4f}")
        print(format_fidelity(meta))
        for variant in ("fp32", "int8"):
            emb = Embedder(Path(out) / meta["report"]["variants"][variant]["file"]).embed(xt[: args.eval])
            print(f"  recall@1 {variant}: {100 * recall_at_1(emb, yt[: args.eval]):.2f}%")
        variants = meta["report"]["variants"]
        print("  ROC AUC " + ", ".join(f"{v} {d['verification']['roc_auc']:.4f}" for v, d in variants.items()))
        int8 = meta["report"]["variants"]["int8"]
        print(
            f"int8 vs fp32: mean cosine {int8['cosine_vs_fp32']['mean']:.4f}, "
            f"EER change {int8['eer_change_points']:+.2f} points, "
            f"size ratio {meta['report']['variants']['fp32']['bytes'] / int8['bytes']:.1f}x smaller"
        )


if __name__ == "__main__":
    main()
