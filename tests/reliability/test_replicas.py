"""Two API processes on two ports, one PostgreSQL database and one Temporal (the dev server
with its Web UI), and worker processes started and killed by the test.

A session made on A works on B, and a logout on A ends it on B; the same signed GitHub
push sent to A and to B at once starts exactly one sync; a bulk retry started on A,
with A SIGKILLed at once and the worker SIGKILLed mid-way, completes: seen on the page
B serves, in Temporal and in its Web UI, every watch changed once."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlmodel import select
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus

from models.bulk import bulk_workflow_id
from models.sync import sync_workflow_id
from models.tables import BulkStep, Watch
from tests.admin.test_admin_pages import csrf_of, log_in
from tests.api.test_api_temporal import until
from tests.conftest import free_port
from tests.docora.test_docora import fresh_database
from tests.support import registering
from tests.support.api_helpers import ADMIN_TOKEN, github_headers, github_push
from tests.support.api_stack import ROOT, wait_until_up
from tests.support.temporal_env import new_task_queue, start_local
from treecast.api.admin_pages import COOKIE
from treecast.config import load_settings
from treecast.crypto import generate_key
from treecast.db import engine_for, session_scope
from treecast.devserver import end_process

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

PUSHED = "https://github.com/acme/handbook"
APPS = 40  # watches in the bulk job: enough that a worker can be killed mid-way


@contextmanager
def process(
    command: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process logging to `log`, stopped (SIGTERM, then SIGKILL) at the end."""
    with open(log, "ab") as out:
        child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
        try:
            yield child
        finally:
            end_process(child, 15)


