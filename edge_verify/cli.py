"""``edge-verify`` command line. Device commands never import TensorFlow; host commands do, lazily.

Exit codes: 0 success / accepted / same person; 1 rejected / different / unknown; 2 usage;
3 other error; 4 bad input; 5 no face; 6 several faces; 7 quality gate; 8 bad bundle; 9 store;
10 tampered template or wrong key; 11 unknown identity; 12 template from another model;
13 camera/source; 14 no TFLite backend; 15 host extra missing; 16 bad Keras model.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from edge_verify.errors import (
    DuplicateIdentityError,
    EdgeVerifyError,
    HostDependencyError,
    InconsistentEnrolmentError,
    InputError,
    MultipleFacesError,
    NoFaceError,
    QualityError,
    UsageError,
)

ACCEPTED, REJECTED = 0, 1
MIN_LIVE_ENROL_FRAMES = 3


# ---- output -------------------------------------------------------------------------------------
def emit(args: argparse.Namespace, data: dict, text: str) -> None:
    print(json.dumps(data, default=_json_default) if args.json else text)


def _json_default(obj):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(type(obj).__name__)


def _progress(args: argparse.Namespace, iterable, **kw):
    from tqdm import tqdm

    return tqdm(iterable, disable=args.json or not sys.stderr.isatty(), file=sys.stderr, leave=False, **kw)


# ---- shared setup -------------------------------------------------------------------------------
def _verifier(args: argparse.Namespace, bundle: str | None = None):
    from edge_verify.pipeline import Verifier, VerifierOptions

    options = VerifierOptions(
        bundle=bundle or args.bundle, backend=args.backend, threads=args.threads, use_edgetpu=not args.no_edgetpu
    )
    return Verifier(options)


def _store(args: argparse.Namespace, bundle=None):
    """Open the store; with ``bundle``, check (or on first use, pin) its decision fields."""
    from edge_verify.store import TemplateStore

    store = TemplateStore(args.store, key_file=args.key_file)
    if bundle is not None:
        try:
            store.pin_bundle(bundle)
        except BaseException:
            store.close()
            raise
    return store


def _threshold(args: argparse.Namespace, bundle, store, gallery_size: int = 1):
    """The threshold in force for the command's --threshold / --operating-point / --allow-looser."""
    from edge_verify.pipeline import resolve_threshold

    return resolve_threshold(
        bundle, store, args.threshold, args.operating_point, args.allow_looser, gallery_size=gallery_size
    )


def _skipped_text(skipped: dict) -> str:
    return ", ".join(f"{n} {r}" for r, n in skipped.items() if n)


def _collect(args: argparse.Namespace, verifier, source_spec: str, max_frames: int, what: str):
    """Embeddings of up to ``max_frames`` usable single-face frames; bad frames are skipped and
    counted. Files and folders are read to the end if need be; a live source gets ``--timeout``
    seconds to yield them."""
    from tqdm import tqdm

    from edge_verify.sources import ImageSource, open_source

    embeddings, names, skipped = [], [], {}
    with open_source(source_spec, timeout_s=args.timeout) as source:
        live = source.live
        single_image = isinstance(source, ImageSource) and len(source.paths) == 1
        deadline = time.monotonic() + args.timeout
        with tqdm(
            total=max_frames,
            desc=what,
            unit="frame",
            leave=False,
            file=sys.stderr,
            disable=args.json or not sys.stderr.isatty(),
        ) as bar:
            for frame in source:
                try:
                    obs = verifier.observe_single(frame.image, frame.name, largest=args.largest_face)
                    embeddings.append(obs.embedding)
                    names.append(frame.name)
                    bar.update()
                except (NoFaceError, MultipleFacesError, QualityError) as exc:
                    if single_image:
                        raise
                    reason = type(exc).__name__.replace("Error", "").lower()
                    skipped[reason] = skipped.get(reason, 0) + 1
                if len(embeddings) >= max_frames or (live and time.monotonic() > deadline):
                    break
    if not embeddings:
        detail = _skipped_text(skipped) or "no frames"
        raise NoFaceError(f"{source_spec}: no usable face in any frame ({detail})")
    return np.stack(embeddings), names, skipped, live


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
    from edge_verify.liveness import PROMPTS, LivenessOptions, parse_sequence
    from edge_verify.matcher import Decision
    from edge_verify.pipeline import FaceTracks
    from edge_verify.sources import ImageSource, open_source

    with open_source(source_spec, timeout_s=args.timeout) as source:
        still = isinstance(source, ImageSource)
        mode = _liveness_mode(args, source)
        if still and mode != "off":
            raise UsageError(f"{source_spec}: a liveness check needs a video or a camera (or --liveness off)")
        if still:
            k = min(k, len(source.paths))  # a photo is one frame; a folder of photos is linked by embedding
        one_photo = still and len(source.paths) == 1  # then say exactly why it is unusable
        options = LivenessOptions(step_timeout_s=getattr(args, "liveness_step_timeout", 5.0))
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
        prompt = ""
        for frame in _progress(args, source, desc=what, unit="frame"):
            if frame.index >= max_frames:
                break
            ready = tracks.feed(frame.image, frame.index, frame.name, frame.time)
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
    detail = _skipped_text(tracks.skipped)
    if mode != "off" and tracks.monitors:  # a face was there but did not finish its check: a rejection
        tid, monitor = next(iter(tracks.monitors.items()))
        monitor.check.give_up("the source ended before the check was completed")
        track = next((t for t in tracks.tracker.tracks if t.id == tid), None)
        return Decision.refused(), track, dict(tracks.skipped), monitor.result
    raise NoFaceError(
        f"{source_spec}: no face was followed for {k} usable frame(s) (longest track {tracks.longest}"
        + (f"; skipped {detail}" if detail else "")
        + (f"; {tracks.tracker.cuts} track(s) cut by a change of person" if tracks.tracker.cuts else "")
        + ")"
    )


