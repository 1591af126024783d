"""The admin page's Verify and Repair on a watch (docs/admin.md): paste what the app holds
(the JSON Lines of a reconcile, or only its tree digest); Verify says "in sync" or "N files
differ" and sends nothing, Repair sends exactly the difference. Through
`treecast.service.mirrors`, as the app's own reconcile."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.responses import Response

from treecast.api.admin_pages import (
    LIVE_FAILED,
    _back,
    _html,
    _problem,
    _refused,
    _SavesSession,
    _service,
    _session,
    _to_login,
    render,
)
from treecast.delivery.reconcile import in_path_order
from treecast.service.errors import UserError
from treecast.service.mirrors import Mirrors, Reconciled

router = APIRouter(prefix="/admin", include_in_schema=False, route_class=_SavesSession)


def _where(app_id: str, repository_id: str) -> str:
    return f"/admin/apps/{quote(app_id)}/mirror/{quote(repository_id)}"


@router.get("/apps/{app_id}/mirror/{repository_id}")
async def mirror_page(request: Request, app_id: str, repository_id: str) -> Response:
    session = await _session(request)
    if session is None:
        return _to_login(request)
    service = _service(request)
    try:
        detail = await asyncio.to_thread(service.app_detail, app_id)
    except UserError as error:
        return _html(render(request, session, "missing.html", message=str(error)), 404)
    watch = next((w for w in detail.watches if w.get("repository_id") == repository_id), None)
    if watch is None:
        message = f"app {app_id} does not watch repository {repository_id}"
        return _html(render(request, session, "missing.html", message=message), 404)
    body = render(
        request,
        session,
        "mirror.html",
        app=detail,
        watch=watch,
        action=_where(app_id, repository_id),
        title=f"Verify the mirror of {watch.get('url', repository_id)} at {detail.name}",
    )
    return _html(body)


@router.post("/apps/{app_id}/mirror/{repository_id}")
async def mirror_action(request: Request, app_id: str, repository_id: str) -> Response:
    session = await _session(request)
    if session is None:
        return _refused("You are not logged in to the admin page (or your session expired).")
    # The list may run to the body limit: read whole, not cut at a form field's length.
    raw = (await request.body()).decode("utf-8", errors="replace")
    fields = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True, max_num_fields=5).items()}
    if not session.csrf_ok(fields.get("csrf")):
        return _refused("The form is missing its security token or it is stale; reload the page.")
    repair = fields.get("action") == "repair"
    held = fields.get("held", "").strip()
    mirrors = Mirrors(_service(request))
    try:
        if not held:
            raise UserError("paste what the app holds (JSON Lines) or its tree digest first")
        if "\n" not in held and "{" not in held:
            done = await mirrors.reconcile(app_id, repository_id, digest=held.lower())
        else:
            lines = in_path_order(line.encode() for line in held.splitlines())
            done = await mirrors.reconcile(app_id, repository_id, held=lines, repair=repair)
        session.flash(_said(done))
    except LIVE_FAILED as error:
        session.flash(_problem(error), "error")
    return _back(_where(app_id, repository_id))


def _said(done: Reconciled) -> str:
    """The flash message of a verify or repair."""
    if done.in_sync:
        return "In sync: the app holds exactly what it acknowledged."
    if done.held is None:
        return "Not in sync: the digest differs. Paste the app's files to see which."
    detail = f"{done.summary} ({done.missing} missing, {done.changed} changed, {done.extra} extra)"
    if not done.repair:
        return f"{detail}; nothing was sent."
    if done.sync_requested:
        return f"{detail}: sending exactly the difference now."
    return f"{detail}: the difference is sent at the next sync ({done.sync_error})."
