"""Client-side calls `starter.py` makes on the per-repository workflows.

Everything here talks to Temporal only (never the database or git): start or
signal a repository's `SyncRepository`, follow one sync to the end of its
deliveries, read its status, reset its breaker, pause, resume and stop it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio.api.enums.v1 import WorkflowExecutionStatus
from temporalio.client import Client, WorkflowHandle, WorkflowQueryFailedError
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.envconfig import ClientConfig
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode

from models.sync import (
    RequestState,
    SyncOutcome,
    SyncRepositoryInput,
    SyncRequest,
    SyncStatus,
    deliver_workflow_id,
    sync_workflow_id,
)
from treecast.config import Settings
from workflows import search_attributes
from workflows.deliver_files import DeliverFiles
from workflows.sync_repository import SyncRepository

POLL_FIRST = 0.05  # seconds between `request` queries at first...
POLL_MAX = 0.5  # ...backing off to this (bounds the latency sync --wait adds)
# A query is answered by a worker. With none polling the task queue, Temporal holds the
# query until the call's deadline (30 s by default), so starter.py's queries give up sooner.
QUERY_TIMEOUT = timedelta(seconds=5)


class NoWorkerAnswered(Exception):
    """A query got no answer within QUERY_TIMEOUT: no worker polls the workflow's task queue
    (or the one that does is stuck)."""

    def __init__(self, repository_id: str, query: str, task_queue: str | None) -> None:
        self.repository_id = repository_id
        self.query = query
        self.task_queue = task_queue  # the workflow's; None when describing it failed too
        super().__init__(
            f"no worker answered the {query} query of {repository_id} within "
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


async def _query(
    handle: WorkflowHandle, repository_id: str, label: str, query: Callable[..., Any], *args: Any
) -> Any:
    """Run a query, turning "no answer in time" into `NoWorkerAnswered` (`label` names it)."""
    try:
        return await handle.query(query, *args, rpc_timeout=QUERY_TIMEOUT)
    except RPCError as err:
        # The client's own deadline ends the call as CANCELLED "Timeout expired"; the
        # server's as DEADLINE_EXCEEDED.
        if err.status not in (RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED):
            raise
    task_queue: str | None
    try:
        task_queue = (await handle.describe()).task_queue
    except RPCError:
        task_queue = None
    raise NoWorkerAnswered(repository_id, label, task_queue) from None


async def connect(settings: Settings, runtime: Runtime | None = None) -> Client:
    """A client for the configured Temporal address and namespace.

    Profiles and `TEMPORAL_*` variables (API key, TLS) apply as for any Temporal
    tool; the address and namespace come from Settings, which read the same
    variables, so both agree.
    """
    config = ClientConfig.load_client_connect_config()
    config["target_host"] = settings.temporal_address
    config["namespace"] = settings.temporal_namespace
    return await Client.connect(**config, runtime=runtime)


def sync_input(
    settings: Settings, repository_id: str, poll_interval_seconds: int | None = None
) -> SyncRepositoryInput:
    """The workflow input for a repository, from Settings (breaker and timeouts)."""
    return SyncRepositoryInput(
        repository_id=repository_id,
        poll_interval_seconds=poll_interval_seconds or settings.poll_interval_seconds,
        breaker_threshold=settings.breaker_threshold,
        breaker_cooldown_seconds=settings.breaker_cooldown_seconds,
        notice_timeout_seconds=settings.notice_timeout_seconds,
        # a fetch runs a few git commands, each bounded by the git timeout
        snapshot_timeout_seconds=max(60.0, settings.git_timeout_seconds * 4),
    )


async def _signal_with_start(
    client: Client,
    settings: Settings,
    repository_id: str,
    poll_interval_seconds: int | None,
    signal: str,
    request: SyncRequest,
) -> None:
    # Signal-with-start: the running workflow gets the signal; if there is none, one
    # starts with it. Two calls never make two workflows for one repository.
    await client.start_workflow(
        SyncRepository.run,
        sync_input(settings, repository_id, poll_interval_seconds),
        id=sync_workflow_id(repository_id),
        task_queue=settings.task_queue,
        start_signal=signal,
        start_signal_args=[request],
        search_attributes=_initial_attributes(repository_id),
        static_summary=_summary(repository_id),
    )


def _initial_attributes(repository_id: str) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [SearchAttributePair(search_attributes.REPOSITORY_ID, repository_id)]
    )


def _summary(repository_id: str) -> str:
    return f"Sync loop of repository {repository_id}"


async def start_sync(
    client: Client,
    settings: Settings,
    repository_id: str,
    poll_interval_seconds: int | None,
    *,
    sync_now: bool,
) -> None:
    """Make sure the repository's sync loop runs; with `sync_now`, also sync right away.

    A new workflow syncs on its first run either way; `sync_now=False` just
    leaves a running one on its schedule.
    """
    if sync_now:
        await _signal_with_start(
            client, settings, repository_id, poll_interval_seconds, "sync_now", SyncRequest()
        )
        return
    # USE_EXISTING: a running loop is left alone, so starting twice never runs two.
    await client.start_workflow(
        SyncRepository.run,
        sync_input(settings, repository_id, poll_interval_seconds),
        id=sync_workflow_id(repository_id),
        task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=_initial_attributes(repository_id),
        static_summary=_summary(repository_id),
    )


async def sync_and_wait(
    client: Client,
    settings: Settings,
    repository_id: str,
    poll_interval_seconds: int | None,
    on_progress: Callable[[str], None] | None,
    timeout: float,
) -> SyncOutcome:
    """Sync now and wait until that sync's deliveries have finished (or it was refused).

    The outcome is final: DONE (with per-app results), FAILED, BREAKER_OPEN,
    PAUSED or STOPPED. Raises `TimeoutError` if it is not final within `timeout`, and
    `NoWorkerAnswered` when no worker answers a progress query.
    """
    request_id = uuid.uuid4().hex
    await _signal_with_start(
        client,
        settings,
        repository_id,
        poll_interval_seconds,
        "sync_now",
        SyncRequest(request_id=request_id),
    )
    # No run id: queries follow the workflow across continue-as-new.
    handle = client.get_workflow_handle(sync_workflow_id(repository_id))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = POLL_FIRST
    last_seen = ""
    while True:
        outcome = await _query(
            handle, repository_id, "progress", SyncRepository.request, request_id
        )
        if outcome is not None:
            line = _progress_line(outcome)
            if outcome.state == RequestState.DELIVERING and on_progress is not None:
                files = await delivery_progress(client, repository_id)
                line += f": {files}" if files else ""
            if on_progress is not None and line != last_seen:
                on_progress(line)
            last_seen = line
            if outcome.final:
                return outcome
        if loop.time() + delay > deadline:
            raise TimeoutError(
                f"sync of {repository_id} not finished after {timeout:g} s "
                f"(last state: {outcome.state if outcome else 'not yet received'}); "
                "it goes on in the background: see `starter.py status`"
            )
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, POLL_MAX)


async def delivery_progress(client: Client, repository_id: str) -> str | None:
    """ "N of M files" of the delivery running now, from its activity's heartbeat; None if none."""
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
        latest = details[-1] if details else None
        if isinstance(latest, dict) and latest.get("total"):
            return f"{latest.get('done', 0)} of {latest['total']} files"
    if description.status != WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_RUNNING:
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


