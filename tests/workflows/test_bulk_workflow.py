"""BulkWatches on the time-skipping server, and its steps against a real database: every
watch once, in order; a watch that is gone or a step that keeps failing counts as failed
without stopping the rest; a long job continues-as-new with its progress; a retried step
changes its watch once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from models.bulk import (
    BulkAction,
    BulkFailureInput,
    BulkInput,
    BulkResult,
    BulkStepInput,
    BulkStepResult,
    bulk_workflow_id,
)
from models.tables import DeliveredFile, Watch, WatchStatus
from tests.support.receiver_fixture import register
from tests.support.temporal_env import new_task_queue, save_history, start_time_skipping
from treecast.config import Settings
from treecast.db import session_scope
from treecast.store import bulk
from workflows import bulk_watches
from workflows.bulk_watches import BulkWatches

pytestmark = [pytest.mark.temporal, pytest.mark.timeout(60)]


class FakeSteps:
    """The two activities, by name, for a job over `apps` (one watch each): `gone` answers
    "the watch is gone", `broken` raises."""

    def __init__(
        self, apps: list[str], gone: set[str] | None = None, broken: set[str] | None = None
    ) -> None:
        self.apps, self.gone, self.broken = apps, gone or set(), broken or set()
        self.steps: list[tuple[int, str]] = []
        self.failures: list[BulkFailureInput] = []

    @activity.defn(name="apply_bulk_step")
    async def apply(self, step: BulkStepInput) -> BulkStepResult:
        app_id = self.apps[step.position]
        self.steps.append((step.position, app_id))
        if app_id in self.broken:
            raise ApplicationError("Temporal refused the signal", non_retryable=True)
        if app_id in self.gone:
            return BulkStepResult(error="the watch is gone")
        return BulkStepResult()

    @activity.defn(name="record_bulk_failure")
    async def record(self, failure: BulkFailureInput) -> None:
        self.failures.append(failure)


async def run_job(
    env: WorkflowEnvironment, fake: FakeSteps, **worker: Any
) -> tuple[WorkflowHandle[Any, BulkResult], BulkResult, list[EventType.ValueType]]:
    """Run a retry job over the fake's apps on a worker with its steps; its handle, result
    and the event types of its first run."""
    label = "Retry the failed watches of every app"
    job = BulkInput("job1", BulkAction.RETRY, label, total=len(fake.apps))
    queue = new_task_queue()
    activities: list[Callable[..., Any]] = [fake.apply, fake.record]
    async with Worker(
        env.client, task_queue=queue, workflows=[BulkWatches], activities=activities, **worker
    ):
        handle = await env.client.start_workflow(
            BulkWatches.run, job, id=bulk_workflow_id("job1"), task_queue=queue
        )
        result = await handle.result()
        first = env.client.get_workflow_handle(handle.id, run_id=handle.first_execution_run_id)
        events = [event.event_type for event in (await first.fetch_history()).events]
    return handle, result, events


async def test_each_watch_once_and_failures_do_not_stop_the_rest() -> None:
    env = await start_time_skipping()
    try:
        fake = FakeSteps(["app-a", "app-b", "app-c", "app-d"], gone={"app-b"}, broken={"app-c"})
        handle, result, _ = await run_job(env, fake)
        await save_history(handle, "bulk_watches")
        assert (result.done, result.failed) == (4, 2)
        assert fake.steps == [(0, "app-a"), (1, "app-b"), (2, "app-c"), (3, "app-d")]
        assert [(f.position, f.error) for f in fake.failures] == [
            (2, "Temporal refused the signal")
        ]
    finally:
        await env.shutdown()


async def test_a_long_job_continues_as_new_with_its_progress(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bulk_watches, "STEPS_PER_RUN", 2)
    env = await start_time_skipping()
    try:
        fake = FakeSteps([f"app-{n}" for n in range(5)], gone={"app-1"})
        # Unsandboxed: the workflow sees the patched constant.
        _, result, events = await run_job(env, fake, workflow_runner=UnsandboxedWorkflowRunner())
        assert (result.done, result.failed) == (5, 1)
        assert [position for position, _ in fake.steps] == [0, 1, 2, 3, 4]
        assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW in events
    finally:
        await env.shutdown()


def test_a_retried_step_changes_its_watch_once(settings: Settings) -> None:
    app_id, repository_id = register(settings, "http://127.0.0.1:9", ["whsec_" + "A" * 32], "x")
    gone = "repo_" + "9" * 24  # a watch deleted after the job started
    with session_scope(settings.database_url) as session:
        watches = [(app_id, repository_id), (app_id, gone)]
        bulk.create_job(session, "job1", BulkAction.RESYNC, "Resync", watches)
    step = BulkStepInput("job1", 0, BulkAction.RESYNC)
    target = bulk.StepTarget(app_id, repository_id, 60)

    assert bulk.apply_step(settings, step) == target  # the ledger forgotten
    with session_scope(settings.database_url) as session:
        session.add(
            DeliveredFile(
                app_id=app_id, repository_id=repository_id, path="a.md", blob_id="b", sha256="s"
            )
        )
        generation = session.get(Watch, (app_id, repository_id)).ledger_generation  # type: ignore[union-attr]
    # The activity ran again (a retry after a lost answer): nothing is forgotten twice.
    assert bulk.apply_step(settings, step) == target
    bulk.finish_step(settings, "job1", 0)
    bulk.finish_step(settings, "job1", 0, "a late failure is not written over a finish")
    with session_scope(settings.database_url) as session:
        assert session.get(DeliveredFile, (app_id, repository_id, "a.md")) is not None
        watch = session.get(Watch, (app_id, repository_id))
        assert watch is not None and watch.ledger_generation == generation
        assert watch.status == WatchStatus.PENDING
        [progress] = bulk.recent_jobs(session, 20)
    assert (progress.done, progress.failed, progress.finished) == (1, 0, False)
    assert progress.line == "Resync: 1 of 2 done (running)"

    error = bulk.apply_step(settings, BulkStepInput("job1", 1, BulkAction.RESYNC))
    assert error == "the watch is gone (unwatched or its app deleted)"  # finished as failed
    with session_scope(settings.database_url) as session:
        [progress] = bulk.recent_jobs(session, 20)
    assert progress.line == "Resync: 2 of 2 done, 1 failed (finished)"
    assert progress.errors == [f"{app_id} {gone}: {error}"]
