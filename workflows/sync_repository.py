"""SyncRepository: one long-running workflow per repository that polls git and fans out.

Loop: wait for the next poll (interval plus a small per-repository offset) or a
`sync_now`; run `snapshot_repository` unless the breaker is open; on success
hand the commit to the `DeliverFiles` child when the commit moved or an app is
behind; on a breaker transition start a `NotifyBreaker` child. Children are
detached (ABANDON) and only their start is awaited, so they outlive this run,
its continue-as-new, a termination or a worker restart.

`sync --wait` follows a request id: `sync_now` records a `SyncOutcome`, the
`request` query reads it, and it becomes final only after `DeliverFiles`
reported (`deliveries_finished`) the pass that covered it.
"""

import contextlib
import zlib
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, FailureError, WorkflowAlreadyStartedError

# Everything but this module is passed through the sandbox, which would otherwise load
# it afresh for every workflow run (docs/performance.md, First wave). Hence
# `import workflows.x as x`: the sandbox passes through what its import hook sees, and
# `from workflows import x` would bypass it. The child does not import this module: it
# signals `deliveries_finished` by its name in models.sync, so there is no import loop.
with workflow.unsafe.imports_passed_through():
    import models.search_attributes as search_attributes
    import workflows.breaker as breaker
    import workflows.requests as requests
    from activities.git import GitActivities
    from activities.watches import WatchActivities
    from models.checks import CheckReason, RemoteMoved
    from models.delivery import WatchersInput
    from models.events import SyncEvent
    from models.git import SnapshotInput, SnapshotResult
    from models.sync import (
        ACCESS_NOTICE,
        ACCESS_REFUSED,
        DELIVERIES_FINISHED_SIGNAL,
        REMOTE_MOVED_SIGNAL,
        RESET_SIGNAL,
        SYNC_NOW_SIGNAL,
        BreakerStatus,
        DeliverFilesInput,
        DeliveryPass,
        NewCommit,
        NotifyBreakerInput,
        RequestState,
        SyncOutcome,
        SyncRepositoryInput,
        SyncRepositoryResult,
        SyncRequest,
        SyncState,
        SyncStatus,
        access_refused_message,
        deliver_workflow_id,
        notify_workflow_id,
        sync_workflow_id,
    )
    from workflows.deliver_files import DeliverFiles
    from workflows.notify_breaker import NotifyBreaker
    from workflows.policies import DB_RETRY, DB_TIMEOUT, SNAPSHOT_RETRY, TO_APPS, failure_of

HANDOVER_ATTEMPTS = 3  # start-or-signal rounds of the DeliverFiles handover
# Versioning (docs/workflows.md): a sync that found apps whose access was refused starts
# a notice child for them. Only such syncs reach the marker, and no run recorded before
# it had one, so it can be deprecated once no run older than it is open.
ACCESS_NOTICES_PATCH = "access-notices"
# The longest a `sync_and_wait` update waits for its sync's deliveries; it then answers
# with the request as it stands (the client can go on following it with `request`).
# Bounded so a stuck delivery never blocks the loop's continue-as-new for long.
UPDATE_WAIT = timedelta(hours=1)
# A new watch is served by a successful sync this recent without a fetch of its own:
# `repo add` then `watch` fetch the first commit once. (Whatever its age, the synced
# commit is as fresh as polling promises: checks or polls look every interval.)
REUSE_RECENT = timedelta(seconds=60)
# The paths of issue 30, for signals that carry its fields: a worker of the release before
# ignores the fields and syncs, so a history it wrote must replay that way (a marker each).
WAKE_FOR_NEW_COMMITS_PATCH = "wake-for-new-commits"
REUSE_RECENT_PATCH = "reuse-recent-sync"
# A pass report that comes in the workflow task of its own handover (a slow worker)
# answers its requests; a run of the release before left them delivering for good. Only
# such a report reaches the marker.
REPORT_WITH_HANDOVER_PATCH = "report-with-handover"


def poll_jitter(repository_id: str, interval_seconds: int) -> timedelta:
    """A stable per-repository offset added to every poll, up to 10% of the interval (≤ 30 s).

    Derived from a hash of the id, so it is deterministic on replay and
    repositories added together drift apart instead of polling in the same second.
    """
    spread = min(interval_seconds * 0.1, 30.0)
    fraction = zlib.crc32(repository_id.encode()) / 2**32
    return timedelta(seconds=round(spread * fraction, 3))


