"""Helpers for the HTTP API tests: settings, an in-process client, signed push bodies."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

# The API's packages are optional for the rest of Treecast: without them these tests skip.
pytest.importorskip("fastapi")
pytest.importorskip("asgi_lifespan")

from asgi_lifespan import LifespanManager

from tests.conftest import free_port, treecast_env
from treecast.api.app import create_app
from treecast.config import Settings, load_settings
from treecast.service.core import TreecastService

ADMIN_TOKEN = "admin-token-for-tests-0123456789"


def api_settings(tmp_path: Path, **extra: str) -> Settings:
    """Settings of a test API: its own SQLite, an admin token, Temporal where nothing listens."""
    env = treecast_env(
        tmp_path / "data",
        TREECAST_ADMIN_TOKEN=ADMIN_TOKEN,
        TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}",
        TREECAST_TASK_QUEUE=f"treecast-test-{tmp_path.name}",
        TREECAST_API_RATE_PER_SECOND="100000",
        TREECAST_API_RATE_BURST="100000",
    )
    return load_settings(env | extra)  # `extra` may override any of them


@asynccontextmanager
async def api_client(
    settings: Settings, service: TreecastService | None = None, *, raise_errors: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to the app in-process, with its lifespan run."""
    app = create_app(settings, service)
    async with LifespanManager(app, startup_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=raise_errors)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


def admin() -> dict[str, str]:
    """The operator's Authorization header."""
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def bearer(token: str) -> dict[str, str]:
    """An app's Authorization header."""
    return {"Authorization": f"Bearer {token}"}


async def post_onboard(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    """POST `body` to the admin API's onboarding route, with the admin token."""
    return await client.post("/admin/api/apps/onboard", json=body, headers=admin())


async def onboard(
    client: httpx.AsyncClient, base_url: str = "https://example.com/hooks", **fields: Any
) -> dict[str, Any]:
    """Onboard an app (named docs, unless `fields` say otherwise) through the admin API;
    its `data` (app_id, token, secret)."""
    answer = await post_onboard(client, {"app_name": "docs", "base_url": base_url, **fields})
    assert answer.status_code == 201, answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


def github_push(url: str, ref: str = "refs/heads/main", default_branch: str = "main") -> bytes:
    """A GitHub push payload naming the repository at `url` (trimmed to what matters)."""
    return json.dumps(
        {
            "ref": ref,
            "before": "0" * 40,
            "after": "1" * 40,
            "repository": {
                "full_name": "acme/handbook",
                "html_url": url,
                "clone_url": url + ".git",
                "default_branch": default_branch,
                "owner": {"html_url": "https://github.com/acme"},
            },
            "commits": [{"added": ["ignored.txt"], "modified": [], "removed": []}],
        }
    ).encode()


def github_headers(
    body: bytes, secret: str, delivery: str = "d-1", event: str = "push"
) -> dict[str, str]:
    """GitHub's headers for `body` signed with `secret`."""
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": f"sha256={signature}",
        "Content-Type": "application/json",
    }


async def post_github_push(
    http: httpx.AsyncClient,
    url: str,
    secret: str,
    delivery: str = "d-1",
    ref: str = "refs/heads/main",
) -> httpx.Response:
    """A GitHub push of the repository at `url` (`ref`), signed with `secret`, posted to
    the push hook as GitHub would."""
    body = github_push(url, ref=ref)
    headers = github_headers(body, secret, delivery)
    return await http.post("/hooks/github", content=body, headers=headers)
