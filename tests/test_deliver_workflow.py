"""DeliverFiles: per-app isolation, newer commits during a pass, and life after the parent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from temporalio.testing import WorkflowEnvironment

from models.delivery import DeliveryErrorType
from models.sync import (
    DeliverFilesInput,
    NewCommit,
    RequestState,
    SyncRepositoryInput,
    SyncRequest,
    deliver_workflow_id,
    sync_workflow_id,
)
from tests.temporal_env import (
    FakeTreecast,
    eventually,
    new_task_queue,
    overlapping,
    save_history,
    start_time_skipping,
    treecast_worker,
)
from workflows.deliver_files import DeliverFiles
from workflows.sync_repository import SyncRepository

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def env() -> AsyncIterator[WorkflowEnvironment]:
    environment = await start_time_skipping()
    try:
        yield environment
    finally:
        await environment.shutdown()


def loop_input(repository_id: str) -> SyncRepositoryInput:
    return SyncRepositoryInput(
        repository_id=repository_id,
        poll_interval_seconds=600,
        breaker_threshold=3,
        breaker_cooldown_seconds=1800,
    )


async def test_one_failing_app_is_recorded_and_the_others_still_get_their_files(
    env: WorkflowEnvironment,
) -> None:
    fake = FakeTreecast(
        apps=["app-c", "app-a", "app-b", "app-d"],
        failing_apps={
            "app-b": DeliveryErrorType.TRANSPORT,
            "app-d": DeliveryErrorType.WATCH_MISSING,
        },
    )
    queue = new_task_queue()
    async with treecast_worker(env.client, queue, fake.activities()):
        handle = await env.client.start_workflow(
            DeliverFiles.run,
            DeliverFilesInput(repository_id="repo-d", commit="c1"),
            id=deliver_workflow_id("repo-d"),
            task_queue=queue,
        )
        result = await handle.result()
    assert len(result.passes) == 1
    apps = result.passes[0].apps
    assert [a.app_id for a in apps] == ["app-a", "app-b", "app-c", "app-d"]  # stable order
    assert [a.status for a in apps] == ["synced", "failed", "synced", "removed"]
    assert apps[0].delivered == 3 and apps[0].error_type is None
    assert apps[1].error_type == DeliveryErrorType.TRANSPORT
    assert apps[1].error is not None and "connection refused" in apps[1].error
    assert fake.deliver_attempts == {"app-a": 1, "app-b": 5, "app-c": 1, "app-d": 1}
    # the failure is recorded on the watch; a vanished watch has nothing to record
    assert [(f.app_id, f.error_type) for f in fake.recorded_failures] == [
        ("app-b", DeliveryErrorType.TRANSPORT)
    ]
    assert fake.app_commits == {"app-a": "c1", "app-c": "c1"}
    assert not overlapping(fake.deliveries)
    await save_history(handle, "deliver_failures")


async def test_newer_commit_during_a_pass_ends_with_every_app_at_the_newest(
    env: WorkflowEnvironment,
) -> None:
    fake = FakeTreecast(apps=["app-a", "app-b", "app-c"], delivery_seconds=0.5)
    queue = new_task_queue()
    async with treecast_worker(env.client, queue, fake.activities()):
        parent = await env.client.start_workflow(
            SyncRepository.run,
            loop_input("repo-n"),
            id=sync_workflow_id("repo-n"),
            task_queue=queue,
        )
        await eventually(env, lambda: len(fake.deliveries) >= 1, step=0.05)
        fake.commit = "c2"
        await parent.signal(SyncRepository.sync_now, SyncRequest(request_id="r2"))
        child = env.client.get_workflow_handle_for(DeliverFiles.run, deliver_workflow_id("repo-n"))
        result = await child.result()

        async def reported() -> bool:
            outcome = await parent.query(SyncRepository.request, "r2")
            return outcome is not None and outcome.final

        await eventually(env, reported, step=0.1)
        outcome = await parent.query(SyncRepository.request, "r2")
        await parent.signal(SyncRepository.stop)
        await parent.result()
    # one child did both passes: the running pass, then one for the newest commit
    assert [p.commit for p in result.passes] == ["c1", "c2"]
    # apps were listed once per sync by the parent and once for the child's second
    # pass; the first pass took the parent's list instead of asking again
    assert fake.watcher_lists == 3
    assert result.passes[1].request_ids == ["r2"]
    assert fake.app_commits == {"app-a": "c2", "app-b": "c2", "app-c": "c2"}
    assert not overlapping(fake.deliveries)
    assert [(d.app_id, d.commit) for d in fake.deliveries] == [
        ("app-a", "c1"),
        ("app-b", "c1"),
        ("app-c", "c1"),
        ("app-a", "c2"),
        ("app-b", "c2"),
        ("app-c", "c2"),
    ]
    # sync --wait's view: the request is done only with the c2 deliveries
    assert outcome is not None and outcome.state == RequestState.DONE
    assert outcome.commit == "c2" and [a.app_id for a in outcome.apps] == [
        "app-a",
        "app-b",
        "app-c",
    ]
    await save_history(child, "deliver_newer_commit")
    await save_history(parent, "sync_newer_commit")


async def test_the_child_finishes_its_deliveries_after_the_parent_is_terminated(
    env: WorkflowEnvironment,
) -> None:
    fake = FakeTreecast(apps=["app-a", "app-b", "app-c"], delivery_seconds=0.5)
    queue = new_task_queue()
    async with treecast_worker(env.client, queue, fake.activities()):
        parent = await env.client.start_workflow(
            SyncRepository.run,
            loop_input("repo-t"),
            id=sync_workflow_id("repo-t"),
            task_queue=queue,
        )
        await eventually(env, lambda: len(fake.deliveries) >= 1, step=0.05)
        await parent.terminate(reason="test: parent dies mid-delivery")
        assert len(fake.deliveries) < 3  # the child was still working
        child = env.client.get_workflow_handle_for(DeliverFiles.run, deliver_workflow_id("repo-t"))
        result = await child.result()
    assert [a.app_id for a in result.passes[0].apps] == ["app-a", "app-b", "app-c"]
    assert fake.app_commits == {"app-a": "c1", "app-b": "c1", "app-c": "c1"}
    await save_history(child, "deliver_orphaned")


async def test_a_retry_after_from_the_first_try_is_honoured_after_the_other_apps(
    env: WorkflowEnvironment,
) -> None:
    # app-a answers 429 with Retry-After: 120 s; app-b is served meanwhile, and
    # app-a's next try waits until the two minutes have passed (in test time).
    fake = FakeTreecast(apps=["app-a", "app-b"], retry_after={"app-a": 120})
    queue = new_task_queue()
    async with treecast_worker(env.client, queue, fake.activities()):
        handle = await env.client.start_workflow(
            DeliverFiles.run,
            DeliverFilesInput(repository_id="repo-r", commit="c1"),
            id=deliver_workflow_id("repo-r"),
            task_queue=queue,
        )
        result = await handle.result()
    assert [(a.app_id, a.status) for a in result.passes[0].apps] == [
        ("app-a", "synced"),
        ("app-b", "synced"),
    ]
    first, second = fake.deliver_scheduled["app-a"]
    assert (second - first).total_seconds() >= 120
    assert fake.deliver_scheduled["app-b"][0] < second


async def test_a_newer_commit_cuts_a_failing_apps_retries_short(env: WorkflowEnvironment) -> None:
    # app-a is down. While its retries back off, commit c2 arrives: app-b must get c2
    # without waiting for app-a's whole retry budget (1 + 2 + 4 s of backoff).
    fake = FakeTreecast(
        apps=["app-a", "app-b"], failing_apps={"app-a": DeliveryErrorType.TRANSPORT}
    )
    queue = new_task_queue()
    async with treecast_worker(env.client, queue, fake.activities()):
        with env.auto_time_skipping_disabled():
            handle = await env.client.start_workflow(
                DeliverFiles.run,
                DeliverFilesInput(repository_id="repo-n", commit="c1"),
                id=deliver_workflow_id("repo-n"),
                task_queue=queue,
            )
            while not (
                fake.app_commits.get("app-b") == "c1" and fake.deliver_attempts.get("app-a", 0) >= 2
            ):
                await asyncio.sleep(0.05)
            fake.commit = "c2"
            await handle.signal(DeliverFiles.new_commit, NewCommit(commit="c2", request_ids=[]))
            result = await handle.result()
    first, second = result.passes[0], result.passes[1]
    assert [(a.app_id, a.status) for a in first.apps] == [("app-a", "failed"), ("app-b", "synced")]
    assert second.commit == "c2"
    assert [(a.app_id, a.status) for a in second.apps] == [("app-a", "failed"), ("app-b", "synced")]
    assert fake.app_commits["app-b"] == "c2"
    # the first pass gave up on app-a early; the second gave it one try (it failed before)
    assert fake.deliver_attempts["app-a"] < 5 + 1
    assert [f.app_id for f in fake.recorded_failures] == ["app-a", "app-a"]
