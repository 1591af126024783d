"""DeliverFiles: the one detached child per repository that pushes a commit to its apps.

Each pass lists the apps behind the newest commit and runs `deliver_changes` for
them one after another, in their stable order, so deliveries to an app never
overlap. A newer commit arriving meanwhile (the `new_commit` signal) is not
started beside the running pass: the child does one more pass when the current
one ends, for the newest commit only. After every pass it tells the parent
(`deliveries_finished`), which is how `sync --wait` learns that a sync's
deliveries are done.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

with workflow.unsafe.imports_passed_through():
    from models.delivery import (
        DeliverInput,
        DeliverResult,
        DeliveryErrorType,
        RecordFailureInput,
        WatchersInput,
        WatchersResult,
    )
    from models.sync import (
        AppOutcome,
        DeliverFilesInput,
        DeliverFilesResult,
        DeliveryPass,
        NewCommit,
    )
    from models.tables import WatchStatus
    from treecast.redact import redact

DELIVER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_attempts=5,
    # Retrying cannot help: the target is forbidden, gone, or no longer watching.
    non_retryable_error_types=[
        DeliveryErrorType.BLOCKED_ADDRESS,
        DeliveryErrorType.GONE,
        DeliveryErrorType.WATCH_MISSING,
    ],
)
# A big first delivery can take long; heartbeats detect a dead worker. The activity
# heartbeats every second while it lives (also during a slow POST), so a short
# timeout only measures how soon a killed worker's delivery resumes elsewhere.
DELIVER_TIMEOUT = timedelta(hours=2)
DELIVER_HEARTBEAT = timedelta(seconds=10)
DB_TIMEOUT = timedelta(seconds=60)
DB_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
)
PASSES_KEPT = 20  # results carried in the workflow result (the rest are in the database)
# The watch was removed or already marked by the activity itself: nothing to record.
_NOT_RECORDED = (DeliveryErrorType.WATCH_MISSING, DeliveryErrorType.GONE)


def failure_of(err: BaseException) -> tuple[str, str]:
    """The error class and a redacted one-line message of an activity failure."""
    cause = err.cause if isinstance(err, ActivityError) and err.cause is not None else err
    if isinstance(cause, ApplicationError) and cause.type:
        error_type = cause.type
    else:
        error_type = type(cause).__name__
    message = str(cause.message if isinstance(cause, FailureError) else cause)
    return error_type, redact(message.splitlines()[0] if message else error_type)


@workflow.defn
class DeliverFiles:
    """Deliver a repository's newest commit to every app behind it, one app at a time."""

    @workflow.init
    def __init__(self, input: DeliverFilesInput) -> None:
        self._repository_id = input.repository_id
        self._target: str | None = input.commit
        self._request_ids: list[str] = list(input.request_ids)
        self._more = True  # a pass is owed for `_target`
        self._passes: list[DeliveryPass] = []

    @workflow.signal(name="new_commit")
    def new_commit(self, update: NewCommit) -> None:
        """A newer commit was synced: deliver it after the current pass."""
        self._target = update.commit
        self._request_ids += update.request_ids
        self._more = True

    @workflow.query(name="passes")
    def passes(self) -> list[DeliveryPass]:
        """Passes finished in this run."""
        return self._passes

    @workflow.run
    async def run(self, input: DeliverFilesInput) -> DeliverFilesResult:
        """Do passes until no newer commit is owed, then complete."""
        passes_done = input.passes_done
        while True:
            while self._more and not workflow.info().is_continue_as_new_suggested():
                self._more = False
                commit, request_ids = self._target, self._request_ids
                self._request_ids = []
                done = await self._one_pass(commit, request_ids)
                passes_done += 1
                self._passes = [*self._passes, done][-PASSES_KEPT:]
                await self._report(input.parent_workflow_id, done)
            # A `new_commit` may land in the very task that would complete us: let
            # handlers finish, then look again before ending.
            await workflow.wait_condition(workflow.all_handlers_finished)
            if not self._more:
                return DeliverFilesResult(repository_id=self._repository_id, passes=self._passes)
            if workflow.info().is_continue_as_new_suggested():
                workflow.continue_as_new(
                    DeliverFilesInput(
                        repository_id=self._repository_id,
                        commit=self._target,
                        request_ids=self._request_ids,
                        parent_workflow_id=input.parent_workflow_id,
                        passes_done=passes_done,
                    )
                )

    async def _one_pass(self, commit: str | None, request_ids: list[str]) -> DeliveryPass:
        short = (commit or "empty")[:12]
        watchers: WatchersResult = await workflow.execute_local_activity(
            # Local: a quick database read on the hot path of every sync; saves a
            # server round trip per step (docs/performance.md).
            "list_watchers",
            WatchersInput(repository_id=self._repository_id, commit=commit),
            result_type=WatchersResult,
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary=f"apps of {self._repository_id} behind {short}",
        )
        apps = list(watchers.behind_app_ids)
        outcomes: list[AppOutcome] = []
        for number, app_id in enumerate(apps, start=1):
            workflow.set_current_details(
                f"Delivering {self._repository_id} at {short} to app {app_id} "
                f"({number} of {len(apps)})"
            )
            outcomes.append(await self._deliver_one(app_id, commit, short))
        delivered = sum(o.delivered for o in outcomes)
        failed = sum(1 for o in outcomes if o.error_type)
        workflow.set_current_details(
            f"Delivered {self._repository_id} at {short}: {delivered} files to "
            f"{len(apps)} apps, {failed} failed"
        )
        return DeliveryPass(
            repository_id=self._repository_id,
            commit=commit,
            request_ids=request_ids,
            apps=outcomes,
            finished_at=workflow.now(),
        )

    async def _deliver_one(self, app_id: str, commit: str | None, short: str) -> AppOutcome:
        try:
            result: DeliverResult = await workflow.execute_activity(
                "deliver_changes",
                DeliverInput(app_id=app_id, repository_id=self._repository_id, commit=commit),
                result_type=DeliverResult,
                start_to_close_timeout=DELIVER_TIMEOUT,
                heartbeat_timeout=DELIVER_HEARTBEAT,
                retry_policy=DELIVER_RETRY,
                summary=f"deliver {self._repository_id} at {short} to app {app_id}",
            )
            return AppOutcome.from_result(result)
        except ActivityError as err:
            error_type, message = failure_of(err)
        # One app's failure is recorded on its watch and does not stop the others.
        if error_type not in _NOT_RECORDED:
            await workflow.execute_activity(
                "record_delivery_failure",
                RecordFailureInput(
                    app_id=app_id,
                    repository_id=self._repository_id,
                    error_type=error_type,
                    error=message,
                ),
                start_to_close_timeout=DB_TIMEOUT,
                retry_policy=DB_RETRY,
                summary=f"record failed delivery of {self._repository_id} to app {app_id}",
            )
        status = WatchStatus.FAILED
        if error_type == DeliveryErrorType.GONE:
            status = WatchStatus.DISABLED
        elif error_type == DeliveryErrorType.WATCH_MISSING:
            status = "removed"
        return AppOutcome(app_id=app_id, status=status, error_type=error_type, error=message)

    async def _report(self, parent_workflow_id: str | None, done: DeliveryPass) -> None:
        if not parent_workflow_id:
            return
        # By id only, so it reaches the parent's current run after a continue-as-new.
        parent = workflow.get_external_workflow_handle(parent_workflow_id)
        try:
            await parent.signal("deliveries_finished", done)
        except FailureError:
            # The parent was stopped or terminated: the deliveries stand on their own.
            workflow.logger.info("parent %s is gone; pass not reported", parent_workflow_id)
