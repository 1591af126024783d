"""The remote-check activity: one shard's long sweep of cheap `ls-remote` checks.

Async and long-running: it holds one activity slot for `run_seconds`, heartbeats
its counts (heartbeats are not history events), and signals the repositories that
have work through this worker's Temporal client.
"""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from models.checks import CheckRemotesInput, CheckRemotesResult, RemoteMoved
from models.sync import REMOTE_MOVED_SIGNAL, sync_workflow_id
from treecast.config import Settings
from treecast.remote_checks import RemoteChecker


class RemoteCheckActivities:
    """Remote checks for the repositories of one shard."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @activity.defn
    async def check_remotes(self, input: CheckRemotesInput) -> CheckRemotesResult:
        """Check each repository of the shard every poll interval for `input.run_seconds`."""
        client: Client = activity.client()

        async def wake(repository_id: str, moved: RemoteMoved) -> None:
            handle = client.get_workflow_handle(sync_workflow_id(repository_id))
            # By name: activities never import workflows.
            await handle.signal(REMOTE_MOVED_SIGNAL, moved)

        checker = RemoteChecker(
            self.settings,
            input.shard,
            input.shards,
            signal=wake,
            heartbeat=activity.heartbeat,
            concurrency=input.concurrency,
        )
        sweep = asyncio.ensure_future(checker.run(input.run_seconds))
        stopping = asyncio.ensure_future(activity.wait_for_worker_shutdown())
        await asyncio.wait({sweep, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not sweep.done():
            # A stopping worker waits for its activities (TREECAST_WORKER_GRACE_SECONDS):
            # an hour-long sweep would hold every shutdown that long. It resumes elsewhere.
            sweep.cancel()
            raise ApplicationError(
                "the worker is stopping; the sweep resumes on another", type="WorkerStopping"
            )
        done = sweep.result()
        activity.logger.info(
            "remote checks of shard %d/%d: %d checks, %d syncs asked for, %d failed",
            input.shard,
            input.shards,
            done.checks,
            done.signalled,
            done.failed,
        )
        return CheckRemotesResult(checks=done.checks, signalled=done.signalled, failed=done.failed)
