"""Inputs, state, queries and results of the sync, delivery and notice workflows.

Only ids, commits, counts and times travel through here: file content stays in git.
Every time is an aware UTC `datetime` (workflow time), stored as an absolute
deadline so it survives continue-as-new.
"""

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from models.delivery import AppDelivery, NoticeResult
from models.events import SyncEvent


class BreakerStatus(StrEnum):
    """States of a repository's circuit breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class RequestState(StrEnum):
    """Where one sync request stands (`SyncOutcome.state`)."""

    PENDING = "pending"  # waiting for a sync to start
    SYNCING = "syncing"  # its sync is running
    DELIVERING = "delivering"  # synced; the deliveries of its commit are running
    DONE = "done"  # synced and every delivery of that sync finished
    FAILED = "failed"  # the sync failed (see error_type)
    BREAKER_OPEN = "breaker_open"  # refused: the breaker is open (see message)
    PAUSED = "paused"  # refused: the repository is paused
    STOPPED = "stopped"  # the workflow stopped before syncing

    @property
    def final(self) -> bool:
        """True once nothing more will happen to a request in this state."""
        return self in _FINAL


_FINAL = frozenset(
    {
        RequestState.DONE,
        RequestState.FAILED,
        RequestState.BREAKER_OPEN,
        RequestState.PAUSED,
        RequestState.STOPPED,
    }
)


# SyncRepository's signals that other rooms send by name, so that no activity and not
# its own child imports the workflow (the SDK takes a start signal by name only, too).
# The workflow declares them under these names.
SYNC_WORKFLOW = "SyncRepository"  # its workflow type, for a start by name
SYNC_NOW_SIGNAL = "sync_now"
RESET_SIGNAL = "reset"
REMOTE_MOVED_SIGNAL = "remote_moved"
DELIVERIES_FINISHED_SIGNAL = "deliveries_finished"


def sync_workflow_id(repository_id: str) -> str:
    """The id of a repository's `SyncRepository` workflow."""
    return f"sync-repository/{repository_id}"


def deliver_workflow_id(repository_id: str) -> str:
    """The id of a repository's (single) `DeliverFiles` child."""
    return f"deliver/{repository_id}"


def notify_workflow_id(repository_id: str, event: str, at: datetime) -> str:
    """The id of one `NotifyBreaker` child: one per breaker transition (or, with event
    `ACCESS_NOTICE`, per sync that found apps whose access was refused)."""
    return f"notify/{repository_id}/{event}/{at.isoformat()}"


# The `notify_workflow_id` event of the notice to apps that just lost their access.
ACCESS_NOTICE = "access"
# The error type of that notice, and of the watch's `last_error_type`.
ACCESS_REFUSED = "AccessRefused"


def access_refused_message(repository_id: str) -> str:
    """The `sync_failed` message an app that just lost its access to a repository gets."""
    return (
        "the git host refused this app's own credentials for the repository; nothing more "
        "is delivered until the app has working ones: "
        f"PUT /api/repositories/{repository_id}/credentials (its watch's last_error has "
        "what the host answered)"
    )


@dataclass
class BreakerState:
    """A repository's breaker; `workflows.breaker` moves it between states."""

    status: BreakerStatus = BreakerStatus.CLOSED
    consecutive_failures: int = 0
    opened_at: datetime | None = None  # when the current outage's breaker opened
    cooldown_until: datetime | None = None  # set while open
    failed_probes: int = 0  # half-open syncs that failed during this outage
    # True from a `sync_failed` notice until the `sync_recovered` that answers it,
    # so apps get exactly one of each per outage, even across a manual reset.
    notice_outstanding: bool = False


@dataclass
class SyncRequest:
    """The `sync_now` signal's argument; `request_id` lets `sync --wait` follow it."""

    request_id: str | None = None
    # A new or changed watch (no request id): the running sync, or a successful one
    # within a minute, serves it: its commit is handed to the apps behind, no fetch.
    reuse_recent: bool = False


@dataclass
class SyncOutcome:
    """What became of one `sync_now` request: what `sync --wait` reports.

    `ok` and `summary` are plain fields (not properties) so they survive
    serialization and `dataclasses.asdict`; `finish` sets them.
    """

    request_id: str
    state: RequestState = RequestState.PENDING
    commit: str | None = None
    error_type: str | None = None
    message: str | None = None  # one line for a person (redacted)
    apps: list[AppDelivery] = field(default_factory=list)
    requested_at: datetime | None = None
    finished_at: datetime | None = None
    ok: bool = False  # done, and every app delivered without error
    summary: str = ""  # one line: the state and what happened

    @property
    def final(self) -> bool:
        """True once nothing more will happen to this request."""
        return RequestState(self.state).final

    def finish(self, state: RequestState, at: datetime, message: str | None = None) -> None:
        """Make the outcome final and derive `ok` and `summary`."""
        self.state, self.finished_at = state, at
        if message is not None:
            self.message = message
        self.ok = state == RequestState.DONE and all(a.error_type is None for a in self.apps)
        self.summary = f"{state}: {self.message}" if self.message else state


@dataclass
class DeliveryPass:
    """One pass of `DeliverFiles`: every behind app, one after another, at one commit."""

    repository_id: str
    commit: str | None
    request_ids: list[str] = field(default_factory=list)
    apps: list[AppDelivery] = field(default_factory=list)
    finished_at: datetime | None = None


