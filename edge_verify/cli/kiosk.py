"""The door: kiosk loop and the liveness check alone."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

from edge_verify.cli.common import (
    ACCEPTED,
    REJECTED,
    add_reaction_window_option,
    add_threshold_options,
    emit,
    identity_name,
    liveness_options,
    open_store,
    printable_text,
    progress,
    say,
    verifier_for,
)
from edge_verify.errors import EdgeVerifyError, UsageError
from edge_verify.redaction import redact_url


def cmd_kiosk(args: argparse.Namespace) -> int:
    """Long-running door/attendance loop; SIGTERM or Ctrl-C stops it cleanly."""
    import logging
    import signal
    import threading

    from edge_verify.actions import simulate_gpio
    from edge_verify.kiosk import Kiosk, KioskConfig, build_actions

    log = logging.getLogger("edge_verify.kiosk")

    overrides = {
        "source": args.source,
        "identity": args.identity,
        "debounce": args.debounce,
        "cooldown_s": args.cooldown,
        "threshold": args.threshold,
        "operating_point": args.operating_point,
        "allow_looser": args.allow_looser or None,
        "allow_unencrypted_camera": args.allow_unencrypted_camera or None,
        "relay_pin": None if args.relay_pin == NO_PIN else args.relay_pin,
        "led_pin": None if args.led_pin == NO_PIN else args.led_pin,
        "webhook": args.webhook,
        "webhook_allow_hosts": args.webhook_allow_host,
        "command": args.run,
        "status_port": args.status_port,
        "max_frames": args.max_frames,
        "timeout_s": args.timeout,
        "liveness": args.liveness,
        "liveness_sequence": args.liveness_sequence,
        "liveness_step_timeout_s": args.liveness_step_timeout,
        "prompt_command": args.prompt_command,
    }

    unset = [name for name in ("relay_pin", "led_pin") if getattr(args, name) == NO_PIN]  # --no-relay, --no-led

    def load_config() -> KioskConfig:
        if args.config:
            config = KioskConfig.from_toml(args.config, **overrides)
        elif args.source is None:  # never a camera nobody named
            raise UsageError(
                "kiosk needs --source: 0 for the first camera, /dev/videoN, picamera2, a URL or a video "
                "(or --config FILE with source = ...)"
            )
        else:
            config = KioskConfig(**{k: v for k, v in overrides.items() if v is not None})
        return dataclasses.replace(config, **{name: None for name in unset}) if unset else config

    config = load_config()
    if args.dry_run:
        simulate_gpio()
        if config.relay_pin is not None or config.led_pin is not None:
            print("edge-verify: dry run: the relay and LED pins are simulated; nothing is switched", file=sys.stderr)
    verifier = verifier_for(args)
    stop, reload = threading.Event(), threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def on_hangup(*_):  # SIGHUP (systemctl reload): read the configuration again
        reload.set()
        stop.set()

    signal.signal(signal.SIGHUP, on_hangup)

    show_decision = decision_printer(args.json, simulated=args.dry_run)

    decisions, accepted, frames, reconnects = 0, 0, 0, 0
    with open_store(args, verifier.bundle) as store:
        while True:
            actions = build_actions(config)
            try:
                kiosk = Kiosk(config, verifier, store, actions)
            except BaseException:
                for action in actions:
                    action.close()
                raise
            kiosk.on_decision = show_decision
            kiosk.run(stop)
            decisions, accepted = decisions + kiosk.decisions, accepted + kiosk.accepted
            frames, reconnects = frames + kiosk.frames, reconnects + kiosk.reconnects
            if not reload.is_set() or kiosk.done():
                break
            reload.clear()
            stop.clear()
            try:
                config = load_config()
                log.warning("configuration reloaded")
            except EdgeVerifyError as exc:  # a bad edit must not take the door down: keep the running one
                log.error("reload failed, keeping the running configuration: %s", exc)
    emit(
        args,
        {"frames": frames, "events": decisions, "accepted": accepted, "reconnects": reconnects},
        f"kiosk stopped: {frames} frames, {decisions} decisions ({accepted} accepted), {reconnects} reconnects",
    )
    return 0


def decision_printer(as_json: bool, simulated: bool = False):
    """What a kiosk tells of each decision as it happens: one line on stdout (``as_json``: a JSON line)."""

    from edge_verify.kiosk import json_safe

    def show(event) -> None:
        if as_json:
            say(json.dumps({"decision": json_safe(dataclasses.asdict(event))}))
        else:
            say(decision_line(event, simulated=simulated))

    return show


def decision_line(event, simulated: bool = False) -> str:
    """One line for a kiosk decision: time, verdict, who, score against threshold, liveness, actions."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event.time))
    if event.alert:
        return f"{when} ALERT {event.alert}"
    verdict = "ACCEPTED" if event.accepted else "REJECTED"
    who = printable_text(event.identity) if event.identity else "unknown face"
    if event.score == event.score:  # a score exists (NaN: refused before any)
        text = (
            f"{when} {verdict} {who}: score {event.score:.4f} {'>=' if event.accepted else '<'} {event.threshold:.4f}"
        )
    else:
        text = f"{when} {verdict}: no score"
    if event.liveness:
        text += f"; liveness {event.liveness}"
    if event.actions:
        text += f"; {', '.join(event.actions)}" + (
            " (simulated pins)" if simulated and "relay" in event.actions else ""
        )
    return text + f" [audit {event.audit_id}]"