def _iso(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else "-"


def _count(name: str, description: str, **attributes: str) -> None:
    """Add one to a Treecast counter; the workflow meter skips this while replaying."""
    counter = workflow.metric_meter().create_counter(name, description)
    counter.with_additional_attributes(attributes).add(1)


def _count_transition(source: str, target: str) -> None:
    workflow.logger.info("breaker %s -> %s", source, target)
    _count(
        "treecast_breaker_transitions",
        "Circuit breaker transitions",
        source=source,
        target=target,
    )


@workflow.defn
class SyncRepository:
    """The sync loop, breaker and fan-out of one repository."""

    @workflow.init
    def __init__(self, input: SyncRepositoryInput) -> None:
        self._input = input
        self._state: SyncState = input.state if input.state is not None else SyncState()
        self._stopping = False
        self._syncing = False
        self._published: tuple[object, ...] | None = None

    # --- signals and updates ---------------------------------------------------------------

    @workflow.signal(name=SYNC_NOW_SIGNAL)
    def sync_now(self, request: SyncRequest | None = None) -> None:
        """Sync as soon as possible (refused, and said so, while open, paused or stopping)."""
        request = request or SyncRequest()
        if request.request_id and requests.find(self._state, request.request_id) is not None:
            return  # a repeated signal-with-start (or update) of the same request
        refusal = self._refusal()
        if request.request_id:
            requests.accept(self._state, request.request_id, workflow.now(), refusal)
        if refusal is None:
            if (
                request.reuse_recent
                and not request.request_id
                and self._recent()
                and workflow.patched(REUSE_RECENT_PATCH)
            ):
                self._state.handover_requested = True  # no fetch: see `_hand_over_synced`
            else:
                self._state.sync_requested = True

    @workflow.update
    async def sync_and_wait(self, request: SyncRequest) -> SyncOutcome:
        """Sync now and answer once that sync and its deliveries are done (or it was refused).

        Called with Update-with-Start by `sync --wait` and the API; a repeated request id
        waits for the same sync instead of starting another.
        """
        assert request.request_id is not None  # the validator refuses a request without one
        self.sync_now(request)
        outcome = requests.find(self._state, request.request_id)
        assert outcome is not None
        with contextlib.suppress(TimeoutError):  # answered as it stands; see UPDATE_WAIT
            await workflow.wait_condition(
                lambda: outcome.final, timeout=UPDATE_WAIT.total_seconds()
            )
        return outcome

    @sync_and_wait.validator
    def _check_sync_request(self, request: SyncRequest) -> None:
        if not request.request_id:
            raise ValueError("sync_and_wait needs a request_id")

    @workflow.signal(name=REMOTE_MOVED_SIGNAL)
    def remote_moved(self, wake: RemoteMoved) -> None:
        """A remote check found work: sync now, unless the breaker is open, the repository
        is paused or stopping, or a failed sync already has this loop polling on its own."""
        if not self._input.full_sync_interval_seconds or self._refusal() is not None:
            return
        if wake.reason == CheckReason.FAILED and self._state.last_error_type is not None:
            return  # failing: the loop retries at the poll interval and counts for the breaker
        state = self._state
        if (
            wake.reason == CheckReason.MOVED
            and wake.commits
            and workflow.patched(WAKE_FOR_NEW_COMMITS_PATCH)
        ):
            if self._syncing:
                # The running fetch may have got it already: its end decides (`_succeeded`).
                state.remote_commits = list(wake.commits)
                return
            if state.last_commit in wake.commits:
                return  # synced already (the check read the commit before it was recorded)
        state.sync_requested = True
        state.remote_wakes += 1
        state.last_wake = f"{wake.reason} at {_iso(wake.checked_at or workflow.now())}"

    @workflow.signal(name=RESET_SIGNAL)
    def reset(self, request: SyncRequest | None = None) -> None:
        """Close the breaker and sync right away."""
        self._state.breaker = breaker.reset(self._state.breaker)
        self._publish()
        self.sync_now(request)

    @workflow.signal
    def pause(self) -> None:
        """Stop polling until `resume`; waiting requests are answered "paused"."""
        self._state.paused = True
        requests.refuse_pending(
            self._state, workflow.now(), RequestState.PAUSED, "the repository was paused"
        )
        self._publish()

    @workflow.signal
    def resume(self) -> None:
        """Poll again (at once if a poll fell due while paused)."""
        self._state.paused = False
        self._publish()

    @workflow.signal
    def stop(self) -> None:
        """The repository was removed: end the loop cleanly."""
        self._stopping = True

    @workflow.signal(name=DELIVERIES_FINISHED_SIGNAL)
    def deliveries_finished(self, done: DeliveryPass) -> None:
        """`DeliverFiles` finished a pass: the requests it covered are done."""
        now = workflow.now()
        early = requests.not_yet_handed_over(self._state, done)
        if early and workflow.patched(REPORT_WITH_HANDOVER_PATCH):
            # The handover that gave the child these requests resumes after this handler.
            requests.synced(self._state, early, done.commit, now, handed_over=True)
        requests.pass_finished(self._state, done, now)

    # --- queries ---------------------------------------------------------------------------

    @workflow.query
    def status(self) -> SyncStatus:
        """Breaker, last and next sync, last error: what `starter.py status` shows."""
        state, brk = self._state, self._state.breaker
        return SyncStatus(
            repository_id=self._input.repository_id,
            breaker_state=brk.status,
            consecutive_failures=brk.consecutive_failures,
            breaker_threshold=self._input.breaker_threshold,
            cooldown_until=brk.cooldown_until,
            last_commit=state.last_commit,
            last_sync_at=state.last_sync_at,
            last_attempt_at=state.last_attempt_at,
            next_sync_at=state.next_sync_at,
            last_error_type=state.last_error_type,
            last_error=state.last_error,
            paused=state.paused,
            stopping=self._stopping,
            syncing=self._syncing,
            delivering_commit=state.delivering_commit,
            poll_interval_seconds=self._input.poll_interval_seconds,
            syncs=state.syncs,
            pending_requests=len(state.pending_request_ids),
            message=self._message(),
            full_sync_interval_seconds=self._input.full_sync_interval_seconds,
            remote_wakes=state.remote_wakes,
            last_wake=state.last_wake,
        )

    @workflow.query
    def request(self, request_id: str) -> SyncOutcome | None:
        """What became of one sync request (None: unknown id)."""
        return requests.find(self._state, request_id)

    # --- the loop --------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: SyncRepositoryInput) -> SyncRepositoryResult:
        """Wait for the poll or a request, sync, fan out; until `stop`, continuing-as-new."""
        self._publish(force=True)
        cycles = 0
        while not self._stopping:
            if cycles >= input.max_cycles or workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                if self._stopping:
                    break
                # Everything that matters is in the state, deadlines included, so
                # a pending sync_now or an open breaker carries over intact.
                workflow.continue_as_new(replace(input, state=self._state))
            cycles += 1
            if self._handover_due():
                await self._hand_over_synced()
            elif await self._wait_for_turn():
                await self._sync()
        requests.stop_all(self._state, workflow.now())
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.set_current_details(f"Stopped: {input.repository_id} was removed")
        return SyncRepositoryResult(
            repository_id=input.repository_id,
            last_commit=self._state.last_commit,
            syncs=self._state.syncs,
        )

    async def _wait_for_turn(self) -> bool:
        """Sleep until a sync is due; True when one should run now."""
        state = self._state
        if state.paused:
            await workflow.wait_condition(lambda: not self._state.paused or self._stopping)
            return False
        brk = state.breaker
        if brk.status == BreakerStatus.OPEN:
            if not breaker.cooldown_over(brk, workflow.now()):
                # A durable timer: the cooldown ends on time even across worker restarts.
                await self._sleep_until(
                    brk.cooldown_until,
                    lambda: (
                        self._stopping
                        or self._state.paused
                        or self._state.breaker.status != BreakerStatus.OPEN
                    ),
                )
            if self._stopping or self._state.paused:
                return False
            if breaker.cooldown_over(self._state.breaker, workflow.now()):
                self._state.breaker = breaker.half_open(self._state.breaker, workflow.now())
                self._publish()
                return True  # the probe
            return False
        if state.sync_requested or brk.status == BreakerStatus.HALF_OPEN:
            return True
        due = state.next_sync_at
        if due is not None and due > workflow.now():
            await self._sleep_until(
                due,
                lambda: (
                    self._stopping
                    or self._state.paused
                    or self._state.sync_requested
                    or self._handover_due()
                    or self._state.breaker.status != BreakerStatus.CLOSED
                ),
            )
            return False
        return not self._stopping

    def _recent(self) -> bool:
        """Whether the running sync, or a successful one within `REUSE_RECENT`, can serve
        a new watch (`SyncRequest.reuse_recent`)."""
        state = self._state
        if self._syncing:
            return True
        if state.last_sync_at is None or state.last_error_type is not None:
            return False
        return workflow.now() - state.last_sync_at < REUSE_RECENT

    def _handover_due(self) -> bool:
        state = self._state
        return (
            state.handover_requested
            and not state.sync_requested  # that sync's listing serves it
            and not state.paused
            and not self._stopping
            and state.last_sync_at is not None
        )

    async def _hand_over_synced(self) -> None:
        """A new watch met a recent sync: its commit goes to the apps behind, no fetch."""
        await self._fan_out(self._state.last_commit, [], moved=False)

    async def _sleep_until(self, deadline: datetime | None, wake: Callable[[], bool]) -> None:
        remaining = (deadline - workflow.now()).total_seconds() if deadline else 0.0
        if remaining <= 0:
            return
        with contextlib.suppress(TimeoutError):  # the deadline passed: that is the point
            await workflow.wait_condition(wake, timeout=remaining)

    async def _sync(self) -> None:
        """One sync: snapshot with its retry policy, feed the breaker, fan out to the child."""
        request_ids = self._begin()
        try:
            snapshot = await workflow.execute_activity_method(
                GitActivities.snapshot_repository,
                SnapshotInput(repository_id=self._input.repository_id),
                start_to_close_timeout=timedelta(seconds=self._input.snapshot_timeout_seconds),
                # Heartbeats come while git runs: a silent snapshot was lost (a worker
                # killed, a task dropped by an overloaded server) and is retried after
                # this, not the whole start-to-close timeout (docs/performance.md).
                heartbeat_timeout=timedelta(seconds=self._input.snapshot_heartbeat_seconds),
                retry_policy=SNAPSHOT_RETRY,
                summary=f"fetch {self._input.repository_id}",
            )
        except ActivityError as err:
            self._syncing = False
            await self._failed(err, request_ids)
            return
        finally:
            self._syncing = False
        moved = await self._succeeded(snapshot)
        if snapshot.refused_app_ids and workflow.patched(ACCESS_NOTICES_PATCH):
            await self._notify_refused(snapshot.refused_app_ids)
        if not self._stopping:  # else the run loop answers the requests
            await self._fan_out(snapshot.commit, request_ids, moved=moved)

    def _begin(self) -> list[str]:
        """Start a sync: take the waiting requests and set the next poll."""
        input, state = self._input, self._state
        state.sync_requested = False
        request_ids, state.pending_request_ids = state.pending_request_ids, []
        requests.start(state, request_ids)
        now = workflow.now()
        state.syncs += 1
        state.last_attempt_at = now
        state.next_sync_at = now + self._interval(full=True)
        self._syncing = True
        workflow.set_current_details(f"Syncing {input.repository_id} (sync #{state.syncs})")
        return request_ids

    def _interval(self, *, full: bool) -> timedelta:
        """Until the next sync of the loop's own: the poll interval, or with remote checks
        the full-sync interval (`full`), both with the repository's stable jitter."""
        seconds = self._input.poll_interval_seconds
        if full and self._input.full_sync_interval_seconds:
            seconds = max(seconds, self._input.full_sync_interval_seconds)
        return timedelta(seconds=seconds) + poll_jitter(self._input.repository_id, seconds)

    async def _succeeded(self, snapshot: SnapshotResult) -> bool:
        """The breaker closes; a `sync_failed` outstanding is answered with `sync_recovered`.

        True when the commit moved.
        """
        state = self._state
        before = state.breaker
        step = breaker.record_success(before)
        state.breaker = step.state
        _count("treecast_syncs", "Syncs by outcome (ok or a git error type)", outcome="ok")
        if before.status != state.breaker.status:
            _count_transition(before.status, state.breaker.status)
        moved = snapshot.commit != state.last_commit
        state.last_commit, state.last_ref = snapshot.commit, snapshot.ref
        state.last_sync_at = workflow.now()
        state.last_error_type = state.last_error = None
        if state.remote_commits is not None:
            if snapshot.commit not in state.remote_commits:  # pushed after this fetch began
                state.sync_requested = True
                state.remote_wakes += 1
                state.last_wake = f"{CheckReason.MOVED} at {_iso(workflow.now())}"
            state.remote_commits = None
        self._publish()
        if step.notice == SyncEvent.SYNC_RECOVERED:
            await self._notify(
                NotifyBreakerInput(
                    repository_id=self._input.repository_id,
                    event=SyncEvent.SYNC_RECOVERED,
                    transition_id="",
                    occurred_at=workflow.now(),
                    breaker_status=BreakerStatus.CLOSED,
                    consecutive_failures=before.consecutive_failures,
                    threshold=self._input.breaker_threshold,
                    opened_at=before.opened_at,
                    failed_syncs=before.failed_probes,
                    commit=snapshot.commit,
                    notice_timeout_seconds=self._input.notice_timeout_seconds,
                )
            )
        return moved

    async def _failed(self, err: ActivityError, request_ids: list[str]) -> None:
        """One failed sync for the breaker; `sync_failed` goes out when it opens."""
        input, state = self._input, self._state
        error_type, message = failure_of(err)
        state.last_error_type, state.last_error = error_type, message
        state.remote_commits = None  # failing: the loop polls on its own (as for `failed`)
        now = workflow.now()
        before = state.breaker
        step = breaker.record_failure(
            before, now, input.breaker_threshold, timedelta(seconds=input.breaker_cooldown_seconds)
        )
        state.breaker = step.state
        if input.full_sync_interval_seconds and state.last_attempt_at is not None:
            # Failing: poll at the poll interval again, so the breaker counts as without checks.
            state.next_sync_at = state.last_attempt_at + self._interval(full=False)
        _count("treecast_syncs", "Syncs by outcome (ok or a git error type)", outcome=error_type)
        if before.status != state.breaker.status:
            _count_transition(before.status, state.breaker.status)
        requests.fail(state, request_ids, now, error_type, message)
        if state.breaker.status == BreakerStatus.OPEN:
            # Requests that queued during the attempt cannot run until the cooldown ends.
            requests.refuse_pending(state, now, RequestState.BREAKER_OPEN, self._open_message())
        self._publish()
        if step.notice == SyncEvent.SYNC_FAILED:
            await self._notify(
                NotifyBreakerInput(
                    repository_id=input.repository_id,
                    event=SyncEvent.SYNC_FAILED,
                    transition_id="",
                    occurred_at=now,
                    breaker_status=BreakerStatus.OPEN,
                    consecutive_failures=state.breaker.consecutive_failures,
                    threshold=input.breaker_threshold,
                    cooldown_until=state.breaker.cooldown_until,
                    opened_at=state.breaker.opened_at,
                    error_type=error_type,
                    error_message=message,
                    notice_timeout_seconds=input.notice_timeout_seconds,
                )
            )

    async def _fan_out(self, commit: str | None, request_ids: list[str], *, moved: bool) -> None:
        """Hand the commit to DeliverFiles when it moved or an app is behind."""
        repository_id = self._input.repository_id
        # This listing sees every watch saved before it: it serves the new watches' requests.
        self._state.handover_requested = False
        watchers = await workflow.execute_local_activity_method(
            # Local: a quick database read on the hot path of every sync; saves a
            # server round trip per step (docs/performance.md).
            WatchActivities.list_watchers,
            WatchersInput(repository_id=repository_id, commit=commit),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary=f"apps of {repository_id} behind {(commit or 'empty')[:12]}",
        )
        if not moved and not watchers.behind_app_ids:
            requests.synced(self._state, request_ids, commit, workflow.now(), handed_over=False)
            self._publish()
            return
        handed = await self._hand_over(commit, request_ids, watchers.behind_app_ids)
        if handed:
            requests.synced(self._state, request_ids, commit, workflow.now(), handed_over=True)
        else:
            requests.fail(
                self._state,
                request_ids,
                workflow.now(),
                "DeliveryHandoverFailed",
                "could not start or signal the delivery workflow; the next sync retries",
            )
        self._publish()

    async def _notify_refused(self, app_ids: list[str]) -> None:
        """One `sync_failed` to each app whose own access the host just refused, and to
        no other: the repository syncs on with the others' credentials."""
        input, brk = self._input, self._state.breaker
        await self._notify(
            NotifyBreakerInput(
                repository_id=input.repository_id,
                event=SyncEvent.SYNC_FAILED,
                transition_id="",
                occurred_at=workflow.now(),
                breaker_status=brk.status,
                consecutive_failures=brk.consecutive_failures,
                threshold=input.breaker_threshold,
                error_type=ACCESS_REFUSED,
                error_message=access_refused_message(input.repository_id),
                notice_timeout_seconds=input.notice_timeout_seconds,
                app_ids=list(app_ids),
            ),
            kind=ACCESS_NOTICE,
        )

    async def _notify(self, notice: NotifyBreakerInput, kind: str | None = None) -> None:
        child_id = notify_workflow_id(
            notice.repository_id, kind or notice.event, notice.occurred_at
        )
        notice.transition_id = child_id  # stable per transition: idempotent webhook ids
        # Already started: this transition's notice is on its way.
        with contextlib.suppress(WorkflowAlreadyStartedError):
            await workflow.start_child_workflow(
                NotifyBreaker.run,
                notice,
                id=child_id,
                priority=TO_APPS,
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                static_summary=(
                    f"{notice.event} for every app watching {notice.repository_id}"
                    if notice.app_ids is None
                    else f"{notice.event} for {', '.join(notice.app_ids)}: access refused"
                ),
            )

    async def _hand_over(
        self, commit: str | None, request_ids: list[str], behind: list[str]
    ) -> bool:
        """Start DeliverFiles, or give the running one the newer commit; False if neither worked."""
        repository_id = self._input.repository_id
        child_id = deliver_workflow_id(repository_id)
        short = (commit or "empty")[:12]
        # Before the awaits: the child's report may come in the task that resumes this
        # coroutine, and its handler, which clears it, runs first.
        self._state.delivering_commit = commit
        for _ in range(HANDOVER_ATTEMPTS):
            try:
                await workflow.start_child_workflow(
                    DeliverFiles.run,
                    DeliverFilesInput(
                        repository_id=repository_id,
                        commit=commit,
                        request_ids=request_ids,
                        parent_workflow_id=sync_workflow_id(repository_id),
                        app_ids=list(behind),
                    ),
                    id=child_id,
                    priority=TO_APPS,
                    parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                    static_summary=f"deliver {repository_id} at {short} to {len(behind)} apps",
                )
                return True
            except WorkflowAlreadyStartedError:
                pass
            try:
                # By id only: the running child, whichever run it is in.
                child = workflow.get_external_workflow_handle_for(DeliverFiles.run, child_id)
                await child.signal(
                    DeliverFiles.new_commit,
                    NewCommit(commit=commit, request_ids=request_ids),
                )
                return True
            except FailureError:
                continue  # it completed between our start and our signal: start anew
        self._state.delivering_commit = None  # the child completed: nothing is under way
        return False

    # --- what people see -------------------------------------------------------------------

    def _refusal(self) -> tuple[RequestState, str] | None:
        """Why a sync request cannot run now (None: it can)."""
        state = self._state
        if self._stopping:
            return RequestState.STOPPED, "the repository is being removed"
        if state.paused:
            return RequestState.PAUSED, "the repository is paused; `resume` it first"
        if not breaker.allows_sync(state.breaker) and not breaker.cooldown_over(
            state.breaker, workflow.now()
        ):
            return RequestState.BREAKER_OPEN, self._open_message()
        return None

    def _open_message(self) -> str:
        brk = self._state.breaker
        return (
            f"breaker open until {_iso(brk.cooldown_until)} after "
            f"{brk.consecutive_failures} failed syncs; `reset` to retry now"
        )

    def _message(self) -> str:
        state, brk = self._state, self._state.breaker
        if self._stopping:
            return "stopping: the repository was removed"
        if state.paused:
            return "paused; `resume` to poll again"
        if brk.status == BreakerStatus.OPEN:
            return self._open_message()
        if brk.status == BreakerStatus.HALF_OPEN:
            return "breaker half-open: one probe sync decides"
        if self._syncing:
            return "syncing"
        at = state.last_commit[:12] if state.last_commit else "no commit yet"
        if self._input.full_sync_interval_seconds and state.last_error_type is None:
            return (
                f"at {at}; remote checked every {self._input.poll_interval_seconds} s, "
                f"full sync by {_iso(state.next_sync_at)}"
            )
        return f"at {at}; next poll {_iso(state.next_sync_at)}"

    def _publish(self, *, force: bool = False) -> None:
        """Upsert the search attributes (when changed) and the UI's current details."""
        state, brk = self._state, self._state.breaker
        values = (brk.status, state.last_commit, brk.consecutive_failures)
        if force or values != self._published:
            workflow.upsert_search_attributes(
                search_attributes.updates(self._input.repository_id, *values)
            )
            self._published = values
        workflow.set_current_details(f"{self._input.repository_id}: {self._message()}")
