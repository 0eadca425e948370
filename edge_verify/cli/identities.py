"""Enrolment and decisions: enroll, check, identify, compare, demo, list, remove."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_verify.cli.common import (
    ACCEPTED,
    REJECTED,
    add_liveness_options,
    add_threshold_options,
    emit,
    identity_name,
    liveness_options,
    open_store,
    positive_int,
    printable_text,
    progress,
    skipped_text,
    threshold_choice,
    verifier_for,
)
from edge_verify.enrolment import LIVE_FRAMES, LIVE_SPACING_S, MIN_LIVE_FRAMES
from edge_verify.errors import (
    AlreadyEnrolledError,
    EdgeVerifyError,
    MultipleFacesError,
    NoFaceError,
    QualityError,
    UsageError,
)
from edge_verify.redaction import redact_url

IDENTIFY_FRAMES = 300  # of a video or camera, as `check` reads without a liveness check


@dataclass
class Collected:
    """What enrolment took from a source: the embeddings, and the frames it skipped or never read."""

    embeddings: np.ndarray
    names: list[str]  # of the frames used
    skipped: dict[str, int]  # reason: count
    refused: list[str]  # why each skipped photo was refused ("wall.png: no face found ..."); photos only
    unread: list[str]  # photos not read because enough were usable (--frames)
    boxes: list[tuple[float, float, float, float]]  # the face taken in each frame used
    live: bool
    photos: bool  # an image or a folder of them (not a video or camera)


def _collect(args: argparse.Namespace, verifier, source_spec: str, max_frames: int | None, what: str) -> Collected:
    """Embeddings of up to ``max_frames`` usable single-face frames (None: every photo, or 5
    frames of a video or camera); bad frames are skipped and counted. Files and folders are read to
    the end if need be; a live source gets ``--timeout`` seconds to yield them."""
    from tqdm import tqdm

    from edge_verify.sources import ImageSource, open_source

    embeddings, names, skipped, refused, boxes, instruction = [], [], {}, [], [], ""
    read = 0
    with open_source(source_spec, timeout_s=args.timeout) as source:
        live = source.live
        photos = source.paths if isinstance(source, ImageSource) else None
        max_frames = max_frames or (len(photos) if photos else LIVE_FRAMES)
        deadline = time.monotonic() + args.timeout
        with tqdm(
            total=max_frames,
            desc=what,
            unit="frame",
            leave=False,
            file=sys.stderr,
            disable=args.json or not sys.stderr.isatty(),
        ) as bar:
            last_kept = -np.inf
            for frame in source:
                read += 1
                if live and frame.time - last_kept < LIVE_SPACING_S:
                    continue  # five frames of one instant average away nothing: spread them over a second or more
                try:
                    obs = verifier.observe_single(frame.image, frame.name, largest=args.largest_face)
                    embeddings.append(obs.embedding)
                    names.append(frame.name)
                    if obs.face is not None:
                        boxes.append(tuple(float(v) for v in obs.face.box))
                    last_kept = frame.time
                    bar.update()
                except (NoFaceError, MultipleFacesError, QualityError) as exc:
                    if photos is not None and len(photos) == 1:
                        raise
                    reason = type(exc).__name__.replace("Error", "").lower()
                    skipped[reason] = skipped.get(reason, 0) + 1
                    if photos is not None:
                        refused.append(str(exc))
                    if isinstance(exc, QualityError):
                        instruction = str(exc).rsplit(": ", 1)[-1]  # the gate's instruction for the last refusal
                if len(embeddings) >= max_frames or (live and time.monotonic() > deadline):
                    break
    if not embeddings:
        detail = skipped_text(skipped) or "no frames"
        raise NoFaceError(
            f"{redact_url(source_spec)}: no usable face in any frame ({detail})"
            + (f": {instruction}" if instruction else "")
        )
    unread = [str(p) for p in photos[read:]] if photos else []
    return Collected(np.stack(embeddings), names, skipped, refused, unread, boxes, live, photos is not None)


def _taken_face(collected: Collected) -> str:
    """Which face a video or camera enrolment took: where it was, in which frames."""
    x, y, w, h = np.median(np.array(collected.boxes), axis=0)
    first, last = collected.names[0], collected.names[-1]
    frames = first if first == last else f"{first} to {last}"
    return f"the face at ({x:.0f},{y:.0f}), {w:.0f}x{h:.0f} px, in {frames}"


def _liveness_mode(args, source) -> str:
    """``auto`` (the default of check): a challenge for cameras and streams, off for files."""
    mode = getattr(args, "liveness", "off")
    if mode == "auto":
        return "challenge" if source.live else "off"
    return mode


def _decide_on_track(args, verifier, source_spec: str, k: int, decide, what: str):
    """Follow the single face in view until one track has ``k`` usable frames (and, with liveness,
    has passed its check first), then ``decide`` on them (one decision per call).
    Returns (decision, track, skipped, liveness result or None); a failed liveness check gives a
    rejection without a score."""
    from edge_verify.liveness import PROMPTS, parse_sequence
    from edge_verify.matcher import Decision
    from edge_verify.pipeline import FaceTracks
    from edge_verify.sources import ImageSource, open_source

    with open_source(source_spec, timeout_s=args.timeout) as source:
        still = isinstance(source, ImageSource)
        mode = _liveness_mode(args, source)
        if still and mode != "off":
            raise UsageError(
                f"{redact_url(source_spec)}: a liveness check needs a video or a camera (or --liveness off)"
            )
        if still:
            k = min(k, len(source.paths))  # a photo is one frame; a folder of photos is linked by embedding
        one_photo = still and len(source.paths) == 1  # then say exactly why it is unusable
        options = liveness_options(args)
        sequence = parse_sequence(args.liveness_sequence) if getattr(args, "liveness_sequence", None) else None
        tracks = FaceTracks(
            verifier,
            k,
            use_boxes=not still,
            single=True,
            largest=args.largest_face,
            raise_errors=one_photo,
            liveness=mode,
            liveness_options=options,
            sequence=sequence,
        )
        max_frames = args.max_frames or (900 if mode != "off" else 300)
        deadline = time.monotonic() + args.timeout + (60 if mode != "off" else 0)
        prompt, instruction = "", None
        for frame in progress(args, source, desc=what, unit="frame"):
            if frame.index >= max_frames:
                break
            ready = tracks.feed(frame.image, frame.index, frame.name, frame.time)
            if tracks.instruction and tracks.instruction != instruction and source.live and not args.json:
                print(f"  {tracks.instruction}", file=sys.stderr)  # the gate refused the frame: say what to change
            instruction = tracks.instruction or instruction
            if ready:
                live = tracks.result(ready[0]) if mode != "off" else None
                return decide(ready[0].take(k)), ready[0], dict(tracks.skipped), live
            if mode != "off" and tracks.failed:
                track, result = tracks.failed[0]
                return Decision.refused(), track, dict(tracks.skipped), result
            current = next((tracks.result(t).prompt for t in tracks.tracker.tracks if t.id in tracks.monitors), "")
            if current != prompt and source.live and not args.json:
                print(f"  {current or PROMPTS['look']}", file=sys.stderr)
            prompt = current
            if source.live and time.monotonic() > deadline:
                break
    detail = skipped_text(tracks.skipped)
    if mode != "off" and tracks.monitors:  # a face was there but did not finish its check: a rejection
        tid, monitor = next(iter(tracks.monitors.items()))
        monitor.check.give_up("the source ended before the check was completed")
        track = next((t for t in tracks.tracker.tracks if t.id == tid), None)
        return Decision.refused(), track, dict(tracks.skipped), monitor.result
    raise NoFaceError(
        f"{redact_url(source_spec)}: no face was followed for {k} usable frame(s) (longest track {tracks.longest}"
        + (f"; skipped {detail}" if detail else "")
        + (f"; {tracks.tracker.cuts} track(s) cut by a change of person" if tracks.tracker.cuts else "")
        + ")"
        + (f": {instruction.lower()}" if instruction else "")
    )


def cmd_enroll(args: argparse.Namespace) -> int:
    from edge_verify.enrolment import enrol

    verifier = verifier_for(args, self_test=True)
    bundle = verifier.bundle
    with open_store(args, bundle, create=True) as store:
        try:
            if not args.replace and any(t.identity == args.name for t in store.list()):
                raise AlreadyEnrolledError(
                    f"{args.name!r} is already enrolled; add --replace to overwrite the template"
                )
            collected = _collect(args, verifier, args.source, args.frames, f"enroll {args.name}")
            embeddings, names, skipped = collected.embeddings, collected.names, collected.skipped
            if collected.live and len(embeddings) < MIN_LIVE_FRAMES:
                raise NoFaceError(
                    f"{redact_url(args.source)}: only {len(embeddings)} good frame(s) in {args.timeout:g}s; enrolment "
                    f"from a camera needs at least {MIN_LIVE_FRAMES} (look at the camera, or raise --timeout)"
                )
            enrolment = enrol(
                store,
                bundle,
                args.name,
                embeddings,
                names,
                replace=args.replace,
                force=args.force,
                source=redact_url(args.source),
            )
        except EdgeVerifyError as exc:  # a refused enrolment is audited too (who tried, from what, why)
            audit_failure(store, "enroll", bundle.fingerprint, exc, claimed=args.name, source=args.source)
            raise
    data = {
        "identity": args.name,
        "frames_used": enrolment.frames,
        "frames_skipped": skipped,
        "agreement_min": enrolment.agreement_min,
        "matches_enrolled": [{"identity": n, "score": s} for n, s in enrolment.matches_enrolled],
        "frames": names,
        "refused": collected.refused,
        "not_read": collected.unread,
        "face_box": np.median(np.array(collected.boxes), axis=0).round(1).tolist() if collected.boxes else None,
        "bundle": bundle.name,
        "fingerprint": bundle.fingerprint,
    }
    text = f"enrolled {args.name} from {enrolment.frames} frame(s)"
    if skipped:
        text += f", skipped {sum(skipped.values())} ({skipped_text(skipped)})"
    if enrolment.matches_enrolled:
        text += f" (forced: also matches {', '.join(n for n, _ in enrolment.matches_enrolled)})"
    lines = [text]
    lines += [f"  skipped {printable_text(reason)}" for reason in collected.refused]
    if collected.unread:
        lines.append(f"  not read (--frames {args.frames} were enough): {printable_text(', '.join(collected.unread))}")
    if not collected.photos and collected.boxes:  # a video or camera: say whose face it was
        lines.append(f"  took {printable_text(_taken_face(collected))}")
    emit(args, data, "\n".join(lines))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from edge_verify.matcher import verify

    verifier = verifier_for(args, self_test=True)
    with open_store(args, verifier.bundle) as store:
        try:
            template = store.get(args.name, verifier.bundle.fingerprint)
            choice = threshold_choice(args, verifier.bundle, store)
            decision, track, skipped, live = _decide_on_track(
                args,
                verifier,
                args.source,
                args.frames,
                lambda probes: verify(probes, template, choice.value, args.name),
                f"check {args.name}",
            )
        except EdgeVerifyError as exc:  # a check that ended without a decision is audited too
            audit_failure(store, "check", verifier.bundle.fingerprint, exc, claimed=args.name, source=args.source)
            raise
        store.record(
            "check",
            verifier.bundle.fingerprint,
            decision,
            claimed=args.name,
            source=redact_url(args.source),
            liveness=live.summary() if live else None,
        )
    verdict = "ACCEPTED" if decision.accepted else "REJECTED"
    if live is not None and live.state == "failed":
        emit(
            args,
            {"identity": args.name, "accepted": False, "score": None, "liveness": live.as_dict()},
            f"REJECTED {args.name}: liveness {live.mode} failed: {live.reason}",
        )
        return REJECTED
    data = {
        "identity": args.name,
        "accepted": decision.accepted,
        "score": decision.score,
        "threshold": choice.value,
        "threshold_source": choice.origin,
        "far": choice.far,
        "frames_used": decision.frames,
        "frames": track.frame_names[-decision.frames :],
        "frames_skipped": skipped,
        "liveness": live.as_dict() if live else {"mode": "off"},
    }
    emit(
        args,
        data,
        f"{verdict} {args.name}: score {decision.score:.4f} over {decision.frames} frame(s) "
        f"(threshold {choice.value:.4f}, {choice.origin})" + (f"; liveness {live.mode} passed" if live else ""),
    )
    return ACCEPTED if decision.accepted else REJECTED


def audit_failure(store, command: str, fingerprint: str, exc: Exception, **fields) -> None:
    """Record a command that failed before deciding (no face, quality gate, unknown identity...)."""
    fields["source"] = redact_url(fields["source"]) if fields.get("source") else None
    store.audit_refusal(command, fingerprint, exc, **fields)


def cmd_identify(args: argparse.Namespace) -> int:
    from edge_verify.matcher import Gallery, identify
    from edge_verify.pipeline import FaceTracks
    from edge_verify.sources import ImageSource, open_source

    verifier = verifier_for(args, self_test=True)
    results = []
    with open_store(args, verifier.bundle) as store:
        gallery = Gallery(store.all_templates(verifier.bundle.fingerprint))
        if not len(gallery):
            raise UsageError("nobody is enrolled with this bundle; run `edge-verify enroll NAME --source ...` first")
        choice = threshold_choice(args, verifier.bundle, store, gallery_size=len(gallery))
        with open_source(args.source, timeout_s=args.timeout) as source:
            still = isinstance(source, ImageSource)
            k = 1 if still else args.track_frames  # a photo is one frame of each face in it
            limit = args.frames or (len(source.paths) if still else IDENTIFY_FRAMES)
            tracks = FaceTracks(verifier, k)
            for frame in progress(args, source, desc="identify", unit="frame"):
                if frame.index >= limit:
                    break
                if still:  # photos are unrelated: no track spans two of them
                    tracks.tracker.end_all()
                for track in tracks.feed(frame.image, frame.index, frame.name):
                    probes = track.take(k)
                    decision = identify(probes, gallery, choice.value, choice.margin)
                    store.record("identify", verifier.bundle.fingerprint, decision, source=frame.name)
                    results.append(
                        {
                            "frame": frame.name,
                            "track": track.id,
                            "box": track.box,
                            "frames_used": decision.frames,
                            "identity": decision.identity,
                            "nearest": decision.nearest,
                            "score": decision.score,
                            "runner_up": decision.second,
                            "runner_up_score": decision.second_score,
                            "top": [{"identity": n, "score": s} for n, s in gallery.rank(probes, top=args.top)],
                        }
                    )
    skipped = tracks.skipped["quality"]
    if not results:
        raise NoFaceError(
            f"{redact_url(args.source)}: no face was followed for {k} usable frame(s) ({skipped} refused by quality)"
        )
    lines = []
    for r in results:
        box = "" if r["box"] is None else " at ({:.0f},{:.0f})".format(*r["box"][:2])
        if r["identity"]:
            who = f"{r['identity']} (score {r['score']:.4f})"
        else:
            who = f"unknown (nearest {r['nearest']}, score {r['score']:.4f})" if r["nearest"] else "unknown"
        lines.append(f"{r['frame']}{box}: {who}")
    lines.append(f"threshold {choice.value:.4f}, margin {choice.margin:.2f} ({choice.origin})")
    emit(args, {**choice.as_dict(), "faces": results, "faces_refused_by_quality": skipped}, "\n".join(lines))
    return 0 if any(r.get("identity") for r in results) else REJECTED


def cmd_compare(args: argparse.Namespace) -> int:
    from edge_verify.matcher import cosine

    verifier = verifier_for(args)
    a, b = verifier.embed_image(args.image_a), verifier.embed_image(args.image_b)
    choice = threshold_choice(args, verifier.bundle, None)
    score = cosine(a, b)
    same = score >= choice.value
    data = {"same": same, "score": score, "threshold": choice.value, "threshold_source": choice.origin}
    emit(args, data, f"{'SAME' if same else 'DIFFERENT'}: score {score:.4f} (threshold {choice.value:.4f})")
    return ACCEPTED if same else REJECTED


def cmd_list(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        items = store.list()
    data = {"identities": [t.__dict__ for t in items]}
    text = (
        "\n".join(
            f"{printable_text(t.identity)}\t{t.frames} frame(s)\t{t.bundle or 'model ' + t.fingerprint[:12]}\t"
            f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(t.updated))}"
            for t in items
        )
        or "(nobody enrolled)"
    )
    emit(args, data, text)
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    with open_store(args, check_state=False) as store:  # removing is safe, even from a tampered store
        store.remove(args.name)
    emit(args, {"removed": args.name}, f"removed {args.name}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Enrol the packaged sample identity, then check a second photo of her and one of someone else."""
    import os
    import tempfile
    from importlib import resources

    from edge_verify.matcher import mean_template, score
    from edge_verify.store import TemplateStore

    samples = Path(str(resources.files("edge_verify") / "samples"))
    verifier = verifier_for(args, self_test=True)
    threshold = verifier.bundle.threshold.value
    results = []
    with tempfile.TemporaryDirectory() as tmp, TemplateStore(Path(tmp) / "demo.db", key=os.urandom(32)) as store:
        enrolled = verifier.embed_image(samples / "astronaut_enroll.jpg")
        store.put("astronaut", mean_template(enrolled[None]), verifier.bundle.fingerprint, 1)
        template = store.get("astronaut", verifier.bundle.fingerprint)
        for name, expected in (("astronaut_check.jpg", True), ("cameraman.jpg", False)):
            s = score(verifier.embed_image(samples / name), template)
            results.append({"image": name, "score": s, "accepted": s >= threshold, "expected": expected})
    lines = [
        f"bundle {verifier.bundle.name} ({verifier.embedder.backend}), threshold {threshold:.4f}",
        "enrolled 'astronaut' from astronaut_enroll.jpg",
    ]
    lines += [
        f"check astronaut <- {r['image']:<20} {'ACCEPTED' if r['accepted'] else 'REJECTED'} (score {r['score']:.4f})"
        for r in results
    ]
    emit(args, {"threshold": threshold, "checks": results}, "\n".join(lines))
    return 0 if all(r["accepted"] == r["expected"] for r in results) else 1