@asynccontextmanager
async def api(env: dict[str, str], log: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """`python -m treecast.api` on a port of its own, ready; its client and process."""
    port = free_port()
    env = {**env, "TREECAST_API_LISTEN": f"127.0.0.1:{port}"}
    with process([sys.executable, "-m", "treecast.api"], env, log) as child:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            await wait_until_up(http, child)
            yield http, child


async def signals(client: Client, workflow_id: str, name: str) -> int:
    """How many `name` signals a workflow's history holds."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return sum(
        1
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
        and event.workflow_execution_signaled_event_attributes.signal_name == name
    )


@pytest.mark.usefixtures("hosts_accept_everyone")  # the bulk job's repository is never asked
async def test_two_api_processes_share_sessions_pushes_and_bulk_jobs(
    tmp_path: Path, postgres_url: str
) -> None:
    ui_port = free_port()
    temporal = await start_local(ui=True, ui_port=ui_port)
    values = {
        "TEMPORAL_ADDRESS": temporal.client.service_client.config.target_host,
        "TREECAST_DATABASE_URL": fresh_database(postgres_url, "replicas"),
        "TREECAST_DATA_DIR": str(tmp_path / "data"),
        "TREECAST_SECRET_KEY": generate_key(),
        "TREECAST_ALLOW_PRIVATE_URLS": "1",
        "TREECAST_ALLOW_FILE_URLS": "1",
        "TREECAST_TASK_QUEUE": new_task_queue(),
        "TREECAST_ADMIN_TOKEN": ADMIN_TOKEN,
        "TREECAST_API_RATE_PER_SECOND": "100000",
        "TREECAST_API_RATE_BURST": "100000",
        "TREECAST_API_STATUS_TIMEOUT_SECONDS": "1",
        "TREECAST_POLL_INTERVAL_SECONDS": "3600",
        "TREECAST_FULL_SYNC_SECONDS": "0",
        "TREECAST_BREAKER_THRESHOLD": "1000",
        "TREECAST_LOG_FORMAT": "json",
    }
    env = {**os.environ, **values}
    settings = load_settings(values)
    engine_for(settings.database_url)
    logs = tmp_path / "logs"
    logs.mkdir()
    try:
        async with api(env, logs / "a.log") as (a, a_process), api(env, logs / "b.log") as (b, _):
            # -- a session made on A works on B; a logout on A ends it on B ----------------
            await log_in(a)
            b.cookies.set(COOKIE, a.cookies[COOKIE], path="/admin")
            overview = await b.get("/admin")
            assert overview.status_code == 200 and "Overview" in overview.text
            csrf = await csrf_of(b)
            assert (await a.post("/admin/logout", data={"csrf": csrf})).status_code == 303
            assert (await b.get("/admin")).status_code == 303

            # -- the same signed push to A and to B at once starts one sync ------------------
            pushed, push_secret = registering.registered(settings, PUSHED)
            assert push_secret
            body = github_push(PUSHED)
            headers = github_headers(body, push_secret, "a-delivery-id")
            answers = await asyncio.gather(
                a.post("/hooks/github", content=body, headers=headers),
                b.post("/hooks/github", content=body, headers=headers),
            )
            assert [r.status_code for r in answers] == [202, 202], [r.text for r in answers]
            outcomes = sorted((r.json()["duplicate"], r.json()["repository_ids"]) for r in answers)
            assert outcomes == [(False, [pushed]), (True, [])]
            workflow = sync_workflow_id(pushed)
            assert await signals(temporal.client, workflow, "sync_now") == 1
            # Its sync would fetch from the internet: not in this test.
            await temporal.client.get_workflow_handle(workflow).terminate()

            # -- a bulk retry started on A survives A's and a worker's death ----------------
            bulk = registering.add_repository(settings, f"file://{tmp_path}/no-such-repository")
            for index in range(APPS):
                app_id = registering.add_app(
                    settings, "http://127.0.0.1:9/hooks", name=f"app {index}"
                )
                registering.watch(settings, app_id, bulk)
            with session_scope(settings.database_url) as session:
                for watch in session.exec(select(Watch)).all():
                    watch.status, watch.last_error_type = "failed", "WebhookHttpError"
                    session.add(watch)

            await log_in(a)
            b.cookies.set(COOKIE, a.cookies[COOKIE], path="/admin")
            csrf = await csrf_of(a, "/admin/failed")
            started = await a.post("/admin/failed/retry-all", data={"csrf": csrf})
            assert started.status_code == 303
            a_process.kill()  # SIGKILL: the API that started the job is gone
            a_process.wait()

            async def page() -> str:
                return (await b.get("/admin/failed")).text

            first = await page()
            assert f"Retry the failed watches of every app: 0 of {APPS} done (running)" in first
            [job_id] = re.findall(r"bulk/([0-9a-f]{16}) in the Temporal Web UI", first)

            def done() -> int:
                with session_scope(settings.database_url) as session:
                    steps = session.exec(select(BulkStep).where(BulkStep.job_id == job_id)).all()
                    return sum(1 for step in steps if step.finished_at is not None)

            worker = [sys.executable, "worker.py"]
            with process(worker, env, logs / "worker-1.log") as first_worker:
                reached = await until(done, 90)
                first_worker.kill()  # SIGKILL mid-way: a step may be cut short
                first_worker.wait()
            mid_way = reached < APPS
            with process(worker, env, logs / "worker-2.log"):
                finished = f"{APPS} of {APPS} done (finished)"
                await until(lambda: _contains(page, finished), 90)

                handle = temporal.client.get_workflow_handle(bulk_workflow_id(job_id))
                result = await handle.result()
                assert (result["done"], result["failed"]) == (APPS, 0)
                assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ui_port}") as ui:
                    shown = await ui.get(
                        "/api/v1/namespaces/default/workflows/"
                        + quote(bulk_workflow_id(job_id), safe="")
                    )
                assert shown.status_code == 200, shown.text
                assert "WORKFLOW_EXECUTION_STATUS_COMPLETED" in shown.text

            # Every watch changed once: one step row each, none failed, all pending again;
            # a step cut short by the kill may have asked for one more sync (harmless).
            with session_scope(settings.database_url) as session:
                steps = session.exec(select(BulkStep).where(BulkStep.job_id == job_id)).all()
                assert sorted(s.position for s in steps) == list(range(APPS))
                assert all(s.finished_at is not None and s.error is None for s in steps)
                assert {w.status for w in session.exec(select(Watch)).all()} == {"pending"}
            resets = await signals(temporal.client, sync_workflow_id(bulk), "reset")
            assert APPS <= resets <= APPS + 1, resets
            print(f"first worker killed after {reached} of {APPS} steps (mid-way: {mid_way})")
            _json_lines(logs / "b.log")
    finally:
        await temporal.shutdown()


async def _contains(page: Callable[[], Any], text: str) -> bool:
    return text in await page()


def _json_lines(log: Path) -> None:
    """With TREECAST_LOG_FORMAT=json every line the API wrote is one JSON object."""
    import json

    lines = [line for line in log.read_text().splitlines() if line.strip()]
    objects = [json.loads(line) for line in lines]
    assert objects and all({"time", "level", "logger", "message"} <= set(o) for o in objects)
