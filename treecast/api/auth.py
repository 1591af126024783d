"""Authentication: one dependency for operators, one for apps. Both read
`Authorization: Bearer ...`; neither logs or echoes the token."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from treecast.service.core import TreecastService

_admin_scheme = HTTPBearer(
    auto_error=False, scheme_name="admin", description="TREECAST_ADMIN_TOKEN"
)
_app_scheme = HTTPBearer(
    auto_error=False, scheme_name="app", description="the app's tc_... token from onboarding"
)


def service_of(request: Request) -> TreecastService:
    """The process's one service (made in the lifespan)."""
    service: TreecastService = request.app.state.service
    return service


Service = Annotated[TreecastService, Depends(service_of)]


def require_admin(
    service: Service,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_admin_scheme)],
) -> None:
    """Operators only (503 when TREECAST_ADMIN_TOKEN is unset, 401 for a wrong token)."""
    service.admin.check_token(credentials.credentials if credentials else None)


async def require_app(
    service: Service,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_app_scheme)],
) -> str:
    """The calling app's id (401 for a missing or unknown token)."""
    return await service.apps.authenticate(credentials.credentials if credentials else None)


AppId = Annotated[str, Depends(require_app)]
Admin = Depends(require_admin)
