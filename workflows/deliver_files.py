"""DeliverFiles: the one detached child per repository that pushes a commit to its apps.

Each pass lists the apps behind the newest commit (the first pass takes the list
the parent just made) and delivers to them one after another, so deliveries to an
app never overlap. A newer commit arriving meanwhile (`new_commit`) is not started
beside the running pass: the child does one more pass when the current one ends,
for the newest commit only. After every pass it tells the parent
(`deliveries_finished`), which is how `sync --wait` learns that a sync's
deliveries are done. docs/workflows.md describes the tries and turns.
"""

import contextlib
from datetime import datetime

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

# Everything but this module is passed through the sandbox, which would otherwise load
# it afresh for every workflow run (docs/performance.md, First wave). The parent is
# signalled by name (models.sync), not imported: the parent imports this module.
with workflow.unsafe.imports_passed_through():
    from activities.delivery import DeliveryActivities
    from activities.watches import WatchActivities
    from models.delivery import (
        AppDelivery,
        DeliverInput,
        DeliveryErrorType,
        DeliveryStatus,
        RecordFailureInput,
        WatchersInput,
    )
    from models.sync import (
        DELIVERIES_FINISHED_SIGNAL,
        DeliverFilesInput,
        DeliverFilesResult,
        DeliveryPass,
        NewCommit,
        RetryWait,
    )
    from workflows.app_turns import AppState, TryOutcome, progress_of
    from workflows.policies import (
        DB_RETRY,
        DB_TIMEOUT,
        DELIVER_BACKOFF,
        DELIVER_FIRST_WAIT,
        DELIVER_HEARTBEAT,
        DELIVER_TIMEOUT,
        DELIVER_TRIES,
        DELIVER_TRY,
        NOT_RETRIED,
        TO_APPS,
        failure_of,
    )

