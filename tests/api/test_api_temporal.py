"""The HTTP API against a real Temporal dev server and the real workflows, with the fake
activities of tests.support.temporal_env: syncs through Update-with-Start, idempotency keys,
live status, token rotation, redelivery and push hooks that start syncs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from tests.support.api_helpers import api_client, api_settings, bearer, onboard, post_github_push
from tests.support.temporal_env import FakeTreecast, new_task_queue, treecast_worker
from tests.support.waiting import until
from treecast.config import Settings
from treecast.service.core import TreecastService

# Their hosts (github.com/acme/..., git.example) are not reached: see the fixture.
pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("hosts_accept_everyone")]

REPO = "https://github.com/acme/handbook"


@dataclass
class Live:
    http: httpx.AsyncClient
    fake: FakeTreecast
    app: dict[str, Any]

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.app["token"])

    async def watch(self) -> dict[str, Any]:
        answer = await self.http.post("/api/repositories", json={"url": REPO}, headers=self.headers)
        assert answer.status_code == 201, answer.text
        self.fake.apps.append(self.app["app_id"])
        data: dict[str, Any] = answer.json()
        return data


def _service(settings: Settings, env: WorkflowEnvironment) -> TreecastService:
    service = TreecastService(settings)
    service.runtime.use_client(env.client)  # the test server's client instead of connecting
    return service


@pytest.fixture
async def live(tmp_path: Path, dev_env: WorkflowEnvironment) -> AsyncIterator[Live]:
    settings = api_settings(tmp_path).model_copy(update={"task_queue": new_task_queue()})
    fake = FakeTreecast()
    async with (
        treecast_worker(dev_env.client, settings.task_queue, fake.activities()),
        api_client(settings, _service(settings, dev_env)) as http,
    ):
        yield Live(http, fake, await onboard(http))


async def test_watch_syncs_and_status_is_live(live: Live) -> None:
    repo = await live.watch()
    assert repo["sync_requested"] is True
    await until(lambda: live.fake.snapshots >= 1)
    rid = repo["repository_id"]

    async def synced() -> bool:
        row = (await live.http.get(f"/api/repositories/{rid}", headers=live.headers)).json()
        return bool(row["live"]["known"] and row["live"]["last_commit"] == "c1")

    await until(synced)
    listed = await live.http.get("/api/repositories", headers=live.headers)
    [row] = listed.json()["data"]
    assert row["live"]["running"] is True and row["live"]["breaker_state"] == "closed"


async def test_sync_with_an_idempotency_key_runs_once(live: Live) -> None:
    repo = await live.watch()
    rid = repo["repository_id"]
    await until(lambda: live.fake.snapshots >= 1)
    await asyncio.sleep(0.5)
    live.fake.commit = "c2"
    before = live.fake.snapshots
    headers = {**live.headers, "Idempotency-Key": "deploy-42"}
    first = await live.http.post(f"/api/repositories/{rid}/sync", headers=headers)
    second = await live.http.post(f"/api/repositories/{rid}/sync", headers=headers)
    assert first.status_code == second.status_code == 202, first.text
    sync_id = first.json()["sync_id"]
    assert second.json()["sync_id"] == sync_id
    assert first.json()["status_url"].endswith(f"/api/syncs/{sync_id}")

    async def final() -> dict[str, Any] | None:
        answer = await live.http.get(f"/api/syncs/{sync_id}", headers=live.headers)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body if body["final"] else None

    outcome = await until(final)
    assert outcome["state"] == "done" and outcome["ok"] is True and outcome["commit"] == "c2"
    assert outcome["delivery"]["app_id"] == live.app["app_id"]
    await asyncio.sleep(0.5)
    assert live.fake.snapshots == before + 1
    # Without a key each request is its own sync.
    other = await live.http.post(f"/api/repositories/{rid}/sync", headers=live.headers)
    assert other.json()["sync_id"] != sync_id


async def test_token_rotation_and_redeliver_request_syncs(live: Live) -> None:
    repo = await live.watch()
    rid = repo["repository_id"]
    await until(lambda: live.fake.snapshots >= 1)
    before = live.fake.snapshots
    rotated = await live.http.patch(
        f"/api/repositories/{rid}/token", json={"token": "ghp_rotated"}, headers=live.headers
    )
    assert rotated.status_code == 200 and rotated.json()["sync_requested"] is True
    await until(lambda: live.fake.snapshots > before)
    redelivered = await live.http.post(f"/api/repositories/{rid}/redeliver", headers=live.headers)
    assert redelivered.status_code == 202 and redelivered.json()["sync_requested"] is True


async def test_a_signed_push_starts_a_sync(live: Live) -> None:
    repo = await live.watch()
    await until(lambda: live.fake.snapshots >= 1)
    await asyncio.sleep(0.5)
    before = live.fake.snapshots
    answer = await post_github_push(live.http, REPO, repo["push_secret"])
    assert answer.status_code == 202 and answer.json()["repository_ids"] == [repo["repository_id"]]
    await until(lambda: live.fake.snapshots > before)


async def test_without_a_worker_status_is_unknown_and_sync_is_503(
    tmp_path: Path, dev_env: WorkflowEnvironment
) -> None:
    settings = api_settings(tmp_path).model_copy(update={"task_queue": new_task_queue()})
    async with api_client(settings, _service(settings, dev_env)) as http:
        app = await onboard(http)
        headers = bearer(app["token"])
        repo = (await http.post("/api/repositories", json={"url": REPO}, headers=headers)).json()
        assert repo["sync_requested"] is True  # signal-with-start needs no worker
        started = time.monotonic()
        listed = await http.get("/api/repositories", headers=headers)
        assert listed.status_code == 200
        [row] = listed.json()["data"]
        assert row["live"]["known"] is False and "did not answer" in row["live"]["error"]
        assert time.monotonic() - started < settings.api_status_timeout_seconds + 2
        sync = await http.post(f"/api/repositories/{repo['repository_id']}/sync", headers=headers)
        assert sync.status_code == 503 and "worker" in sync.json()["error"]