def cmd_liveness(args: argparse.Namespace) -> int:
    """Run the liveness check alone on the largest face of a video or camera; print what it saw."""
    from edge_verify.antispoof import AntiSpoof
    from edge_verify.detect import FaceDetector
    from edge_verify.landmarks import FaceMesh
    from edge_verify.liveness import LivenessMonitor, make_check, parse_sequence, watch
    from edge_verify.sources import ImageSource, open_source

    options = liveness_options(args)
    sequence = parse_sequence(args.liveness_sequence) if args.liveness_sequence else None
    antispoof = AntiSpoof(args.backend, args.threads) if args.mode != "events" else None
    monitor = LivenessMonitor(FaceMesh(threads=args.threads), make_check(args.mode, options, sequence), antispoof)
    detector = FaceDetector(backend=args.backend, threads=args.threads)
    started = time.perf_counter()
    frames = 0
    with open_source(args.source, timeout_s=args.timeout) as source:
        if isinstance(source, ImageSource):
            raise UsageError(f"{redact_url(args.source)}: a liveness check needs a video or a camera")

        def timed_frames():
            nonlocal frames
            shown = ""
            for frame in progress(args, source, desc="liveness", unit="frame"):
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
    if args.mode == "events":  # nothing is asked, so nothing passes or fails: say so instead of PENDING
        verdict = "what the face did (report only: this mode never passes or fails; --mode challenge decides)"
    else:
        verdict = result.state.upper() + (f" ({result.reason})" if result.reason else "")
    lines = [
        f"liveness {result.mode}: {verdict}",
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


NO_PIN = "none"


def pin_or_none(text: str) -> int | str:
    """argparse type of a pin option: a BCM pin number, or ``none`` (no device, over --config)."""
    if text.strip().lower() == NO_PIN:
        return NO_PIN
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a BCM pin number, or none") from None


def register(add) -> None:
    """Add this group's commands; ``add(name, function, help)`` returns the sub-parser."""
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
    add_reaction_window_option(p)

    p = add("kiosk", cmd_kiosk, "run the kiosk loop: debounce, cooldown, relay / webhook / command, audit")
    p.add_argument("--config", help="TOML file with [kiosk] settings (flags override it)")
    p.add_argument(
        "--source",
        "-s",
        help="0 (the first camera), /dev/videoN, URL, video, picamera2 (required unless --config has it)",
    )
    p.add_argument(
        "--allow-unencrypted-camera",
        action="store_true",
        help="accept an rtsp:// or http:// camera (anyone on its network can replace its picture)",
    )
    p.add_argument("--identity", type=identity_name, help="1:1 against this identity (default: identify 1:N)")
    p.add_argument("--debounce", type=int, help="frames of one tracked face whose mean score decides (default 3)")
    p.add_argument("--cooldown", type=float, help="seconds between two firings of one outcome (default 10)")
    add_threshold_options(p)
    relay = p.add_mutually_exclusive_group()
    relay.add_argument("--relay-pin", type=pin_or_none, help="BCM pin of the door relay (gpiozero); none: no relay")
    relay.add_argument(
        "--no-relay", dest="relay_pin", action="store_const", const=NO_PIN, help="no relay (over --config)"
    )
    led = p.add_mutually_exclusive_group()
    led.add_argument(
        "--led-pin", type=pin_or_none, help="BCM pin of a status LED (blinks during a challenge, lit on accept); none"
    )
    led.add_argument("--no-led", dest="led_pin", action="store_const", const=NO_PIN, help="no status LED")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="simulated GPIO pins (gpiozero's MockFactory): try a Pi's config anywhere; webhook and command still run",
    )
    p.add_argument("--webhook", help="POST each decision as JSON to this URL (this machine, or an allowed host)")
    p.add_argument(
        "--webhook-allow-host",
        action="append",
        metavar="HOST",
        help="another host the webhook may reach (repeatable; adds to webhook_allow_hosts)",
    )
    p.add_argument("--run", help="command to run on each decision (EDGE_VERIFY_* env vars)")
    p.add_argument(
        "--liveness",
        choices=["off", "passive", "challenge"],
        help="presentation-attack check per tracked face (default challenge; off admits a photo)",
    )
    p.add_argument("--liveness-sequence", help="fixed challenge, e.g. 'turn_left,blink' (default: random each time)")
    add_reaction_window_option(p)
    p.add_argument(
        "--prompt-command", help="command run on each new prompt, EDGE_VERIFY_PROMPT=turn_left|turn_right|blink|look"
    )
    p.add_argument("--status-port", type=int, help="serve a live status page on 127.0.0.1:PORT")
    p.add_argument("--max-frames", type=int, help=argparse.SUPPRESS)
