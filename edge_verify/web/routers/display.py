"""The kiosk's screen: the page, its status (strict JSON) and the camera preview."""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Request, Response

from edge_verify.web.context import WebContext
from edge_verify.web.deps import context, display_allowed, render
from edge_verify.web.preview import display_status

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