def register(add) -> None:
    """Add this group's commands; ``add(name, function, help)`` returns the sub-parser."""
    p = add("enroll", cmd_enroll, "enrol an identity from a camera, video, image or folder")
    p.add_argument("name", type=identity_name)
    p.add_argument(
        "--source", "-s", required=True, help="image, folder, video, camera index, /dev/videoN, URL, picamera2"
    )
    p.add_argument(
        "--frames",
        "-n",
        type=positive_int,
        help=f"usable frames to average (default: every photo; {LIVE_FRAMES} of a video or camera, which needs >= 3)",
    )
    p.add_argument("--replace", action="store_true", help="overwrite an existing template")
    p.add_argument("--force", action="store_true", help="enrol even if the frames match another enrolled identity")
    p.add_argument("--largest-face", action="store_true", help="use the largest face instead of refusing several")

    p = add("check", cmd_check, "1:1 verify NAME; exit 0 accepted, 1 rejected")
    p.add_argument("name", type=identity_name)
    p.add_argument("--source", "-s", required=True)
    p.add_argument(
        "--frames", "-n", type=int, default=3, help="frames of one tracked face whose mean score decides (default 3)"
    )
    p.add_argument(
        "--max-frames", type=int, help="source frames to read at most (default 300; 900 with a liveness check)"
    )
    add_threshold_options(p)
    p.add_argument("--largest-face", action="store_true", help="use the largest face instead of refusing several")
    add_liveness_options(p)

    p = add("identify", cmd_identify, "1:N: name every enrolled face in view")
    p.set_defaults(interrupted="the faces decided before it are in the audit log; nothing else stored")
    p.add_argument("--source", "-s", required=True)
    p.add_argument(
        "--frames",
        "-n",
        type=positive_int,
        help=f"source frames to read (default: every photo; {IDENTIFY_FRAMES} frames of a video or camera)",
    )
    p.add_argument(
        "--track-frames", "-k", type=int, default=3, help="video: frames of one tracked face per decision (default 3)"
    )
    p.add_argument("--top", type=int, default=3)
    add_threshold_options(p)

    p = add("compare", cmd_compare, "compare the faces in two images (nothing stored); exit 0 same, 1 different")
    p.add_argument("image_a")
    p.add_argument("image_b")
    add_threshold_options(p)

    add("demo", cmd_demo, "enrol the bundled sample face and check two photos (no store is touched)")

    add("list", cmd_list, "list enrolled identities")

    p = add("remove", cmd_remove, "delete an identity's template")
    p.add_argument("name", type=identity_name)
