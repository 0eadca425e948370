"""edge-verify: on-device visual verification with quantised TFLite embedding models.

    import edge_verify as ev
    score = ev.compare("a.jpg", "b.jpg")        # paths or BGR numpy arrays
    same = score >= ev.threshold()

See ``edge_verify.api`` (detect, embed, compare, enroll, verify, open_store, Options).
Never imports TensorFlow.
"""

import edge_verify.limits  # noqa: F401 - first: sets OpenCV's pixel limit before cv2 loads
from edge_verify.api import Options, compare, detect, embed, embed_one, enroll, open_store, threshold, verify
from edge_verify.bundle import Bundle, load_bundle
from edge_verify.detect import Face
from edge_verify.errors import EdgeVerifyError
from edge_verify.matcher import Decision, cosine
from edge_verify.pipeline import Verifier, VerifierOptions
from edge_verify.store import TemplateStore

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