# ---- device commands ----------------------------------------------------------------------------
def cmd_enroll(args: argparse.Namespace) -> int:
    from edge_verify.matcher import Gallery, agreement, mean_template, odd_frames

    verifier = _verifier(args)
    bundle = verifier.bundle
    with _store(args, bundle) as store:
        if not args.replace and any(t.identity == args.name for t in store.list()):
            raise UsageError(f"{args.name!r} is already enrolled; add --replace to overwrite the template")
        embeddings, names, skipped, live = _collect(args, verifier, args.source, args.frames, f"enroll {args.name}")
        if live and len(embeddings) < MIN_LIVE_ENROL_FRAMES:
            raise NoFaceError(
                f"{args.source}: only {len(embeddings)} good frame(s) in {args.timeout:g}s; enrolment from a camera "
                f"needs at least {MIN_LIVE_ENROL_FRAMES} (look at the camera, or raise --timeout)"
            )
        # every frame must agree with the others: one person, not a mixture
        consistency = bundle.operating_point().threshold
        agree = agreement(embeddings)
        odd = [names[i] for i in odd_frames(embeddings, consistency)]
        if odd:
            raise InconsistentEnrolmentError(
                f"enrolment frames do not show one person: {len(odd)} of {len(names)} disagree with the rest "
                f"(mean score below {consistency:.4f}): {'; '.join(odd[:5])}" + ("; ..." if len(odd) > 5 else "")
            )
        template = mean_template(embeddings)
        others = {n: t for n, t in store.all_templates(bundle.fingerprint).items() if n != args.name}
        duplicates = [(n, s) for n, s in Gallery(others).rank(template) if s >= consistency]
        if duplicates and not args.force:
            who = ", ".join(f"{n} ({s:.4f})" for n, s in duplicates)
            raise DuplicateIdentityError(
                f"these frames match an enrolled identity: {who}; add --force to enrol {args.name!r} anyway"
            )
        store.put(args.name, template, bundle.fingerprint, len(embeddings))
        store.audit("enroll", bundle.fingerprint, True, claimed=args.name, source=args.source)
    data = {
        "identity": args.name,
        "frames_used": len(embeddings),
        "frames_skipped": skipped,
        "agreement_min": float(agree.min()),
        "matches_enrolled": [{"identity": n, "score": s} for n, s in duplicates],
        "bundle": bundle.name,
        "fingerprint": bundle.fingerprint,
    }
    text = f"enrolled {args.name} from {len(embeddings)} frame(s)"
    if skipped:
        text += f", skipped {sum(skipped.values())} ({_skipped_text(skipped)})"
    if duplicates:
        text += f" (forced: also matches {', '.join(n for n, _ in duplicates)})"
    emit(args, data, text)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from edge_verify.matcher import verify

    verifier = _verifier(args)
    with _store(args, verifier.bundle) as store:
        template = store.get(args.name, verifier.bundle.fingerprint)
        choice = _threshold(args, verifier.bundle, store)
        decision, track, skipped, live = _decide_on_track(
            args,
            verifier,
            args.source,
            args.frames,
            lambda probes: verify(probes, template, choice.value, args.name),
            f"check {args.name}",
        )
        store.record(
            "check",
            verifier.bundle.fingerprint,
            decision,
            claimed=args.name,
            source=args.source,
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


def cmd_identify(args: argparse.Namespace) -> int:
    from edge_verify.matcher import Gallery, identify
    from edge_verify.pipeline import FaceTracks
    from edge_verify.sources import ImageSource, open_source

    verifier = _verifier(args)
    results = []
    with _store(args, verifier.bundle) as store:
        gallery = Gallery(store.all_templates(verifier.bundle.fingerprint))
        if not len(gallery):
            raise UsageError("nobody is enrolled with this bundle; run `edge-verify enroll NAME --source ...` first")
        choice = _threshold(args, verifier.bundle, store, gallery_size=len(gallery))
        with open_source(args.source, timeout_s=args.timeout) as source:
            still = isinstance(source, ImageSource)
            k = 1 if still else args.track_frames  # a photo is one frame of each face in it
            tracks = FaceTracks(verifier, k)
            for frame in _progress(args, source, desc="identify", unit="frame"):
                if frame.index >= args.frames:
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
                            "score": decision.score,
                            "runner_up": decision.second,
                            "runner_up_score": decision.second_score,
                            "top": [{"identity": n, "score": s} for n, s in gallery.rank(probes)[: args.top]],
                        }
                    )
    skipped = tracks.skipped["quality"]
    if not results:
        raise NoFaceError(f"{args.source}: no face was followed for {k} usable frame(s) ({skipped} refused by quality)")
    lines = []
    for r in results:
        box = "" if r["box"] is None else " at ({:.0f},{:.0f})".format(*r["box"][:2])
        lines.append(f"{r['frame']}{box}: {r['identity'] or 'unknown'} (score {r['score']:.4f})")
    lines.append(f"threshold {choice.value:.4f}, margin {choice.margin:.2f} ({choice.origin})")
    emit(args, {**choice.as_dict(), "faces": results, "faces_refused_by_quality": skipped}, "\n".join(lines))
    return 0 if any(r.get("identity") for r in results) else REJECTED


def cmd_compare(args: argparse.Namespace) -> int:
    from edge_verify.matcher import cosine

    verifier = _verifier(args)
    a, b = verifier.embed_image(args.image_a), verifier.embed_image(args.image_b)
    choice = _threshold(args, verifier.bundle, None)
    score = cosine(a, b)
    same = score >= choice.value
    data = {"same": same, "score": score, "threshold": choice.value, "threshold_source": choice.origin}
    emit(args, data, f"{'SAME' if same else 'DIFFERENT'}: score {score:.4f} (threshold {choice.value:.4f})")
    return ACCEPTED if same else REJECTED


