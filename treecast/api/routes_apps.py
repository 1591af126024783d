"""An app's own routes (`Authorization: Bearer tc_...`): its watches, syncs, deliveries
and itself. Another app's repository id answers 404, like an unknown one."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response

from treecast.api.auth import AppId, Service
from treecast.api.errors import ERROR_RESPONSES
from treecast.api.schemas import (
    CredentialsIn,
    CredentialsSetOut,
    DeliveryOut,
    GitTokenIn,
    GitTokenOut,
    ListOut,
    RedeliverOut,
    RepositoryIn,
    RepositoryOut,
    SecretRotateIn,
    SecretRotateOut,
    SelfOut,
    SelfPatchIn,
    SyncAcceptedOut,
    SyncOut,
    TokenRotateOut,
    WatchOut,
)
from treecast.service.credentials import CredentialSpec
from treecast.service.errors import UserError
from treecast.service.pushes import GitHost

router = APIRouter(prefix="/api", tags=["apps"], responses=ERROR_RESPONSES)

# Why a repository given a generated deploy key does not sync yet.
GENERATED_KEY_WAITS = (
    "not synced yet: add credentials.ssh_public_key to the git host as a read-only deploy "
    "key, then POST /api/repositories/{}/sync"
)

Cursor = Annotated[str | None, Query(max_length=100, description="next_cursor of the last page")]
Limit = Annotated[int, Query(ge=1, le=200)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        max_length=200,
        description="the same key again answers the same sync instead of starting another",
    ),
]


def _host_of(url: str) -> GitHost:
    """Which receiver a repository's host most likely calls (shown as push_url)."""
    lowered = url.lower()
    if "gitlab" in lowered:
        return GitHost.GITLAB
    if "gitea" in lowered or "codeberg" in lowered or "forgejo" in lowered:
        return GitHost.GITEA
    return GitHost.GITHUB


@router.post(
    "/repositories",
    status_code=201,
    response_model=RepositoryOut,
    response_model_exclude_none=True,
    responses={200: {"model": RepositoryOut, "description": "already watched: nothing changed"}},
)
async def watch(
    body: RepositoryIn, app_id: AppId, service: Service, request: Request, response: Response
) -> RepositoryOut:
    """Watch a repository (registering it when new) and sync it; the same call again is a
    no-op answered 200. A new repository's `push_secret` is in this answer only.

    The app's own credentials come along: a `token`, a deploy key (`ssh_private_key` or
    `generate_ssh_key`, with `known_hosts`) or a GitHub App; none for a public repository.
    The git host must accept them before anything is saved (422 otherwise, saying why);
    a generated key is saved as pending until a sync finds it on the host. `credentials`
    shows their public parts (a generated key's public key to paste into the git host),
    never a secret."""
    result = await service.watches.watch(
        app_id,
        url=body.url,
        ref=body.ref,
        paths=body.paths,
        credentials=body.spec(body.token),
        submodules=body.submodules,
        lfs=body.lfs,
    )
    if not result.watch_created:
        response.status_code = 200
    out = RepositoryOut.model_validate(result, from_attributes=True)
    if result.pending:  # no sync fails while the generated key is not on the host
        out.sync_error = GENERATED_KEY_WAITS.format(result.repository_id)
    elif result.unreachable is not None:
        out.sync_error = f"the watch is saved; {result.unreachable}"
    if result.push_secret:
        out.push_url = service.repositories.push_url(_host_of(result.url), str(request.base_url))
    return out


@router.get("/repositories", response_model=ListOut[WatchOut])
async def list_watches(
    app_id: AppId,
    service: Service,
    cursor: Cursor = None,
    limit: Limit = 100,
    live: Annotated[bool, Query(description="ask each workflow for its live state")] = True,
) -> ListOut[WatchOut]:
    """The app's watches with their delivery state and, unless live=false, each sync
    loop's live state (`live.known` false when Temporal did not answer in time)."""
    page = await service.watches.list(app_id, cursor, limit, live=live)
    return ListOut(
        data=[WatchOut.model_validate(w, from_attributes=True) for w in page.items],
        next_cursor=page.next_cursor,
    )


@router.get("/repositories/{repository_id}", response_model=WatchOut)
async def get_watch(repository_id: str, app_id: AppId, service: Service) -> WatchOut:
    """One watch with its delivery state and its sync loop's live state."""
    state = await service.watches.get(app_id, repository_id)
    return WatchOut.model_validate(state, from_attributes=True)


@router.delete("/repositories/{repository_id}", status_code=204, response_class=Response)
async def unwatch(repository_id: str, app_id: AppId, service: Service) -> Response:
    """Stop watching and forget what the app received (watching again resends everything)."""
    await service.watches.unwatch(app_id, repository_id, by_app=True)
    return Response(status_code=204)


@router.patch("/repositories/{repository_id}/token", response_model=GitTokenOut)
async def rotate_git_token(
    repository_id: str, body: GitTokenIn, app_id: AppId, service: Service
) -> GitTokenOut:
    """Replace this app's own git access token, once the git host accepts it (422
    otherwise): the breaker is reset and a sync requested; what the app received is
    kept, so only real differences are sent."""
    done = await service.watches.set_credentials(
        repository_id, CredentialSpec(token=body.token), app_id=app_id, by_app=True
    )
    return GitTokenOut(repository_id=repository_id, sync_requested=done.sync_requested)


