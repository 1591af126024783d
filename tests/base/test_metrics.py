"""The worker's Prometheus endpoint carries Temporal's metrics and Treecast's own."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from temporalio.common import MetricMeter
from temporalio.testing import WorkflowEnvironment

import worker
from examples.receiver import Receiver
from tests.conftest import free_port
from tests.support import registering
from tests.support.gitrepos import WorkRepo
from tests.support.temporal_env import new_task_queue
from treecast import metrics
from treecast.config import Settings, resolve_secret_key
from treecast.crypto import generate_webhook_secret
from treecast.service import workflows as temporal_ops
from treecast.temporal_client import connect

pytestmark = pytest.mark.e2e


@pytest.fixture
def restore_meter() -> Iterator[None]:
    yield
    metrics.install(MetricMeter.noop)


def scrape(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text


def value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        series, _, number = line.rpartition(" ")
        if series.split("{")[0] not in (name, name + "_total"):
            continue
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(number)
    return total


async def test_metrics_endpoint_counts_syncs_and_webhooks(
    settings: Settings,
    tmp_path: Path,
    restore_meter: None,
    dev_env: WorkflowEnvironment,
) -> None:
    port = free_port()
    settings = settings.model_copy(
        update={
            "temporal_address": dev_env.client.service_client.config.target_host,
            "task_queue": new_task_queue(),
            "metrics_port": port,
        }
    )
    secret = generate_webhook_secret()
    repo = WorkRepo(tmp_path / "git")
    repo.write("a.md", "alpha\n")
    repo.write("b.bin", b"\x00\x01")
    commit = repo.commit()
    executor = ThreadPoolExecutor(max_workers=worker.executor_threads(settings))
    try:
        with Receiver([secret], tmp_path / "mirror") as receiver:
            app_id = registering.add_app(settings, receiver.url, secret, "m")
            repository_id = registering.add_repository(settings, repo.url, 3600)
            registering.watch(settings, app_id, repository_id)
            client = await connect(settings, runtime=worker.make_runtime(settings))
            async with worker.build_worker(client, settings, executor):
                outcome = await temporal_ops.sync_and_wait(
                    client, settings, repository_id, 3600, on_progress=None, timeout=60
                )
                assert outcome.ok, outcome.summary
                assert receiver.files() == repo.files_at(commit)
                text = ""
                for _ in range(50):  # the exporter publishes on its own schedule
                    text = await asyncio.to_thread(scrape, port)
                    if value(text, "treecast_files_delivered", event="create") >= 2:
                        break
                    await asyncio.sleep(0.2)
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
    assert value(text, "treecast_syncs", outcome="ok") >= 1
    assert value(text, "treecast_files_delivered", event="create") == 2
    assert value(text, "treecast_webhook_requests", event="create", outcome="ok") == 2
    assert value(text, "treecast_webhook_bytes", event="create") > 0
    assert "treecast_webhook_request_duration" in text
    # Temporal's own runtime metrics come through the same endpoint.
    assert "temporal_workflow_completed" in text or "temporal_activity_execution" in text
    assert secret not in text and resolve_secret_key(settings) not in text
