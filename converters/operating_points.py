"""Calibrate a face bundle's operating points on labelled development sets (no TensorFlow).

Every image goes through the device pipeline (YuNet, 5-point alignment, quality gate, int8
embedding); the points are calibrated on the captures the quality gate accepts (what it refuses
gets an instruction at the door, never a score), and each set records what the gate refused.
Pre-aligned 112x112 chips (``faces_dev/celebs``) are padded with a replicated border first so
that the detector sees a whole face. Scores are single image pairs (one enrolment frame,
one probe frame): the statistic every decision uses, at its most permissive frame counts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge_verify.errors import EdgeVerifyError
from edge_verify.matcher import MAX_TEMPLATE_FRAMES
from edge_verify.metrics import pair_scores, template_scores
from edge_verify.operating import (
    STATISTIC,
    conservative_threshold,
    far_curve,
    measure,
    resolvable,
)
from edge_verify.quality import QualityOptions
from edge_verify.sources import list_images, read_image

POINTS = {"strict": 1e-4, "default": 1e-3, "convenient": 1e-2}
# (name, folder under the shared data, border to add before detection)
DEV_SETS = (("faces_dev/celebs", 40), ("faces_dev/yaleb", 40), ("faces", 0))


@dataclass
class DevSet:
    name: str
    embeddings: np.ndarray
    labels: np.ndarray
    files: list[str]
    unusable: int  # no face found (or only one below the size gate)
    refused: dict[str, int] = field(default_factory=dict)  # refused by the quality gate, per first failed cue

    @property
    def gate_refused(self) -> int:
        return sum(self.refused.values())

    @property
    def gate_share(self) -> float:
        """Share of the images with a face that the quality gate refused."""
        return self.gate_refused / max(len(self.files) + self.gate_refused, 1)

    @property
    def identities(self) -> int:
        return len(set(self.labels.tolist()))

    def scores(self) -> tuple[np.ndarray, np.ndarray]:
        """Genuine and impostor scores of the decision statistic (``template_scores``)."""
        return template_scores(self.embeddings, self.labels)

    def pair_scores(self) -> tuple[np.ndarray, np.ndarray]:
        """Single image pairs (a template of one photo, one probe photo)."""
        return pair_scores(self.embeddings, self.labels)


def embed_folder(verifier, root: Path, pad: int, name: str, progress=None) -> DevSet:
    """Embed every image of a folder-per-identity set through the device pipeline; images the
    quality gate refuses are counted per cue, not scored."""
    embeddings, labels, files, unusable, refused = [], [], [], 0, Counter()
    paths = [(d.name, p) for d in sorted(root.iterdir()) if d.is_dir() for p in list_images(d)]
    for identity, path in progress(paths) if progress else paths:
        image = read_image(path)
        if pad:
            image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        try:
            obs = verifier.observe_one(image, str(path), largest=True)
        except EdgeVerifyError:
            unusable += 1
            continue
        if obs.embedding is None:
            refused[obs.quality.cues[0]] += 1
            continue
        embeddings.append(obs.embedding)
        labels.append(identity)
        files.append(str(path.relative_to(root)))
    return DevSet(name, np.stack(embeddings), np.array(labels), files, unusable, dict(refused))


def load_dev_sets(verifier, data: Path, progress=None) -> list[DevSet]:
    """The development sets present under ``data`` (the shared data folder)."""
    return [embed_folder(verifier, data / sub, pad, sub, progress) for sub, pad in DEV_SETS if (data / sub).is_dir()]


def calibrate_points(sets: list[DevSet], points: dict[str, float] = POINTS) -> dict:
    """bundle.json decision fields: operating points (each the strictest per-set threshold at its
    FAR), the 1:N FAR curve, the statistic, and per-set FAR/FRR with intervals."""
    scores = {s.name: s.scores() for s in sets}
    singles = {s.name: s.pair_scores() for s in sets}
    impostors = [imp for _, imp in scores.values()]
    out: dict = {"operating_points": {}, "default_operating_point": "default"}
    for name, far in points.items():
        threshold = conservative_threshold(impostors, far)
        measured = [
            measure(
                gen,
                imp,
                threshold,
                s.name,
                identities=s.identities,
                images=len(s.files),
                unusable_images=s.unusable,
                gate_refused=s.gate_refused,
                gate_refused_share=round(s.gate_share, 4),
                gate_refused_by_cue=s.refused,
                resolves_far=resolvable(len(imp), far),
                single_pairs={  # one enrolment photo, one probe photo: a template made from a single photo
                    k: v
                    for k, v in measure(*singles[s.name], threshold, s.name).items()
                    if k in ("genuine_pairs", "impostor_pairs", "far", "far_ci", "frr", "frr_ci")
                },
            )
            for s, (gen, imp) in zip(sets, scores.values(), strict=True)
        ]
        out["operating_points"][name] = {
            "threshold": threshold,
            "far": far,
            "measured": measured,
            "source": "strictest per-set threshold at this FAR over "
            + ", ".join(s.name for s in sets)
            + f" (captures the quality gate accepts; templates of {MAX_TEMPLATE_FRAMES} photos vs single photos)",
        }
    out["far_curve"] = far_curve(impostors)
    out["quality_gate"] = asdict(QualityOptions())
    out["statistic"] = (
        STATISTIC + f"; calibrated on templates of E = {MAX_TEMPLATE_FRAMES} photos against single probe photos (K = 1)"
    )
    return out
