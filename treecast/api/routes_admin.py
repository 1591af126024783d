"""Operator routes (`Authorization: Bearer $TREECAST_ADMIN_TOKEN`); answers wrap `{"data": ...}`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from treecast.api.auth import Admin, Service
from treecast.api.errors import ERROR_RESPONSES
from treecast.api.schemas import (
    AdminCredentialsIn,
    AppDeletedOut,
    AppDetailOut,
    AppOut,
    CredentialsSetOut,
    Data,
    ListOut,
    OnboardIn,
    OnboardOut,
    PushSecretOut,
    TokenRotateOut,
)
from treecast.service.apps import AppOrder

router = APIRouter(
    prefix="/admin/api", tags=["admin"], dependencies=[Admin], responses=ERROR_RESPONSES
)

Cursor = Annotated[str | None, Query(max_length=100, description="next_cursor of the last page")]
Limit = Annotated[int, Query(ge=1, le=200)]


@router.post("/apps/onboard", status_code=201, response_model=Data[OnboardOut])
async def onboard(body: OnboardIn, service: Service) -> Data[OnboardOut]:
    """Register an app; its API token and webhook secret are in this answer only."""
    app = await service.apps.add(
        body.app_name,
        body.base_url,
        body.secret,
        email=body.email,
        website=body.website,
        description=body.description,
        scheme=body.scheme,
        client_auth_key=body.client_auth_key,
        treecast_events=body.treecast_events,
    )
    return Data(data=OnboardOut.model_validate(app, from_attributes=True))


@router.get("/apps", response_model=ListOut[AppOut])
async def list_apps(service: Service, cursor: Cursor = None, limit: Limit = 50) -> ListOut[AppOut]:
    """Every app, by id, a page at a time."""
    page = await service.apps.list(order=AppOrder.ID, cursor=cursor, limit=limit)
    return ListOut(
        data=[AppOut.model_validate(a, from_attributes=True) for a in page.items],
        next_cursor=page.next_cursor,
    )


@router.get("/apps/{app_id}", response_model=Data[AppDetailOut])
async def app_detail(app_id: str, service: Service) -> Data[AppDetailOut]:
    """An app with its watches and their delivery state."""
    detail = await service.apps.get(app_id)
    return Data(data=AppDetailOut.model_validate(detail, from_attributes=True))


@router.delete("/apps/{app_id}", response_model=Data[AppDeletedOut])
async def delete_app(app_id: str, service: Service) -> Data[AppDeletedOut]:
    """Delete an app, its watches, ledgers and log; deliveries to it stop."""
    repositories = await service.apps.remove(app_id)
    return Data(data=AppDeletedOut(deleted=True, repositories=repositories))


@router.post("/apps/{app_id}/token/rotate", response_model=Data[TokenRotateOut])
async def rotate_app_token(app_id: str, service: Service) -> Data[TokenRotateOut]:
    """A new API token for the app (shown once): for a lost token, or an app made before
    the API existed."""
    return Data(data=TokenRotateOut(token=await service.apps.rotate_token(app_id)))


@router.post("/repositories/{repository_id}/push-secret/rotate", response_model=Data[PushSecretOut])
async def rotate_push_secret(
    repository_id: str, request: Request, service: Service
) -> Data[PushSecretOut]:
    """A new push-hook secret (shown once); paste it into the git host's hook."""
    secret = await service.repositories.rotate_push_secret(repository_id)
    return Data(
        data=PushSecretOut(
            repository_id=repository_id,
            push_secret=secret,
            push_url=service.repositories.push_url(base=str(request.base_url)),
        )
    )


@router.put(
    "/repositories/{repository_id}/credentials",
    response_model=Data[CredentialsSetOut],
    response_model_exclude_none=True,
)
async def set_credentials(
    repository_id: str, body: AdminCredentialsIn, service: Service
) -> Data[CredentialsSetOut]:
    """Rotate or replace the token, deploy key, host keys or GitHub App (or `clear` them)
    of one app's watch of a repository (`app_id`), or of every watch of it; each is
    checked against the git host first (422, nothing changed, when one is refused). The
    breaker is reset and a sync requested."""
    done = await service.watches.set_credentials(
        repository_id, body.spec(body.token, body.clear), app_id=body.app_id
    )
    return Data(data=CredentialsSetOut.model_validate(done, from_attributes=True))
