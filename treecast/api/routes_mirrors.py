"""Verifiable mirrors over HTTP (an app's own routes): its signed manifest, reconciling what
it holds, and its `sync_completed` opt-in. docs/api.md and docs/webhooks.md ("Verifying a
mirror") describe them; `TreecastService.mirrors` does the work."""

from __future__ import annotations

import tempfile
from typing import IO, Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from treecast.api.auth import AppId, Service
from treecast.api.errors import ERROR_RESPONSES
from treecast.api.schemas import DigestIn, ReconcileOut, SyncCompletedIn, SyncCompletedOut
from treecast.service.errors import UserError
from treecast.service.mirrors import MANIFEST_TYPE
from treecast.service.results import Reconciled

router = APIRouter(prefix="/api", tags=["apps"], responses=ERROR_RESPONSES)

HELD_TYPES = ("application/x-ndjson", "application/jsonl", "application/json-lines")
DIGEST_BODY_BYTES = 4096  # {"tree_digest": "<64 hex>"} with room to spare
SPOOL_BYTES = 1 << 20  # a held list is kept in memory up to this, then on disk

CommitParam = Annotated[
    str | None,
    Query(
        min_length=40,
        max_length=64,
        description="a commit Treecast synced for the repository (default: the one the app "
        "last fully acknowledged)",
    ),
]

MANIFEST_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON Lines: a header line (commit, object_format, files, bytes, "
        "tree_digest), then one line per file (path, blob_id, size, mode), sorted by path; "
        "signed like a webhook (docs/webhooks.md)",
        "content": {MANIFEST_TYPE: {"schema": {"type": "string"}}},
    }
}

RECONCILE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": DigestIn.model_json_schema()},
            HELD_TYPES[0]: {
                "schema": {
                    "type": "string",
                    "description": 'one {"path": ..., "blob_id": ...} a line, sorted by path',
                }
            },
        },
    }
}


@router.get(
    "/repositories/{repository_id}/manifest",
    response_class=StreamingResponse,
    responses=MANIFEST_RESPONSE,
)
async def manifest(
    repository_id: str, app_id: AppId, service: Service, commit: CommitParam = None
) -> StreamingResponse:
    """Every file the app should hold at the commit it last fully acknowledged (or
    `commit`), with its git blob id, size and mode, and the tree digest: streamed as JSON
    Lines and signed with the app's signing scheme, as its webhooks are."""
    signed = await service.mirrors.manifest(app_id, repository_id, commit, by_app=True)
    headers = {k: v for k, v in signed.headers.items() if k != "content-type"}
    return StreamingResponse(signed.pieces(), media_type=MANIFEST_TYPE, headers=headers)


@router.post(
    "/repositories/{repository_id}/reconcile",
    response_model=ReconcileOut,
    openapi_extra=RECONCILE_BODY,
    responses={
        202: {"model": ReconcileOut, "description": "the difference is being sent"},
        415: {"description": "neither JSON Lines nor a JSON digest"},
    },
)
async def reconcile(
    repository_id: str,
    app_id: AppId,
    service: Service,
    request: Request,
    response: Response,
    dry_run: Annotated[bool, Query(description="compare only: nothing is sent")] = False,
) -> ReconcileOut:
    """Compare what the app holds with what it acknowledged: its files (JSON Lines, one
    `{"path", "blob_id"}` a line, sorted by path) or only its `tree_digest` (JSON). With
    files and a difference (and no `dry_run`), exactly the difference is sent as ordinary
    webhooks: 202 with the sync to follow."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    mirrors = service.mirrors
    # 404 before a body is read for a repository the app does not watch.
    await mirrors.check_watch(app_id, repository_id)
    if kind == "application/json":
        digest = _digest(await _small_body(request))
        done = await mirrors.reconcile(app_id, repository_id, digest=digest, by_app=True)
    elif kind in HELD_TYPES:
        spool = await _spooled(request, service.settings.api_reconcile_max_bytes)
        try:
            done = await mirrors.reconcile(
                app_id, repository_id, held=spool, repair=not dry_run, by_app=True
            )
        finally:
            spool.close()
    else:
        raise HTTPException(
            415,
            "send what the app holds as application/x-ndjson, or its digest as "
            'application/json {"tree_digest": ...}',
        )
    if done.repair:
        response.status_code = 202
    return _out(done, request)


@router.put("/app/sync-completed", response_model=SyncCompletedOut)
async def sync_completed(
    body: SyncCompletedIn, app_id: AppId, service: Service
) -> SyncCompletedOut:
    """Receive (or stop receiving) `sync_completed` after every commit the app is brought
    to, with that commit's tree digest (docs/webhooks.md)."""
    detail = await service.apps.update(app_id, sync_completed=body.enabled)
    return SyncCompletedOut.model_validate(detail, from_attributes=True)


async def _small_body(request: Request) -> bytes:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > DIGEST_BODY_BYTES:
            raise UserError(f"a digest body is at most {DIGEST_BODY_BYTES} bytes")
    return body


def _digest(body: bytes) -> str:
    """The `tree_digest` of a JSON body, checked as the OpenAPI document says."""
    try:
        return DigestIn.model_validate_json(body).tree_digest
    except ValidationError as error:
        problems = error.errors()
        if not problems:
            raise UserError("the body is not valid") from None
        where = ".".join(str(p) for p in problems[0]["loc"]) or "body"
        raise UserError(f"{where}: {problems[0]['msg']}"[:300]) from None


async def _spooled(request: Request, limit: int) -> IO[bytes]:
    """The body in a temporary file (memory up to SPOOL_BYTES), refused past `limit`."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 (closed by the caller)
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPException(
                    413,
                    f"the request body is larger than {limit} bytes "
                    "(TREECAST_API_RECONCILE_MAX_BYTES)",
                    headers={"connection": "close"},
                )
            spool.write(chunk)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool


def _out(done: Reconciled, request: Request) -> ReconcileOut:
    out = ReconcileOut.model_validate(done, from_attributes=True)
    if done.sync_id:
        out.status_url = str(request.url_for("get_sync", sync_id=done.sync_id))
    return out
