"""The app factory: routers by area, security headers, allowed hosts, static files."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from edge_verify.web.context import WebContext
from edge_verify.web.deps import BodyLimit, LoginRequired
from edge_verify.web.routers import audit, auth, display, people, site

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
LOCAL_HOSTS = ["127.0.0.1", "localhost", "[::1]", "::1"]


def create_app(ctx: WebContext, listen: bool = False) -> FastAPI:
    """The web app over ``ctx``; bound to loopback (``listen`` False) it answers only requests
    addressed to this machine's own names (a web page cannot reach it by DNS rebinding)."""
    app = FastAPI(title="edge-verify", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ctx = ctx
    for router in (display.router, auth.router, people.router, audit.router, site.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(Path(__file__).parent / "static")), name="static")
    app.add_middleware(BodyLimit)
    if not listen:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=LOCAL_HOSTS)

    @app.middleware("http")
    async def headers(request: Request, call_next):
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        if not request.url.path.startswith("/static"):
            response.headers["Cache-Control"] = "no-store"
        if ctx.tls:
            response.headers["Strict-Transport-Security"] = "max-age=31536000"
        return response

    @app.exception_handler(LoginRequired)
    async def to_login(request: Request, exc: LoginRequired):
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(StarletteHTTPException)
    async def plain_error(request: Request, exc: StarletteHTTPException):
        return PlainTextResponse(f"{exc.status_code}: {exc.detail}", status_code=exc.status_code, headers=exc.headers)

    return app
