"""The Web UI lists a repository with an open breaker when filtered by the search attribute."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import worker
from examples.ui_screenshot import (
    breaker_filter_url,
    chromium,
    open_a_breaker,
    rendered_text,
    screenshot,
)
from tests.conftest import free_port
from tests.support import registering
from tests.support.gitrepos import WorkRepo
from tests.support.temporal_env import new_task_queue, start_local
from treecast.config import Settings
from treecast.service import workflows as temporal_ops
from treecast.temporal_client import connect

pytestmark = [
    pytest.mark.e2e,  # a dev server of its own: the shared one has no Web UI
    pytest.mark.browser,
    pytest.mark.skipif(chromium() is None, reason="Chromium is not installed (make browser)"),
]


async def sync_a_healthy_repository(settings: Settings, tmp_path: Path) -> str:
    """A repository that syncs fine (breaker closed), to show the filter leaves it out."""
    repo = WorkRepo(tmp_path / "healthy")
    repo.write("a.md", "fine\n")
    repo.commit()
    repository_id = registering.add_repository(settings, repo.url, 3600)
    client = await connect(settings)
    outcome = await temporal_ops.sync_and_wait(
        client, settings, repository_id, 3600, on_progress=None, timeout=60
    )
    assert outcome.ok, outcome.summary
    return repository_id


async def test_ui_workflow_list_filtered_by_breaker_state(
    settings: Settings, tmp_path: Path
) -> None:
    ui_port = free_port()
    env = await start_local(ui=True, ui_port=ui_port)
    settings = settings.model_copy(
        update={
            "temporal_address": env.client.service_client.config.target_host,
            "task_queue": new_task_queue(),
            "breaker_threshold": 1,
        }
    )
    executor = ThreadPoolExecutor(max_workers=worker.executor_threads(settings))
    try:
        async with worker.build_worker(env.client, settings, executor):
            repository_id = await open_a_breaker(settings, tmp_path)
            healthy_id = await sync_a_healthy_repository(settings, tmp_path)
            url = breaker_filter_url(f"http://127.0.0.1:{ui_port}")
            dom = await asyncio.to_thread(rendered_text, url)
            png = tmp_path / "ui.png"
            await asyncio.to_thread(screenshot, url, png)
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
        await env.shutdown()
    # The filter keeps the open breaker and leaves the healthy repository out.
    assert f"sync-repository/{repository_id}" in dom
    assert f"sync-repository/{healthy_id}" not in dom
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
