"""SyncRepository on the time-skipping test server: polling, breaker, signals, sync --wait.

Activities are the fakes of `tests.support.temporal_env.FakeTreecast`; time moves with
`env.sleep`, so a 30-minute cooldown takes no real time.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateStage
from temporalio.testing import WorkflowEnvironment

from models.checks import CheckReason, RemoteMoved
from models.events import SyncEvent
from models.git import GitErrorType
from models.search_attributes import dev_server_args, operator_create_command
from models.sync import (
    DELIVERIES_FINISHED_SIGNAL,
    BreakerStatus,
    RequestState,
    SyncOutcome,
    SyncRepositoryInput,
    SyncRequest,
    SyncStatus,
    deliver_workflow_id,
    sync_workflow_id,
)
from tests.support.held_tasks import CHILD_SIGNALLED, CHILD_STARTED, Hold, HoldingRunner
from tests.support.temporal_env import (
    FakeTreecast,
    eventually,
    new_task_queue,
    save_history,
    treecast_worker,
    unique,
)
from treecast.config import Settings
from treecast.service import workflows as temporal_ops
from workflows.policies import TO_APPS
from workflows.sync_repository import REUSE_RECENT, SyncRepository

pytestmark = pytest.mark.timeout(60)

COOLDOWN = 1800
INTERVAL = 60


def sync_input(repository_id: str, **changes: object) -> SyncRepositoryInput:
    base = SyncRepositoryInput(
        repository_id=repository_id,
        poll_interval_seconds=INTERVAL,
        breaker_threshold=3,
        breaker_cooldown_seconds=COOLDOWN,
        notice_timeout_seconds=2,
        snapshot_timeout_seconds=30,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


async def start(
    client: Client, task_queue: str, input: SyncRepositoryInput, **options: Any
) -> WorkflowHandle:
    return await client.start_workflow(
        SyncRepository.run,
        input,
        id=sync_workflow_id(input.repository_id),
        task_queue=task_queue,
        **options,
    )


async def status(handle: WorkflowHandle) -> SyncStatus:
    return await handle.query(SyncRepository.status)


async def request(handle: WorkflowHandle, request_id: str) -> SyncOutcome | None:
    return await handle.query(SyncRepository.request, request_id)


async def test_an_app_refused_by_the_host_alone_gets_sync_failed_and_no_more_files(
    time_env: WorkflowEnvironment,
) -> None:
    fake = FakeTreecast(apps=["app-a", "app-b", "app-c"], refuse_next=["app-b"])
    queue = new_task_queue()
    async with treecast_worker(time_env.client, queue, fake.activities()):
        handle = await start(time_env.client, queue, sync_input(unique("repo-access")))
        await eventually(time_env, lambda: fake.notices_of(SyncEvent.SYNC_FAILED) == ["app-b"])
        [notice] = fake.notices
        assert notice.error_type == "AccessRefused" and "credentials" in (
            notice.error_message or ""
        )
        assert notice.breaker.status == "closed"  # the repository syncs on for the others
        await eventually(
            time_env, lambda: {d.app_id for d in fake.deliveries} == {"app-a", "app-c"}
        )
        fake.commit = "c2"  # the next poll: still nothing for app-b, and no second notice
        await eventually(time_env, lambda: fake.app_commits.get("app-c") == "c2", step=10)
        assert "app-b" not in {d.app_id for d in fake.deliveries}
        assert len(fake.notices) == 1
        assert (await status(handle)).breaker_state == BreakerStatus.CLOSED
        await handle.signal(SyncRepository.stop)
        await handle.result()
    await save_history(handle, "sync_access_refused")
    notify = time_env.client.get_workflow_handle(notice.transition_id)
    await save_history(notify, "notify_access_refused")
    # Both children start at the apps' priority: in a first wave their workflow tasks go
    # before the first tasks of repositories registered meanwhile.
    children = [
        event.start_child_workflow_execution_initiated_event_attributes
        async for event in handle.fetch_history_events()
        if event.HasField("start_child_workflow_execution_initiated_event_attributes")
    ]
    assert {c.workflow_type.name for c in children} == {"DeliverFiles", "NotifyBreaker"}
    assert {c.priority.priority_key for c in children} == {TO_APPS.priority_key}


async def test_breaker_opens_notifies_once_and_recovers(time_env: WorkflowEnvironment) -> None:
    repo = unique("repo-1")
    fake = FakeTreecast(apps=["app-b", "app-a"], git_error=GitErrorType.REPOSITORY_NOT_FOUND)
    queue = new_task_queue()
    async with treecast_worker(time_env.client, queue, fake.activities()):
        handle = await start(time_env.client, queue, sync_input(repo))

        async def opened() -> bool:
            return (await status(handle)).breaker_state == BreakerStatus.OPEN

        await eventually(time_env, opened, step=10)
        first = await status(handle)
        # exactly `threshold` failed syncs, each a single (non-retryable) fetch
        assert first.consecutive_failures == 3
        assert fake.snapshots == 3
        assert first.last_error_type == GitErrorType.REPOSITORY_NOT_FOUND
        assert first.cooldown_until is not None
        await eventually(time_env, lambda: len(fake.notices) == 2)
        assert fake.notices_of(SyncEvent.SYNC_FAILED) == ["app-a", "app-b"]
        failed = fake.notices[0]
        assert failed.breaker.status == "open"
        assert failed.breaker.consecutive_failures == 3
        assert failed.breaker.threshold == 3
        assert failed.error_type == GitErrorType.REPOSITORY_NOT_FOUND
        assert failed.transition_id == fake.notices[1].transition_id
        assert failed.transition_id.startswith(f"notify/{repo}/sync_failed/")

        # While open: polls and sync_now leave git alone, and sync_now says why.
        await handle.signal(SyncRepository.sync_now, SyncRequest(request_id="r-open"))
        refused = await request(handle, "r-open")
        assert refused is not None and refused.state == RequestState.BREAKER_OPEN
        assert refused.message is not None and "breaker open until" in refused.message
        await time_env.sleep(COOLDOWN / 2)
        assert fake.snapshots == 3
        assert "breaker open until" in (await status(handle)).message

        # Cooldown over: one probe, still failing -> open again, quietly.
        await time_env.sleep(COOLDOWN / 2 + 5)

        async def probed() -> bool:
            return fake.snapshots == 4 and (await status(handle)).breaker_state == "open"

        await eventually(time_env, probed)
        reopened = await status(handle)
        assert reopened.cooldown_until is not None and first.cooldown_until is not None
        assert reopened.cooldown_until >= first.cooldown_until + timedelta(seconds=COOLDOWN)
        assert reopened.consecutive_failures == 4

        # Fixed meanwhile: the next probe closes it and says so once per app.
        fake.git_error = None
        await time_env.sleep(COOLDOWN + 5)
        await eventually(
            time_env, lambda: len(fake.notices_of(SyncEvent.SYNC_RECOVERED)) == 2, attempts=30
        )
        assert fake.notices_of(SyncEvent.SYNC_FAILED) == ["app-a", "app-b"]  # no second one
        assert fake.notices_of(SyncEvent.SYNC_RECOVERED) == ["app-a", "app-b"]
        notice = next(n for n in fake.notices if n.event == SyncEvent.SYNC_RECOVERED)
        assert notice.breaker.status == "closed"
        assert notice.breaker.failed_syncs == 1
        assert notice.commit == "c1"
        assert fake.snapshots == 5
        healthy = await status(handle)
        assert healthy.breaker_state == BreakerStatus.CLOSED
        assert healthy.consecutive_failures == 0
        assert healthy.last_commit == "c1"
        # and the files went out after recovery
        await eventually(time_env, lambda: fake.app_commits == {"app-a": "c1", "app-b": "c1"})
        await handle.signal(SyncRepository.stop)
        await handle.result()
        await save_history(handle, "sync_breaker")


async def test_retryable_git_errors_are_retried_then_count_once(
    time_env: WorkflowEnvironment,
) -> None:
    repo = unique("repo-r")
    fake = FakeTreecast(git_error=GitErrorType.NETWORK)
    queue = new_task_queue()
    async with treecast_worker(time_env.client, queue, fake.activities()):
        handle = await start(time_env.client, queue, sync_input(repo))

        async def one_failure() -> bool:
            return (await status(handle)).consecutive_failures == 1

        await eventually(time_env, one_failure)
        assert fake.snapshots == 4  # the retry policy's attempts, one failed sync
        assert (await status(handle)).last_error_type == GitErrorType.NETWORK
        await handle.signal(SyncRepository.stop)
        await handle.result()


async def test_a_lost_snapshot_task_is_retried_after_its_heartbeat_timeout(
    time_env: WorkflowEnvironment,
) -> None:
    """A snapshot the server handed out but nobody runs (a worker killed, a task lost by
    an overloaded server) costs the heartbeat timeout, not the start-to-close timeout: in
    a first wave on the dev server one cost a repository 480 s. (The test server keeps
    real time while an activity runs, hence a heartbeat timeout of seconds here.)"""
    repo = unique("repo-l")
    fake = FakeTreecast(lost_snapshots=1)
    queue = new_task_queue()
    async with treecast_worker(time_env.client, queue, fake.activities()):
        handle = await start(
            time_env.client,
            queue,
            sync_input(repo, snapshot_timeout_seconds=3600, snapshot_heartbeat_seconds=2),
        )

        async def synced() -> bool:
            return (await status(handle)).last_commit == "c1"

        await eventually(time_env, synced, step=1, attempts=30)
        synced_status = await status(handle)
        assert fake.snapshots == 2  # the lost attempt and its retry
        assert synced_status.last_sync_at is not None and synced_status.last_attempt_at
        took = synced_status.last_sync_at - synced_status.last_attempt_at
        assert timedelta(seconds=2) <= took < timedelta(seconds=60), took  # not 3600 s
        await handle.signal(SyncRepository.stop)
        await handle.result()


async def test_polls_on_the_interval_with_a_little_jitter(time_env: WorkflowEnvironment) -> None:
    repo = unique("repo-p")
    fake = FakeTreecast()
    queue = new_task_queue()
    async with treecast_worker(time_env.client, queue, fake.activities()):
        handle = await start(time_env.client, queue, sync_input(repo))
        await eventually(time_env, lambda: fake.snapshots == 1, step=0.5)
        first = await status(handle)
        assert first.next_sync_at is not None and first.last_attempt_at is not None
        gap = (first.next_sync_at - first.last_attempt_at).total_seconds()
        assert INTERVAL <= gap < INTERVAL * 1.1
        await time_env.sleep(INTERVAL * 5 + 30)
        assert 5 <= fake.snapshots <= 6
        await handle.signal(SyncRepository.stop)
        result = await handle.result()
        assert result.last_commit == "c1"


async def test_signals_pause_resume_reset_stop(time_env: WorkflowEnvironment) -> None:
    repo = unique("repo-s")
    fake = FakeTreecast(apps=["app-a"], git_error=GitErrorType.AUTHENTICATION_FAILED)
    queue = new_task_queue()
    async with treecast_worker(time_env.client, queue, fake.activities()):
        handle = await start(time_env.client, queue, sync_input(repo, breaker_threshold=1))

        async def is_open() -> bool:
            return (await status(handle)).breaker_state == BreakerStatus.OPEN

        await eventually(time_env, is_open)
        assert fake.snapshots == 1

        # reset closes it and syncs at once (a success answers the sync_failed)
        fake.git_error = None
        await handle.signal(SyncRepository.reset, SyncRequest(request_id="r-reset"))

        async def reset_done() -> bool:
            outcome = await request(handle, "r-reset")
            return outcome is not None and outcome.final

        await eventually(time_env, reset_done, step=0.5)
        done = await request(handle, "r-reset")
        assert done is not None and done.state == RequestState.DONE and done.ok
        assert [a.app_id for a in done.apps] == ["app-a"]
        assert fake.snapshots == 2
        assert (await status(handle)).breaker_state == BreakerStatus.CLOSED
        await eventually(time_env, lambda: fake.notices_of(SyncEvent.SYNC_RECOVERED) == ["app-a"])

        # paused: no polls, sync_now refused with a reason
        await handle.signal(SyncRepository.pause)
        await time_env.sleep(INTERVAL * 5)
        assert fake.snapshots == 2
        paused = await status(handle)
        assert paused.paused and "paused" in paused.message
        await handle.signal(SyncRepository.sync_now, SyncRequest(request_id="r-paused"))
        refused = await request(handle, "r-paused")
        assert refused is not None and refused.state == RequestState.PAUSED

        # resume: the overdue poll runs at once
        await handle.signal(SyncRepository.resume)
        await eventually(time_env, lambda: fake.snapshots == 3, step=0.5, attempts=10)

        # a sync that finds nothing new is done without a delivery
        await handle.signal(SyncRepository.sync_now, SyncRequest(request_id="r-same"))
        await eventually(time_env, lambda: fake.snapshots == 4, step=0.5, attempts=10)
        same = await request(handle, "r-same")
        assert same is not None and same.state == RequestState.DONE and same.apps == []

        await handle.signal(SyncRepository.stop)
        result = await handle.result()
        assert result.syncs == 4
        await save_history(handle, "sync_signals")


async def test_sync_and_wait_returns_after_the_deliveries(
    time_env: WorkflowEnvironment, settings: Settings
) -> None:
    repo = unique("repo-w")
    fake = FakeTreecast(apps=["app-a", "app-b"], delivery_seconds=0.2)
    progress: list[str] = []
    async with treecast_worker(time_env.client, settings.task_queue, fake.activities()):
        outcome = await temporal_ops.sync_and_wait(
            time_env.client, settings, repo, 300, progress.append, timeout=30
        )
        assert outcome.state == RequestState.DONE, outcome
        assert outcome.ok and outcome.commit == "c1"
        assert [(a.app_id, a.delivered) for a in outcome.apps] == [("app-a", 3), ("app-b", 3)]
        # it returned only after both apps had their files
        assert fake.app_commits == {"app-a": "c1", "app-b": "c1"}
        # progress lines are what happens meanwhile; the outcome is printed once, at the end
        assert progress and not any(line.startswith("done") for line in progress)
        assert outcome.summary == "done: c1: 6 files to 2 of 2 apps"

        # a second sync while nothing changed: done, nothing to deliver
        again = await temporal_ops.sync_and_wait(
            time_env.client, settings, repo, 300, None, timeout=30
        )
        assert again.state == RequestState.DONE and again.apps == []

        await save_history(
            time_env.client.get_workflow_handle(sync_workflow_id(repo)), "sync_update"
        )
        current = await temporal_ops.get_status(time_env.client, repo)
        assert current is not None and current.last_commit == "c1"
        assert current.breaker_threshold == settings.breaker_threshold
        assert await temporal_ops.get_status(time_env.client, "no-such-repo") is None

        await temporal_ops.stop(time_env.client, repo)
        await temporal_ops.stop(time_env.client, "no-such-repo")  # not found is fine
        await time_env.client.get_workflow_handle(sync_workflow_id(repo)).result()
        assert await temporal_ops.get_status(time_env.client, repo) is None


async def test_continue_as_new_carries_the_breaker_and_a_pending_sync_now(
    dev_env: WorkflowEnvironment,
) -> None:
    # The time-skipping server hangs when a parent starts an ABANDON child and then
    # continues-as-new (sdk-java 1540, 1618), so this runs on the real dev server
    # with second-scale intervals.
    repo = unique("repo-c")
    gate = asyncio.Event()
    fake = FakeTreecast(apps=["app-a"], snapshot_gate=gate)
    queue = new_task_queue()
    input = sync_input(
        repo,
        poll_interval_seconds=1,
        breaker_threshold=2,
        breaker_cooldown_seconds=2,
        max_cycles=1,  # continue-as-new after every cycle
    )
    async with treecast_worker(dev_env.client, queue, fake.activities()):
        handle = await start(dev_env.client, queue, input)
        first_run = handle.result_run_id
        await wait_real(lambda: fake.snapshots == 1)
        # a sync_now arriving while the run's only cycle is busy...
        await handle.signal(SyncRepository.sync_now, SyncRequest(request_id="r-carry"))
        assert (await status(handle)).pending_requests == 1
        gate.set()
        # ...is served by a later run
        latest = dev_env.client.get_workflow_handle(handle.id)

        async def carried() -> bool:
            outcome = await request(latest, "r-carry")
            return outcome is not None and outcome.final

        await wait_real(carried)
        outcome = await request(latest, "r-carry")
        assert outcome is not None and outcome.state == RequestState.DONE
        assert (await latest.describe()).run_id != first_run
        assert fake.snapshots >= 2

        # the breaker's count and state cross runs; one sync_failed per opening
        fake.git_error = GitErrorType.REPOSITORY_NOT_FOUND

        async def reopened_quietly() -> bool:
            current = await status(latest)
            return current.breaker_state == BreakerStatus.OPEN and (
                current.consecutive_failures >= 3  # opened, then a failed probe
            )

        await wait_real(reopened_quietly, seconds=30)
        assert fake.notices_of(SyncEvent.SYNC_FAILED) == ["app-a"]

        fake.git_error = None

        async def recovered() -> bool:
            return (await status(latest)).breaker_state == BreakerStatus.CLOSED

        await wait_real(recovered, seconds=30)
        await wait_real(lambda: fake.notices_of(SyncEvent.SYNC_RECOVERED) == ["app-a"])
        assert fake.notices_of(SyncEvent.SYNC_FAILED) == ["app-a"]

        # visible and filterable by the search attributes
        query = f'TreecastRepositoryId = "{repo}" AND TreecastBreakerState = "closed"'

        async def listed() -> bool:
            return [w.id async for w in dev_env.client.list_workflows(query)] != []

        await wait_real(listed)
        runs = [w async for w in dev_env.client.list_workflows(f'WorkflowId = "{handle.id}"')]
        assert len(runs) >= 4

        await latest.signal(SyncRepository.stop)
        await latest.result()
        await save_history(
            dev_env.client.get_workflow_handle(handle.id, run_id=first_run), "sync_can_first_run"
        )
        await save_history(latest, "sync_can_last_run")


async def wait_real(check: Callable[[], Awaitable[bool] | bool], seconds: float = 15) -> None:
    """Poll `check` in real time (the dev server's clock is the wall clock)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"condition not met within {seconds} s")


async def test_starting_twice_runs_one_loop(
    time_env: WorkflowEnvironment, settings: Settings
) -> None:
    repo = unique("repo-2")
    fake = FakeTreecast(git_error=GitErrorType.REF_NOT_FOUND)
    async with treecast_worker(time_env.client, settings.task_queue, fake.activities()):
        await temporal_ops.start_sync(time_env.client, settings, repo, 300, sync_now=False)
        handle = time_env.client.get_workflow_handle(sync_workflow_id(repo))
        run_id = (await handle.describe()).run_id
        await temporal_ops.start_sync(time_env.client, settings, repo, 300, sync_now=False)
        await temporal_ops.start_sync(time_env.client, settings, repo, 300, sync_now=True)
        await temporal_ops.reset(time_env.client, settings, repo, 300)
        assert (await handle.describe()).run_id == run_id
        await eventually(time_env, lambda: fake.snapshots >= 2, step=0.2)
        current = await temporal_ops.get_status(time_env.client, repo)
        assert current is not None and current.last_error_type == GitErrorType.REF_NOT_FOUND
        assert current.poll_interval_seconds == 300
        await temporal_ops.stop(time_env.client, repo)
        await handle.result()


def test_search_attribute_registration_arguments() -> None:
    assert dev_server_args() == [
        "--search-attribute",
        "TreecastRepositoryId=Keyword",
        "--search-attribute",
        "TreecastBreakerState=Keyword",
        "--search-attribute",
        "TreecastLastCommit=Keyword",
        "--search-attribute",
        "TreecastConsecutiveFailures=Int",
    ]
    command = operator_create_command()
    assert command[:3] == ["operator", "search-attribute", "create"]
    pairs = list(zip(command[3::4], command[4::4], command[5::4], command[6::4], strict=True))
    assert [(name, type_) for _, name, _, type_ in pairs] == [
        ("TreecastRepositoryId", "Keyword"),
        ("TreecastBreakerState", "Keyword"),
        ("TreecastLastCommit", "Keyword"),
        ("TreecastConsecutiveFailures", "Int"),
    ]


async def test_sync_and_wait_counts_the_delivery_it_meets(
    time_env: WorkflowEnvironment, settings: Settings
) -> None:
    # `watch` requests a sync and its delivery is under way when `sync --wait` asks: the
    # answer is the files that delivery brought, not "unchanged" or "0 files to 0 apps".
    repo = unique("repo-m")
    fake = FakeTreecast(apps=["app-a"], delivery_seconds=3.0)
    async with treecast_worker(time_env.client, settings.task_queue, fake.activities()):
        await temporal_ops.start_sync(time_env.client, settings, repo, 300, sync_now=True)
        await eventually(time_env, lambda: len(fake.deliveries) == 1, step=0.1)
        outcome = await temporal_ops.sync_and_wait(
            time_env.client, settings, repo, 300, None, timeout=60
        )
        assert outcome.state == RequestState.DONE and outcome.ok, outcome
        assert outcome.summary == "done: c1: 3 files to 1 of 1 apps"
        assert [(a.app_id, a.delivered) for a in outcome.apps] == [("app-a", 3)]
        assert len(fake.deliveries) == 1  # nothing was delivered twice
        await temporal_ops.stop(time_env.client, repo)  # its next poll would wait for a worker
        await time_env.client.get_workflow_handle(sync_workflow_id(repo)).result()


# --- remote checks' wakes and new watches (issue 30): no fetch for what the loop has ---

FULL_SYNC = 86_400


def moved(*commits: str) -> RemoteMoved:
    return RemoteMoved(reason=CheckReason.MOVED, detail=",".join(commits), commits=list(commits))


async def test_a_wake_for_the_commit_synced_or_being_synced_does_not_sync_again(
    time_env: WorkflowEnvironment,
) -> None:
    fake = FakeTreecast(apps=["app-a"], commit="c1")
    queue = new_task_queue()
    async with treecast_worker(time_env.client, queue, fake.activities()):
        handle = await start(
            time_env.client,
            queue,
            sync_input(unique("repo-w"), full_sync_interval_seconds=FULL_SYNC),
        )
        await eventually(time_env, lambda: fake.snapshots == 1, step=0.2)
        await handle.signal(SyncRepository.remote_moved, moved("c1"))
        await time_env.sleep(5)
        assert fake.snapshots == 1  # the commit it has: nothing to fetch

        # Woken for c2 while that sync runs, woken again for c2: one fetch gets it.
        fake.commit, fake.snapshot_gate = "c2", asyncio.Event()
        await handle.signal(SyncRepository.remote_moved, moved("c2"))
        await eventually(time_env, lambda: fake.snapshots == 2, step=0.2)
        await handle.signal(SyncRepository.remote_moved, moved("c2"))
        fake.snapshot_gate.set()
        await eventually(time_env, lambda: _last_commit(handle, "c2"), step=0.2)
        await time_env.sleep(5)
        assert fake.snapshots == 2

        # Woken for c4 (pushed after the running fetch began, which gets c3): one more
        # fetch, and only one.
        fake.commit, fake.snapshot_gate = "c3", asyncio.Event()
        await handle.signal(SyncRepository.remote_moved, moved("c3"))
        await eventually(time_env, lambda: fake.snapshots == 3, step=0.2)
        await handle.signal(SyncRepository.remote_moved, moved("c4"))
        gate, fake.snapshot_gate = fake.snapshot_gate, None
        gate.set()
        await eventually(time_env, lambda: fake.snapshots == 4, step=0.2)
        await time_env.sleep(5)
        assert fake.snapshots == 4
        await handle.signal(SyncRepository.stop)
        await handle.result()
        await save_history(handle, "sync_wakes_for_commits")


async def _last_commit(handle: object, commit: str) -> bool:
    return (await status(handle)).last_commit == commit  # type: ignore[arg-type]


async def test_a_new_watch_is_handed_the_commit_just_synced_without_a_fetch(
    time_env: WorkflowEnvironment,
) -> None:
    fake = FakeTreecast(apps=[], commit="c1")
    queue = new_task_queue()
    new_watch = SyncRequest(reuse_recent=True)
    checked = sync_input(unique("repo-n"), full_sync_interval_seconds=FULL_SYNC)
    async with treecast_worker(time_env.client, queue, fake.activities()):
        # `repo add`: the loop starts and syncs; nobody watches yet.
        handle = await start(time_env.client, queue, checked)
        await eventually(time_env, lambda: fake.watcher_lists == 1, step=0.2)
        # `watch` a moment later: the app gets c1, fetched once.
        fake.apps = ["app-a"]
        await handle.signal(SyncRepository.sync_now, new_watch)
        await eventually(time_env, lambda: len(fake.deliveries) == 1, step=0.2)
        assert fake.snapshots == 1 and fake.deliveries[0].commit == "c1"

        # A watch that meets a running sync is served by that sync.
        fake.commit, fake.snapshot_gate = "c2", asyncio.Event()
        await handle.signal(SyncRepository.sync_now, SyncRequest())
        await eventually(time_env, lambda: fake.snapshots == 2, step=0.2)
        fake.apps = ["app-a", "app-b"]
        await handle.signal(SyncRepository.sync_now, new_watch)
        fake.snapshot_gate.set()
        await eventually(time_env, lambda: _delivered(fake, "app-b", "c2"), step=0.2)
        await time_env.sleep(5)
        assert fake.snapshots == 2

        # Longer than that after the last sync (REUSE_RECENT), a new watch fetches first.
        await time_env.sleep(REUSE_RECENT.total_seconds() + 5)
        fake.apps = ["app-a", "app-b", "app-c"]
        fake.commit = "c3"
        await handle.signal(SyncRepository.sync_now, new_watch)
        await eventually(time_env, lambda: _delivered(fake, "app-c", "c3"), step=0.2)
        assert fake.snapshots == 3
        await handle.signal(SyncRepository.stop)
        await handle.result()
        await save_history(handle, "sync_new_watch_reuses")


def _delivered(fake: FakeTreecast, app_id: str, commit: str) -> bool:
    return any(d.app_id == app_id and d.commit == commit for d in fake.deliveries)


# --- a pass report that comes in the same workflow task as its handover ---


@pytest.mark.parametrize(
    ("resumed_by", "history"),
    [
        (CHILD_SIGNALLED, "sync_report_with_signal"),
        (CHILD_STARTED, "sync_report_with_start"),
    ],
)
async def test_a_pass_reported_with_its_handover_answers_the_request(
    dev_env: WorkflowEnvironment, resumed_by: str, history: str
) -> None:
    # A slow worker's task carries both the handover of request r1 to DeliverFiles (the
    # running child signalled, or a new one started) and that child's report of the pass
    # that covered r1; the report's handler runs first. r1 is answered all the same.
    # On the dev server: the time-skipping one keeps signals back while a task fails.
    fake = FakeTreecast(apps=["app-a"], commit="c1")
    hold = Hold(resumed_by, request_id="r1")
    queue = new_task_queue()
    repo = unique("repo-o")
    # A held task fails; the SDK reports only the first failure of a task and leaves
    # the others to time out, so held tasks are retried after this.
    held = timedelta(seconds=1)
    async with treecast_worker(
        dev_env.client, queue, fake.activities(), workflow_runner=HoldingRunner(hold)
    ):
        if resumed_by == CHILD_SIGNALLED:
            # `watch`: its delivery of c1 is under way when r1's sync hands c1 over.
            fake.delivery_gate = asyncio.Event()
            handle = await start(dev_env.client, queue, sync_input(repo), task_timeout=held)
            await wait_real(lambda: len(fake.deliveries) == 1)
        else:
            # The first delivery is over: r1's sync starts DeliverFiles for c2.
            handle = await start(dev_env.client, queue, sync_input(repo), task_timeout=held)
            await wait_real(lambda: _passes_reported(handle, 1))
            await dev_env.client.get_workflow_handle(deliver_workflow_id(repo)).result()
            fake.commit = "c2"
        hold.armed = True
        update = await handle.start_update(
            SyncRepository.sync_and_wait,
            SyncRequest(request_id="r1"),
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
        )
        await wait_real(lambda: hold.held > 0)
        if fake.delivery_gate is not None:
            fake.delivery_gate.set()  # the child has r1: its passes end
        await wait_real(lambda: hold.released)
        await wait_real(lambda: _final(handle, "r1"), seconds=10)
        outcome = await update.result()
        commit = "c1" if resumed_by == CHILD_SIGNALLED else "c2"
        assert outcome.summary == f"done: {commit}: 3 files to 1 of 1 apps", outcome
        assert (await status(handle)).delivering_commit is None
        await handle.signal(SyncRepository.stop)
        await handle.result()
        await save_history(handle, history)


async def _passes_reported(handle: WorkflowHandle, count: int) -> bool:
    history = await handle.fetch_history()
    return count == sum(
        1
        for event in history.events
        if event.workflow_execution_signaled_event_attributes.signal_name
        == DELIVERIES_FINISHED_SIGNAL
    )


async def _final(handle: WorkflowHandle, request_id: str) -> bool:
    outcome = await request(handle, request_id)
    return outcome is not None and outcome.final
