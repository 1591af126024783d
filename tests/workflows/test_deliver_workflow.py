"""DeliverFiles: per-app isolation, newer commits during a pass, and life after the parent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner

import worker
from examples.receiver import Receiver
from models.delivery import (
    AppDelivery,
    ChunkResume,
    DeliverInput,
    DeliveryErrorType,
    DeliveryStatus,
)
from models.git import GitErrorType
from models.sync import (
    DeliverFilesInput,
    NewCommit,
    RequestState,
    SyncRequest,
    deliver_workflow_id,
)
from tests.support.gitrepos import WorkRepo
from tests.support.receiver_fixture import register
from tests.support.temporal_env import (
    FakeTreecast,
    eventually,
    new_task_queue,
    overlapping,
    save_history,
    start_sync,
    treecast_worker,
    unique,
)
from treecast.config import Settings
from workflows import deliver_files
from workflows.deliver_files import DeliverFiles
from workflows.policies import TO_APPS
from workflows.sync_repository import SyncRepository

pytestmark = pytest.mark.timeout(60)


@asynccontextmanager
async def mid_delivery(
    env: WorkflowEnvironment, name: str
) -> AsyncIterator[tuple[str, FakeTreecast, WorkflowHandle]]:
    """A repository's SyncRepository whose DeliverFiles child has delivered to the first of
    three apps (half a second each), its worker running: the repository, fake and parent."""
    repo = unique(name)
    fake = FakeTreecast(apps=["app-a", "app-b", "app-c"], delivery_seconds=0.5)
    queue = new_task_queue()
    async with treecast_worker(env.client, queue, fake.activities()):
        parent = await start_sync(env.client, queue, repo)
        await eventually(env, lambda: len(fake.deliveries) >= 1, step=0.05)
        yield repo, fake, parent


async def start_deliver(
    client: Client,
    queue: str,
    repository_id: str,
    commit: str = "c1",
    app_ids: list[str] | None = None,
) -> WorkflowHandle:
    """A DeliverFiles for `commit`, to every watching app or to `app_ids`."""
    return await client.start_workflow(
        DeliverFiles.run,
        DeliverFilesInput(repository_id=repository_id, commit=commit, app_ids=app_ids),
        id=deliver_workflow_id(repository_id),
        task_queue=queue,
    )


async def test_one_failing_app_is_recorded_and_the_others_still_get_their_files(
    time_env: WorkflowEnvironment,
) -> None:
    repo = unique("repo-d")
    fake = FakeTreecast(
        apps=["app-c", "app-a", "app-b", "app-d"],
        failing_apps={
            "app-b": DeliveryErrorType.TRANSPORT,
            "app-d": DeliveryErrorType.WATCH_MISSING,
        },
    )
    queue = new_task_queue()
    async with treecast_worker(time_env.client, queue, fake.activities()):
        handle = await start_deliver(time_env.client, queue, repo)
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


async def test_a_non_retryable_failure_is_not_tried_again(time_env: WorkflowEnvironment) -> None:
    # deliver_changes cannot read a commit the remote no longer has: retrying cannot help.
    repo = unique("repo-n")
    fake = FakeTreecast(apps=["app-a", "app-b"], failing_apps={"app-a": GitErrorType.REF_NOT_FOUND})
    queue = new_task_queue()
    async with treecast_worker(time_env.client, queue, fake.activities()):
        result = await (await start_deliver(time_env.client, queue, repo)).result()
    assert fake.deliver_attempts == {"app-a": 1, "app-b": 1}
    assert [(a.app_id, a.status) for a in result.passes[0].apps] == [
        ("app-a", "failed"),
        ("app-b", "synced"),
    ]
    assert [f.error_type for f in fake.recorded_failures] == [GitErrorType.REF_NOT_FOUND]


async def test_newer_commit_during_a_pass_ends_with_every_app_at_the_newest(
    time_env: WorkflowEnvironment,
) -> None:
    async with mid_delivery(time_env, "repo-n") as (repo, fake, parent):
        fake.commit = "c2"
        await parent.signal(SyncRepository.sync_now, SyncRequest(request_id="r2"))
        child = time_env.client.get_workflow_handle_for(DeliverFiles.run, deliver_workflow_id(repo))
        result = await child.result()

        async def reported() -> bool:
            outcome = await parent.query(SyncRepository.request, "r2")
            return outcome is not None and outcome.final

        await eventually(time_env, reported, step=0.1)
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
    own_time_env: WorkflowEnvironment,
) -> None:
    # Its own server: a child that finishes after its parent was terminated leaves the test
    # server's clock locked for good (it waits for the parent to take the news), which
    # would stop the shared clock for every test after this one.
    time_env = own_time_env
    async with mid_delivery(time_env, "repo-t") as (repo, fake, parent):
        await parent.terminate(reason="test: parent dies mid-delivery")
        assert len(fake.deliveries) < 3  # the child was still working
        child = time_env.client.get_workflow_handle_for(DeliverFiles.run, deliver_workflow_id(repo))
        result = await child.result()
    assert [a.app_id for a in result.passes[0].apps] == ["app-a", "app-b", "app-c"]
    assert fake.app_commits == {"app-a": "c1", "app-b": "c1", "app-c": "c1"}
    await save_history(child, "deliver_orphaned")


async def test_a_retry_after_from_the_first_try_is_honoured_after_the_other_apps(
    time_env: WorkflowEnvironment,
) -> None:
    # app-a answers 429 with Retry-After: 120 s; app-b is served meanwhile, and
    # app-a's next try waits until the two minutes have passed (in test time).
    repo = unique("repo-r")
    fake = FakeTreecast(apps=["app-a", "app-b"], retry_after={"app-a": 120})
    queue = new_task_queue()
    async with treecast_worker(time_env.client, queue, fake.activities()):
        handle = await start_deliver(time_env.client, queue, repo)
        result = await handle.result()
    assert [(a.app_id, a.status) for a in result.passes[0].apps] == [
        ("app-a", "synced"),
        ("app-b", "synced"),
    ]
    first, second = fake.deliver_scheduled["app-a"]
    assert (second - first).total_seconds() >= 120
    assert fake.deliver_scheduled["app-b"][0] < second
    await save_history(handle, "deliver_retry_after")


async def test_a_newer_commit_cuts_a_failing_apps_retries_short(
    time_env: WorkflowEnvironment,
) -> None:
    # app-a is down. While its retries back off, commit c2 arrives: app-b must get c2
    # without waiting for app-a's whole retry budget (1 + 2 + 4 s of backoff).
    repo = unique("repo-n")
    fake = FakeTreecast(
        apps=["app-a", "app-b"], failing_apps={"app-a": DeliveryErrorType.TRANSPORT}
    )
    queue = new_task_queue()
    async with treecast_worker(time_env.client, queue, fake.activities()):
        with time_env.auto_time_skipping_disabled():
            handle = await start_deliver(time_env.client, queue, repo)
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
    await save_history(handle, "deliver_cut_short")


async def test_a_refused_chunk_is_resent_from_there_by_the_next_try(
    time_env: WorkflowEnvironment,
    settings: Settings,
    tmp_path: Path,
    receiver: Receiver,
    receiver_secret: str,
) -> None:
    # The real activities against the example receiver, small chunks: the app refuses
    # chunk 5 of big.bin once. Every try is its own activity (apps take turns), so the
    # position reaches the next try through the failure and DeliverInput.resume.
    settings = settings.model_copy(
        update={
            "chunk_threshold_bytes": 4096,
            "chunk_size_bytes": 1024,
            "task_queue": new_task_queue(),
        }
    )
    repo = WorkRepo(tmp_path / "repo")
    repo.write("a.txt", "a\n")
    repo.write("big.bin", bytes(range(256)) * 40)  # 10 KiB: 14 chunks
    commit = repo.commit()
    app_id, repository_id = register(settings, receiver.url, [receiver_secret], repo.url)
    receiver.fail_next(500, where=lambda r: r.chunk_index == 5)
    with ThreadPoolExecutor(max_workers=worker.executor_threads(settings)) as executor:
        async with worker.build_worker(time_env.client, settings, executor):
            handle = await start_deliver(
                time_env.client, settings.task_queue, repository_id, commit=commit, app_ids=[app_id]
            )
            result = await handle.result()
    [outcome] = result.passes[0].apps
    assert (outcome.status, outcome.error_type) == ("synced", None)
    # a.txt came with the failed try, big.bin with the second: both count
    assert (outcome.created, outcome.updated, outcome.deleted) == (2, 0, 0)
    chunks = [(r.chunk_index, r.status) for r in receiver.requests if r.path == "big.bin"]
    assert chunks == [(i, 200) for i in range(5)] + [(5, 500)] + [(i, 200) for i in range(5, 14)]
    assert [r.path for r in receiver.requests].count("a.txt") == 1
    assert receiver.files() == repo.files_at(commit)
    await save_history(handle, "deliver_chunk_resume")


async def test_a_timed_out_try_counts_its_files_and_the_next_resumes_where_it_stopped(
    time_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A killed worker: the try heartbeats its counts and chunk position, then goes
    # silent. Its TimeoutError's last heartbeat is all the workflow learns of it.
    repo = unique("repo-k")
    monkeypatch.setattr(deliver_files, "DELIVER_HEARTBEAT", timedelta(seconds=1))
    position = ChunkResume(path="big.bin", blob_id="b1", generation="g1", next_chunk=4)
    tries: list[DeliverInput] = []

    @activity.defn(name="deliver_changes")
    async def deliver_changes(input: DeliverInput) -> AppDelivery:
        tries.append(input)
        if len(tries) == 1:
            counts = {"created": 2, "updated": 1, "deleted": 0}
            activity.heartbeat({"done": 3, "total": 5, **counts, **asdict(position)})
            await asyncio.sleep(30)  # "killed": no more heartbeats
        return AppDelivery(app_id=input.app_id, status=DeliveryStatus.SYNCED, updated=2)

    fake = FakeTreecast(apps=["app-a"])
    others = [a for a in fake.activities() if a.__name__ != "deliver_changes"]
    queue = new_task_queue()
    # Unsandboxed, so the shortened heartbeat timeout above is the workflow's.
    async with treecast_worker(
        time_env.client,
        queue,
        [*others, deliver_changes],
        workflow_runner=UnsandboxedWorkflowRunner(),
        graceful_shutdown_timeout=timedelta(0),
    ):
        result = await (
            await start_deliver(time_env.client, queue, repo, app_ids=["app-a"])
        ).result()
    [outcome] = result.passes[0].apps
    assert outcome.status == "synced"
    assert (outcome.created, outcome.updated, outcome.deleted) == (2, 1 + 2, 0)
    assert [t.resume for t in tries] == [None, position]


async def test_deliveries_are_scheduled_before_queued_snapshots(
    time_env: WorkflowEnvironment,
) -> None:
    # A first wave queues thousands of snapshots; each delivery carries a priority that
    # puts it ahead of them (the dev server's order: test_devserver_priority.py).
    repo = unique("repo-p")
    fake = FakeTreecast(apps=["app-a", "app-b"])
    queue = new_task_queue()
    async with treecast_worker(time_env.client, queue, fake.activities()):
        handle = await start_deliver(time_env.client, queue, repo)
        await handle.result()
    scheduled = [
        event.activity_task_scheduled_event_attributes
        async for event in handle.fetch_history_events()
        if event.HasField("activity_task_scheduled_event_attributes")
    ]
    deliveries = [a for a in scheduled if a.activity_type.name == "deliver_changes"]
    assert len(deliveries) == 2
    assert {a.priority.priority_key for a in deliveries} == {TO_APPS.priority_key}
    assert TO_APPS.priority_key is not None and TO_APPS.priority_key < 3  # 3: unset
