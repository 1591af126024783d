"""CheckRemotes: one workflow per shard that keeps the remote checks running.

It runs one long `check_remotes` activity (an hour by default) and continues-as-new,
so its history stays a dozen events an hour however many repositories the shard
holds. The activity heartbeats once a minute; a worker that dies mid-sweep is
noticed within the heartbeat timeout (5 minutes) and the sweep resumes on another.
"""

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.remote_checks import RemoteCheckActivities
    from models.checks import CheckRemotesInput

# The sweep heartbeats once a minute; a worker that died mid-sweep is noticed within
# this and the sweep resumes on another (meanwhile full syncs and pushes still work).
CHECK_HEARTBEAT = timedelta(minutes=5)
CHECK_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5), maximum_interval=timedelta(minutes=1)
)


@workflow.defn
class CheckRemotes:
    """Keep one shard's remote checks running, forever."""

    @workflow.run
    async def run(self, input: CheckRemotesInput) -> None:
        """One sweep activity, then continue-as-new with the same input."""
        workflow.set_current_details(
            f"checking the remotes of shard {input.shard + 1} of {input.shards} "
            "(counts in the activity's heartbeat)"
        )
        result = await workflow.execute_activity_method(
            RemoteCheckActivities.check_remotes,
            input,
            start_to_close_timeout=timedelta(seconds=input.run_seconds) + CHECK_HEARTBEAT,
            heartbeat_timeout=CHECK_HEARTBEAT,
            retry_policy=CHECK_RETRY,
            summary=f"remote checks, shard {input.shard + 1} of {input.shards}",
        )
        workflow.set_current_details(
            f"shard {input.shard + 1} of {input.shards}: {result.checks} checks, "
            f"{result.signalled} syncs asked for"
        )
        workflow.continue_as_new(input)