def cmd_list(args: argparse.Namespace) -> int:
    with _store(args) as store:
        items = store.list()
    data = {"identities": [t.__dict__ for t in items]}
    text = (
        "\n".join(
            f"{t.identity}\t{t.frames} frame(s)\tmodel {t.fingerprint[:12]}\t"
            f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(t.updated))}"
            for t in items
        )
        or "(nobody enrolled)"
    )
    emit(args, data, text)
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    with _store(args) as store:
        info = {t.identity: t for t in store.list()}.get(args.name)
        store.remove(args.name)
        store.audit("remove", info.fingerprint if info else "", True, claimed=args.name)
    emit(args, {"removed": args.name}, f"removed {args.name}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from edge_verify.metrics import format_report, threshold_at_far, verification_report
    from edge_verify.operating import check_far, far_curve, measure, resolvable, round_up

    verifier = _verifier(args)
    bundle = verifier.bundle
    if args.reset:
        with _store(args, bundle) as store:
            removed = store.reset_threshold(bundle.fingerprint)
            store.audit("calibrate", bundle.fingerprint, True, source="reset")
        point = bundle.operating_point()
        text = "removed the site calibration; " if removed else "no site calibration was stored; "
        emit(
            args,
            {"reset": removed, "threshold": point.threshold, "operating_point": point.name},
            text + f"decisions use the bundle's {point.name!r} operating point ({point.threshold:.4f})",
        )
        return 0
    if not args.data and not args.pairs:
        raise UsageError("give a folder per identity, or --pairs FILE (or --reset)")
    far = check_far(args.far, "--far")
    genuine, impostor, _, skipped = _labelled_scores(args, verifier, args.data, args.pairs)
    origin = Path(args.pairs or args.data).name
    if len(genuine) == 0 or len(impostor) == 0:
        raise InputError(f"{origin}: need both same-identity and different-identity pairs")
    if not resolvable(len(impostor), far) and not args.force:
        raise UsageError(
            f"{origin}: {len(impostor)} impostor pairs cannot resolve FAR {far:g} (need about {10 / far:.0f}); "
            "add labelled people or images, choose a larger --far, or --force"
        )
    threshold = round_up(threshold_at_far(impostor, far))
    default = bundle.operating_point()
    looser = threshold < default.threshold
    if looser and not args.allow_looser and not args.dry_run:
        raise UsageError(
            f"the threshold at FAR {far:g} on {origin} is {threshold:.4f}, looser than the bundle's "
            f"{default.name!r} operating point ({default.threshold:.4f}); add --allow-looser to store it"
        )
    at = measure(genuine, impostor, threshold, origin)
    report = verification_report(genuine, impostor)
    if not args.dry_run:
        with _store(args, bundle) as store:
            store.set_threshold(
                bundle.fingerprint,
                {
                    "threshold": threshold,
                    "far": far,
                    "source": f"{len(genuine)}+{len(impostor)} pairs from {origin}",
                    "measured": at,
                    "far_curve": far_curve([impostor]),
                    "looser_than_default": looser,
                    "time": time.time(),
                },
            )
            store.audit("calibrate", bundle.fingerprint, True, score=threshold, threshold=threshold, source=origin)
    data = {
        "threshold": threshold,
        "far": far,
        "written": not args.dry_run,
        "looser_than_default": looser,
        "default_threshold": default.threshold,
        "measured": at,
        "skipped": skipped,
        "report": report.as_dict(),
    }
    lines = [
        format_report(report, f"calibration on {origin}"),
        f"  threshold at FAR {far:g}: {threshold:.4f}"
        + (" (written to the store; decisions with this bundle use it)" if not args.dry_run else " (dry run)"),
        f"  at it: FAR {at['far']:.2e} (95% CI {at['far_ci'][0]:.1e}-{at['far_ci'][1]:.1e}), "
        f"TAR {1 - at['frr']:.2%} / FRR {at['frr']:.2%} (95% CI {at['frr_ci'][0]:.2%}-{at['frr_ci'][1]:.2%})",
    ]
    if looser:
        lines.append(f"  looser than the bundle's {default.name!r} point ({default.threshold:.4f})")
    if any(skipped.values()):
        lines.append(f"  skipped: {_skipped_text(skipped)}")
    emit(args, data, "\n".join(lines))
    return 0


def _labelled_scores(args: argparse.Namespace, verifier, data: str | None, pairs: str | None):
    """Genuine and impostor scores from a folder per identity, or from a pairs file, through the
    device pipeline (detect, align, quality, embed); unusable images are skipped and counted.
    Returns (genuine, impostor, recall or None, skipped counts)."""
    from edge_verify.metrics import pair_scores, recall_at_1
    from edge_verify.sources import list_images

    if pairs:
        return _pair_file_scores(args, verifier, Path(pairs))
    root = Path(data or "")
    if not data or not root.is_dir():
        raise InputError(f"{root}: not a folder (expected one sub-folder of images per identity), or give --pairs")
    embeddings, labels, skipped = [], [], {}
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    paths = [(i, p) for i, d in enumerate(folders) for p in list_images(d)]
    for label, path in _progress(args, paths, desc="embed", unit="img"):
        try:
            embeddings.append(verifier.embed_image(path))
            labels.append(label)
        except (NoFaceError, MultipleFacesError, QualityError, InputError) as exc:
            reason = type(exc).__name__.replace("Error", "").lower()
            skipped[reason] = skipped.get(reason, 0) + 1
    if len(set(labels)) < 2:
        raise InputError(f"{root}: need usable images of at least 2 identities (found {len(set(labels))})")
    genuine, impostor = pair_scores(np.stack(embeddings), np.array(labels))
    if len(genuine) == 0:
        raise InputError(f"{root}: need at least 2 usable images of one identity")
    return genuine, impostor, recall_at_1(np.stack(embeddings), np.array(labels)), skipped


def _pair_file_scores(args, verifier, pairs: Path):
    """Lines ``IMAGE_A IMAGE_B 1|0`` (1 = same person), paths relative to the file; a pair with an
    unusable image is skipped and counted."""
    from edge_verify.matcher import cosine

    if not pairs.is_file():
        raise InputError(f"{pairs}: no such pairs file")
    genuine, impostor = [], []
    lines = [ln.split() for ln in pairs.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    cache: dict[str, np.ndarray | None] = {}
    skipped = {"pairs": 0}
    for n, parts in enumerate(_progress(args, lines, desc="pairs"), 1):
        if len(parts) != 3 or parts[2] not in ("0", "1"):
            raise InputError(f"{pairs}:{n}: expected `IMAGE_A IMAGE_B 1|0`")
        for p in parts[:2]:
            if p not in cache:
                try:
                    cache[p] = verifier.embed_image(pairs.parent / p)
                except (NoFaceError, MultipleFacesError, QualityError, InputError):
                    cache[p] = None
        a, b = cache[parts[0]], cache[parts[1]]
        if a is None or b is None:
            skipped["pairs"] += 1
            continue
        (genuine if parts[2] == "1" else impostor).append(cosine(a, b))
    skipped["images"] = sum(v is None for v in cache.values())
    return np.array(genuine), np.array(impostor), None, skipped


def cmd_bench(args: argparse.Namespace) -> int:
    from edge_verify.align import align_face
    from edge_verify.matcher import cosine
    from edge_verify.sources import open_source

    verifier = _verifier(args)
    stages = {"capture": [], "detect": [], "align": [], "invoke": [], "match": []}
    template = np.ones(verifier.bundle.embedding_size, np.float32)
    faces_seen = 0
    start = time.perf_counter()
    frames = 0
    with open_source(args.source, timeout_s=args.timeout) as source:
        it = iter(source)
        for _ in _progress(args, range(args.frames), desc="bench", unit="frame"):
            t0 = time.perf_counter()
            frame = next(it, None)
            if frame is None:
                break
            t1 = time.perf_counter()
            faces = verifier.detect(frame.image) if verifier.detector else []
            t2 = time.perf_counter()
            chips = [align_face(frame.image, f, verifier.bundle.preprocess) for f in faces]
            t3 = time.perf_counter()
            embeddings = verifier.embedder.embed(np.stack(chips)) if chips else []
            t4 = time.perf_counter()
            for e in embeddings:
                cosine(e, template)
            t5 = time.perf_counter()
            for name, dt in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
                stages[name].append(dt)
            faces_seen += len(chips)
            frames += 1
    total = time.perf_counter() - start
    if frames == 0:
        raise InputError(f"{args.source}: no frames")
    per_stage = {k: 1000 * float(np.mean(v)) for k, v in stages.items()}
    invoke_per_face = 1000 * float(np.sum(stages["invoke"])) / max(faces_seen, 1)
    data = {
        "frames": frames,
        "faces": faces_seen,
        "fps": frames / total,
        "ms_per_frame": per_stage,
        "ms_per_embedding": invoke_per_face,
        "backend": verifier.embedder.backend,
    }
    text = [f"{frames} frames, {faces_seen} faces, {frames / total:.1f} frames/s ({verifier.embedder.backend})"]
    text += [f"  {k:<8} {v:8.2f} ms/frame" for k, v in per_stage.items()]
    text.append(f"  embedding {invoke_per_face:.2f} ms/face")
    emit(args, data, "\n".join(text))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from edge_verify.bundle import load_bundle
    from edge_verify.interpreter import available_backends, load_delegate

    checks: dict[str, dict] = {}

    def record(name: str, fn):
        try:
            checks[name] = {"ok": True, "detail": fn()}
        except EdgeVerifyError as exc:
            checks[name] = {"ok": False, "detail": str(exc)}
        except Exception as exc:  # doctor reports every failure instead of stopping at the first
            checks[name] = {"ok": False, "detail": f"{type(exc).__name__}: {exc}"}

    bundle_holder = {}

    def bundle_check():
        bundle_holder["b"] = b = load_bundle(args.bundle)
        return f"{b.name} v{b.version} at {b.path}: hashes ok, fingerprint {b.fingerprint}"

    record("bundle", bundle_check)
    record("backends", lambda: ", ".join(available_backends()) or "none (pip install ai-edge-litert)")

    def backend_check():
        from edge_verify.embedder import Embedder

        e = Embedder.for_bundle(bundle_holder["b"], backend=args.backend, use_edgetpu=not args.no_edgetpu)
        return f"{e.backend} loads {e.loaded.model_path.name}"

    record("interpreter", backend_check)

    def edgetpu_check():
        try:
            load_delegate(args.backend or "litert")
        except (OSError, ValueError) as exc:
            return f"not available ({str(exc).splitlines()[0]}); CPU int8 is used"
        return "libedgetpu.so.1 loaded: EdgeTPU delegate available"

    record("edgetpu", edgetpu_check)

    def store_check():
        with _store(args) as store:
            problems = store.integrity_check()
            if problems:
                raise EdgeVerifyError("; ".join(problems))
            return f"{store.path}: {len(store.list())} template(s) and settings, all authenticate"

    record("store", store_check)

    def decision_check():
        from edge_verify.pipeline import resolve_threshold

        bundle = bundle_holder["b"]
        with _store(args) as store:
            store.pin_bundle(bundle, repin=args.repin)
            choice = resolve_threshold(bundle, store)
        points = ", ".join(f"{p.name} {p.threshold:.4f}" for p in bundle.operating_points.values())
        pinned = "re-pinned" if args.repin else "match the store's pin"
        return f"threshold {choice.value:.4f} ({choice.origin}); bundle points {points}; {pinned}"

    record("decision", decision_check)
    if args.source:

        def source_check():
            from edge_verify.sources import open_source

            with open_source(args.source, timeout_s=args.timeout) as src:
                frame = next(iter(src), None)
            if frame is None:
                raise EdgeVerifyError(f"{args.source}: opened but gave no frame")
            return f"{args.source}: frame {frame.image.shape[1]}x{frame.image.shape[0]}"

        record("source", source_check)
    ok = all(c["ok"] for c in checks.values())
    emit(
        args,
        {"ok": ok, "checks": checks},
        "\n".join(f"{'ok  ' if c['ok'] else 'FAIL'} {name:<12} {c['detail']}" for name, c in checks.items()),
    )
    return 0 if ok else 3


def cmd_demo(args: argparse.Namespace) -> int:
    """Enrol the packaged sample identity, then check a second photo of her and one of someone else."""
    import os
    import tempfile
    from importlib import resources

    from edge_verify.matcher import mean_template, score
    from edge_verify.store import TemplateStore

    samples = Path(str(resources.files("edge_verify") / "samples"))
    verifier = _verifier(args)
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


def cmd_kiosk(args: argparse.Namespace) -> int:
    """Long-running door/attendance loop; SIGTERM or Ctrl-C stops it cleanly."""
    import signal
    import threading

    from edge_verify.kiosk import Kiosk, KioskConfig, build_actions

    overrides = {
        "source": args.source,
        "identity": args.identity,
        "debounce": args.debounce,
        "cooldown_s": args.cooldown,
        "threshold": args.threshold,
        "operating_point": args.operating_point,
        "allow_looser": args.allow_looser or None,
        "relay_pin": args.relay_pin,
        "led_pin": args.led_pin,
        "webhook": args.webhook,
        "command": args.run,
        "status_port": args.status_port,
        "max_frames": args.max_frames,
        "timeout_s": args.timeout,
        "liveness": args.liveness,
        "liveness_sequence": args.liveness_sequence,
        "liveness_step_timeout_s": args.liveness_step_timeout,
        "prompt_command": args.prompt_command,
    }
    if args.config:
        config = KioskConfig.from_toml(args.config, **overrides)
    else:
        config = KioskConfig(**{k: v for k, v in overrides.items() if v is not None})
    verifier = _verifier(args)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with _store(args, verifier.bundle) as store:
        kiosk = Kiosk(config, verifier, store, build_actions(config))
        kiosk.run(stop)
    accepted = sum(e.accepted for e in kiosk.events)
    emit(
        args,
        {"frames": kiosk.frames, "events": len(kiosk.events), "accepted": accepted, "reconnects": kiosk.reconnects},
        f"kiosk stopped: {kiosk.frames} frames, {len(kiosk.events)} decisions ({accepted} accepted), "
        f"{kiosk.reconnects} reconnects",
    )
    return 0


def cmd_liveness(args: argparse.Namespace) -> int:
    """Run the liveness check alone on the largest face of a video or camera; print what it saw."""
    from edge_verify.detect import FaceDetector
    from edge_verify.landmarks import FaceMesh
    from edge_verify.liveness import LivenessMonitor, LivenessOptions, make_check, parse_sequence, watch
    from edge_verify.sources import ImageSource, open_source

    options = LivenessOptions(step_timeout_s=args.liveness_step_timeout)
    sequence = parse_sequence(args.liveness_sequence) if args.liveness_sequence else None
    monitor = LivenessMonitor(FaceMesh(threads=args.threads), make_check(args.mode, options, sequence))
    detector = FaceDetector()
    started = time.perf_counter()
    frames = 0
    with open_source(args.source, timeout_s=args.timeout) as source:
        if isinstance(source, ImageSource):
            raise UsageError(f"{args.source}: a liveness check needs a video or a camera")

        def timed_frames():
            nonlocal frames
            shown = ""
            for frame in _progress(args, source, desc="liveness", unit="frame"):
                if frame.index >= args.max_frames:
                    return
                prompt = monitor.result.prompt
                if prompt and prompt != shown and source.live and not args.json:
                    print(f"  {prompt}", file=sys.stderr)
                shown = prompt
                frames += 1
                yield frame.time, frame.image

        watch(monitor, detector, timed_frames())
    elapsed = time.perf_counter() - started
    result = monitor.result
    yaws = [p.yaw for p in monitor.trace]
    data = {
        **result.as_dict(),
        "frames": frames,
        "frames_with_landmarks": len(monitor.trace),
        "ms_per_frame": round(1000 * elapsed / max(frames, 1), 1),
        "yaw": {
            "min": round(min(yaws), 1) if yaws else None,
            "max": round(max(yaws), 1) if yaws else None,
            "trace": [[round(p.time, 2), round(p.yaw, 1)] for p in monitor.trace],
        },
    }
    blinks = [f"{e.time:.2f}s" for e in result.events if e.kind == "blink"]
    turns = [
        f"{e.kind.replace('_', ' ')} at {e.time:.2f}s (depth {e.depth:.3f})" if e.depth is not None else e.kind
        for e in result.events
        if e.kind != "blink"
    ]
    lines = [
        f"liveness {result.mode}: {result.state.upper()}" + (f" ({result.reason})" if result.reason else ""),
        f"  frames {frames}, with landmarks {len(monitor.trace)}, {data['ms_per_frame']} ms/frame",
        f"  yaw {data['yaw']['min']}..{data['yaw']['max']} degrees (positive: the user's left)",
        f"  blinks: {', '.join(blinks) or 'none'}",
        f"  turns: {', '.join(turns) or 'none'}",
    ]
    if result.sequence:
        lines.append(f"  challenge: {' '.join(result.sequence)} ({result.step}/{len(result.sequence)} done)")
    if result.duration_s is not None and result.state == "passed":
        lines.append(f"  passed in {result.duration_s:.1f}s")
    emit(args, data, "\n".join(lines))
    if args.mode == "events":
        return 0
    return ACCEPTED if result.state == "passed" else REJECTED


def cmd_audit(args: argparse.Namespace) -> int:
    """Show or export (CSV) the audit log: time, command, claimed, matched, score, decision."""
    import csv
    import io

    with _store(args) as store:
        entries = store.audit_log(args.limit)
    if args.command_filter:
        entries = [e for e in entries if e.command == args.command_filter]
    if args.since:
        since = time.mktime(time.strptime(args.since, "%Y-%m-%d"))
        entries = [e for e in entries if e.ts >= since]
    entries.reverse()  # oldest first
    columns = ["time", "command", "claimed", "matched", "score", "threshold", "accepted", "source", "liveness"]
    rows = [
        [
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.ts)),
            e.command,
            e.claimed or "",
            e.matched or "",
            "" if e.score is None else f"{e.score:.4f}",
            "" if e.threshold is None else f"{e.threshold:.4f}",
            int(e.accepted),
            e.source or "",
            e.liveness or "",
        ]
        for e in entries
    ]
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            csv.writer(f).writerows([columns, *rows])
    buffer = io.StringIO()
    csv.writer(buffer, delimiter="\t", lineterminator="\n").writerows([columns, *rows])
    emit(
        args,
        {"entries": [dict(zip(columns, r, strict=True)) for r in rows], "csv": args.csv},
        f"wrote {len(rows)} entries to {args.csv}" if args.csv else buffer.getvalue().rstrip(),
    )
    return 0


