"""Running a site: calibrate, bench, doctor, audit."""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

import numpy as np

from edge_verify.cli.common import emit, open_store, printable_text, progress, skipped_text, store_path, verifier_for
from edge_verify.errors import (
    EdgeVerifyError,
    InputError,
    MultipleFacesError,
    NoFaceError,
    QualityError,
    TemplateIntegrityError,
    UsageError,
)
from edge_verify.redaction import redact_url


def cmd_calibrate(args: argparse.Namespace) -> int:
    """The site's FRR at the bundle's operating points and between them; the threshold at ``--far``
    from the bundle's FAR curve, tightened (never loosened) by the site's own impostor pairs."""
    from edge_verify.metrics import format_report, template_scores, verification_report
    from edge_verify.operating import check_far, measure
    from edge_verify.site_calibration import calibrate_site, data_line, meaning_line, stamp

    verifier = verifier_for(args)
    bundle = verifier.bundle
    if args.reset:
        # a calibration changed or deleted outside edge-verify is what a reset is for: open it anyway
        with open_store(args, bundle, check_state=False) as store, store.transaction():
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
    if args.pairs:  # explicit pairs: single photo against single photo (a door with 5-frame templates does better)
        genuine, impostor, _, skipped, people, images = labelled_scores(args, verifier, None, args.pairs)
    else:  # the statistic the points were calibrated on: a template of up to 5 photos against each other photo
        embeddings, labels, skipped = labelled_embeddings(args, verifier, args.data)
        genuine, impostor = template_scores(embeddings, labels)
        people, images = len(set(labels.tolist())), len(labels)
    origin = Path(args.pairs or args.data).name
    if len(genuine) == 0:
        raise InputError(f"{origin}: need same-identity pairs (at least 2 usable photos of one person)")
    cal = calibrate_site(bundle, genuine, impostor, far, people, images)
    default = bundle.operating_point()
    looser = cal.threshold < default.threshold
    refusal = None
    if not cal.vouched:
        refusal = f"{origin}: nothing vouches for FAR {far:g}: {data_line(cal)}"
    elif looser and not args.allow_looser:
        refusal = (
            f"the threshold at FAR {far:g} is {cal.threshold:.4f}, looser than the bundle's {default.name!r} "
            f"operating point ({default.threshold:.4f}); add --allow-looser to store it"
        )
    if refusal and not args.dry_run:
        raise UsageError(refusal)
    at = measure(genuine, impostor, cal.threshold, origin)
    at["bundle_far"] = cal.chosen.bundle_far if cal.chosen else None
    if not args.dry_run:
        with open_store(args, bundle, create=True) as store, store.transaction():
            store.set_threshold(
                bundle.fingerprint,
                stamp(
                    bundle,
                    {
                        "threshold": cal.threshold,
                        "far": far,
                        "source": f"FAR from {bundle.name}'s curve"
                        + (", tightened by" if cal.tightened else "; FRR from")
                        + f" {len(genuine)}+{len(impostor)} pairs from {origin}",
                        "measured": at,
                        "far_curve": [list(p) for p in bundle.far_curve],
                        "bundle_threshold": cal.bundle_threshold,
                        "tightened_by_site": cal.tightened,
                        "looser_than_default": looser,
                        "time": time.time(),
                    },
                ),
            )
            store.audit(
                "calibrate", bundle.fingerprint, True, score=cal.threshold, threshold=cal.threshold, source=origin
            )
    report = verification_report(genuine, impostor) if len(impostor) else None
    data = {
        **cal.as_dict(),
        "written": not args.dry_run,
        "refused": refusal,
        "looser_than_default": looser,
        "default_threshold": default.threshold,
        "measured": at,
        "skipped": skipped,
        "report": report.as_dict() if report is not None else None,
    }
    lines = []
    if report is not None:
        lines.append(format_report(report, f"calibration on {origin}"))
    lines.append(f"  {'threshold':>9}  {'bundle FAR':>10}  {'your FRR (95% CI)':<24} point")
    for r in cal.rows:
        mark = "  <- chosen" if r is cal.chosen else ""
        bundle_far = f"{r.bundle_far:.0e}" if r.bundle_far is not None else "-"
        frr = f"{r.frr:6.1%} ({r.frr_ci[0]:.1%}-{r.frr_ci[1]:.1%})"
        lines.append(f"  {r.threshold:9.4f}  {bundle_far:>10}  {frr:<24} {', '.join(r.points)}{mark}")
    state = "dry run: nothing written" if args.dry_run else "written to the store; decisions with this bundle use it"
    lines.append(f"  threshold at FAR {far:g}: {cal.threshold:.4f} ({state})")
    if cal.tightened:
        lines.append(
            f"  tightened from the bundle's {cal.bundle_threshold:.4f}: "
            f"your own impostor pairs need {cal.site_bound:.4f}"
        )
    if not cal.bundle_resolved and cal.bundle_threshold is not None:
        lines.append(f"  FAR {far:g} is below what the bundle's data resolved: its strictest measured threshold")
    lines.append(f"  {data_line(cal)}")
    lines.append(f"  {meaning_line(cal)}")
    if looser:
        lines.append(f"  looser than the bundle's {default.name!r} point ({default.threshold:.4f})")
    if refusal:
        lines.append(f"  would be refused: {refusal}")
    if any(skipped.values()):
        lines.append(f"  skipped: {skipped_text(skipped)}")
    emit(args, data, "\n".join(lines))
    return 0


