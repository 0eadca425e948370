"""``edge-verify fleet …``: the centre (init, add-kiosk, enroll, remove, list, status, revoke, serve) and
the kiosk's side (sync); and ``enroll --fleet FILE``, which sends a kiosk's new template to the centre.
The fleet extra (psycopg, paho-mqtt) is imported only when one of these runs."""

from __future__ import annotations

import argparse
import copy
import os
import threading
import time
from pathlib import Path

from edge_verify.cli.common import emit, identity_name, open_store, printable_text, store_path
from edge_verify.errors import UsageError

CENTRE_ENV = "EDGE_VERIFY_CENTRE"
AUTHORITY_ENV = "EDGE_VERIFY_AUTHORITY"


def register(sub, common: argparse.ArgumentParser) -> None:
    """Add ``fleet`` (its commands nested) and ``enroll --fleet``."""
    fleet = sub.add_parser("fleet", parents=[common], help="many kiosks, one list: a PostgreSQL centre (docs/fleet.md)")
    quiet = _unset_by_default(common)  # the commands' copies: given after the command, they count too
    commands = fleet.add_subparsers(dest="fleet_command", required=True, metavar="COMMAND")

    def add(name, fn, help_text, centre=True, authority=False):
        p = commands.add_parser(name, parents=[quiet], help=help_text, description=help_text)
        p.set_defaults(func=fn)
        if centre:
            p.add_argument("--centre", help=f"the centre's PostgreSQL connection string (default ${CENTRE_ENV})")
        if authority:
            p.add_argument(
                "--authority",
                help=f"the enrolment authority's key file (default ${AUTHORITY_ENV}, else {_authority_default()})",
            )
        return p

    add("init", cmd_init, "create the authority key (if none) and the centre's schema", authority=True)
    p = add("add-kiosk", cmd_add_kiosk, "add a kiosk: its role, key and fleet file", authority=True)
    p.add_argument("name")
    p.add_argument("--group", required=True, help="the kiosk's group: it gets this group's templates")
    p.add_argument("--out", required=True, help="fleet file to write (0600; copy it to the kiosk)")
    p.add_argument("--may-enrol", action="store_true", help="the kiosk may send enrolments (`enroll --fleet`)")
    p.add_argument("--host", help="the centre's address as the kiosk reaches it (default: as in --centre)")
    p.add_argument("--interval", type=float, default=30.0, help="seconds between pulls without a hint (default 30)")
    p = add("enroll", cmd_enroll, "distribute a template enrolled in the local --store to a group", authority=True)
    p.add_argument("name", type=identity_name)
    p.add_argument("--group", required=True)
    p.add_argument("--mqtt", help="fleet file with an [mqtt] table: hint the kiosks at once")
    p = add(
        "remove", cmd_remove, "remove an identity from a group (complete when every kiosk applied it)", authority=True
    )
    p.add_argument("name", type=identity_name)
    p.add_argument("--group", required=True)
    p.add_argument("--mqtt", help="fleet file with an [mqtt] table: hint the kiosks at once")
    p = add("calibrate", cmd_calibrate, "give a group the site calibrations of the local --store", authority=True)
    p.add_argument("--group", required=True)
    p.add_argument("--reset", action="store_true", help="back to each bundle's own operating point instead")
    p = add("list", cmd_list, "identities enrolled at the centre")
    p.add_argument("--group")
    add("status", cmd_status, "each kiosk: applied revision, pending removals, store rollback; exit 1 if any")
    p = add("revoke", cmd_revoke, "end a kiosk's credentials (a lost or stolen kiosk)")
    p.add_argument("name")
    p = add("serve", cmd_serve, "the authority's loop: sign and distribute kiosks' enrolments", authority=True)
    p.add_argument("--interval", type=float, default=30.0, help="check for requests at least this often (seconds)")
    p = add("sync", cmd_sync, "kiosk side: pull, apply, report and push once (or --watch)", centre=False)
    p.add_argument("--fleet-file", required=True, help="this kiosk's fleet file (from add-kiosk)")
    p.add_argument("--watch", action="store_true", help="keep syncing until stopped")

    enroll = sub.choices["enroll"]
    enroll.add_argument("--fleet", metavar="FILE", help="also send the template to the fleet centre (a fleet file)")
    enroll.set_defaults(func=_then_send(enroll.get_default("func")))


