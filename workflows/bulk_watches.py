"""BulkWatches: the admin page's "retry all" or "resync all", one watch after another.

A workflow, not a task in the API process: it survives API and worker restarts, shows in
the Web UI as `bulk/{job_id}`, and its steps' rows (which also list the watches: a large
job's list would not fit Temporal's payload limit) are the progress the page reads. Each
step changes its watch once (its row is marked in the same transaction), so a retried
step never resends an app's files twice.
"""

from dataclasses import replace
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.bulk import BulkActivities
    from models.bulk import BulkFailureInput, BulkInput, BulkResult, BulkStepInput
    from workflows.policies import DB_RETRY, DB_TIMEOUT, failure_of

# Steps per run before continue-as-new: ~6 history events each keeps a run far below
# Temporal's 51,200-event limit whatever the job's size.
STEPS_PER_RUN = 500
STEP_TIMEOUT = timedelta(seconds=60)
# A step fails when the database or Temporal keep refusing for about five minutes.
STEP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=10,
)


@workflow.defn
class BulkWatches:
    """Retry or resync a list of watches, in order."""

    @workflow.run
    async def run(self, input: BulkInput) -> BulkResult:
        """Each watch once; a watch that cannot be changed is counted as failed."""
        done, failed = input.done, input.failed
        for position in range(input.next, input.total):
            if position > input.next and (
                position - input.next >= STEPS_PER_RUN
                or workflow.info().is_continue_as_new_suggested()
            ):
                workflow.continue_as_new(replace(input, next=position, done=done, failed=failed))
            workflow.set_current_details(_progress(input, done, failed))
            try:
                result = await workflow.execute_activity_method(
                    BulkActivities.apply_bulk_step,
                    BulkStepInput(input.job_id, position, input.action),
                    start_to_close_timeout=STEP_TIMEOUT,
                    retry_policy=STEP_RETRY,
                )
                error = result.error
            except ActivityError as err:
                error = failure_of(err)[1]
                await workflow.execute_activity_method(
                    BulkActivities.record_bulk_failure,
                    BulkFailureInput(input.job_id, position, error),
                    start_to_close_timeout=DB_TIMEOUT,
                    retry_policy=DB_RETRY,
                )
            done += 1
            failed += error is not None
        workflow.set_current_details(_progress(input, done, failed))
        return BulkResult(done=done, failed=failed)


def _progress(input: BulkInput, done: int, failed: int) -> str:
    return f"{input.label}: {done} of {input.total} done" + (f", {failed} failed" if failed else "")
