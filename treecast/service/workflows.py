"""The service layer's Temporal calls on the per-repository workflows.

Everything here talks to Temporal only (never the database or git): start or
signal a repository's `SyncRepository`, sync and wait for the deliveries
(Update-with-Start), read its status, reset its breaker, pause, resume and stop it.
Signals, queries and updates are called by method reference.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateHandle,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    WorkflowUpdateStage,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from models import search_attributes
from models.bulk import BulkInput, bulk_workflow_id
from models.checks import CheckProgress, check_workflow_id, shard_of
from models.delivery import DeliveryProgress
from models.sync import (
    SYNC_NOW_SIGNAL,
    RequestState,
    SyncOutcome,
    SyncRequest,
    SyncStatus,
    deliver_workflow_id,
    sync_workflow_id,
)
from treecast.config import Settings
from treecast.sync_loops import reset as reset
from treecast.sync_loops import start_options, sync_input
from treecast.sync_loops import start_sync as start_sync
from workflows.deliver_files import DeliverFiles
from workflows.sync_repository import SyncRepository

# How often `sync --wait` looks at the delivery's heartbeat for "N of M files" (the
# end of the sync itself arrives as the update's answer, not by polling).
PROGRESS_EVERY = 1.0
# A query is answered by a worker. With none polling the task queue, Temporal holds the
# query until the call's deadline (30 s by default), so the service's queries give up sooner.
QUERY_TIMEOUT = timedelta(seconds=5)


class NoWorkerAnswered(Exception):
    """A query or update got no answer within QUERY_TIMEOUT: no worker polls the workflow's
    task queue (or the one that does is stuck)."""

    def __init__(self, repository_id: str, query: str, task_queue: str | None) -> None:
        self.repository_id = repository_id
        self.query = query  # what went unanswered, e.g. "status query", "sync_and_wait update"
        self.task_queue = task_queue  # the workflow's; None when describing it failed too
        super().__init__(
            f"no worker answered the {query} of {repository_id} within "
            f"{QUERY_TIMEOUT.total_seconds():g} s"
        )


def missing_search_attributes(error: BaseException) -> bool:
    """Whether Temporal refused a call because its namespace lacks Treecast's search attributes."""
    if not isinstance(error, RPCError) or error.status != RPCStatusCode.INVALID_ARGUMENT:
        return False
    message = error.message
    # "Namespace default has no mapping defined for search attribute TreecastRepositoryId"
    # (older servers: "search attribute TreecastRepositoryId is not defined")
    return "search attribute" in message.lower() and any(
        key.name in message for key in search_attributes.ALL_KEYS
    )


def _no_such_workflow(error: RPCError) -> bool:
    """NOT_FOUND for the workflow, not for the namespace (a wrong TEMPORAL_NAMESPACE answers
    NOT_FOUND too, and must not read as "no workflow runs")."""
    return error.status == RPCStatusCode.NOT_FOUND and not any(
        detail.type_url.endswith(".NamespaceNotFoundFailure")
        for detail in error.grpc_status.details
    )


def _timed_out(error: RPCError) -> bool:
    # The client's own deadline ends the call as CANCELLED "Timeout expired"; the
    # server's as DEADLINE_EXCEEDED.
    return error.status in (RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED)


async def _no_worker(handle: WorkflowHandle[Any, Any], repository_id: str, label: str) -> Exception:
    task_queue: str | None
    try:
        task_queue = (await handle.describe()).task_queue
    except RPCError:
        task_queue = None
    return NoWorkerAnswered(repository_id, label, task_queue)


async def _query(
    handle: WorkflowHandle[Any, Any],
    repository_id: str,
    label: str,
    query: Callable[..., Any],
    *args: Any,
) -> Any:
    """Run a query, turning "no answer in time" into `NoWorkerAnswered` (`label` names it)."""
    try:
        return await handle.query(query, *args, rpc_timeout=QUERY_TIMEOUT)
    except RPCError as err:
        if not _timed_out(err):
            raise
    raise await _no_worker(handle, repository_id, f"{label} query") from None


