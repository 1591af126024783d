"""A repository's `SyncRepository` as clients start it and poke it: its input from the
settings, the options every start passes (one id per repository, its search attribute),
sync now and reset, each a signal-with-start by name.

By name (`models.sync`), so that whoever calls these (the service layer, the bulk
activity) does not import `workflows/`: activities never do (docs/contracts.md).
"""

from __future__ import annotations

from typing import Any

from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy

from models import search_attributes
from models.sync import (
    RESET_SIGNAL,
    SYNC_NOW_SIGNAL,
    SYNC_WORKFLOW,
    SyncRepositoryInput,
    SyncRequest,
    sync_workflow_id,
)
from treecast.config import Settings


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
        full_sync_interval_seconds=settings.full_sync_seconds or None,
    )


def start_options(settings: Settings, repository_id: str) -> dict[str, Any]:
    """What every start of a repository's loop passes (one id per repository)."""
    return {
        "id": sync_workflow_id(repository_id),
        "task_queue": settings.task_queue,
        "search_attributes": TypedSearchAttributes(
            [SearchAttributePair(search_attributes.REPOSITORY_ID, repository_id)]
        ),
        "static_summary": f"Sync loop of repository {repository_id}",
    }


async def start_sync(
    client: Client,
    settings: Settings,
    repository_id: str,
    poll_interval_seconds: int | None,
    *,
    sync_now: bool,
    reuse_recent: bool = False,
) -> None:
    """Make sure the repository's sync loop runs; with `sync_now`, also sync right away
    (`reuse_recent`: a sync within the poll interval will do, see `SyncRequest`).

    A new workflow syncs on its first run either way; `sync_now=False` just leaves a
    running one on its schedule. Signal-with-start (or USE_EXISTING): starting twice
    never runs two loops.
    """
    workflow_input = sync_input(settings, repository_id, poll_interval_seconds)
    options = start_options(settings, repository_id)
    if sync_now:
        await client.start_workflow(
            SYNC_WORKFLOW,
            workflow_input,
            start_signal=SYNC_NOW_SIGNAL,
            start_signal_args=[SyncRequest(reuse_recent=reuse_recent)],
            **options,
        )
        return
    await client.start_workflow(
        SYNC_WORKFLOW,
        workflow_input,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        **options,
    )


async def reset(
    client: Client,
    settings: Settings,
    repository_id: str,
    poll_interval_seconds: int | None = None,
) -> None:
    """Close the repository's breaker and sync right away (starting its loop if needed)."""
    await client.start_workflow(
        SYNC_WORKFLOW,
        sync_input(settings, repository_id, poll_interval_seconds),
        start_signal=RESET_SIGNAL,
        start_signal_args=[SyncRequest()],
        **start_options(settings, repository_id),
    )