def _unset_by_default(common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The shared options again, each absent unless given: so ``fleet --json status`` and
    ``fleet status --json`` both count (a nested parser's defaults would overwrite the outer one's)."""
    parser = argparse.ArgumentParser(add_help=False)
    for action in common._actions:
        clone = copy.copy(action)
        clone.default = argparse.SUPPRESS
        parser._add_action(clone)
    return parser


def _authority_default() -> Path:
    from platformdirs import user_config_dir

    return Path(user_config_dir("edge-verify")) / "authority.key"


def _centre(args):
    from edge_verify.fleet.centre import Centre

    dsn = args.centre or os.environ.get(CENTRE_ENV)
    if not dsn:
        raise UsageError(f"no centre: pass --centre 'host=... dbname=... user=...' or set ${CENTRE_ENV}")
    return Centre(dsn)


def _authority_path(args) -> Path:
    return Path(args.authority or os.environ.get(AUTHORITY_ENV) or _authority_default())


def _authority(args):
    from edge_verify.fleet.crypto import Authority

    return Authority.load(_authority_path(args))


def cmd_init(args) -> int:
    from edge_verify.fleet.crypto import Authority

    path = _authority_path(args)
    created = not path.exists()
    if created:
        Authority.generate().save(path)
    authority = Authority.load(path)
    with _centre(args) as centre:
        applied = centre.init(authority)
    data = {"authority": str(path), "created": created, "public_key": authority.public.hex(), "migrations": applied}
    text = (
        f"authority key {'created' if created else 'kept'}: {path} (public key {authority.public.hex()[:16]}…); "
        f"centre schema {'migrated: ' + ', '.join(map(str, applied)) if applied else 'up to date'}\n"
        f"back up {path} now, offline: without it nobody can be enrolled or removed (docs/fleet.md)"
    )
    emit(args, data, text)
    return 0


def cmd_add_kiosk(args) -> int:
    out = Path(args.out)
    if out.exists():
        raise UsageError(f"{out} exists: choose another --out (it would hold the new kiosk's key)")
    with _centre(args) as centre:
        kiosk = centre.add_kiosk(_authority(args), args.name, args.group, args.may_enrol, args.host, args.interval)
    kiosk.save(out)
    from edge_verify.fleet.centre import unverified_centre

    warning = unverified_centre(kiosk.centre)
    emit(
        args,
        {"kiosk": args.name, "group": args.group, "fleet_file": str(out), "warning": warning},
        f"kiosk {args.name} added to group {args.group}; copy {out} to it (0600: it holds its key and password) and "
        f'set `fleet = "{out.name}"` in its kiosk config' + (f"\nWARNING: {warning}" if warning else ""),
    )
    return 0


def _hint(args, group: str, revision: int) -> None:
    if getattr(args, "mqtt", None):
        from edge_verify.fleet.link import load
        from edge_verify.fleet.mqtt import publish_hint

        _, settings = load(args.mqtt)
        if settings is None:
            raise UsageError(f"{args.mqtt}: no [mqtt] table")
        publish_hint(settings, group, revision)


def cmd_enroll(args) -> int:
    with open_store(args) as store:
        info, vector = _enrolled(store, args.name)
    with _centre(args) as centre:
        revision = centre.enroll(_authority(args), args.group, args.name, vector, info.fingerprint, info.frames)
    _hint(args, args.group, revision)
    emit(
        args,
        {"identity": args.name, "group": args.group, "revision": revision},
        f"{args.name} enrolled in group {args.group} (revision {revision})",
    )
    return 0


def _enrolled(store, name: str):
    """The template of ``name`` in the local store: (its TemplateInfo, its vector)."""
    info = next((t for t in store.list() if t.identity == name), None)
    if info is None:
        raise UsageError(f"{name!r} is not enrolled in {store.path}: `edge-verify enroll {name} --source ...` first")
    return info, store.get(name, info.fingerprint)


def cmd_remove(args) -> int:
    with _centre(args) as centre:
        revision = centre.remove(_authority(args), args.group, args.name)
    _hint(args, args.group, revision)
    emit(
        args,
        {"identity": args.name, "group": args.group, "revision": revision},
        f"{args.name} removed from group {args.group} (revision {revision}); "
        "`edge-verify fleet status` says which kiosks have not applied it yet",
    )
    return 0


def cmd_calibrate(args) -> int:
    with open_store(args) as store:
        records = {fp: (None if args.reset else store.threshold(fp)) for fp in store.bundle_names()}
    if not args.reset:
        records = {fp: r for fp, r in records.items() if r is not None}
    if not records:
        raise UsageError("no site calibration in this --store: run `edge-verify calibrate` on it first")
    with _centre(args) as centre:
        authority = _authority(args)
        revisions = {fp: centre.calibrate(authority, args.group, fp, r) for fp, r in records.items()}
    emit(
        args,
        {"group": args.group, "revisions": revisions, "reset": args.reset},
        f"{'reset' if args.reset else 'sent'} {len(revisions)} site calibration(s) to group {args.group}",
    )
    return 0


def cmd_list(args) -> int:
    with _centre(args) as centre:
        identities = centre.identities(args.group)
    rows = [{"identity": i.identity, "group": i.group, "revision": i.revision, "frames": i.frames} for i in identities]
    text = "\n".join(f"{printable_text(i.identity)}\t{i.group}\trevision {i.revision}" for i in identities)
    emit(args, {"identities": rows}, text or "nobody is enrolled at the centre")
    return 0


def cmd_status(args) -> int:
    with _centre(args) as centre:
        kiosks = centre.status()
    rows, lines, trouble = [], [], False
    for k in kiosks:
        seen = "never" if k.seen_at is None else f"{time.time() - k.seen_at:.0f}s ago"
        state = "revoked" if k.revoked else "ok"
        if k.rollback:
            state = f"STORE ROLLED BACK: {k.rollback}"
        elif k.pending_removals:
            state = f"removals not applied: {', '.join(map(printable_text, k.pending_removals))}"
        if k.problem and not k.revoked:
            state += f"; problem: {printable_text(k.problem)}"
        trouble |= not k.revoked and (bool(k.rollback) or bool(k.pending_removals))
        rows.append({**k.__dict__})
        lines.append(f"{k.name}\t{k.group}\trevision {k.applied_revision}\tseen {seen}\t{state}")
    emit(args, {"kiosks": rows}, "\n".join(lines) or "no kiosks yet (`edge-verify fleet add-kiosk`)")
    return 1 if trouble else 0


def cmd_revoke(args) -> int:
    with _centre(args) as centre:
        centre.revoke(args.name)
    emit(args, {"revoked": args.name}, f"kiosk {args.name} revoked: its credentials no longer log in")
    return 0


def cmd_serve(args) -> int:
    import signal

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with _centre(args) as centre:
        centre.check_authority(authority := _authority(args))
        centre.serve(authority, stop, args.interval)
    return 0


def cmd_sync(args) -> int:
    import signal

    from edge_verify.fleet.sync import KioskFile, KioskSync

    kiosk = KioskFile.load(args.fleet_file)
    sync = KioskSync(kiosk, store_path(args), key_file=args.key_file, create=True)
    try:
        if args.watch:
            stop = threading.Event()
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
            sync.run(stop)
            return 0
        result = sync.sync_once()
    finally:
        sync.close()
    emit(
        args,
        {**result.__dict__},
        f"revision {result.applied}: {len(result.put)} enrolled, {len(result.removed)} removed, "
        f"{len(result.refused)} refused, {result.pushed} audit rows pushed"
        + (f"; THE CENTRE FLAGS THIS STORE: {result.rollback}" if result.rollback else ""),
    )
    return 1 if result.refused or result.rollback else 0


def _then_send(enroll):
    """``enroll`` followed, with ``--fleet FILE``, by the enrolment request to the centre."""

    def run(args) -> int:
        code = enroll(args)
        if code != 0 or not args.fleet:
            return code
        from edge_verify.fleet.sync import KioskFile, KioskSync

        sync = KioskSync(KioskFile.load(args.fleet), store_path(args), key_file=args.key_file)
        try:
            info, vector = _enrolled(sync.store, args.name)
            request = sync.request_enrolment(args.name, vector, info.fingerprint, info.frames)
        finally:
            sync.close()
        emit(args, {"identity": args.name, "fleet_request": request}, f"sent to the centre (request {request})")
        return 0

    return run