async def ensure_remote_checks(client: Client, settings: Settings) -> list[str]:
    """Start each shard's `CheckRemotes` unless it runs (every worker calls this on start).

    Nothing with TREECAST_FULL_SYNC_SECONDS=0: repositories then fetch every poll."""
    if not settings.full_sync_seconds:
        return []
    from models.checks import CheckRemotesInput, check_workflow_id
    from workflows.check_remotes import CheckRemotes

    started = []
    for shard in range(settings.check_shards):
        workflow_id = check_workflow_id(shard, settings.check_shards)
        await client.start_workflow(
            CheckRemotes.run,
            CheckRemotesInput(
                shard=shard,
                shards=settings.check_shards,
                concurrency=settings.check_concurrency,
            ),
            id=workflow_id,
            task_queue=settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            static_summary=f"remote checks, shard {shard + 1} of {settings.check_shards}",
        )
        started.append(workflow_id)
    return started


async def sync_and_wait(
    client: Client,
    settings: Settings,
    repository_id: str,
    poll_interval_seconds: int | None,
    on_progress: Callable[[str], None] | None,
    timeout: float,
    request_id: str | None = None,
) -> SyncOutcome:
    """Sync now and wait until that sync's deliveries have finished (or it was refused).

    Update-with-Start: the loop starts if it is not running, and the update answers
    when the request is final: DONE (with per-app results), FAILED, BREAKER_OPEN,
    PAUSED or STOPPED. `on_progress` gets every new non-final progress line. Raises
    `TimeoutError` if it is not final within `timeout`, and `NoWorkerAnswered` when no
    worker takes the update.
    """
    request_id = request_id or uuid.uuid4().hex
    update = await _start_sync_update(
        client, settings, repository_id, poll_interval_seconds, request_id
    )
    result = asyncio.ensure_future(update.result())
    handle = client.get_workflow_handle(sync_workflow_id(repository_id))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last_seen = ""
    try:
        while not result.done():
            if on_progress is not None:
                line = await _progress(client, handle, repository_id, request_id)
                if line and line != last_seen:
                    on_progress(line)
                    last_seen = line
            left = deadline - loop.time()
            if left <= 0:
                break
            await asyncio.wait({result}, timeout=min(PROGRESS_EVERY, left))
        if result.done():
            outcome: SyncOutcome = result.result()
            if outcome.final:
                return outcome
        raise TimeoutError(
            f"sync of {repository_id} not finished after {timeout:g} s; "
            "it goes on in the background"
        )
    finally:
        result.cancel()
        with contextlib.suppress(BaseException):
            await result


async def _start_sync_update(
    client: Client,
    settings: Settings,
    repository_id: str,
    poll_interval_seconds: int | None,
    request_id: str,
) -> WorkflowUpdateHandle[SyncOutcome]:
    """Start the `sync_and_wait` update (starting the loop if needed); return once the
    workflow accepted it. The update id is the request id, so a repeat is the same update."""
    start = WithStartWorkflowOperation(
        SyncRepository.run,
        sync_input(settings, repository_id, poll_interval_seconds),
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        **start_options(settings, repository_id),
    )
    try:
        return await client.start_update_with_start_workflow(
            SyncRepository.sync_and_wait,
            SyncRequest(request_id=request_id),
            id=request_id,
            start_workflow_operation=start,
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
            rpc_timeout=QUERY_TIMEOUT,
        )
    except (RPCError, WorkflowUpdateRPCTimeoutOrCancelledError) as err:
        # The start operation's own future holds the same failure: retrieve it, or asyncio
        # reports "Future exception was never retrieved" at exit.
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(start.workflow_handle(), 0.1)
        if isinstance(err, RPCError) and not _timed_out(err):
            raise
        handle = client.get_workflow_handle(sync_workflow_id(repository_id))
        raise await _no_worker(handle, repository_id, "sync_and_wait update") from None


