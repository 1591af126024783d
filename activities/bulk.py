"""The bulk job's activities: change one watch (once, however often the step is retried),
then ask its repository's workflow to sync; record a step that kept failing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from temporalio import activity

from models.bulk import BulkAction, BulkFailureInput, BulkStepInput, BulkStepResult
from treecast import sync_loops
from treecast.config import Settings
from treecast.store import bulk


class BulkActivities:
    """One step of a bulk retry or resync."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def all(self) -> list[Callable[..., Any]]:
        """The activities to register."""
        return [self.apply_bulk_step, self.record_bulk_failure]

    @activity.defn
    async def apply_bulk_step(self, input: BulkStepInput) -> BulkStepResult:
        """Retry: the watch pending again, breaker closed, sync now. Resync: the app's ledger
        forgotten, sync now. The database part happens once; asking Temporal again on a
        retry is harmless (one more "sync now" for a loop that coalesces them)."""
        target = await asyncio.to_thread(bulk.apply_step, self.settings, input)
        if isinstance(target, str):
            return BulkStepResult(error=target)
        client = activity.client()
        rid, interval = target.repository_id, target.poll_interval_seconds
        if input.action == BulkAction.RETRY:
            await sync_loops.reset(client, self.settings, rid, interval)
        else:
            await sync_loops.start_sync(client, self.settings, rid, interval, sync_now=True)
        await asyncio.to_thread(bulk.finish_step, self.settings, input.job_id, input.position)
        return BulkStepResult()

    @activity.defn
    async def record_bulk_failure(self, input: BulkFailureInput) -> None:
        """A step that kept failing counts as failed, with its error."""
        await asyncio.to_thread(
            bulk.finish_step, self.settings, input.job_id, input.position, input.error
        )
