"""The servers tests share (tests/conftest.py): marked by use, cleaned between tests."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from tests.conftest import SharedTimeSkipping, require_marker, terminate_running
from tests.support.temporal_env import (
    FakeTreecast,
    eventually,
    new_task_queue,
    start_sync,
    treecast_worker,
    unique,
)

pytestmark = pytest.mark.timeout(60)


def test_a_test_not_marked_for_a_server_may_not_start_one(request: pytest.FixtureRequest) -> None:
    # What keeps `make unit` free of servers as tests are added.
    assert request.node.get_closest_marker("servers") is None
    with pytest.raises(pytest.fail.Exception, match=r"mark it `pytest\.mark\.temporal`"):
        require_marker("temporal", "a Temporal dev server")


async def test_a_test_using_a_shared_server_is_marked_for_it(
    time_env: WorkflowEnvironment, request: pytest.FixtureRequest
) -> None:
    assert request.node.get_closest_marker("temporal") is not None
    assert request.node.get_closest_marker("servers") is not None


@pytest.mark.temporal  # a time-skipping server of its own, to hold its clock on purpose
async def test_a_workflow_left_waiting_gets_the_next_test_a_fresh_clock() -> None:
    shared = SharedTimeSkipping()
    shared.SETTLE_TIMEOUT = 2.0
    try:
        env = await shared.get()
        await shared.settle()  # nothing left: the same server
        assert await shared.get() is env and shared.replaced == 0
        fake = FakeTreecast()
        queue = new_task_queue()
        async with treecast_worker(env.client, queue, fake.activities()):
            await start_sync(env.client, queue, unique("repo-left"))
            await eventually(env, lambda: fake.snapshots == 1, step=0.5)
        # The loop's next poll wakes it with no worker: the clock stops there.
        with pytest.warns(UserWarning, match="holds the time-skipping clock"):
            await shared.settle()
        assert shared.replaced == 1
        fresh = await shared.get()
        assert fresh is not env
        await fresh.sleep(3600)  # a free clock again
    finally:
        await shared.close()


async def test_what_a_test_leaves_on_the_dev_server_is_terminated(
    dev_server: WorkflowEnvironment,
) -> None:
    # no worker on its task queue: it would wait forever
    handle = await start_sync(dev_server.client, new_task_queue(), unique("repo-left"))
    # As a test's leftovers are by its end: listed (visibility lags a start by a moment).
    query = f'WorkflowId = "{handle.id}"'
    for _ in range(100):
        if [w async for w in dev_server.client.list_workflows(query)]:
            break
        await asyncio.sleep(0.05)
    await terminate_running(dev_server.client)
    assert (await handle.describe()).status == WorkflowExecutionStatus.TERMINATED
