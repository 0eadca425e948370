"""Known-answer self-test: the bundle records the embeddings of a few fixed inputs; the device
embeds the same inputs and refuses to run when it does not get (nearly) the same vectors.

This catches what hashes cannot: a broken interpreter, delegate, CPU (e.g. mis-emulated vector
instructions) or a model whose weights were changed together with its recorded hash. A face bundle
uses the packaged sample photos (detector, alignment and embedding all run; each photo, 512 px or
less, is searched at its own size as when it was recorded, whatever a command's ``--detect-size``);
other bundles keep their inputs as ``self_test.npy`` in the bundle.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from edge_verify.bundle import Bundle, read_checked
from edge_verify.errors import BundleError

SAMPLE_IMAGES = ("astronaut_enroll.jpg", "astronaut_check.jpg", "cameraman.jpg")
INPUTS_FILE = "self_test.npy"
# Lowest cosine to the recorded embedding that passes: what int8 quantisation itself is allowed to
# cost (int8 vs fp32 >= 0.995). Measured (benchmarks/self_test.py): LiteRT with 1 or 2 threads and
# tf.lite give 1.000000; one layer negated 0.951, halved 0.970, zeroed 0.874 (that model scores the
# stranger 0.974, an accept); +-1 or +-2 noise in one layer (0.9996, 0.9983) passes, and moves the
# stranger's score by < 0.005.
MIN_COSINE = 0.995


@dataclass(frozen=True)
class SelfTestResult:
    ok: bool
    cosines: dict[str, float]  # per input: cosine between this device's embedding and the record
    min_cosine: float

    @property
    def worst(self) -> tuple[str, float]:
        name = min(self.cosines, key=self.cosines.get)
        return name, self.cosines[name]

    def summary(self) -> str:
        name, value = self.worst
        verdict = "passed" if self.ok else "FAILED"
        return f"self-test {verdict}: {len(self.cosines)} known inputs, lowest cosine {value:.5f} ({name})"


def samples_dir() -> Path:
    return Path(str(resources.files("edge_verify") / "samples"))


def self_test_inputs(verifier) -> dict[str, np.ndarray]:
    """The fixed inputs of ``verifier``'s bundle, embedded by ``verifier`` (name -> unit vector)."""
    bundle: Bundle = verifier.bundle
    if bundle.is_face:
        return {name: _embed_sample(verifier, samples_dir() / name) for name in SAMPLE_IMAGES}
    inputs = load_inputs(bundle)
    return {f"input {i}": e for i, e in enumerate(verifier.embedder.embed(inputs))}


def _embed_sample(verifier, path: Path) -> np.ndarray:
    """The largest face in ``path``, searched at the photo's own size (a command's search size would
    move the landmarks, not test the model), as ``verifier`` embeds it; the quality gate is the command's."""
    from edge_verify.sources import read_image

    image = read_image(path)
    faces = verifier.detector.search(image)
    if not faces:
        raise BundleError(f"{path}: self-test photo shows no face; reinstall edge-verify")
    return verifier.embed_chips([verifier.align(image, faces[0])])[0]


def load_inputs(bundle: Bundle) -> np.ndarray:
    if INPUTS_FILE not in bundle.files:
        raise BundleError(f"{bundle.path}: bundle lists no {INPUTS_FILE} for its self-test")
    content = read_checked(bundle.path / INPUTS_FILE, bundle.files[INPUTS_FILE])
    try:
        return np.load(io.BytesIO(content), allow_pickle=False)
    except ValueError as exc:
        raise BundleError(f"{bundle.path / INPUTS_FILE}: unreadable ({exc})") from None


def record(verifier) -> dict:
    """The ``self_test`` entry of bundle.json for ``verifier``'s bundle (run where it is built)."""
    embedded = self_test_inputs(verifier)
    return {
        "inputs": list(embedded) if verifier.bundle.is_face else INPUTS_FILE,
        "embeddings": [np.round(v.astype(float), 6).tolist() for v in embedded.values()],
        "min_cosine": MIN_COSINE,
    }


def run(verifier) -> SelfTestResult | None:
    """Embed the bundle's known inputs; None when the bundle records no self-test."""
    meta = verifier.bundle.metadata.get("self_test")
    if meta is None:
        return None
    reference = np.asarray(meta["embeddings"], np.float32)
    embedded = self_test_inputs(verifier)
    if len(embedded) != len(reference):
        raise BundleError(f"{verifier.bundle.path}: self-test records {len(reference)} embeddings for {len(embedded)}")
    reference /= np.maximum(np.linalg.norm(reference, axis=1, keepdims=True), 1e-12)
    cosines = {name: float(v @ r) for (name, v), r in zip(embedded.items(), reference, strict=True)}
    bound = float(meta.get("min_cosine", MIN_COSINE))
    return SelfTestResult(all(c >= bound for c in cosines.values()), cosines, bound)


def require(verifier) -> SelfTestResult | None:
    """Run the self-test and raise BundleError when this device disagrees with the record."""
    result = run(verifier)
    if result is not None and not result.ok:
        name, value = result.worst
        raise BundleError(
            f"self-test failed: {name} embeds at cosine {value:.4f} to the bundle's recorded result "
            f"(needs >= {result.min_cosine}): the model file, interpreter ({verifier.embedder.backend}), "
            "delegate or CPU gives wrong embeddings here; refusing to decide"
        )
    return result