@dataclass
class SyncState:
    """Everything `SyncRepository` carries across continue-as-new."""

    breaker: BreakerState = field(default_factory=BreakerState)
    last_commit: str | None = None
    last_ref: str | None = None
    last_sync_at: datetime | None = None  # last successful sync
    last_attempt_at: datetime | None = None
    next_sync_at: datetime | None = None  # None: sync as soon as the run starts
    last_error_type: str | None = None
    last_error: str | None = None  # redacted
    paused: bool = False
    sync_requested: bool = False  # a `sync_now` (with or without id) not yet served
    pending_request_ids: list[str] = field(default_factory=list)
    outcomes: list[SyncOutcome] = field(default_factory=list)  # recent requests, bounded
    syncs: int = 0  # sync attempts over the workflow's whole life
    delivering_commit: str | None = None  # last commit handed to DeliverFiles, not yet reported
    # The latest passes DeliverFiles reported (without request ids): a request that meets
    # a delivery under way counts the passes of its commit that ended after it was asked.
    recent_passes: list[DeliveryPass] = field(default_factory=list)
    remote_wakes: int = 0  # `remote_moved` signals that asked for a sync
    last_wake: str | None = None
    # A `moved` wake that came during a sync: its commits; the sync's end decides.
    remote_commits: list[str] | None = None
    # A `reuse_recent` request not yet served by a listing of the apps behind.
    handover_requested: bool = False


@dataclass
class SyncRepositoryInput:
    """Start (or continue) a repository's sync loop; built from Settings by the starter."""

    repository_id: str
    poll_interval_seconds: int
    breaker_threshold: int
    breaker_cooldown_seconds: int
    notice_timeout_seconds: float = 10.0
    snapshot_timeout_seconds: float = 900.0
    state: SyncState | None = None
    max_cycles: int = 500  # loop iterations per run before continue-as-new
    # Set: remote checks (`CheckRemotes`) ask the remote every poll interval and signal
    # `remote_moved` when a sync has work; the workflow itself then syncs only this often
    # (and at the poll interval after a failed sync). None: it polls every interval.
    full_sync_interval_seconds: int | None = None
    # A snapshot heartbeats while git runs; one silent this long was lost (a worker
    # killed, a task dropped by an overloaded server) and is retried.
    snapshot_heartbeat_seconds: float = 120.0


@dataclass
class SyncRepositoryResult:
    """How the sync loop ended (only on `stop`)."""

    repository_id: str
    last_commit: str | None
    syncs: int


@dataclass
class SyncStatus:
    """The `status` query: what the repository's workflow is doing now."""

    repository_id: str
    breaker_state: BreakerStatus
    consecutive_failures: int
    breaker_threshold: int
    cooldown_until: datetime | None
    last_commit: str | None
    last_sync_at: datetime | None
    last_attempt_at: datetime | None
    next_sync_at: datetime | None
    last_error_type: str | None
    last_error: str | None
    paused: bool
    stopping: bool
    syncing: bool
    delivering_commit: str | None
    poll_interval_seconds: int
    syncs: int
    pending_requests: int
    message: str  # one line for a person, e.g. "breaker open until …"
    full_sync_interval_seconds: int | None = None  # set: remote checks poll between syncs
    remote_wakes: int = 0  # syncs a remote check asked for (`remote_moved`)
    last_wake: str | None = None  # why the last one did, e.g. "moved at 2026-…"
    # With remote checks: the remote was checked at or after this (filled in by the
    # service from the sweep's heartbeat; the workflow does not know it).
    checked_at: datetime | None = None


@dataclass
class DeliverFilesInput:
    """Start `DeliverFiles` for a repository's newest synced commit."""

    repository_id: str
    commit: str | None
    request_ids: list[str] = field(default_factory=list)
    parent_workflow_id: str | None = None  # receives `deliveries_finished` after each pass
    # carried across the child's own continue-as-new
    passes_done: int = 0
    # The apps behind `commit` as the parent just listed them: the first pass uses
    # them instead of asking again (None: ask, as later passes always do).
    app_ids: list[str] | None = None


@dataclass
class NewCommit:
    """Signal to a running `DeliverFiles`: do another pass for this newer commit."""

    commit: str | None
    request_ids: list[str] = field(default_factory=list)


@dataclass
class RetryWait:
    """An app that failed a try in the running pass and waits for its next one."""

    app_id: str
    attempt: int  # the try it waits for (the first try was 1)
    attempts: int  # tries it gets in this pass
    at: datetime  # when that try starts, unless a newer commit cuts the wait short
    error_type: str
    error: str


@dataclass
class DeliverFilesResult:
    """Per-app results of every pass this run did (the last pass last)."""

    repository_id: str
    passes: list[DeliveryPass] = field(default_factory=list)


@dataclass
class NotifyBreakerInput:
    """Send one breaker notice to every app watching the repository."""

    repository_id: str
    event: SyncEvent
    transition_id: str
    occurred_at: datetime
    breaker_status: BreakerStatus  # open or closed, as the notice reports it
    consecutive_failures: int
    threshold: int
    cooldown_until: datetime | None = None
    opened_at: datetime | None = None
    failed_syncs: int = 0
    error_type: str | None = None
    error_message: str | None = None  # redacted
    commit: str | None = None
    notice_timeout_seconds: float = 10.0
    # Only these apps (the ones whose access was just refused), instead of every app
    # watching the repository.
    app_ids: list[str] | None = None


@dataclass
class NotifyBreakerResult:
    """Per-app notice results, in the order sent."""

    repository_id: str
    event: str
    results: list[NoticeResult] = field(default_factory=list)
