"""The apps of one DeliverFiles run: each app's state across its tries, and how a try ended.

Pure data and helpers, passed through the workflow sandbox (deliver_files imports them
once per worker, not once per run).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from temporalio.exceptions import ApplicationError
from temporalio.exceptions import TimeoutError as ActivityTimeoutError

from models.delivery import AppDelivery, ChunkResume, DeliveryProgress, DeliveryStatus


class TryOutcome(StrEnum):
    """How one try of an app ended."""

    DELIVERED = "delivered"  # the activity returned synced or disabled
    RETRY_LATER = "retry_later"  # a retryable failure: the app tries again after the others
    FAILED = "failed"  # a failure retrying cannot help, or the app's last try
    REMOVED = "removed"  # the app or its watch is gone (or was reset): nothing to retry


@dataclass
class AppState:
    """One app in this run: whether its last pass failed, and its state in the running pass."""

    app_id: str
    failed_last_pass: bool = False
    # -- the running pass (reset by `start_pass`) --
    first_failure: AppDelivery | None = None  # its first try's error, while retries are owed
    not_before: datetime | None = None  # a Retry-After of that first try
    # What failed tries delivered (counted in the app's outcome) and where the latest
    # left a chunked file of `resume_commit` (its next try resumes there).
    earlier: DeliveryProgress = field(default_factory=DeliveryProgress)
    resume: ChunkResume | None = None
    resume_commit: str | None = None

    def start_pass(self) -> None:
        """Forget the previous pass (the next pass sends a partly delivered file from chunk 0)."""
        self.first_failure = self.not_before = self.resume = self.resume_commit = None
        self.earlier = DeliveryProgress()

    def resume_at(self, commit: str | None) -> ChunkResume | None:
        """Where the app's previous try in this pass left a chunked file of `commit`."""
        return self.resume if self.resume_commit == commit else None

    def note_failed_try(self, commit: str | None, progress: DeliveryProgress | None) -> None:
        """Keep what a failed try delivered (for the totals) and where it left off."""
        if progress is None:
            return  # no word from the try (it died before its first heartbeat)
        self.earlier.created += progress.created
        self.earlier.updated += progress.updated
        self.earlier.deleted += progress.deleted
        # A try's progress carries a position until a chunked file has used it, so one
        # without a position means the next try starts its files afresh.
        self.resume, self.resume_commit = progress.chunk, commit

    def final(self, outcome: AppDelivery) -> AppDelivery:
        """The app's outcome in this pass, plus what its failed tries delivered."""
        outcome.add(self.earlier)
        self.earlier = DeliveryProgress()
        self.first_failure = self.not_before = None
        self.resume = self.resume_commit = None
        self.failed_last_pass = outcome.status == DeliveryStatus.FAILED
        return outcome


def progress_of(cause: BaseException | None) -> DeliveryProgress | None:
    """A failed try's progress: its error's detail, or a timed-out try's last heartbeat."""
    if isinstance(cause, ApplicationError):
        return DeliveryProgress.from_details(cause.details)
    if isinstance(cause, ActivityTimeoutError):
        return DeliveryProgress.from_details(cause.last_heartbeat_details)
    return None  # a cancellation tells nothing
