"""Running the site from the browser: calibration (the figures, then apply), the kiosk settings
(validated as the TOML is), and doctor. Each is a thin call into the command line's own code."""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter, Depends, Request

from edge_verify.errors import EdgeVerifyError, UsageError
from edge_verify.toml_text import toml_value
from edge_verify.web.context import WebContext, run_command
from edge_verify.web.deps import admin_form, context, render, require_admin

router = APIRouter(prefix="/admin")
HIDDEN_SETTINGS = {"status_port", "max_frames"}  # the web app is the status page; max_frames is for tests
# A stolen session must not become a shell nor widen the door: settings that decide what runs, which
# camera and pins, who gets in (identity, threshold), what liveness asks, or where decisions go are set
# in the TOML file only; the browser may change the others only towards a stricter door.
READ_ONLY_SETTINGS = {
    "command",
    "prompt_command",
    "source",
    "allow_unencrypted_camera",
    "identity",
    "threshold",
    "operating_point",
    "allow_looser",
    "relay_pin",
    "led_pin",
    "webhook",
    "webhook_allow_hosts",
    "liveness_sequence",
}
LIVENESS_RANK = {"off": 0, "passive": 1, "challenge": 2}
# setting -> +1 (a higher value is stricter) or -1 (a lower value is stricter)
STRICTER = {
    "liveness": +1,
    "debounce": +1,
    "relay_pulse_s": -1,
    "liveness_step_timeout_s": -1,
    "liveness_max_failures": -1,
    "liveness_alarm_failures": -1,
    "liveness_alarm_window_s": +1,
    "liveness_alarm_failures_per_hour": -1,
    "liveness_lockout_s": +1,
}


def check_not_weaker(new, old, where) -> None:
    """A UsageError naming the first setting that ``new`` makes less strict than ``old``."""
    for name, direction in STRICTER.items():
        before, after = getattr(old, name), getattr(new, name)
        if name == "liveness":
            before, after = LIVENESS_RANK[before], LIVENESS_RANK[after]
        if (after - before) * direction < 0:
            raise UsageError(
                f"kiosk setting {name} = {getattr(new, name)!r} makes the door less strict than "
                f"{getattr(old, name)!r}: from the browser only stricter; set it in the file {where} "
                "and reload (systemctl reload)"
            )


# -- calibration -------------------------------------------------------------------------------
def calibrate(ctx: WebContext, folder: str, far: float, apply: bool) -> dict:
    """``edge-verify calibrate FOLDER --far FAR [--dry-run]``; its JSON figures."""
    return run_command("calibrate", ctx.args, data=folder, far=far, dry_run=not apply)[1]


@router.get("/calibration")
def calibration_page(request: Request, session=Depends(require_admin), ctx: WebContext = Depends(context)):
    return render(request, "calibration.html", result=None, folder="", far="0.001", current=_current_threshold(ctx))


def _current_threshold(ctx: WebContext) -> str:
    kiosk = ctx.kiosk
    if kiosk is None:
        return "unknown (the kiosk is not running)"
    return f"{kiosk.threshold:.4f} ({kiosk.choice.origin})"


@router.post("/calibration")
def calibration(request: Request, posted=Depends(admin_form), ctx: WebContext = Depends(context)):
    session, form = posted
    folder, far_text = str(form.get("folder", "")).strip(), str(form.get("far", "0.001")).strip()
    apply = form.get("apply") == "1"
    try:
        try:
            far = float(far_text)
        except ValueError:
            raise UsageError(f"FAR {far_text!r} is not a number (e.g. 0.001)") from None
        result = calibrate(ctx, folder, far, apply)  # its own store connection: logins are not held up
        if apply:
            with ctx.lock:
                ctx.store.audit(
                    "admin", "", True, source=f"web {session.admin}", detail=f"applied calibration on {folder}"
                )
    except EdgeVerifyError as exc:
        return render(
            request,
            "calibration.html",
            400,
            error=str(exc),
            result=None,
            folder=folder,
            far=far_text,
            current=_current_threshold(ctx),
        )
    return render(
        request,
        "calibration.html",
        result=result,
        applied=apply,
        folder=folder,
        far=far_text,
        current=_current_threshold(ctx),
    )