# Versioning (docs/workflows.md): both patches are deprecated; their calls go in the
# first release after 2027-01-01, when no run recorded before them can still be open.
TAKE_TURNS_PATCH = "apps-take-turns"
RESPECT_NON_RETRYABLE_PATCH = "non-retryable-not-retried"
PASSES_KEPT = 20  # results carried in the workflow result (the rest are in the database)
# The watch was removed or already marked by the activity itself: nothing to record.
_NOT_RECORDED = (DeliveryErrorType.WATCH_MISSING, DeliveryErrorType.GONE)


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
        self._apps: dict[str, AppState] = {}
        self._waiting: RetryWait | None = None  # the retry being waited for, if any

    @workflow.signal
    def new_commit(self, update: NewCommit) -> None:
        """A newer commit was synced: deliver it after the current pass."""
        self._target = update.commit
        self._request_ids += update.request_ids
        self._more = True

    @workflow.query
    def passes(self) -> list[DeliveryPass]:
        """Passes finished in this run."""
        return self._passes

    @workflow.query
    def retry_wait(self) -> RetryWait | None:
        """The app waiting to retry right now (what `sync --wait` shows meanwhile)."""
        return self._waiting

    @workflow.run
    async def run(self, input: DeliverFilesInput) -> DeliverFilesResult:
        """Do passes until no newer commit is owed, then complete."""
        passes_done = input.passes_done
        known_apps = input.app_ids  # for the first pass only
        while True:
            while self._more and not workflow.info().is_continue_as_new_suggested():
                self._more = False
                commit, request_ids = self._target, self._request_ids
                self._request_ids = []
                done = await self._one_pass(commit, request_ids, known_apps)
                known_apps = None
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

    async def _one_pass(
        self, commit: str | None, request_ids: list[str], known_apps: list[str] | None
    ) -> DeliveryPass:
        short = (commit or "empty")[:12]
        if known_apps is not None:
            apps = list(known_apps)  # the parent listed them a moment ago
        else:
            watchers = await workflow.execute_local_activity_method(
                # Local: a quick database read; saves a server round trip per pass.
                WatchActivities.list_watchers,
                WatchersInput(repository_id=self._repository_id, commit=commit),
                start_to_close_timeout=DB_TIMEOUT,
                retry_policy=DB_RETRY,
                summary=f"apps of {self._repository_id} behind {short}",
            )
            apps = list(watchers.behind_app_ids)
        workflow.deprecate_patch(TAKE_TURNS_PATCH)
        outcomes = await self._take_turns(apps, commit, short)
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

    async def _take_turns(
        self, apps: list[str], commit: str | None, short: str
    ) -> list[AppDelivery]:
        """One try per app, healthy apps first; then the retries of those that failed it.

        An app that already failed its previous pass in this run gets no retries here:
        the next poll tries it again, so a dead app never holds the others back.
        """
        states = [self._apps.setdefault(a, AppState(a)) for a in apps]
        for state in states:
            state.start_pass()
        order = [s for s in states if not s.failed_last_pass] + [
            s for s in states if s.failed_last_pass
        ]
        outcomes: dict[str, AppDelivery] = {}
        later: list[AppState] = []
        for number, state in enumerate(order, start=1):
            workflow.set_current_details(
                f"Delivering {self._repository_id} at {short} to app {state.app_id} "
                f"({number} of {len(order)})"
            )
            retries = not state.failed_last_pass
            outcome, how = await self._try(state, commit, short, retries=retries)
            if how == TryOutcome.RETRY_LATER:
                later.append(state)
            else:
                outcomes[state.app_id] = outcome
        for number, state in enumerate(later, start=1):
            workflow.set_current_details(
                f"Retrying {self._repository_id} at {short} to app {state.app_id} "
                f"({number} of {len(later)} that failed their first try)"
            )
            outcomes[state.app_id] = await self._retry(state, commit, short)
        return [outcomes[a] for a in apps]

    async def _retry(self, state: AppState, commit: str | None, short: str) -> AppDelivery:
        """The rest of an app's tries, backing off in workflow time.

        The backoff is a timer rather than the activity's retry policy so that a newer
        commit (`new_commit`) can cut it short: the pass for the newest commit comes
        first, and the app gets its turn there. A Retry-After from the app stretches
        the wait.
        """
        assert state.first_failure is not None
        last = state.first_failure
        delay = DELIVER_FIRST_WAIT
        for attempt in range(2, DELIVER_TRIES + 1):
            now = workflow.now()
            not_before = max(now + delay, state.not_before or now)
            state.not_before = None
            self._waiting = RetryWait(
                app_id=state.app_id,
                attempt=attempt,
                attempts=DELIVER_TRIES,
                at=not_before,
                error_type=last.error_type or "",
                error=last.error or "",
            )
            try:
                cut_short = await self._newer_commit_before(not_before)
            finally:
                self._waiting = None
            if cut_short:
                break
            outcome, how = await self._try(state, commit, short, retries=True)
            if how != TryOutcome.RETRY_LATER:
                return outcome
            last = outcome
            delay *= DELIVER_BACKOFF
        return await self._record_failure(state, last.error_type or "", last.error or "")

    async def _newer_commit_before(self, deadline: datetime) -> bool:
        """Wait until `deadline`, or less if a newer commit is owed; True in that case."""
        remaining = (deadline - workflow.now()).total_seconds()
        if remaining > 0 and not self._more:
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(lambda: self._more, timeout=remaining)
        return self._more

    async def _try(
        self, state: AppState, commit: str | None, short: str, *, retries: bool
    ) -> tuple[AppDelivery, TryOutcome]:
        """One `deliver_changes` try for one app.

        With `retries`, a retryable failure is not recorded: it comes back as
        RETRY_LATER and the caller tries the app again after the others.
        """
        app_id = state.app_id
        try:
            result = await workflow.execute_activity_method(
                DeliveryActivities.deliver_changes,
                DeliverInput(
                    app_id=app_id,
                    repository_id=self._repository_id,
                    commit=commit,
                    resume=state.resume_at(commit),
                ),
                start_to_close_timeout=DELIVER_TIMEOUT,
                heartbeat_timeout=DELIVER_HEARTBEAT,
                retry_policy=DELIVER_TRY,
                priority=TO_APPS,
                summary=f"deliver {self._repository_id} at {short} to app {app_id}",
            )
            removed = result.status == DeliveryStatus.REMOVED
            return state.final(result), TryOutcome.REMOVED if removed else TryOutcome.DELIVERED
        except ActivityError as err:
            error_type, message = failure_of(err)
            state.note_failed_try(commit, progress_of(err.cause))
            cause = err.cause
            delay = cause.next_retry_delay if isinstance(cause, ApplicationError) else None
            if retries and delay is not None:
                # 429/503 with Retry-After: the app's later tries wait as it asked.
                state.not_before = workflow.now() + delay
            # An error the activity marked non-retryable (a commit gone from the remote)
            # is not tried again either.
            final = isinstance(cause, ApplicationError) and cause.non_retryable
            if final:
                workflow.deprecate_patch(RESPECT_NON_RETRYABLE_PATCH)
        if retries and error_type not in NOT_RETRIED and not final:
            failed = AppDelivery(
                app_id=app_id, status=DeliveryStatus.FAILED, error_type=error_type, error=message
            )
            if state.first_failure is None:
                state.first_failure = failed
            return failed, TryOutcome.RETRY_LATER
        outcome = await self._record_failure(state, error_type, message)
        removed = outcome.status == DeliveryStatus.REMOVED
        return outcome, TryOutcome.REMOVED if removed else TryOutcome.FAILED

    async def _record_failure(self, state: AppState, error_type: str, message: str) -> AppDelivery:
        """Record a failed delivery on the app's watch (one app's failure stops no other)."""
        if error_type not in _NOT_RECORDED:
            await workflow.execute_activity_method(
                WatchActivities.record_delivery_failure,
                RecordFailureInput(
                    app_id=state.app_id,
                    repository_id=self._repository_id,
                    error_type=error_type,
                    error=message,
                ),
                start_to_close_timeout=DB_TIMEOUT,
                retry_policy=DB_RETRY,
                summary=f"record failed delivery of {self._repository_id} to app {state.app_id}",
            )
        status = DeliveryStatus.FAILED
        if error_type == DeliveryErrorType.GONE:
            status = DeliveryStatus.DISABLED
        elif error_type == DeliveryErrorType.WATCH_MISSING:
            status = DeliveryStatus.REMOVED
        return state.final(
            AppDelivery(app_id=state.app_id, status=status, error_type=error_type, error=message)
        )

    async def _report(self, parent_workflow_id: str | None, done: DeliveryPass) -> None:
        if not parent_workflow_id:
            return
        # By id only, so it reaches the parent's current run after a continue-as-new.
        parent = workflow.get_external_workflow_handle(parent_workflow_id)
        try:
            await parent.signal(DELIVERIES_FINISHED_SIGNAL, done)
        except FailureError:
            # The parent was stopped or terminated: the deliveries stand on their own.
            workflow.logger.info("parent %s is gone; pass not reported", parent_workflow_id)
