"""Dependencies of the routes: the context, the logged-in administrator, a form with a valid
CSRF token, and the page renderer."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from fastapi import Depends, HTTPException, Request
from fastapi.responses import PlainTextResponse
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData

from edge_verify.web.context import WebContext
from edge_verify.web.security import Session, same_record, same_token

SESSION_COOKIE = "ev_session"
LOGIN_COOKIE = "ev_login"  # the login form's CSRF token (double submit), before there is a session
MAX_FORM_BYTES = 40 * 2**20  # a request body (photos for one enrolment)
MAX_LOGIN_BYTES = 64 * 2**10  # the login form, posted before anyone is known

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


class LoginRequired(Exception):
    """An admin page without a session: the browser is sent to the login page."""


def context(request: Request) -> WebContext:
    return request.app.state.ctx


def current_session(request: Request, ctx: WebContext = Depends(context)) -> Session | None:
    """The request's live session; one opened with a password since changed is ended."""
    session = ctx.sessions.get(request.cookies.get(SESSION_COOKIE))
    if session is None:
        return None
    with ctx.lock:
        record = ctx.store.admin(session.admin)
    if not same_record(session, record):
        ctx.sessions.drop(session.token)
        return None
    return session


def require_admin(request: Request, session: Session | None = Depends(current_session)) -> Session:
    if session is None:
        if request.method == "GET":
            raise LoginRequired()
        raise HTTPException(403, "log in first")
    request.state.session = session
    return session


async def admin_form(request: Request, session: Session = Depends(require_admin)) -> tuple[Session, FormData]:
    """The posted form of a logged-in administrator, refused (403) without its session's CSRF token."""
    form = await read_form(request)
    if not same_token(session.csrf, form.get("csrf")):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
    return session, form


async def read_form(request: Request) -> FormData:
    """The posted form; a body over the limit is refused as it arrives (BodyLimit), declared or not."""
    return await request.form(max_files=20, max_fields=100)


class BodyLimit:
    """ASGI middleware: a request body larger than its limit is refused (413) while it streams in,
    whether or not it declared a Content-Length (a chunked one does not), so no form, not even one
    posted to /login by nobody, is held in memory or spooled to disk whole."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = MAX_LOGIN_BYTES if scope["path"] == "/login" else MAX_FORM_BYTES
        message = f"request body larger than {limit // 2**10} KB"
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > limit:
            code, text = (413, message) if declared.isdigit() else (400, "bad Content-Length")
            return await PlainTextResponse(f"{code}: {text}", status_code=code)(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            chunk = await receive()
            seen += len(chunk.get("body", b""))
            if seen > limit:
                raise HTTPException(413, message)
            return chunk

        await self.app(scope, counted, send)


def loopback(request: Request) -> bool:
    try:
        return ipaddress.ip_address(request.client.host).is_loopback if request.client else False
    except ValueError:
        return False


def display_allowed(request: Request, session: Session | None = Depends(current_session)) -> None:
    """The kiosk's own screen (this machine) sees the display; another machine only after logging in
    (the camera's picture is not for everyone on the network)."""
    if not loopback(request) and session is None:
        raise LoginRequired()


def render(request: Request, template: str, status_code: int = 200, **values):
    session = getattr(request.state, "session", None)
    runner = request.app.state.ctx.runner
    if session is not None and runner is not None and runner.error:
        values.setdefault("kiosk_error", runner.error)
    return templates.TemplateResponse(
        request,
        template,
        {"session": session, "csrf": session.csrf if session else "", **values},
        status_code=status_code,
    )