# -- settings ----------------------------------------------------------------------------------
def setting_fields():
    from edge_verify.kiosk import KioskConfig

    return [f for f in dataclasses.fields(KioskConfig) if f.name not in HIDDEN_SETTINGS]


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def parse_settings(form, current) -> dict:
    """The form's values by the type each setting has; empty: None (or [] for lists)."""
    values = {}
    for f in setting_fields():
        if f.name in READ_ONLY_SETTINGS:
            continue
        text = str(form.get(f.name, "")).strip()
        kind = str(f.type).split(" ")[0]
        if str(f.type).startswith("list"):
            values[f.name] = [v.strip() for v in text.split(",") if v.strip()]
        elif text == "" and "None" in str(f.type):
            values[f.name] = None
        elif kind == "bool":
            values[f.name] = text in ("true", "on", "1", "yes")
        elif kind in ("int", "float"):
            try:
                values[f.name] = int(text) if kind == "int" else float(text)
            except ValueError:
                raise UsageError(f"kiosk setting {f.name} = {text!r} must be a number") from None
        else:
            values[f.name] = text
    values.update({name: getattr(current, name) for name in HIDDEN_SETTINGS | READ_ONLY_SETTINGS})
    return values


def toml_text(config) -> str:
    """The [kiosk] table of ``config`` (settings left at None are left out)."""
    lines = ["# written by the edge-verify web app", "[kiosk]"]
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value is None or f.name in HIDDEN_SETTINGS:
            continue
        lines.append(f"{f.name} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


def check_file_unchanged(ctx: WebContext, running) -> None:
    """The file must still say what runs: an edit waiting for a reload is not written over."""
    if ctx.load_config is None:
        return
    try:
        on_file = ctx.load_config()
    except EdgeVerifyError as exc:
        raise UsageError(f"{exc}; fix the file first (nothing saved)") from None
    if on_file != running:
        raise UsageError(
            f"{ctx.config_path} was edited since the kiosk loaded it: reload it first (systemctl reload) so that "
            "the edit is not lost; nothing saved"
        )


def write_whole(path, text: str) -> None:
    """Replace ``path`` by ``text`` all at once: a full disk or a power cut leaves the old file, never
    a truncated one that the kiosk cannot start from (a new file beside it, synced, then renamed)."""
    import os
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


@router.get("/settings")
def settings_page(request: Request, session=Depends(require_admin), ctx: WebContext = Depends(context)):
    return _settings(request, ctx)


def _settings(request, ctx, status_code=200, **extra):
    config = ctx.runner.config if ctx.runner is not None else None
    rows = [
        {"name": f.name, "value": _text(getattr(config, f.name, None)), "read_only": f.name in READ_ONLY_SETTINGS}
        for f in setting_fields()
    ]
    return render(request, "settings.html", status_code, rows=rows, config_path=ctx.config_path, **extra)


@router.post("/settings")
def save_settings(request: Request, posted=Depends(admin_form), ctx: WebContext = Depends(context)):
    from edge_verify.kiosk import KioskConfig

    session, form = posted
    try:
        if ctx.runner is None or ctx.config_path is None:
            raise UsageError("start `edge-verify serve --config FILE` to change the kiosk settings here")
        old = ctx.runner.config
        check_file_unchanged(ctx, old)
        config = KioskConfig(**parse_settings(form, old))
        check_not_weaker(config, old, ctx.config_path)
        changed = [f.name for f in dataclasses.fields(config) if getattr(config, f.name) != getattr(old, f.name)]
        try:
            write_whole(ctx.config_path, toml_text(config))
        except OSError as exc:
            raise UsageError(f"{ctx.config_path}: cannot write the settings ({exc.strerror}); nothing saved") from None
        with ctx.lock:
            ctx.store.audit(
                "admin", "", True, source=f"web {session.admin}", detail=f"settings changed: {', '.join(changed)}"
            )
        ctx.runner.restart(config)
    except EdgeVerifyError as exc:
        return _settings(request, ctx, 400, error=str(exc))
    return _settings(request, ctx, message=f"saved {len(changed)} change(s); the kiosk restarted with them")


# -- doctor ------------------------------------------------------------------------------------
@router.get("/doctor")
def doctor_page(request: Request, session=Depends(require_admin), ctx: WebContext = Depends(context)):
    return render(request, "doctor.html", checks=None)


@router.post("/doctor")
def doctor(request: Request, posted=Depends(admin_form), ctx: WebContext = Depends(context)):
    session, _ = posted
    code, result = run_command("doctor", ctx.args)
    with ctx.lock:
        ctx.store.audit("admin", "", True, source=f"web {session.admin}", detail="ran doctor")
    return render(request, "doctor.html", checks=result.get("checks", {}), ok=code == 0)
