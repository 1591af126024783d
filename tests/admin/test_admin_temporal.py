"""The admin page against a Temporal dev server with no worker: the repository's workflow
exists but nothing answers its queries. Every page still answers within the status timeout
and says the live state is unknown; an action that needs a worker says so."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

pytest.importorskip("jinja2")

from tests.admin.test_admin_pages import csrf_of, log_in
from tests.support.api_helpers import api_client, api_settings, bearer, onboard
from tests.support.temporal_env import new_task_queue
from treecast.service.core import TreecastService

# Their hosts (github.com/acme/..., git.example) are not reached: see the fixture.
pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("hosts_accept_everyone")]


async def test_a_missing_worker_never_hangs_a_page(
    tmp_path: Path, dev_env: WorkflowEnvironment
) -> None:
    settings = api_settings(tmp_path).model_copy(
        update={"task_queue": new_task_queue(), "api_status_timeout_seconds": 1.0}
    )
    service = TreecastService(settings)
    service.runtime.use_client(dev_env.client)  # the dev server's client instead of connecting
    async with api_client(settings, service) as client:
        app = await onboard(client)
        watched = await client.post(
            "/api/repositories",
            json={"url": "https://github.com/acme/handbook"},
            headers=bearer(app["token"]),
        )
        rid = watched.json()["repository_id"]
        assert watched.json()["sync_requested"] is True  # the workflow exists, unanswered
        await log_in(client)
        for path in (
            "/admin",
            "/admin/repositories",
            f"/admin/repositories/{rid}",
            "/admin/failed",
            f"/admin/apps/{app['app_id']}",
        ):
            started = time.monotonic()
            page = await client.get(path)
            took = time.monotonic() - started
            assert page.status_code == 200, path
            assert took < settings.api_status_timeout_seconds + 3, (path, took)
        assert "did not answer" in (await client.get("/admin")).text
        assert "unknown" in (await client.get("/admin/repositories")).text
        paused = await client.post(
            f"/admin/repositories/{rid}/pause", data={"csrf": await csrf_of(client)}
        )
        assert paused.status_code == 303
        text = (await client.get(paused.headers["location"])).text
        assert "Paused." in text  # a signal needs no worker; the server keeps it
