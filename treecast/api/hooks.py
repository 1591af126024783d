"""Push receivers: GitHub, GitLab and Gitea call these when a repository is pushed to.

The raw body's signature is checked against the push secrets of the repositories it
names before anything else is read from it; a verified push makes those repositories
sync now (the payload's file lists are never used).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from treecast.api.auth import Service
from treecast.api.errors import documented
from treecast.api.schemas import PushOut
from treecast.service.pushes import GitHost

router = APIRouter(
    prefix="/hooks", tags=["push hooks"], responses=documented(400, 401, 413, 429, 503)
)


async def _receive(
    host: GitHost, request: Request, response: Response, service: Service
) -> PushOut:
    body = await request.body()
    headers = {k.lower(): v for k, v in request.headers.items()}
    result = await service.syncs.receive_push(host, headers, body)
    response.status_code = 200 if result.ping else 202
    return PushOut.model_validate(result, from_attributes=True)


@router.post(
    "/github", status_code=202, response_model=PushOut, responses={200: {"model": PushOut}}
)
async def github(request: Request, response: Response, service: Service) -> PushOut:
    """GitHub: `X-Hub-Signature-256: sha256=<hex HMAC>`; `ping` answers 200."""
    return await _receive(GitHost.GITHUB, request, response, service)


@router.post("/gitlab", status_code=202, response_model=PushOut)
async def gitlab(request: Request, response: Response, service: Service) -> PushOut:
    """GitLab: `X-Gitlab-Token: <push secret>`."""
    return await _receive(GitHost.GITLAB, request, response, service)


@router.post("/gitea", status_code=202, response_model=PushOut)
async def gitea(request: Request, response: Response, service: Service) -> PushOut:
    """Gitea and Forgejo: `X-Gitea-Signature: <hex HMAC>` (or GitHub's header)."""
    return await _receive(GitHost.GITEA, request, response, service)
