"""edge-verify: on-device visual verification with quantised TFLite embedding models.

    import edge_verify as ev
    score = ev.compare("a.jpg", "b.jpg")        # paths or BGR numpy arrays
    same = score >= ev.threshold()

See ``edge_verify.api`` (detect, embed, compare, enroll, verify, open_store, Options).
Never imports TensorFlow.
"""

import importlib

import edge_verify.limits  # noqa: F401 - first: sets OpenCV's pixel limit before cv2 loads

# ``edge_verify.detect`` is the API's detect(): load the submodule of that name now and drop the
# attribute its import sets, so that no later import can shadow the function.
importlib.import_module("edge_verify.detect")
globals().pop("detect")

# Public names load on first use, so a command pays only for the modules it runs (the store's
# cryptography alone is 7 MB and 13 ms that `compare` never needs).
_HOME = {
    "Options": "api",
    "compare": "api",
    "detect": "api",
    "embed": "api",
    "embed_one": "api",
    "enroll": "api",
    "open_store": "api",
    "threshold": "api",
    "verify": "api",
    "Bundle": "bundle",
    "load_bundle": "bundle",
    "Face": "detect",
    "EdgeVerifyError": "errors",
    "Decision": "matcher",
    "cosine": "matcher",
    "Verifier": "pipeline",
    "VerifierOptions": "pipeline",
    "TemplateStore": "store",
}


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'edge_verify' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"edge_verify.{_HOME[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOME])


__all__ = [
    "Bundle",
    "Decision",
    "EdgeVerifyError",
    "Face",
    "Options",
    "TemplateStore",
    "Verifier",
    "VerifierOptions",
    "compare",
    "cosine",
    "detect",
    "embed",
    "embed_one",
    "enroll",
    "load_bundle",
    "open_store",
    "threshold",
    "verify",
]
__version__ = "0.1.0"