def labelled_scores(args: argparse.Namespace, verifier, data: str | None, pairs: str | None):
    """Genuine and impostor scores from a folder per identity, or from a pairs file, through the
    device pipeline (detect, align, quality, embed); unusable images are skipped and counted.
    Returns (genuine, impostor, recall or None, skipped counts, people, usable images)."""
    from edge_verify.metrics import pair_scores, recall_at_1

    if pairs:
        return _pair_file_scores(args, verifier, Path(pairs))
    embeddings, labels, skipped = labelled_embeddings(args, verifier, data)
    genuine, impostor = pair_scores(embeddings, labels)
    recall = recall_at_1(embeddings, labels)
    return genuine, impostor, recall, skipped, len(set(labels.tolist())), len(labels)


def labelled_embeddings(args: argparse.Namespace, verifier, data: str | None):
    """Embeddings and labels of a folder per identity, through the device pipeline (detect, align,
    quality, embed); unusable images are skipped and counted. Returns (embeddings, labels, skipped)."""
    from edge_verify.sources import list_images

    root = Path(data or "")
    if not data or not root.is_dir():
        raise InputError(f"{root}: not a folder (expected one sub-folder of images per identity), or give --pairs")
    embeddings, labels, skipped = [], [], {}
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    paths = [(i, p) for i, d in enumerate(folders) for p in list_images(d)]
    for label, path in progress(args, paths, desc="embed", unit="img"):
        try:
            embeddings.append(verifier.embed_image(path))
            labels.append(label)
        except (NoFaceError, MultipleFacesError, QualityError, InputError) as exc:
            reason = type(exc).__name__.replace("Error", "").lower()
            skipped[reason] = skipped.get(reason, 0) + 1
    if len(set(labels)) < 2:
        raise InputError(f"{root}: need usable images of at least 2 identities (found {len(set(labels))})")
    if max(Counter(labels).values()) < 2:  # no same-identity pair
        raise InputError(f"{root}: need at least 2 usable images of one identity")
    return np.stack(embeddings), np.array(labels), skipped


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
    for n, parts in enumerate(progress(args, lines, desc="pairs"), 1):
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
    usable = sum(v is not None for v in cache.values())
    return np.array(genuine), np.array(impostor), None, skipped, 0, usable


