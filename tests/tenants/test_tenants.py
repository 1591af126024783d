"""Tenants stay apart, end to end: a real uvicorn API, the dev server, a worker, two apps
with their own receivers, and a private repository behind real git hosts (smart HTTP
with Basic auth, and the real sshd). An app watches a private repository only with
credentials of its own that the host accepts; each app is delivered to only while its
own access holds; one app's credentials never change another's."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from examples.receiver import Receiver
from tests.support.api_helpers import admin, bearer, post_onboard
from tests.support.api_stack import ApiStack, api_stack
from tests.support.githttp import git_http_server
from tests.support.gitrepos import WorkRepo
from tests.support.sshserver import SshServer, keygen
from tests.support.waiting import until
from treecast.config import Settings, load_settings
from treecast.crypto import generate_webhook_secret

pytestmark = pytest.mark.e2e

POLL = 2  # seconds: every poll is a full sync here, so access is re-checked at each


eventually = partial(until, timeout=45.0)  # a few polls: access is checked at each


@dataclass
class Tenant:
    """One app: its token and its own receiver."""

    app_id: str
    token: str
    receiver: Receiver

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)

    def sync_failed(self) -> list[dict[str, Any]]:
        return [n for n in self.receiver.notices if n.get("event") == "sync_failed"]


async def onboard(stack: ApiStack, receiver: Receiver, secret: str, name: str) -> Tenant:
    answer = await post_onboard(
        stack.http, {"app_name": name, "base_url": receiver.url, "secret": secret}
    )
    assert answer.status_code == 201, answer.text
    data = answer.json()["data"]
    return Tenant(data["app_id"], data["token"], receiver)


@asynccontextmanager
async def two_tenants(
    root: Path, env: WorkflowEnvironment
) -> AsyncIterator[tuple[ApiStack, Tenant, Tenant]]:
    """The stack on `env` (polling every POLL seconds) with apps A (the stack's receiver)
    and B."""
    root.mkdir(parents=True, exist_ok=True)
    async with api_stack(root, env, TREECAST_POLL_INTERVAL_SECONDS=str(POLL)) as stack:
        secret_b = generate_webhook_secret()
        with Receiver([secret_b], root / "mirror-b") as receiver_b:
            a = await onboard(stack, stack.receiver, stack.secret, "a")
            b = await onboard(stack, receiver_b, secret_b, "b")
            yield stack, a, b


def stack_settings(root: Path, stack: ApiStack) -> Settings:
    """The settings the stack's API and worker run with (its database and Temporal)."""
    env = {k: v for k, v in os.environ.items() if k.startswith(("TREECAST_", "TEMPORAL_"))}
    env.pop("TREECAST_DATABASE_URL", None)
    env.update(TREECAST_DATA_DIR=str(root / "data"), TREECAST_SECRET_KEY=stack.secret_key)
    return load_settings(env)


async def watch(http: httpx.AsyncClient, tenant: Tenant, url: str, **body: Any) -> httpx.Response:
    return await http.post("/api/repositories", json={"url": url, **body}, headers=tenant.headers)


async def watches_of(http: httpx.AsyncClient, tenant: Tenant) -> list[dict[str, Any]]:
    answer = await http.get("/api/repositories?live=false", headers=tenant.headers)
    assert answer.status_code == 200, answer.text
    rows: list[dict[str, Any]] = answer.json()["data"]
    return rows


async def test_over_smart_http_each_app_needs_its_own_token(
    tmp_path: Path, dev_env: WorkflowEnvironment
) -> None:
    origin = WorkRepo(tmp_path / "origin")
    origin.write("secret.md", "only for those with a token\n")
    first = origin.commit("first")
    with git_http_server(origin.remote.parent, "token-of-a") as host:
        host.tokens.add("token-of-b")
        url = host.url("remote.git")
        async with two_tenants(tmp_path / "stack", dev_env) as (stack, a, b):
            http = stack.http
            made = await watch(http, a, url, token="token-of-a")
            assert made.status_code == 201, made.text
            rid = made.json()["repository_id"]
            await eventually(lambda: a.receiver.files() == origin.files_at(first))

            # B names the repository without credentials, then with a token the host
            # refuses: 422 with a plain reason, nothing saved, nothing delivered to B.
            for body in ({}, {"token": "not-a-token-of-anyone"}):
                refused = await watch(http, b, url, **body)
                assert refused.status_code == 422, refused.text
                reason = refused.json()["error"]
                assert "credentials" in reason and "nothing was saved" in reason, reason
                assert "token-of-a" not in refused.text
            assert await watches_of(http, b) == []
            detail = await http.get(f"/admin/api/apps/{b.app_id}", headers=admin())
            assert detail.json()["data"]["watches"] == []
            origin.write("second.md", "a second private file\n")
            second = origin.commit("second")
            synced = await http.post(f"/api/repositories/{rid}/sync", headers=a.headers)
            assert synced.status_code == 202, synced.text
            await eventually(lambda: a.receiver.files() == origin.files_at(second))
            assert b.receiver.requests == []

            # With a token of its own B watches it; the two deliveries are independent.
            joined = await watch(http, b, url, token="token-of-b")
            assert joined.status_code == 201, joined.text
            assert joined.json()["repository_id"] == rid and "push_secret" not in joined.json()
            await eventually(lambda: b.receiver.files() == origin.files_at(second))

            # B's credential changes are B's alone: a refused token is a 422 that changes
            # nothing, a working one is B's; A keeps fetching with its own token.
            bad = await http.put(
                f"/api/repositories/{rid}/credentials",
                json={"token": "wrong"},
                headers=b.headers,
            )
            assert bad.status_code == 422, bad.text
            host.tokens.add("second-token-of-b")
            put = await http.put(
                f"/api/repositories/{rid}/credentials",
                json={"token": "second-token-of-b"},
                headers=b.headers,
            )
            assert put.status_code == 200, put.text
            mine = await http.get(f"/api/repositories/{rid}", headers=a.headers)
            assert mine.json()["credentials"]["kind"] == "token"
            assert mine.json()["status"] == "synced"

            # B loses access on the host: at the next new commit B is asked again and gets
            # one sync_failed and nothing more, while A carries on.
            host.tokens.clear()  # A's is the server's own `token`
            origin.write("third.md", "after B lost its access\n")
            third = origin.commit("third")
            await eventually(lambda: a.receiver.files() == origin.files_at(third))

            async def b_failed() -> bool:
                [row] = await watches_of(http, b)
                return bool(row["status"] == "failed")

            await eventually(b_failed)
            [row] = await watches_of(http, b)
            assert "no longer" in row["last_error"] and "credentials" in row["last_error"]
            await eventually(lambda: len(b.sync_failed()) == 1)
            assert "third.md" not in b.receiver.files()
            assert a.sync_failed() == []
            origin.write("fourth.md", "later still\n")
            fourth = origin.commit("fourth")
            await eventually(lambda: a.receiver.files() == origin.files_at(fourth))
            await asyncio.sleep(POLL * 2)
            assert "fourth.md" not in b.receiver.files() and len(b.sync_failed()) == 1


async def test_over_ssh_each_app_needs_its_own_deploy_key(
    tmp_path: Path, dev_env: WorkflowEnvironment, sshd: SshServer
) -> None:
    private_a, public_a = keygen(tmp_path / "key-a")
    private_b, public_b = keygen(tmp_path / "key-b")
    stranger, _ = keygen(tmp_path / "key-c")  # never authorised
    # The process's shared sshd: these keys are this test's own.
    origin = WorkRepo(tmp_path / "origin")
    origin.write("secret.md", "deploy keys only\n")
    first = origin.commit("first")
    sshd.authorize(public_a)
    sshd.authorize(public_b)
    url = sshd.url(origin.remote)
    hosts = sshd.known_hosts()
    async with two_tenants(tmp_path / "stack", dev_env) as (stack, a, b):
        http = stack.http
        made = await watch(http, a, url, ssh_private_key=private_a, known_hosts=hosts)
        assert made.status_code == 201, made.text
        rid = made.json()["repository_id"]
        await eventually(lambda: a.receiver.files() == origin.files_at(first))

        for body in ({}, {"ssh_private_key": stranger, "known_hosts": hosts}):
            refused = await watch(http, b, url, **body)
            assert refused.status_code == 422, refused.text
            assert "nothing was saved" in refused.json()["error"]
        assert await watches_of(http, b) == []
        assert b.receiver.requests == []

        joined = await watch(http, b, url, ssh_private_key=private_b, known_hosts=hosts)
        assert joined.status_code == 201, joined.text
        await eventually(lambda: b.receiver.files() == origin.files_at(first))

        # A's key, the one fetching, is taken off the host: the next sync fetches with
        # B's, A's watch fails with a reason and one sync_failed, B carries on.
        sshd.revoke(public_a)
        origin.write("second.md", "fetched with B's key\n")
        second = origin.commit("second")
        await eventually(lambda: b.receiver.files() == origin.files_at(second))
        await eventually(lambda: len(a.sync_failed()) == 1)
        [row] = await watches_of(http, a)
        assert row["status"] == "failed" and "no longer" in row["last_error"]
        assert "second.md" not in a.receiver.files() and b.sync_failed() == []
        service_status = await _status(stack_settings(tmp_path / "stack", stack), rid)
        assert service_status["fetched_with"] == b.app_id


async def _status(settings: Settings, repository_id: str) -> dict[str, Any]:
    """`status REPO --json`'s row, as the CLI builds it."""
    from treecast.cli.syncs import status_row
    from treecast.service.core import TreecastService

    service = TreecastService(settings)
    report = await service.repositories.status(repository_id)
    [row] = report.repositories
    data: dict[str, Any] = status_row(row)
    return data