# ---- host commands (TensorFlow, imported lazily) ------------------------------------------------
def _require_host() -> None:
    if importlib.util.find_spec("tensorflow") is None:
        raise HostDependencyError("this command needs TensorFlow: pip install 'edge-verify[host]'")


def cmd_train(args: argparse.Namespace) -> int:
    _require_host()
    from training.data import load_dataset
    from training.fit import TrainOptions, train

    images, labels = load_dataset(args.data, "train", (args.size, args.size), args.channels)
    if args.limit:
        images, labels = images[: args.limit], labels[: args.limit]
    options = TrainOptions(
        architecture=args.architecture,
        embedding_size=args.embedding_size,
        epochs=args.epochs,
        steps_per_epoch=args.steps,
        p=args.p,
        k=args.k,
        loss=args.loss,
        margin=args.margin,
        learning_rate=args.lr,
        seed=args.seed,
    )
    _, history = train(images, labels, options, args.out, progress=not args.json)
    emit(args, {"model": args.out, "loss_per_epoch": history}, f"saved {args.out} (final loss {history[-1]:.4f})")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    _require_host()
    import keras

    from converters.convert import ConvertOptions, convert, face_preprocess, format_fidelity, preprocess_for_model
    from edge_verify.bundle import sha256_file
    from training.data import FASHION_MNIST, load_dataset, load_face_chips

    model = _load_keras(args.model, keras)
    pre = face_preprocess(model) if args.align == "face5" else preprocess_for_model(model)

    def load(spec: str, split: str):
        if pre.alignment == "face5":
            if spec == FASHION_MNIST:
                raise UsageError("--align face5 needs folders of face photos, not fashion-mnist")
            return load_face_chips(spec, pre)
        return load_dataset(spec, split, pre.size, pre.channels)

    calib, _ = load(args.calibration, "train")
    validation = load(args.validation, "t10k") if args.validation else None
    if validation is not None and args.max_validation:
        validation = (validation[0][: args.max_validation], validation[1][: args.max_validation])
    options = ConvertOptions(
        name=args.name or Path(args.model).stem,
        version=args.version,
        io_dtype=args.io,
        target_far=args.far,
        max_calibration=args.num_calibration,
    )
    meta = convert(
        model,
        calib,
        args.out,
        options,
        validation=validation,
        preprocess=pre,
        source_hash=sha256_file(Path(args.model)),
        progress=None if args.json else (lambda m: print(m, file=sys.stderr)),
    )
    emit(args, meta, format_fidelity(meta) + f"\nwrote {args.out}")
    return 0


