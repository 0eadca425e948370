"""Enrolment from the web app: from the kiosk loop's own frames (a job the page follows), or from
uploaded photos; both end in edge_verify.enrolment.enrol, as on the command line."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field

from edge_verify.enrolment import LIVE_FRAMES, LIVE_SPACING_S
from edge_verify.errors import (
    DuplicateIdentityError,
    EdgeVerifyError,
    MultipleFacesError,
    NoFaceError,
    QualityError,
    UsageError,
)

LIVE_TIMEOUT_S = 20.0
MAX_JOBS = 50  # enrolment jobs remembered (the oldest go first)


@dataclass
class EnrolJob:
    name: str
    admin: str
    wanted: int = LIVE_FRAMES
    id: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    state: str = "collecting"  # collecting | enrolled | failed
    good: int = 0
    feedback: str = "Look at the camera"
    message: str = ""

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("name", "state", "good", "wanted", "feedback", "message")}


def check_new(ctx, name: str, replace: bool) -> None:
    if not replace and any(t.identity == name for t in ctx.store.list()):
        raise UsageError(f"{name!r} is already enrolled; tick 'replace' to overwrite the template")


def start_live(ctx, name: str, admin: str, replace: bool) -> EnrolJob:
    """Collect ``LIVE_FRAMES`` usable frames of one face from the running kiosk's camera, then enrol."""
    if ctx.runner is None or not ctx.runner.running:
        raise UsageError("the kiosk loop is not running: there is no camera to enrol from")
    with ctx.lock:
        check_new(ctx, name, replace)
    job = EnrolJob(name, admin)
    while len(ctx.jobs) >= MAX_JOBS:
        ctx.jobs.pop(next(iter(ctx.jobs)))
    ctx.jobs[job.id] = job
    threading.Thread(target=_collect, args=(ctx, job, replace), name=f"enrol {name}", daemon=True).start()
    return job


def _collect(ctx, job: EnrolJob, replace: bool) -> None:
    embeddings, names = [], []
    deadline = time.monotonic() + LIVE_TIMEOUT_S
    seq, last = ctx.hub.seq, 0.0
    try:
        while len(embeddings) < job.wanted and time.monotonic() < deadline:
            seq, image = ctx.hub.wait_frame(seq, 1.0)
            if image is None or time.monotonic() - last < LIVE_SPACING_S:
                continue
            last = time.monotonic()
            try:
                with ctx.lock:
                    obs = ctx.verifier().observe_single(image, "camera")
            except (NoFaceError, MultipleFacesError, QualityError) as exc:
                job.feedback = _instruction(exc)
                continue
            if not embeddings:
                _refuse_known_face(ctx, job.name, obs.embedding)
            embeddings.append(obs.embedding)
            names.append(f"camera frame {seq}")
            job.good, job.feedback = len(embeddings), "Hold still"
        if len(embeddings) < job.wanted:
            raise NoFaceError(
                f"only {len(embeddings)} of {job.wanted} usable frames in {LIVE_TIMEOUT_S:.0f} s ({job.feedback})"
            )
        job.message = _enrol(ctx, job.name, embeddings, names, replace, f"web {job.admin}: kiosk camera")
        job.state, job.feedback = "enrolled", "Done"
    except EdgeVerifyError as exc:
        job.state, job.message = "failed", str(exc)
        _audit_refusal(ctx, job.name, job.admin, "kiosk camera", exc)


def _refuse_known_face(ctx, name: str, embedding) -> None:
    """Say at the first good frame that the face is someone already enrolled (under another name),
    instead of after collecting all frames (enrol() checks the whole template again)."""
    from edge_verify.matcher import Gallery

    with ctx.lock:
        bundle = ctx.verifier().bundle
        others = {n: t for n, t in ctx.store.all_templates(bundle.fingerprint).items() if n != name}
    ranked = Gallery(others).rank(embedding[None], top=1) if others else []
    if ranked and ranked[0][1] >= bundle.operating_point().threshold:
        raise DuplicateIdentityError(f"this face is already enrolled as {ranked[0][0]} (score {ranked[0][1]:.2f})")


def enrol_photos(ctx, name: str, admin: str, photos: list[tuple[str, bytes]], replace: bool) -> str:
    """Enrol ``name`` from uploaded photos (filename, bytes); a photo without one usable face is
    named in the message and left out; none usable: an error."""
    import cv2
    import numpy as np

    from edge_verify.limits import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
    from edge_verify.sources import image_size

    if not photos:
        raise UsageError("choose one or more photos of the person")
    embeddings, names, skipped = [], [], []
    with ctx.lock:
        check_new(ctx, name, replace)
        verifier = ctx.verifier()
        for filename, data in photos:
            try:
                size = image_size(data)
                if len(data) > MAX_IMAGE_BYTES or (size and size[0] * size[1] > MAX_IMAGE_PIXELS):
                    raise QualityError(f"{filename}: larger than the images allowed")
                image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
                if image is None:
                    raise NoFaceError(f"{filename}: not a readable image")
                embeddings.append(verifier.observe_single(image, filename).embedding)
                names.append(filename)
            except (NoFaceError, MultipleFacesError, QualityError) as exc:
                skipped.append(str(exc))
        if not embeddings:
            error = NoFaceError(f"no usable photo: {'; '.join(skipped)}")
            _audit_refusal(ctx, name, admin, "uploaded photos", error)
            raise error
        try:
            message = _enrol(ctx, name, embeddings, names, replace, f"web {admin}: {len(names)} uploaded photo(s)")
        except EdgeVerifyError as exc:
            _audit_refusal(ctx, name, admin, "uploaded photos", exc)
            raise
    return message + (f"; left out {len(skipped)}: {'; '.join(skipped)}" if skipped else "")


def _enrol(ctx, name: str, embeddings: list, names: list[str], replace: bool, source: str) -> str:
    import numpy as np

    from edge_verify.enrolment import enrol

    with ctx.lock:
        verifier = ctx.verifier()
        ctx.store.pin_bundle(verifier.bundle)
        result = enrol(ctx.store, verifier.bundle, name, np.stack(embeddings), names, replace=replace, source=source)
    return f"enrolled {name} from {result.frames} frame(s) (frames agree at least {result.agreement_min:.2f})"


def _audit_refusal(ctx, name: str, admin: str, origin: str, exc: Exception) -> None:
    with ctx.lock:
        fingerprint = ctx.verifier().bundle.fingerprint
        ctx.store.audit_refusal("enroll", fingerprint, exc, claimed=name, source=f"web {admin}: {origin}")


def _instruction(exc: Exception) -> str:
    if isinstance(exc, NoFaceError):
        return "No face found: look at the camera"
    if isinstance(exc, MultipleFacesError):
        return "Several faces: only the person enrolling may be in view"
    return "Unusable frame: " + str(exc).split("quality gate: ", 1)[-1]