def _progress_line(outcome: SyncOutcome) -> str:
    commit = (outcome.commit or "")[:12]
    if outcome.state == RequestState.SYNCING:
        return "fetching"
    if outcome.state == RequestState.DELIVERING:
        return f"delivering {commit}"
    if outcome.state == RequestState.PENDING:
        return "waiting for the running sync to finish"
    return f"{outcome.state}: {outcome.message or commit}"


async def _running_handle(client: Client, repository_id: str) -> WorkflowHandle | None:
    handle = client.get_workflow_handle(sync_workflow_id(repository_id))
    try:
        description = await handle.describe()
    except RPCError as err:
        if _no_such_workflow(err):
            return None
        raise
    if description.status != WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_RUNNING:
        return None
    return handle


async def get_status(client: Client, repository_id: str) -> SyncStatus | None:
    """The repository workflow's `status` query; None when it is not running.

    Raises `NoWorkerAnswered` when no worker answers within QUERY_TIMEOUT.
    """
    handle = await _running_handle(client, repository_id)
    if handle is None:
        return None
    status: SyncStatus = await _query(handle, repository_id, "status", SyncRepository.status)
    return status


async def reset(
    client: Client,
    settings: Settings,
    repository_id: str,
    poll_interval_seconds: int | None = None,
) -> None:
    """Close the repository's breaker and sync right away (starting its loop if needed)."""
    await _signal_with_start(
        client, settings, repository_id, poll_interval_seconds, "reset", SyncRequest()
    )


async def _signal_running(client: Client, repository_id: str, signal: str) -> bool:
    handle = client.get_workflow_handle(sync_workflow_id(repository_id))
    try:
        await handle.signal(signal)
    except RPCError as err:
        if _no_such_workflow(err):
            return False
        raise
    return True


async def pause(client: Client, repository_id: str) -> bool:
    """Stop polling the repository until `resume`; False when no workflow runs."""
    return await _signal_running(client, repository_id, "pause")


async def resume(client: Client, repository_id: str) -> bool:
    """Poll the repository again; False when no workflow runs."""
    return await _signal_running(client, repository_id, "resume")


async def stop(client: Client, repository_id: str) -> None:
    """End the repository's workflow cleanly (repository removed); no workflow is fine."""
    await _signal_running(client, repository_id, "stop")