def _load_keras(path: str, keras):
    import training.layers  # noqa: F401 - registers L2Normalize
    import training.losses  # noqa: F401 - registers TripletLoss

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such Keras model file")
    try:
        return keras.models.load_model(str(p), compile=False)
    except Exception as exc:  # Keras raises many types for a bad file
        raise InputError(f"{p}: not a loadable .keras model ({str(exc).splitlines()[0][:200]})") from None


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Bundle on a folder/pairs (device pipeline) or on Fashion-MNIST; .keras models on arrays (host)."""
    from edge_verify.metrics import format_report, pair_scores, recall_at_1, verification_report
    from training.data import FASHION_MNIST

    if not args.data and not args.pairs:
        raise UsageError("give --data (fashion-mnist or a folder per identity) or --pairs FILE")
    target = Path(args.target)
    title = f"{target.name} on {Path(args.pairs or args.data).name}"
    if target.is_dir() and args.data != FASHION_MNIST:
        verifier = _verifier(args, bundle=str(target))
        if args.variant != "int8":
            from edge_verify.embedder import Embedder

            verifier.embedder = Embedder.for_bundle(verifier.bundle, args.variant, args.backend, use_edgetpu=False)
        genuine, impostor, recall, _ = _labelled_scores(args, verifier, args.data, args.pairs)
    else:
        from training.data import load_dataset

        if target.is_dir():
            from edge_verify.bundle import load_bundle
            from edge_verify.embedder import Embedder

            bundle = load_bundle(target)
            embedder = Embedder.for_bundle(bundle, variant=args.variant, backend=args.backend, use_edgetpu=False)
            size, channels = bundle.preprocess.size, bundle.preprocess.channels

            def embed(x):
                return np.concatenate(
                    [embedder.embed(x[i : i + 256]) for i in _progress(args, range(0, len(x), 256), desc="embed")]
                )
        else:
            _require_host()
            import keras

            model = _load_keras(str(target), keras)
            size, channels = tuple(int(d) for d in model.input_shape[1:3]), int(model.input_shape[3])

            def embed(x):
                return model.predict(x.astype(np.float32), batch_size=256, verbose=0)

        images, labels = load_dataset(args.data, args.split, size, channels)
        if args.limit:
            images, labels = images[: args.limit], labels[: args.limit]
        embeddings = embed(images)
        genuine, impostor = pair_scores(embeddings, labels)
        recall = recall_at_1(embeddings, labels)
        title += f" ({len(images)} images)"
    report = verification_report(genuine, impostor, recall)
    emit(args, report.as_dict(), format_report(report, title))
    return 0


def cmd_import_dlib(args: argparse.Namespace) -> int:
    _require_host()
    from converters.dlib_import import find_dlib_face_model, import_dlib_face_model

    src = Path(args.dat) if args.dat else find_dlib_face_model()
    if src is None:
        raise InputError("dlib model not found: pip install face-recognition-models, or pass the .dat path")
    model = import_dlib_face_model(src)
    model.save(args.out)
    emit(
        args,
        {"model": args.out, "params": model.count_params()},
        f"saved {args.out} ({model.count_params():,} parameters)",
    )
    return 0


# ---- parser -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("--bundle", help="model bundle directory (default: the built-in face bundle)")
    common.add_argument("--store", help="template store file (default: the user data directory)")
    common.add_argument("--key-file", help="template key file (default: STORE.key, or $EDGE_VERIFY_KEY)")
    common.add_argument("--backend", choices=["litert", "tflite_runtime", "tensorflow"], help="force an interpreter")
    common.add_argument("--threads", type=int, help="interpreter threads (default: all cores)")
    common.add_argument("--no-edgetpu", action="store_true", help="ignore the bundle's EdgeTPU model")
    common.add_argument("--timeout", type=float, default=5.0, help="camera/stream timeout in seconds")
    common.add_argument("-v", "--verbose", action="store_true")

    def add_liveness_options(p, default: str) -> None:
        p.add_argument(
            "--liveness",
            choices=["auto", "off", "passive", "challenge"] if default == "auto" else ["off", "passive", "challenge"],
            default=default,
            help="presentation-attack check on the tracked face: challenge (random actions), passive (a natural blink "
            "and head turn), off"
            + (" (default auto: challenge for cameras and streams, off for files)" if default == "auto" else "")
            + (f" (default {default})" if default != "auto" else ""),
        )
        p.add_argument(
            "--liveness-sequence", help="fixed challenge, e.g. 'turn_left,blink' (tests; default: random each time)"
        )
        p.add_argument(
            "--liveness-step-timeout", type=float, default=5.0, help="seconds allowed per challenge action (default 5)"
        )

    parser = argparse.ArgumentParser(prog="edge-verify", description="On-device face (and image) verification.")
    from edge_verify import __version__

    parser.add_argument("--version", action="version", version=f"edge-verify {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, fn, help_text):
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(func=fn)
        return p

    p = add("enroll", cmd_enroll, "enrol an identity from a camera, video, image or folder")
    p.add_argument("name")
    p.add_argument(
        "--source", "-s", required=True, help="image, folder, video, camera index, /dev/videoN, URL, picamera2"
    )
    p.add_argument("--frames", "-n", type=int, default=5, help="usable frames to average (default 5; a camera: >= 3)")
    p.add_argument("--replace", action="store_true", help="overwrite an existing template")
    p.add_argument("--force", action="store_true", help="enrol even if the frames match another enrolled identity")
    p.add_argument("--largest-face", action="store_true", help="use the largest face instead of refusing several")

    p = add("check", cmd_check, "1:1 verify NAME; exit 0 accepted, 1 rejected")
    p.add_argument("name")
    p.add_argument("--source", "-s", required=True)
    p.add_argument(
        "--frames", "-n", type=int, default=3, help="frames of one tracked face whose mean score decides (default 3)"
    )
    p.add_argument(
        "--max-frames", type=int, help="source frames to read at most (default 300; 900 with a liveness check)"
    )
    add_threshold_options(p)
    p.add_argument("--largest-face", action="store_true", help="use the largest face instead of refusing several")
    add_liveness_options(p, default="auto")

    p = add("identify", cmd_identify, "1:N: name every enrolled face in view")
    p.add_argument("--source", "-s", required=True)
    p.add_argument("--frames", "-n", type=int, default=1, help="source frames to read (default 1)")
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
    p.add_argument("name")

    p = add("calibrate", cmd_calibrate, "set the threshold at a target FAR from labelled faces")
    p.add_argument("data", nargs="?", help="folder with one sub-folder of images per identity")
    p.add_argument("--pairs", help="pairs file: `IMAGE_A IMAGE_B 1|0` per line, instead of the folder")
    p.add_argument("--far", type=float, default=1e-3, help="target false-accept rate (default 1e-3)")
    p.add_argument("--dry-run", action="store_true", help="report only; do not write the threshold")
    p.add_argument("--force", action="store_true", help="accept a FAR the data cannot resolve (< 10/FAR impostors)")
    p.add_argument("--allow-looser", action="store_true", help="store a threshold looser than the bundle default")
    p.add_argument("--reset", action="store_true", help="remove the site calibration (back to the bundle default)")

    p = add("bench", cmd_bench, "per-stage latency and frames/s on a source")
    p.add_argument("--source", "-s", required=True)
    p.add_argument("--frames", "-n", type=int, default=100)

    p = add("doctor", cmd_doctor, "check backend, EdgeTPU, bundle hashes, store integrity, camera")
    p.add_argument("--source", "-s", help="also try to read a frame from this source")
    p.add_argument("--repin", action="store_true", help="accept the bundle's current thresholds (after an upgrade)")

    p = add("liveness", cmd_liveness, "run the liveness check alone on a video or camera; exit 0 passed, 1 failed")
    p.add_argument("--source", "-s", required=True, help="video file, camera index, /dev/videoN, URL, picamera2")
    p.add_argument(
        "--mode",
        choices=["challenge", "passive", "events"],
        default="challenge",
        help="challenge (random actions, default), passive (natural blink and turn), events (report only)",
    )
    p.add_argument("--max-frames", type=int, default=900, help="source frames to read at most (default 900)")
    p.add_argument(
        "--liveness-sequence", help="fixed challenge, e.g. 'turn_left,blink' (tests; default: random each time)"
    )
    p.add_argument(
        "--liveness-step-timeout", type=float, default=5.0, help="seconds allowed per challenge action (default 5)"
    )

    p = add("kiosk", cmd_kiosk, "run the kiosk loop: debounce, cooldown, relay / webhook / command, audit")
    p.add_argument("--config", help="TOML file with [kiosk] settings (flags override it)")
    p.add_argument("--source", "-s", help="camera (default 0), /dev/videoN, URL, video, picamera2")
    p.add_argument("--identity", help="1:1 against this identity (default: identify 1:N)")
    p.add_argument("--debounce", type=int, help="frames of one tracked face whose mean score decides (default 3)")
    p.add_argument("--cooldown", type=float, help="seconds between two firings of one outcome (default 10)")
    add_threshold_options(p)
    p.add_argument("--relay-pin", type=int, help="BCM pin of the door relay (gpiozero)")
    p.add_argument("--led-pin", type=int, help="BCM pin of a status LED (blinks during a challenge, lit on accept)")
    p.add_argument("--webhook", help="POST each decision as JSON to this local URL")
    p.add_argument("--run", help="command to run on each decision (EDGE_VERIFY_* env vars)")
    p.add_argument(
        "--liveness",
        choices=["off", "passive", "challenge"],
        help="presentation-attack check per tracked face (default challenge; off admits a photo)",
    )
    p.add_argument("--liveness-sequence", help="fixed challenge, e.g. 'turn_left,blink' (default: random each time)")
    p.add_argument("--liveness-step-timeout", type=float, help="seconds allowed per challenge action (default 5)")
    p.add_argument(
        "--prompt-command", help="command run on each new prompt, EDGE_VERIFY_PROMPT=turn_left|turn_right|blink|look"
    )
    p.add_argument("--status-port", type=int, help="serve a live status page on 127.0.0.1:PORT")
    p.add_argument("--max-frames", type=int, help=argparse.SUPPRESS)

    p = add("audit", cmd_audit, "show or export the audit log (attendance: --csv)")
    p.add_argument("--csv", help="write CSV to this file")
    p.add_argument("--limit", type=int, default=100000)
    p.add_argument("--since", help="YYYY-MM-DD")
    p.add_argument("--command", dest="command_filter", help="only entries of this command (check, identify, kiosk)")

    p = add("train", cmd_train, "[host] train an embedding model with a triplet loss")
    p.add_argument("--data", required=True, help="fashion-mnist, or a folder per identity")
    p.add_argument("--out", required=True, help="output .keras file")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--steps", type=int, help="batches per epoch (default: one pass)")
    p.add_argument("--architecture", choices=["small_cnn", "mobile"], default="small_cnn")
    p.add_argument("--embedding-size", type=int, default=256)
    p.add_argument("--loss", choices=["semi_hard", "batch_hard"], default="semi_hard")
    p.add_argument("--margin", type=float, default=1.0)
    p.add_argument("--p", type=int, default=8, help="identities per batch")
    p.add_argument("--k", type=int, default=4, help="images per identity per batch")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--size", type=int, default=28, help="image size for folder data")
    p.add_argument("--channels", type=int, default=1, choices=[1, 3])
    p.add_argument("--limit", type=int, help="use only the first N training images")
    p.add_argument("--seed", type=int, default=0)

    p = add("convert", cmd_convert, "[host] Keras model -> TFLite fp32/fp16/dynamic/int8 bundle")
    p.add_argument("model", help=".keras embedding model (ending in L2Normalize)")
    p.add_argument("--calibration", required=True, help="fashion-mnist, or a folder of images (sub-folders ok)")
    p.add_argument("--validation", help="labelled data for the fidelity report and threshold")
    p.add_argument("--out", required=True, help="bundle directory to write")
    p.add_argument("--name")
    p.add_argument("--version", default="1")
    p.add_argument("--io", choices=["int8", "uint8"], default="int8", help="int8 model input/output type")
    p.add_argument(
        "--align",
        choices=["resize", "face5"],
        default="resize",
        help="face5: a face model; images are detected and aligned like on the device",
    )
    p.add_argument("--far", type=float, default=1e-3, help="FAR for the bundle threshold")
    p.add_argument("--num-calibration", type=int, default=300)
    p.add_argument("--max-validation", type=int, default=2000)

    p = add("evaluate", cmd_evaluate, "ROC AUC, EER, TAR@FAR, recall@1 of a bundle or .keras model")
    p.add_argument("target", help="bundle directory or .keras model")
    p.add_argument("--data", help="fashion-mnist, or a folder per identity")
    p.add_argument("--pairs", help="pairs file `IMAGE_A IMAGE_B 1|0` (bundles only)")
    p.add_argument("--split", default="t10k")
    p.add_argument("--variant", choices=["int8", "fp32"], default="int8")
    p.add_argument("--limit", type=int, default=2000, help="first N images (pairs grow as N^2)")

    p = add("import-dlib", cmd_import_dlib, "[host] dlib face ResNet .dat -> Keras model")
    p.add_argument("--dat", help="path to dlib_face_recognition_resnet_model_v1.dat")
    p.add_argument("--out", required=True)
    return parser


def add_threshold_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threshold", type=float, help="explicit threshold (a looser one than the default needs --allow-looser)"
    )
    p.add_argument("--operating-point", help="a named operating point of the bundle (strict, default, convenient)")
    p.add_argument("--allow-looser", action="store_true", help="allow a --threshold looser than the bundle default")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="edge-verify: %(message)s")
    try:
        return args.func(args)
    except EdgeVerifyError as exc:
        if args.json:
            print(json.dumps({"error": str(exc), "type": type(exc).__name__, "exit_code": exc.exit_code}))
        print(f"edge-verify: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