async def request_sync(
    client: Client,
    settings: Settings,
    repository_id: str,
    poll_interval_seconds: int | None,
    request_id: str,
) -> None:
    """Sync now without waiting: start the `sync_and_wait` update and return once the
    workflow accepted it; follow it with `sync_request(request_id)`.

    The same `request_id` again never starts a second sync. When the workflow already has
    as many updates in flight as Temporal allows, the request goes in a signal instead
    (same id, same bookkeeping, followed the same way).
    """
    try:
        await _start_sync_update(client, settings, repository_id, poll_interval_seconds, request_id)
    except RPCError as err:
        if err.status != RPCStatusCode.RESOURCE_EXHAUSTED:
            raise
        await client.start_workflow(
            SyncRepository.run,
            sync_input(settings, repository_id, poll_interval_seconds),
            start_signal=SYNC_NOW_SIGNAL,
            start_signal_args=[SyncRequest(request_id=request_id)],
            **start_options(settings, repository_id),
        )


async def _progress(
    client: Client, handle: WorkflowHandle[Any, Any], repository_id: str, request_id: str
) -> str | None:
    """The request's state as one line (with "N of M files" while delivering); None if final."""
    try:
        outcome = await handle.query(SyncRepository.request, request_id, rpc_timeout=QUERY_TIMEOUT)
    except (RPCError, WorkflowQueryFailedError):
        return None  # progress is best effort; the update's answer is what counts
    if outcome is None or outcome.final:
        return None
    commit = (outcome.commit or "")[:12]
    if outcome.state == RequestState.SYNCING:
        return "fetching"
    if outcome.state == RequestState.PENDING:
        return "waiting for the running sync to finish"
    files = await delivery_progress(client, repository_id)
    return f"delivering {commit}" + (f": {files}" if files else "")


async def delivery_progress(client: Client, repository_id: str) -> str | None:
    """ "N of M files" of the delivery running now, from its activity's heartbeat, or the
    retry an app waits for; None if neither."""
    handle = client.get_workflow_handle(deliver_workflow_id(repository_id))
    try:
        description = await handle.describe()
    except RPCError:
        return None
    for pending in description.raw_description.pending_activities:
        if (
            pending.activity_type.name != "deliver_changes"
            or not pending.heartbeat_details.payloads
        ):
            continue
        details = await client.data_converter.decode(pending.heartbeat_details.payloads)
        progress = DeliveryProgress.from_details(details)
        if progress is not None and progress.total:
            return f"{progress.done} of {progress.total} files"
    if description.status != WorkflowExecutionStatus.RUNNING:
        return None
    try:
        wait = await handle.query(DeliverFiles.retry_wait, rpc_timeout=QUERY_TIMEOUT)
    except (RPCError, WorkflowQueryFailedError):
        return None
    if wait is None:
        return None
    return (
        f"app {wait.app_id} failed ({wait.error}); "
        f"try {wait.attempt} of {wait.attempts} at {wait.at:%H:%M:%S} UTC"
    )


async def sync_request(client: Client, repository_id: str, request_id: str) -> SyncOutcome | None:
    """What became of one sync request (None: unknown to the running workflow)."""
    handle = await _running_handle(client, repository_id)
    if handle is None:
        return None
    outcome: SyncOutcome | None = await _query(
        handle, repository_id, "request", SyncRepository.request, request_id
    )
    return outcome


async def _described(
    client: Client, repository_id: str
) -> tuple[WorkflowHandle[Any, Any], WorkflowExecutionDescription] | None:
    """The repository workflow's handle and description (None: there is none)."""
    handle = client.get_workflow_handle(sync_workflow_id(repository_id))
    try:
        return handle, await handle.describe()
    except RPCError as err:
        if _no_such_workflow(err):
            return None
        raise