def cmd_bench(args: argparse.Namespace) -> int:
    from edge_verify import selftest
    from edge_verify.matcher import cosine
    from edge_verify.sources import open_source

    verifier = verifier_for(args)
    checked = selftest.require(verifier)  # timings of a device that computes wrong embeddings mean nothing
    live = args.liveness == "on" and verifier.detector is not None
    if live:
        from edge_verify.antispoof import AntiSpoof
        from edge_verify.landmarks import FaceMesh

        mesh = FaceMesh(backend=args.backend, threads=args.threads)
        antispoof = AntiSpoof(args.backend, args.threads)
    stages = {"capture": [], "detect": [], "align": [], "invoke": [], "match": []}
    if live:
        stages.update(landmarks=[], antispoof=[])
    template = np.ones(verifier.bundle.embedding_size, np.float32)
    faces_seen = 0
    start = time.perf_counter()
    frames = 0
    with open_source(args.source, timeout_s=args.timeout) as source:
        it = iter(source)
        for _ in progress(args, range(args.frames), desc="bench", unit="frame"):
            t0 = time.perf_counter()
            frame = next(it, None)
            if frame is None:
                break
            t1 = time.perf_counter()
            faces = verifier.detect(frame.image) if verifier.detector else []
            faces = faces[:1] if args.one_face else faces
            t2 = time.perf_counter()
            chips = [verifier.align(frame.image, f) for f in faces]
            t3 = time.perf_counter()
            embeddings = verifier.embed_chips(chips) if chips else []
            t4 = time.perf_counter()
            for e in embeddings:
                cosine(e, template)
            t5 = time.perf_counter()
            times = [t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4]
            if live:  # the liveness check of every tracked face: its landmarks, then the anti-spoofing model
                for f in faces:
                    mesh.landmarks(frame.image, f)
                t6 = time.perf_counter()
                for f in faces:
                    antispoof.score(frame.image, f)
                times += [t6 - t5, time.perf_counter() - t6]
            for name, dt in zip(stages, times, strict=True):
                stages[name].append(dt)
            faces_seen += len(chips)
            frames += 1
    total = time.perf_counter() - start
    if frames == 0:
        raise InputError(f"{redact_url(args.source)}: no frames")
    per_stage = {k: 1000 * float(np.mean(v)) for k, v in stages.items()}
    invoke_per_face = 1000 * float(np.sum(stages["invoke"])) / max(faces_seen, 1)
    data = {
        "frames": frames,
        "faces": faces_seen,
        "fps": frames / total,
        "ms_per_frame": per_stage,
        "ms_per_embedding": invoke_per_face,
        "backend": verifier.embedder.backend,
        "self_test": checked.summary() if checked else "none recorded",
    }
    text = [f"{frames} frames, {faces_seen} faces, {frames / total:.1f} frames/s ({verifier.embedder.backend})"]
    text += [f"  {k:<8} {v:8.2f} ms/frame" for k, v in per_stage.items()]
    text.append(f"  embedding {invoke_per_face:.2f} ms/face")
    text.append(f"  {data['self_test']}")
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

        bundle = bundle_holder["b"]
        loaded = []
        for member, _ in bundle.models:
            e = Embedder.for_bundle(member, backend=args.backend, use_edgetpu=not args.no_edgetpu)
            loaded.append(f"{e.backend} loads {member.name + '/' if bundle.members else ''}{e.loaded.model_path.name}")
        return "; ".join(loaded)

    record("interpreter", backend_check)

    def self_test_check():
        from edge_verify import selftest

        result = selftest.require(verifier_for(args))
        if result is None:
            return "none recorded in this bundle (made before self-tests: rebuild it with `edge-verify convert`)"
        return result.summary()

    record("self-test", self_test_check)

    def edgetpu_check():
        try:
            load_delegate(args.backend or "litert")
        except (OSError, ValueError) as exc:
            return f"not available ({str(exc).splitlines()[0]}); CPU int8 is used"
        return "libedgetpu.so.1 loaded: EdgeTPU delegate available"

    record("edgetpu", edgetpu_check)

    store_exists = store_path(args).exists()

    def store_check():
        if not store_exists:
            return f"{store_path(args)}: no store yet (the first enrolment makes it)"
        with open_store(args, check_state=False) as store:
            problems = store.integrity_check()
            if problems:
                raise EdgeVerifyError("; ".join(problems))
            templates = store.list()
        counts = Counter(t.bundle or f"model {t.fingerprint[:12]}" for t in templates)
        made_by = ", ".join(f"{n} from {name}" for name, n in sorted(counts.items()))
        bundle = bundle_holder.get("b")  # absent when the bundle check failed
        other = sum(t.fingerprint != bundle.fingerprint for t in templates) if bundle else 0
        return (
            f"{store.path}: {len(templates)} template(s) and settings, all authenticate"
            + (f" ({made_by})" if templates else "")
            + (
                f"; {other} made by another bundle: re-enrol each (`edge-verify enroll NAME --replace`)"
                if other
                else ""
            )
        )

    record("store", store_check)

    def decision_check():
        from edge_verify.pipeline import resolve_threshold

        bundle = bundle_holder["b"]
        if not store_exists:
            choice = resolve_threshold(bundle, None)
        else:
            with open_store(args, check_state=not args.repin) as store:  # a re-pin settles a stripped pin
                store.pin_bundle(bundle, repin=args.repin)
                choice = resolve_threshold(bundle, store)
        points = ", ".join(f"{p.name} {p.threshold:.4f}" for p in bundle.operating_points.values())
        pinned = "re-pinned" if args.repin else "match the store's pin" if store_exists else "pinned at first use"
        return f"threshold {choice.value:.4f} ({choice.origin}); bundle points {points}; {pinned}"

    record("decision", decision_check)
    if args.source:

        def source_check():
            from edge_verify.sources import open_source

            with open_source(args.source, timeout_s=args.timeout) as src:
                frame = next(iter(src), None)
            if frame is None:
                raise EdgeVerifyError(f"{redact_url(args.source)}: opened but gave no frame")
            return f"{redact_url(args.source)}: frame {frame.image.shape[1]}x{frame.image.shape[0]}"

        record("source", source_check)
    ok = all(c["ok"] for c in checks.values())
    emit(
        args,
        {"ok": ok, "checks": checks},
        "\n".join(f"{'ok  ' if c['ok'] else 'FAIL'} {name:<12} {c['detail']}" for name, c in checks.items()),
    )
    return 0 if ok else 3


