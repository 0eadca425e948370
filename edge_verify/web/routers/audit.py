"""The audit log: filters, each decision's action outcomes, the chain's status, CSV export."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Request, Response

from edge_verify.errors import EdgeVerifyError
from edge_verify.web.context import WebContext, run_command
from edge_verify.web.deps import admin_form, context, render, require_admin

router = APIRouter(prefix="/admin")
PAGE = 200


def _filters(source) -> dict:
    from edge_verify.cli.site import parse_time

    since, until, command = (str(source.get(k) or "").strip() or None for k in ("since", "until", "command"))
    try:
        return {
            "since": parse_time(since, "since"),
            "until": parse_time(until, "until"),
            "command": command,
            "text": {"since": since or "", "until": until or "", "command": command or ""},
        }
    except EdgeVerifyError as exc:
        raise HTTPException(400, str(exc)) from None


@router.get("/audit")
def audit_page(request: Request, session=Depends(require_admin), ctx: WebContext = Depends(context)):
    filters = _filters(request.query_params)
    with ctx.lock:
        entries = ctx.store.audit_log(PAGE, since=filters["since"], until=filters["until"], command=filters["command"])
        ids = [e.id for e in entries]
        actions = ctx.store.audit_actions_between(min(ids), max(ids)) if ids else {}  # one query, as `audit`
        problems = ctx.store.verify_state() + ctx.store.verify_audit()
    rows = [
        {
            "id": e.id,
            "time": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.ts)),
            "command": e.command,
            "claimed": e.claimed or "",
            "matched": e.matched or "",
            "score": "" if e.score is None or e.score != e.score else f"{e.score:.4f}",
            "decision": "accepted" if e.accepted else "refused",
            "source": e.source or "",
            "liveness": e.liveness or "",
            "detail": e.detail or "",
            "actions": [
                f"{a}: {'ok' if ok else 'FAILED'}{' (' + d + ')' if d else ''}" for a, ok, d in actions.get(e.id, [])
            ],
        }
        for e in entries
    ]
    return render(request, "audit.html", rows=rows, problems=problems, filters=filters["text"], page=PAGE)


@router.post("/audit.csv")
def audit_csv(request: Request, posted=Depends(admin_form), ctx: WebContext = Depends(context)):
    """The CSV of ``edge-verify audit --csv`` with the page's filters (the export is audited)."""
    session, form = posted
    filters = _filters(form)["text"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "audit.csv"
        run_command(
            "audit",
            ctx.args,
            csv=str(out),
            since=filters["since"] or None,
            until=filters["until"] or None,
            command_filter=filters["command"] or None,
        )
        with ctx.lock:
            ctx.store.audit("admin", "", True, source=f"web {session.admin}", detail="exported the audit log as CSV")
        data = out.read_bytes()
    name = time.strftime("edge-verify-audit-%Y%m%d-%H%M%S.csv")
    return Response(data, media_type="text/csv", headers={"Content-Disposition": f'attachment; filename="{name}"'})
