"""edge-verify: on-device visual verification with quantised TFLite embedding models.

    from edge_verify import Verifier, cosine
    v = Verifier()                          # the built-in face bundle
    a, b = v.embed_image("a.jpg"), v.embed_image("b.jpg")
    same = cosine(a, b) >= v.bundle.threshold.value

Never imports TensorFlow.
"""

import edge_verify.limits  # noqa: F401 - first: sets OpenCV's pixel limit before cv2 loads
from edge_verify.bundle import Bundle, load_bundle
from edge_verify.errors import EdgeVerifyError
from edge_verify.matcher import Decision, cosine
from edge_verify.pipeline import Verifier, VerifierOptions
from edge_verify.store import TemplateStore

__all__ = [
    "Bundle",
    "Decision",
    "EdgeVerifyError",
    "TemplateStore",
    "Verifier",
    "VerifierOptions",
    "cosine",
    "load_bundle",
]
__version__ = "0.1.0"
