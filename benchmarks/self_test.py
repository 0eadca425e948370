"""Known-answer self-test: how far a healthy device is from the recorded embeddings, how far a
broken model is, and what the test costs.

    python benchmarks/self_test.py

Prints, for the default bundle's three sample photos, the lowest cosine to the embeddings recorded
in bundle.json for: LiteRT with 1 and with all threads, the TensorFlow Lite interpreter (if the
host extra is installed), and copies of the model whose weights were altered in one layer (hash
and fingerprint updated, so only the self-test can notice), with what each does to the stranger's
score in `demo`. Then the self-test's time against one embedding of a photo, in the same run.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from model_tampering import alter_layer, reseal_copy  # noqa: E402

from edge_verify import selftest  # noqa: E402
from edge_verify.bundle import MODEL_INT8, bundle_path  # noqa: E402
from edge_verify.interpreter import available_backends  # noqa: E402
from edge_verify.matcher import cosine  # noqa: E402
from edge_verify.pipeline import Verifier, VerifierOptions  # noqa: E402

ALTERATIONS = {
    "layer 0 negated": (0, lambda w: -w),
    "layer 0 +-1 noise": (0, lambda w: w + np.random.default_rng(0).integers(-1, 2, w.shape)),
    "layer 10 halved": (10, lambda w: w // 2),
    "layer 20 zeroed": (20, lambda w: 0 * w),
    "last layer +-2 noise": (-1, lambda w: w + np.random.default_rng(1).integers(-2, 3, w.shape)),
}


def stranger_score(verifier: Verifier) -> float:
    s = selftest.samples_dir()
    return cosine(verifier.embed_image(s / "astronaut_enroll.jpg"), verifier.embed_image(s / "cameraman.jpg"))


def row(label: str, verifier: Verifier) -> None:
    result = selftest.run(verifier)
    assert result is not None, "the bundle records no self-test"
    name, worst = result.worst
    print(
        f"{label:<28} lowest cosine {worst:.6f} ({name:<20}) {'pass' if result.ok else 'FAIL'}"
        f"   stranger score {stranger_score(verifier):.4f}"
    )


def main() -> None:
    bundle = bundle_path("resnet29")  # a bundle with a model of its own, to alter
    print(f"bound: cosine >= {selftest.MIN_COSINE} on every input\n")
    row("litert, all threads", Verifier(VerifierOptions(use_edgetpu=False)))
    row("litert, 1 thread", Verifier(VerifierOptions(threads=1, use_edgetpu=False)))
    if "tensorflow" in available_backends():
        row("tensorflow.lite", Verifier(VerifierOptions(backend="tensorflow", use_edgetpu=False)))
    model = (bundle / MODEL_INT8).read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, (layer, change)) in enumerate(ALTERATIONS.items()):
            altered = reseal_copy(bundle, Path(tmp) / str(i), alter_layer(model, layer, change))
            row(label, Verifier(VerifierOptions(bundle=altered, use_edgetpu=False)))
    verifier = Verifier(VerifierOptions(use_edgetpu=False))
    image = selftest.samples_dir() / "astronaut_check.jpg"
    verifier.embed_image(image)
    times = {"self-test": [], "one photo": []}
    for _ in range(5):
        t0 = time.perf_counter()
        selftest.run(verifier)
        t1 = time.perf_counter()
        verifier.embed_image(image)
        times["self-test"].append(t1 - t0)
        times["one photo"].append(time.perf_counter() - t1)
    st, one = (1000 * float(np.median(v)) for v in times.values())
    print(f"\nself-test {st:.1f} ms = {st / one:.2f}x one photo ({one:.1f} ms: detect, align, embed), median of 5")


if __name__ == "__main__":
    main()
