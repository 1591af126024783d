"""The dev server Treecast starts runs queued activities by priority: a delivery queued
behind snapshots (a first wave) runs before them."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import Priority
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from tests.conftest import free_port
from tests.support.temporal_env import new_task_queue
from treecast.config import load_settings
from treecast.devserver import DevServer
from workflows.policies import TO_APPS

pytestmark = [pytest.mark.timeout(120), pytest.mark.temporal]  # its own DevServer

ran: list[str] = []


@activity.defn
async def work(name: str) -> None:
    ran.append(name)


@workflow.defn(sandboxed=False)
class OneActivity:
    @workflow.run
    async def run(self, name: str, priority_key: int | None) -> None:
        await workflow.execute_activity(
            work,
            name,
            start_to_close_timeout=timedelta(seconds=30),
            priority=Priority(priority_key=priority_key),
        )


async def test_a_delivery_queued_behind_snapshots_runs_first(tmp_path: Path) -> None:
    settings = load_settings(
        {"TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}", "TREECAST_DATA_DIR": str(tmp_path)}
    )
    server = DevServer(settings, ui=False)
    server.start()  # on the main thread: tied to this process (treecast.devserver)
    try:
        client = await Client.connect(settings.temporal_address)
        queue = new_task_queue()
        names = [f"snapshot-{n}" for n in range(6)] + ["delivery-0", "delivery-1"]
        handles = []
        # Workflows only: every activity task waits on the queue, snapshots first.
        async with Worker(
            client,
            task_queue=queue,
            workflows=[OneActivity],
            workflow_runner=UnsandboxedWorkflowRunner(),
        ):
            for name in names:
                key = TO_APPS.priority_key if name.startswith("delivery") else None
                handles.append(
                    await client.start_workflow(
                        OneActivity.run, args=[name, key], id=f"prio-{name}", task_queue=queue
                    )
                )

            for _ in range(100):
                described = [await h.describe() for h in handles]
                if all(d.raw_description.pending_activities for d in described):
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("the activities were never all scheduled")
        ran.clear()
        # One activity at a time, one poller: the queue's order is the order they run.
        async with Worker(
            client,
            task_queue=queue,
            workflows=[OneActivity],
            activities=[work],
            workflow_runner=UnsandboxedWorkflowRunner(),
            max_concurrent_activities=1,
            max_concurrent_activity_task_polls=1,
        ):
            await asyncio.gather(*(h.result() for h in handles))
        # Both deliveries before any snapshot; between the two, one priority: no order.
        assert sorted(ran[:2]) == ["delivery-0", "delivery-1"], ran
        assert sorted(ran[2:]) == names[:6]
    finally:
        server.stop()