def cmd_audit(args: argparse.Namespace) -> int:
    """Show, export (CSV) or verify the audit log: time, command, claimed, matched, score, decision."""
    import csv
    import io

    since, until = parse_time(args.since, "--since"), parse_time(args.until, "--until")
    with open_store(args, check_state=not args.verify) as store:
        if args.verify:
            problems = store.verify_state() + store.verify_audit()
            count = len(store.audit_log(limit=-1))
        else:
            entries = store.audit_log(args.limit, since=since, until=until, command=args.command_filter)
            ids = [e.id for e in entries]
            done = store.audit_actions_between(min(ids), max(ids)) if ids else {}
    if args.verify:
        text = "\n".join(f"TAMPERED {p}" for p in problems) or f"audit log intact: {count} entries, chain verified"
        emit(args, {"ok": not problems, "entries": count, "problems": problems}, text)
        return 0 if not problems else TemplateIntegrityError.exit_code
    entries.reverse()  # oldest first
    columns = "time command claimed matched score threshold accepted source liveness detail actions".split()
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
            e.detail or "",
            "; ".join(action_text(*a) for a in done.get(e.id, [])),
        ]
        for e in entries
    ]
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            csv.writer(f).writerows([columns, *[[spreadsheet_safe(v) for v in r] for r in rows]])
    buffer = io.StringIO()
    printable = [[printable_text(v) for v in r] for r in rows]
    csv.writer(buffer, delimiter="\t", lineterminator="\n").writerows([columns, *printable])
    emit(
        args,
        {"entries": [dict(zip(columns, r, strict=True)) for r in rows], "csv": args.csv},
        f"wrote {len(rows)} entries to {args.csv}" if args.csv else buffer.getvalue().rstrip(),
    )
    return 0


