"""DeliverFiles: the one detached child per repository that pushes a commit to its apps.

Each pass lists the apps behind the newest commit (the first pass takes the list
the parent just made) and runs `deliver_changes` for them one after another, in
their stable order, so deliveries to an app never overlap. A newer commit arriving meanwhile (the `new_commit` signal) is not
started beside the running pass: the child does one more pass when the current
one ends, for the newest commit only. After every pass it tells the parent
(`deliveries_finished`), which is how `sync --wait` learns that a sync's
deliveries are done.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, FailureError
from temporalio.exceptions import TimeoutError as ActivityTimeoutError

with workflow.unsafe.imports_passed_through():
    from models.delivery import (
        AcknowledgedCounts,
        ChunkResume,
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
        RetryWait,
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
# Every app's first attempt in a pass is a single try; an app that fails it gets the
# remaining attempts only after every other app had its turn, so a dead app costs
# the others one attempt, not its whole retry budget (docs/workflows.md).
FIRST_TRY = RetryPolicy(
    maximum_attempts=1, non_retryable_error_types=DELIVER_RETRY.non_retryable_error_types
)
# Histories recorded before apps took turns replay the old one-app-at-a-time path.
TAKE_TURNS_PATCH = "apps-take-turns"
RESPECT_NON_RETRYABLE_PATCH = "non-retryable-not-retried"
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
_NOT_RETRIED = tuple(DELIVER_RETRY.non_retryable_error_types or ())
_RETRY_LATER = "retry_later"  # an outcome of a first try that failed (internal)
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
        self._failing: set[str] = set()  # apps whose last pass in this run failed
        self._not_before: dict[str, datetime] = {}  # Retry-After of a failed first try
        self._first_failures: dict[str, AppOutcome] = {}  # first tries awaiting retries
        self._waiting: RetryWait | None = None  # the retry being waited for, if any
        # Files that failed tries in the running pass had delivered, per app; they
        # count in the app's outcome when it has one.
        self._earlier: dict[str, AcknowledgedCounts] = {}
        # Where an app's failed try left a chunked file, and for which commit: its next
        # try in the pass resumes there instead of at chunk 0.
        self._resume: dict[str, tuple[str | None, ChunkResume]] = {}

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

    @workflow.query(name="retry_wait")
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
            watchers: WatchersResult = await workflow.execute_local_activity(
                # Local: a quick database read; saves a server round trip per pass.
                "list_watchers",
                WatchersInput(repository_id=self._repository_id, commit=commit),
                result_type=WatchersResult,
                start_to_close_timeout=DB_TIMEOUT,
                retry_policy=DB_RETRY,
                summary=f"apps of {self._repository_id} behind {short}",
            )
            apps = list(watchers.behind_app_ids)
        if workflow.patched(TAKE_TURNS_PATCH):
            outcomes = await self._take_turns(apps, commit, short)
        else:
            outcomes = []
            for number, app_id in enumerate(apps, start=1):
                self._details(short, app_id, number, len(apps))
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

    def _details(self, short: str, app_id: str, number: int, count: int) -> None:
        workflow.set_current_details(
            f"Delivering {self._repository_id} at {short} to app {app_id} ({number} of {count})"
        )

    async def _take_turns(
        self, apps: list[str], commit: str | None, short: str
    ) -> list[AppOutcome]:
        """One try per app, healthy apps first; then the retries of those that failed it.

        An app that already failed its previous pass in this run gets no retries here:
        the next poll tries it again, so a dead app never holds the others back.
        """
        order = [a for a in apps if a not in self._failing] + [
            a for a in apps if a in self._failing
        ]
        outcomes: dict[str, AppOutcome] = {}
        later: list[str] = []
        for number, app_id in enumerate(order, start=1):
            self._details(short, app_id, number, len(order))
            retry_later = app_id not in self._failing
            outcome = await self._deliver_one(
                app_id, commit, short, policy=FIRST_TRY, retry_later=retry_later
            )
            if outcome.status == _RETRY_LATER:
                later.append(app_id)
            else:
                outcomes[app_id] = outcome
        for number, app_id in enumerate(later, start=1):
            workflow.set_current_details(
                f"Retrying {self._repository_id} at {short} to app {app_id} "
                f"({number} of {len(later)} that failed their first try)"
            )
            outcomes[app_id] = await self._retry(app_id, commit, short)
        for app_id, outcome in outcomes.items():
            if outcome.status == WatchStatus.FAILED:
                self._failing.add(app_id)
            else:
                self._failing.discard(app_id)
        return [outcomes[a] for a in apps]

    async def _retry(self, app_id: str, commit: str | None, short: str) -> AppOutcome:
        """The rest of an app's attempts, one try at a time, backing off in workflow time.

        The backoff is a timer rather than the activity's retry policy so that a newer
        commit (`new_commit`) can cut it short: the pass for the newest commit comes
        first, and the app gets its turn there. A Retry-After from the app stretches
        the wait.
        """
        last: AppOutcome | None = None
        delay = DELIVER_RETRY.initial_interval or timedelta(seconds=1)
        attempts = DELIVER_RETRY.maximum_attempts or 5
        for attempt in range(2, attempts + 1):
            not_before = max(workflow.now() + delay, self._not_before.pop(app_id, workflow.now()))
            failed = last or self._first_failures[app_id]
            self._waiting = RetryWait(
                app_id=app_id,
                attempt=attempt,
                attempts=attempts,
                at=not_before,
                error_type=failed.error_type or "",
                error=failed.error or "",
            )
            try:
                cut_short = await self._newer_commit_before(not_before)
            finally:
                self._waiting = None
            if cut_short:
                break
            outcome = await self._deliver_one(
                app_id, commit, short, policy=FIRST_TRY, retry_later=True
            )
            if outcome.status != _RETRY_LATER:
                self._first_failures.pop(app_id, None)
                return outcome
            last = outcome
            delay *= DELIVER_RETRY.backoff_coefficient
        self._not_before.pop(app_id, None)
        if last is None:  # cut short before any retry: the first try's error stands
            last = self._first_failures[app_id]
        return await self._record_failure(app_id, last.error_type or "", last.error or "")

    async def _newer_commit_before(self, deadline: datetime) -> bool:
        """Wait until `deadline`, or less if a newer commit is owed; True in that case."""
        remaining = (deadline - workflow.now()).total_seconds()
        if remaining > 0 and not self._more:
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(lambda: self._more, timeout=remaining)
        return self._more

    async def _deliver_one(
        self,
        app_id: str,
        commit: str | None,
        short: str,
        *,
        policy: RetryPolicy = DELIVER_RETRY,
        retry_later: bool = False,
    ) -> AppOutcome:
        """Run `deliver_changes` for one app and record a failure on its watch.

        With `retry_later`, a retryable failure is not recorded: the outcome's status
        is `_RETRY_LATER` and the caller retries the app after the others.
        """
        try:
            result: DeliverResult = await workflow.execute_activity(
                "deliver_changes",
                DeliverInput(
                    app_id=app_id,
                    repository_id=self._repository_id,
                    commit=commit,
                    resume=self._resume_at(app_id, commit),
                ),
                result_type=DeliverResult,
                start_to_close_timeout=DELIVER_TIMEOUT,
                heartbeat_timeout=DELIVER_HEARTBEAT,
                retry_policy=policy,
                summary=f"deliver {self._repository_id} at {short} to app {app_id}",
            )
            self._resume.pop(app_id, None)
            return self._counting_earlier(AppOutcome.from_result(result))
        except ActivityError as err:
            error_type, message = failure_of(err)
            self._note_failed_try(app_id, commit, err.cause)
            delay = err.cause.next_retry_delay if isinstance(err.cause, ApplicationError) else None
            if retry_later and delay is not None:
                # 429/503 with Retry-After: the app's later tries wait as it asked.
                self._not_before[app_id] = workflow.now() + delay
            # An error the activity marked non-retryable (a commit gone from the remote)
            # is not tried again either; patched, so earlier histories replay as they ran.
            final = (
                isinstance(err.cause, ApplicationError)
                and err.cause.non_retryable
                and workflow.patched(RESPECT_NON_RETRYABLE_PATCH)
            )
        if retry_later and error_type not in _NOT_RETRIED and not final:
            failed = AppOutcome(
                app_id=app_id, status=_RETRY_LATER, error_type=error_type, error=message
            )
            self._first_failures.setdefault(app_id, failed)
            return failed
        return await self._record_failure(app_id, error_type, message)

    def _resume_at(self, app_id: str, commit: str | None) -> ChunkResume | None:
        """Where the app's previous try in this pass left a chunked file of `commit`."""
        kept = self._resume.get(app_id)
        return kept[1] if kept is not None and kept[0] == commit else None

    def _note_failed_try(
        self, app_id: str, commit: str | None, cause: BaseException | None
    ) -> None:
        """Keep what a failed try delivered (for the totals) and where it left off.

        A `deliver_changes` error carries its counts and its latest heartbeat in its
        details; a try that timed out (a killed worker) leaves the same heartbeat in
        `last_heartbeat_details`. Anything else (a cancellation) tells nothing.
        """
        if isinstance(cause, ApplicationError):
            details = cause.details
        elif isinstance(cause, ActivityTimeoutError):
            details = cause.last_heartbeat_details
        else:
            return
        if not details:
            return  # no word from the try (it died before its first heartbeat)
        tried = AcknowledgedCounts.from_details(details)
        sum_up = self._earlier.get(app_id, AcknowledgedCounts())
        self._earlier[app_id] = AcknowledgedCounts(
            created=sum_up.created + tried.created,
            updated=sum_up.updated + tried.updated,
            deleted=sum_up.deleted + tried.deleted,
        )
        # The try's heartbeat carries a position until a chunked file has used it, so
        # one without a position means the next try starts its files afresh.
        resume = ChunkResume.from_details(details)
        if resume is None:
            self._resume.pop(app_id, None)
        else:
            self._resume[app_id] = (commit, resume)

    async def _record_failure(self, app_id: str, error_type: str, message: str) -> AppOutcome:
        """Record a failed delivery on the app's watch (one app's failure stops no other)."""
        self._first_failures.pop(app_id, None)
        self._resume.pop(app_id, None)  # the next pass starts the file afresh
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
        return self._counting_earlier(
            AppOutcome(app_id=app_id, status=status, error_type=error_type, error=message)
        )

    def _counting_earlier(self, outcome: AppOutcome) -> AppOutcome:
        """The app's final outcome in this pass, plus what its failed tries delivered."""
        earlier = self._earlier.pop(outcome.app_id, None)
        if earlier is not None:
            outcome.created += earlier.created
            outcome.updated += earlier.updated
            outcome.deleted += earlier.deleted
        return outcome

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
