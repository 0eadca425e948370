"""``edge-verify serve``: the kiosk loop and the web app in one process (one camera reader)."""

from __future__ import annotations

import argparse
import getpass
import logging
import signal
import sys
from pathlib import Path

from edge_verify.errors import UsageError

log = logging.getLogger("edge_verify.web")


def set_admin(args: argparse.Namespace) -> int:
    """Set (or change) an administrator's password: prompted twice, or one line on stdin."""
    from edge_verify.cli.common import emit, open_store
    from edge_verify.store import check_identity_name
    from edge_verify.web.security import hash_password

    name = check_identity_name(args.set_admin)
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"password for {name}: ")
        if getpass.getpass("again: ") != password:
            raise UsageError("the two passwords differ; nothing stored")
    record = hash_password(password)
    with open_store(args, create=True) as store:
        store.set_admin(name, record, source="cli")
    emit(args, {"admin": name}, f"administrator {name} set; log in at /login")
    return 0


def remove_admin(args: argparse.Namespace) -> int:
    """Remove an administrator: her password record goes, her open sessions end."""
    from edge_verify.cli.common import emit, open_store

    with open_store(args) as store:
        if not store.remove_admin(args.remove_admin, source="cli"):
            known = ", ".join(store.admins()) or "none"
            raise UsageError(f"no administrator {args.remove_admin!r} (administrators: {known})")
    emit(args, {"removed_admin": args.remove_admin}, f"administrator {args.remove_admin} removed")
    return 0


def serve(args: argparse.Namespace, config, load_config=None) -> int:
    """Run the kiosk loop in a thread and the web app in this one until SIGINT/SIGTERM; SIGHUP
    (``systemctl reload``) restarts the loop with ``load_config()`` (a bad edit keeps the running one)."""
    try:
        import uvicorn

        from edge_verify.web.app import create_app
    except ImportError as exc:
        raise UsageError(f"serve needs the web extra ({exc.name} is missing): pip install 'edge-verify[web]'") from None
    from edge_verify.cli.common import open_store, verifier_for
    from edge_verify.cli.kiosk import decision_printer
    from edge_verify.web.context import WebContext
    from edge_verify.web.preview import FrameHub
    from edge_verify.web.runner import KioskRunner

    tls = _tls(args)
    verifier = verifier_for(args)
    hub = FrameHub(max_fps=args.preview_fps)
    with open_store(args, verifier.bundle, create=True) as kiosk_store, open_store(args) as web_store:
        runner = KioskRunner(config, verifier, kiosk_store, hub, on_decision=decision_printer(args.json))
        runner.start()
        ctx = WebContext(
            args,
            web_store,
            hub,
            runner,
            tls=tls is not None,
            config_path=Path(args.config) if args.config else None,
            load_config=load_config if args.config else None,
        )
        app = create_app(ctx, listen=args.listen is not None)
        host = args.listen or "127.0.0.1"
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=host,
                port=args.port,
                ssl_certfile=str(tls[0]) if tls else None,
                ssl_keyfile=str(tls[1]) if tls else None,
                log_level="warning",
                access_log=False,
                # no proxy in front (see docs/web-app.md): a client's X-Forwarded-For names nobody, and
                # must not change the address the login limit and the display's loopback check see
                proxy_headers=False,
                server_header=False,
            )
        )
        scheme = "https" if tls else "http"
        shown = f"[{host}]" if ":" in host else host
        print(f"edge-verify: serving the display on {scheme}://{shown}:{args.port}/ and the admin pages on /admin")
        if tls:
            print(f"edge-verify: certificate {tls[0]}, SHA-256 fingerprint {tls[2]}")
        if not web_store.admins():
            print("edge-verify: no administrator yet: `edge-verify serve --set-admin NAME`")
        sys.stdout.flush()
        # uvicorn re-raises the signal that stopped it once it has shut down: SIGTERM then lands here
        # (the loop is stopped and its actions closed below, exit 0), Ctrl-C as KeyboardInterrupt
        signal.signal(signal.SIGTERM, lambda *_: None)
        if load_config is not None:
            signal.signal(signal.SIGHUP, lambda *_: _reload(runner, load_config))
        try:
            server.run()
        except KeyboardInterrupt:  # Ctrl-C: stopped like SIGTERM (and like `kiosk`), not an interrupted command
            pass
        finally:
            runner.stop()
    return 0


def _reload(runner, load_config) -> None:
    from edge_verify.errors import EdgeVerifyError

    try:
        runner.restart(load_config())
        log.warning("configuration reloaded")
    except EdgeVerifyError as exc:
        log.error("reload failed, keeping the running configuration: %s", exc)


def _tls(args) -> tuple[Path, Path, str] | None:
    """(certificate, key, fingerprint) when --listen names an address: TLS only, off loopback."""
    from edge_verify.cli.common import store_path
    from edge_verify.web.tls import fingerprint, self_signed

    if args.listen is None:
        if args.tls_cert or args.tls_key:
            raise UsageError("--tls-cert/--tls-key go with --listen ADDRESS (without it the app is local, plain HTTP)")
        return None
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("give both --tls-cert and --tls-key (or neither, for a self-signed certificate)")
    if args.tls_cert:
        cert, key = Path(args.tls_cert), Path(args.tls_key)
        if not key.is_file():
            raise UsageError(f"{key}: no such key file")
        if key.stat().st_mode & 0o004:  # any account could pose as these pages to the LAN
            raise UsageError(f"{key}: the private key is readable by every user of this device: chmod o-r {key}")
    else:
        cert, key, made = self_signed(store_path(args).parent, args.listen)
        if made:
            print(f"edge-verify: made a self-signed certificate {cert}")
    return cert, key, fingerprint(cert)