def action_text(action: str, ok: bool, detail: str) -> str:
    """What one action did for a decision: ``relay ok``, ``webhook FAILED (HTTP 500)``."""
    return f"{action} {'ok' if ok else 'FAILED'}" + (f" ({detail})" if detail else "")


def spreadsheet_safe(value):
    """A CSV cell a spreadsheet shows as text: a leading =, +, -, @, tab or CR (a formula) gets a '."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        try:
            float(value)
            return value  # a negative score is a number, not a formula
        except ValueError:
            return "'" + value
    return value


def parse_time(text: str | None, option: str) -> float | None:
    """``YYYY-MM-DD``, ``YYYY-MM-DD HH:MM[:SS]`` (local time), ``today``, ``yesterday``, or an age
    such as ``90m``, ``12h``, ``7d``; UsageError naming the option otherwise."""
    import datetime as dt
    import re

    if text is None:
        return None
    value = text.strip().lower()
    today = dt.datetime.combine(dt.date.today(), dt.time())
    if value in ("today", "yesterday"):
        return (today - dt.timedelta(days=value == "yesterday")).timestamp()
    age = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([mhd])", value)
    if age:
        return time.time() - float(age[1]) * {"m": 60, "h": 3600, "d": 86400}[age[2]]
    try:
        return dt.datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise UsageError(
            f"{option} {text!r}: use YYYY-MM-DD, 'YYYY-MM-DD HH:MM', today, yesterday, or an age like 12h or 7d"
        ) from None


def register(add) -> None:
    """Add this group's commands; ``add(name, function, help)`` returns the sub-parser."""
    p = add("calibrate", cmd_calibrate, "your people's FRR at each threshold; set the one at a target FAR")
    p.add_argument("data", nargs="?", help="folder with one sub-folder of images per identity")
    p.add_argument("--pairs", help="pairs file: `IMAGE_A IMAGE_B 1|0` per line, instead of the folder")
    p.add_argument("--far", type=float, default=1e-3, help="target false-accept rate (default 1e-3)")
    p.add_argument("--dry-run", action="store_true", help="show the figures only; do not write the threshold")
    p.add_argument("--allow-looser", action="store_true", help="store a threshold looser than the bundle default")
    p.add_argument("--reset", action="store_true", help="remove the site calibration (back to the bundle default)")

    p = add("bench", cmd_bench, "per-stage latency and frames/s on a source")
    p.add_argument("--source", "-s", required=True)
    p.add_argument("--frames", "-n", type=int, default=100)
    p.add_argument(
        "--liveness",
        choices=["on", "off"],
        default="on",
        help="time the liveness stages too: landmarks and the anti-spoofing model per face (default on, as a kiosk)",
    )
    p.add_argument("--one-face", action="store_true", help="only the largest face of each frame (a door's view)")

    p = add("doctor", cmd_doctor, "check backend, EdgeTPU, bundle hashes, store integrity, camera")
    p.add_argument("--source", "-s", help="also try to read a frame from this source")
    p.add_argument("--repin", action="store_true", help="accept the bundle's current thresholds (after an upgrade)")

    p = add("audit", cmd_audit, "show or export the audit log (attendance: --csv)")
    p.add_argument("--csv", help="write CSV to this file")
    p.add_argument("--limit", type=int, default=100000, help="newest N entries among those that match (default 100000)")
    p.add_argument("--since", help="from this time: YYYY-MM-DD, 'YYYY-MM-DD HH:MM', today, yesterday, 12h, 7d")
    p.add_argument("--until", help="before this time (same forms as --since)")
    p.add_argument("--verify", action="store_true", help="check the audit chain: exit 10 if rows were edited/deleted")
    p.add_argument("--command", dest="command_filter", help="only entries of this command (check, identify, kiosk)")
