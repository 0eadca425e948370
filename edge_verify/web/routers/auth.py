"""Log in and out. Failed logins are rate-limited per client and per name, and audited."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from edge_verify.web.context import WebContext
from edge_verify.web.deps import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    admin_form,
    context,
    read_form,
    render,
)
from edge_verify.web.security import MIN_PASSWORD, SCRYPT, check_password, hash_password, same_token

router = APIRouter()


def _cookie(response, ctx: WebContext, name: str, value: str) -> None:
    response.set_cookie(name, value, httponly=True, samesite="strict", secure=ctx.tls, path="/")


@router.get("/login")
def login_page(request: Request, ctx: WebContext = Depends(context)):
    token = secrets.token_urlsafe(32)
    response = render(request, "login.html", login_csrf=token, no_admin=not ctx.store.admins())
    _cookie(response, ctx, LOGIN_COOKIE, token)
    return response


@router.post("/login")
async def login(request: Request, ctx: WebContext = Depends(context)):
    form = await read_form(request)
    name, password = str(form.get("name", ""))[:64], str(form.get("password", ""))
    if not same_token(request.cookies.get(LOGIN_COOKIE, ""), form.get("csrf")):
        return render(request, "login.html", 403, error="The form expired: reload the page and log in again.")
    client = f"client:{request.client.host if request.client else '?'}"
    # one check at a time (so concurrent guesses cannot all pass the limit before any failure counts),
    # the hash in a worker thread (so the display and the other pages are served meanwhile)
    async with ctx.login_lock:
        wait = ctx.limiter.retry_after(client, f"name:{name}")
        if wait > 0:
            response = render(request, "login.html", 429, error=f"Too many failed logins: try again in {wait:.0f} s.")
            response.headers["Retry-After"] = str(int(wait) + 1)
            return response
        record = await run_in_threadpool(_check, ctx, name, password, client)
        if record is None:
            ctx.limiter.failed(client, f"name:{name}")
    if record is None:
        return render(request, "login.html", 401, error="Wrong name or password.")
    ctx.sessions.drop(request.cookies.get(SESSION_COOKIE))  # the browser's earlier session ends here
    session = ctx.sessions.create(name, str(record["salt"]))
    response = RedirectResponse("/admin", status_code=303)
    _cookie(response, ctx, SESSION_COOKIE, session.token)
    response.delete_cookie(LOGIN_COOKIE, path="/")
    return response


def _check(ctx: WebContext, name: str, password: str, client: str) -> dict | None:
    """The administrator's password record if ``password`` is hers, else None; audited either way."""
    with ctx.lock:
        record = ctx.store.admin(name)
        known = record is not None
    ok = check_password(record, password)
    if ok and {k: record[k] for k in SCRYPT} != SCRYPT and len(password) >= MIN_PASSWORD:
        record = hash_password(password)  # older parameters: the current ones from now on
        with ctx.lock:
            ctx.store.set_admin(name, record, source=f"web {client}: rehashed at login")
    with ctx.lock:
        if ok:
            ctx.store.audit("login", "", True, claimed=name, source=f"web {client}")
        elif known:
            ctx.store.audit("login", "", False, claimed=name, source=f"web {client}", detail="wrong password")
        else:  # not written: it may be a password typed into the name field
            ctx.store.audit("login", "", False, source=f"web {client}", detail="unknown administrator name")
    return record if ok else None


@router.post("/logout")
def logout(request: Request, posted=Depends(admin_form), ctx: WebContext = Depends(context)):
    session, _ = posted
    ctx.sessions.drop(session.token)
    with ctx.lock:
        ctx.store.audit("logout", "", True, claimed=session.admin, source=f"web {session.admin}")
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