@router.put(
    "/repositories/{repository_id}/credentials",
    response_model=CredentialsSetOut,
    response_model_exclude_none=True,
)
async def set_credentials(
    repository_id: str, body: CredentialsIn, app_id: AppId, service: Service
) -> CredentialsSetOut:
    """Rotate or replace this app's own token, deploy key, host keys or GitHub App for the
    repository (or `clear` them), once the git host accepts them (422 otherwise, nothing
    changed): the breaker is reset and a sync requested. Another app's credentials for
    the same repository never change. Secrets are never answered."""
    done = await service.watches.set_credentials(
        repository_id, body.spec(body.token, body.clear), app_id=app_id, by_app=True
    )
    out = CredentialsSetOut.model_validate(done, from_attributes=True)
    out.app_ids = None  # an app changes its own watch only
    return out


@router.post("/repositories/{repository_id}/sync", status_code=202, response_model=SyncAcceptedOut)
async def sync(
    repository_id: str,
    app_id: AppId,
    service: Service,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> SyncAcceptedOut:
    """Sync now; answers at once with the id to follow at GET /api/syncs/{sync_id}."""
    accepted = await service.syncs.request(app_id, repository_id, idempotency_key)
    return SyncAcceptedOut(
        sync_id=accepted.sync_id,
        repository_id=repository_id,
        status_url=str(request.url_for("get_sync", sync_id=accepted.sync_id)),
    )


@router.get("/syncs/{sync_id}", response_model=SyncOut)
async def get_sync(sync_id: str, app_id: AppId, service: Service) -> SyncOut:
    """What became of a sync request: pending, syncing, delivering, then final."""
    outcome = await service.syncs.outcome(app_id, sync_id)
    mine: dict[str, Any] | None = next(
        (asdict(a) for a in outcome.apps if a.app_id == app_id), None
    )
    return SyncOut(
        sync_id=sync_id,
        state=str(outcome.state),
        final=outcome.final,
        ok=outcome.ok,
        commit=outcome.commit,
        error_type=outcome.error_type,
        message=outcome.message,
        summary=outcome.summary or str(outcome.state),
        requested_at=outcome.requested_at.isoformat() if outcome.requested_at else None,
        finished_at=outcome.finished_at.isoformat() if outcome.finished_at else None,
        delivery=mine,
    )


@router.post(
    "/repositories/{repository_id}/redeliver", status_code=202, response_model=RedeliverOut
)
async def redeliver(repository_id: str, app_id: AppId, service: Service) -> RedeliverOut:
    """Forget what the app received from this repository and send everything again."""
    done = await service.deliveries.redeliver(app_id, repository_id, by_app=True)
    return RedeliverOut.model_validate(done, from_attributes=True)


@router.get("/deliveries", response_model=ListOut[DeliveryOut])
async def deliveries(
    app_id: AppId,
    service: Service,
    repository_id: Annotated[str | None, Query(max_length=40)] = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> ListOut[DeliveryOut]:
    """The app's webhook attempts, newest first (the newest TREECAST_DELIVERY_LOG_KEEP)."""
    page = await service.deliveries.log(
        app_id=app_id, repository_id=repository_id, cursor=cursor, limit=limit, by_app=True
    )
    return ListOut(
        data=[DeliveryOut.model_validate(d, from_attributes=True) for d in page.items],
        next_cursor=page.next_cursor,
    )


@router.get("/app", response_model=SelfOut)
async def get_self(app_id: AppId, service: Service) -> SelfOut:
    """The calling app (never its secrets)."""
    detail = await service.apps.get(app_id, with_watches=False)
    return SelfOut.model_validate(detail, from_attributes=True)


@router.patch("/app", response_model=SelfOut)
async def patch_self(body: SelfPatchIn, app_id: AppId, service: Service) -> SelfOut:
    """Rename the app or move its base URL (checked as at onboarding)."""
    if body.name is None and body.base_url is None:
        raise UserError("give name or base_url to change")
    detail = await service.apps.update(app_id, name=body.name, base_url=body.base_url)
    return SelfOut.model_validate(detail, from_attributes=True)


@router.post("/app/secret/rotate", response_model=SecretRotateOut)
async def rotate_secret(body: SecretRotateIn, app_id: AppId, service: Service) -> SecretRotateOut:
    """Add a webhook secret (requests carry both signatures), or with finish keep only the
    newest."""
    secret = await service.apps.rotate_secret(app_id, body.secret, finish=body.finish)
    return SecretRotateOut(secret=secret, finished=secret is None)


@router.post("/app/token/rotate", response_model=TokenRotateOut)
async def rotate_token(app_id: AppId, service: Service) -> TokenRotateOut:
    """A new API token (shown once); the one used for this call stops working now."""
    # The caller may hold an imported docora_ token: it stops working too.
    token = await service.apps.rotate_token(app_id, drop_docora_token=True)
    return TokenRotateOut(token=token)
