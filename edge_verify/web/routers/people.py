"""Administration of people: list, enrol (kiosk camera or photos), remove with confirmation."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse

from edge_verify.errors import EdgeVerifyError
from edge_verify.store import check_identity_name
from edge_verify.web import enrol
from edge_verify.web.context import WebContext
from edge_verify.web.deps import admin_form, context, render, require_admin

router = APIRouter(prefix="/admin")


@router.get("")
def admin_home(session=Depends(require_admin)):
    return RedirectResponse("/admin/people", status_code=303)


@router.get("/people")
def people(request: Request, session=Depends(require_admin), ctx: WebContext = Depends(context), message: str = ""):
    with ctx.lock:
        items = ctx.store.list()
    rows = [
        {
            "name": t.identity,
            "frames": t.frames,
            "bundle": t.bundle or t.fingerprint[:12],
            "updated": time.strftime("%Y-%m-%d %H:%M", time.localtime(t.updated)),
        }
        for t in items
    ]
    camera = ctx.runner is not None and ctx.runner.running
    return render(request, "people.html", people=rows, message=message, camera=camera)


def _name(form) -> str:
    try:
        return check_identity_name(str(form.get("name", "")).strip())
    except EdgeVerifyError as exc:
        raise HTTPException(400, str(exc)) from None


@router.post("/people/enrol-live")
def enrol_live(request: Request, posted=Depends(admin_form), ctx: WebContext = Depends(context)):
    session, form = posted
    name = _name(form)
    try:
        job = enrol.start_live(ctx, name, session.admin, replace=form.get("replace") == "on")
    except EdgeVerifyError as exc:
        return render(request, "people_result.html", 400, error=str(exc))
    return RedirectResponse(f"/admin/people/enrol/{job.id}", status_code=303)


@router.get("/people/enrol/{job_id}")
def enrol_page(request: Request, job_id: str, session=Depends(require_admin), ctx: WebContext = Depends(context)):
    job = ctx.jobs.get(job_id)
    if job is None or job.admin != session.admin:
        raise HTTPException(404, "no such enrolment")
    return render(request, "enrol_live.html", job=job)


@router.get("/people/enrol/{job_id}/status")
def enrol_status(job_id: str, session=Depends(require_admin), ctx: WebContext = Depends(context)):
    job = ctx.jobs.get(job_id)
    if job is None or job.admin != session.admin:
        raise HTTPException(404, "no such enrolment")
    return JSONResponse(job.as_dict())


@router.post("/people/enrol-photos")
async def enrol_photos(request: Request, posted=Depends(admin_form), ctx: WebContext = Depends(context)):
    session, form = posted
    name = _name(form)
    photos = []
    for upload in form.getlist("photos"):
        if hasattr(upload, "read"):
            photos.append((str(upload.filename or "photo")[:100], await upload.read()))
    from starlette.concurrency import run_in_threadpool

    try:
        message = await run_in_threadpool(
            enrol.enrol_photos, ctx, name, session.admin, photos, form.get("replace") == "on"
        )
    except EdgeVerifyError as exc:
        return render(request, "people_result.html", 400, error=str(exc))
    return render(request, "people_result.html", message=message)


@router.get("/people/remove")
def confirm_remove(request: Request, name: str, session=Depends(require_admin), ctx: WebContext = Depends(context)):
    with ctx.lock:
        if not any(t.identity == name for t in ctx.store.list()):
            raise HTTPException(404, f"{name!r} is not enrolled")
    return render(request, "remove.html", name=name)


@router.post("/people/remove")
def remove(request: Request, posted=Depends(admin_form), ctx: WebContext = Depends(context)):
    session, form = posted
    name = _name(form)
    try:
        with ctx.lock:
            ctx.store.remove(name, source=f"web {session.admin}")
    except EdgeVerifyError as exc:
        return render(request, "people_result.html", 400, error=str(exc))
    return render(request, "people_result.html", message=f"removed {name}")
