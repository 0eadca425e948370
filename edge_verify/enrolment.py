"""Enrol one identity from its frames' embeddings: one person (no mixture), not someone already
enrolled, never over an existing template unless asked; stored and audited in one place."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_verify.errors import DuplicateIdentityError, InconsistentEnrolmentError
from edge_verify.matcher import MAX_TEMPLATE_FRAMES, Gallery, agreement, mean_template, odd_frames

LIVE_FRAMES = 5  # usable frames a camera or video enrolment takes by default
MIN_LIVE_FRAMES = 3  # the fewest a camera enrolment may take
LIVE_SPACING_S = 0.25  # a camera's enrolment frames at least this far apart: some natural variation


@dataclass(frozen=True)
class Enrolment:
    identity: str
    frames: int  # in the template: at most MAX_TEMPLATE_FRAMES, those that agree best with the rest
    agreement_min: float  # the least any frame agrees with the others
    matches_enrolled: tuple[tuple[str, float], ...]  # other identities it matches (only with force)


def enrol(
    store,
    bundle,
    identity: str,
    embeddings: np.ndarray,
    frame_names: list[str],
    replace: bool = False,
    force: bool = False,
    source: str | None = None,
) -> Enrolment:
    """Check and store the template of ``identity``; raises InconsistentEnrolmentError when the
    frames show more than one person, DuplicateIdentityError when they match another enrolled
    identity (unless ``force``), UsageError when ``identity`` exists (unless ``replace``)."""
    consistency = bundle.operating_point().threshold
    odd = [frame_names[i] for i in odd_frames(embeddings, consistency)]
    if odd:
        raise InconsistentEnrolmentError(
            f"enrolment frames do not show one person: {len(odd)} of {len(frame_names)} disagree with the rest "
            f"(mean score below {consistency:.4f}): {'; '.join(odd[:5])}" + ("; ..." if len(odd) > 5 else "")
        )
    if len(embeddings) > MAX_TEMPLATE_FRAMES:  # the points were calibrated on templates of this many frames
        keep = np.sort(np.argsort(-agreement(embeddings), kind="stable")[:MAX_TEMPLATE_FRAMES])
        embeddings = np.asarray(embeddings)[keep]
    template = mean_template(embeddings)
    others = {n: t for n, t in store.all_templates(bundle.fingerprint).items() if n != identity}
    # the frames as a door would score them against each enrolled template
    duplicates = tuple((n, s) for n, s in Gallery(others).rank(embeddings) if s >= consistency)
    if duplicates and not force:
        who = ", ".join(f"{n} ({s:.4f})" for n, s in duplicates)
        raise DuplicateIdentityError(
            f"these frames match an enrolled identity: {who}; add --force to enrol {identity!r} anyway"
        )
    store.put(identity, template, bundle.fingerprint, len(embeddings), replace=replace, source=source)
    return Enrolment(identity, len(embeddings), float(agreement(embeddings).min()), duplicates)
