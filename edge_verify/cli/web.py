"""The web app: ``serve`` runs the kiosk loop and the display / admin pages in one process."""

from __future__ import annotations

import argparse

from edge_verify.cli.common import identity_name
from edge_verify.errors import UsageError


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the kiosk display and the admin pages while the kiosk loop runs (or set an admin)."""
    from edge_verify.web import server

    if args.set_admin:
        return server.set_admin(args)
    if args.remove_admin:
        return server.remove_admin(args)
    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: use 1..65535")
    if not 0.5 <= args.preview_fps <= 30:
        raise UsageError(f"--preview-fps {args.preview_fps:g}: use 0.5..30 pictures a second")
    return server.serve(args, load_config(args), lambda: load_config(args))


def load_config(args: argparse.Namespace):
    """The kiosk configuration of --config and the flags; a camera must be named (no silent camera 0)."""
    import tomllib
    from pathlib import Path

    from edge_verify.kiosk import KioskConfig

    overrides = {
        "source": args.source,
        "identity": args.identity,
        "liveness": args.liveness,
        "liveness_sequence": args.liveness_sequence,
        "cooldown_s": args.cooldown,
        "reconnect_s": args.reconnect,
    }
    if args.config:
        config = KioskConfig.from_toml(args.config, **overrides)
        data = tomllib.loads(Path(args.config).read_text())
        named = args.source or "source" in data.get("kiosk", data)
    else:
        config = KioskConfig(**{k: v for k, v in overrides.items() if v is not None})
        named = args.source is not None
    if not named:
        raise UsageError("name the camera: --source 0 (first camera), /dev/videoN, picamera2, a URL or a video file")
    return config


def register(add) -> None:
    p = add("serve", cmd_serve, "run the kiosk with its web app: display on /, admin pages on /admin")
    p.add_argument("--config", help="kiosk TOML (the settings page edits it)")
    p.add_argument("--source", "-s", help="camera (0), /dev/videoN, URL, picamera2, or a video file (played in a loop)")
    p.add_argument("--identity", type=identity_name, help="1:1 against this identity (default: identify 1:N)")
    p.add_argument("--liveness", choices=["off", "passive", "challenge"], help="default challenge (off admits a photo)")
    p.add_argument("--liveness-sequence", help="fixed challenge, e.g. 'turn_left,blink' (tests)")
    p.add_argument("--cooldown", type=float, help="seconds between two firings of one outcome (default 10)")
    p.add_argument("--reconnect", type=float, help="seconds before a lost camera (or an ended video) is reopened")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument(
        "--listen", metavar="ADDRESS", help="serve on this address (e.g. 0.0.0.0) instead of 127.0.0.1: HTTPS only"
    )
    p.add_argument("--tls-cert", help="certificate (PEM) for --listen; default: a self-signed one next to the store")
    p.add_argument("--tls-key", help="its private key (PEM)")
    p.add_argument("--preview-fps", type=float, default=8.0, help="most preview pictures a second (default 8)")
    p.add_argument("--set-admin", metavar="NAME", help="set the password of administrator NAME (prompted), then exit")
    p.add_argument("--remove-admin", metavar="NAME", help="remove administrator NAME (her sessions end), then exit")
    p.add_argument("--password-stdin", action="store_true", help="with --set-admin: read the password from stdin")
