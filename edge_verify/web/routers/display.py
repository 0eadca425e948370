"""The kiosk's screen: the page, its status (strict JSON) and the camera preview."""

from __future__ import annotations

import json
import time

import numpy as np
from fastapi import APIRouter, Depends, Request, Response

from edge_verify.web.context import WebContext
from edge_verify.web.deps import context, display_allowed, render

router = APIRouter(dependencies=[Depends(display_allowed)])


@router.get("/")
def display_page(request: Request):
    return render(request, "display.html")


@router.get("/display/status")
def status(ctx: WebContext = Depends(context)) -> Response:
    running = ctx.runner is not None and ctx.runner.running
    body = json.dumps(display_status(ctx.kiosk, running), allow_nan=False)
    return Response(body, media_type="application/json")


@router.get("/display/preview.jpg")
def preview(ctx: WebContext = Depends(context)) -> Response:
    jpeg = ctx.hub.jpeg()
    if jpeg is None:
        return Response(status_code=204)
    return Response(jpeg, media_type="image/jpeg")


OUTCOME_S = 5.0  # how long the display shows a decision


def display_status(kiosk, running: bool = True) -> dict:
    """What the kiosk's own screen may show: the state, the prompt and its progress, and the last
    decision's outcome for a few seconds, with the name only of the person just admitted. No score,
    no other identity, no audit data; every number finite (the JSON is strict)."""
    if kiosk is None or not running:
        return {"state": "stopped", "prompt": "The kiosk is not running"}
    status = dict(kiosk.status)
    shown = {"state": str(status.get("state", "starting"))}
    if status.get("prompt"):
        shown["prompt"] = str(status["prompt"])
    for key in ("step", "of", "seconds"):
        value = status.get(key)
        if isinstance(value, int | float) and np.isfinite(value):
            shown[key] = int(value)
    if status.get("instruction"):
        shown["instruction"] = str(status["instruction"])
    events = kiosk.events
    last = events[-1] if events else None
    if last is not None and time.time() - last.time < OUTCOME_S and not last.alert:
        shown["outcome"] = {"accepted": bool(last.accepted), "name": last.identity if last.accepted else None}
        if last.liveness and not last.accepted:
            shown["outcome"]["reason"] = "liveness"
    return shown