async def _running_handle(client: Client, repository_id: str) -> WorkflowHandle[Any, Any] | None:
    found = await _described(client, repository_id)
    if found is None or found[1].status != WorkflowExecutionStatus.RUNNING:
        return None
    return found[0]


async def get_status(client: Client, repository_id: str, shards: int = 1) -> SyncStatus | None:
    """The repository workflow's `status` query; None when it is not running. With remote
    checks, `checked_at` comes from the sweep of its shard (`shards`: how many there are).

    Raises `NoWorkerAnswered` when no worker answers within QUERY_TIMEOUT.
    """
    handle = await _running_handle(client, repository_id)
    if handle is None:
        return None
    status: SyncStatus = await _query(handle, repository_id, "status", SyncRepository.status)
    if status.full_sync_interval_seconds:
        status.checked_at = await sweep_checked_at(
            client, check_workflow_id(shard_of(repository_id, shards), shards)
        )
    return status


async def breaker_state(client: Client, repository_id: str) -> str | None:
    """The breaker state the repository's workflow last published (None: no workflow).

    Read from its search attribute, which the server answers: a query would need a
    worker's answer in time, and a busy worker is no reason to refuse.
    """
    found = await _described(client, repository_id)
    if found is None:
        return None
    return found[1].typed_search_attributes.get(search_attributes.BREAKER_STATE)


_SWEEPS: dict[str, tuple[float, datetime | None]] = {}  # workflow id -> (read at, swept_at)
SWEEP_CACHE_SECONDS = 5.0


async def sweep_checked_at(client: Client, workflow_id: str) -> datetime | None:
    """When the sweep's last complete pass began (every repository of its shard was checked
    since), from its activity's heartbeat; None when it is not running or has not passed
    once. Read at most every few seconds per sweep (a status of many repositories asks
    once)."""
    now = time.monotonic()
    cached = _SWEEPS.get(workflow_id)
    if cached is not None and now - cached[0] < SWEEP_CACHE_SECONDS:
        return cached[1]
    swept_at: datetime | None = None
    try:
        description = await client.get_workflow_handle(workflow_id).describe()
        for pending in description.raw_description.pending_activities:
            details = pending.heartbeat_details.payloads
            if details:
                progress = client.data_converter.payload_converter.from_payload(
                    details[0], CheckProgress
                )
                swept_at = progress.swept_at
    except RPCError:
        swept_at = None  # no sweep (checks off, or not started yet)
    _SWEEPS[workflow_id] = (now, swept_at)
    return swept_at


async def _signal_running(client: Client, repository_id: str, signal: Callable[..., Any]) -> bool:
    handle = client.get_workflow_handle_for(SyncRepository.run, sync_workflow_id(repository_id))
    try:
        await handle.signal(signal)
    except RPCError as err:
        if _no_such_workflow(err):
            return False
        raise
    return True


async def pause(client: Client, repository_id: str) -> bool:
    """Stop polling the repository until `resume`; False when no workflow runs."""
    return await _signal_running(client, repository_id, SyncRepository.pause)


async def resume(client: Client, repository_id: str) -> bool:
    """Poll the repository again; False when no workflow runs."""
    return await _signal_running(client, repository_id, SyncRepository.resume)


async def stop(client: Client, repository_id: str) -> None:
    """End the repository's workflow cleanly (repository removed); no workflow is fine."""
    await _signal_running(client, repository_id, SyncRepository.stop)


async def start_bulk(client: Client, settings: Settings, job: BulkInput) -> str:
    """Start a bulk job's `BulkWatches` workflow; its id."""
    from workflows.bulk_watches import BulkWatches

    workflow_id = bulk_workflow_id(job.job_id)
    await client.start_workflow(
        BulkWatches.run,
        job,
        id=workflow_id,
        task_queue=settings.task_queue,
        static_summary=f"{job.label} ({job.total} watches)",
    )
    return workflow_id
