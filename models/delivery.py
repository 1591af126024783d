"""Inputs and results of the delivery and notice activities (ids and commits only)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


class DeliveryErrorType:
    """`ApplicationError.type` values raised by the delivery activities."""

    HTTP_STATUS = "WebhookHttpError"  # non-2xx answer (3xx included: redirects are not followed)
    TRANSPORT = "WebhookTransportError"  # timeout, connection refused/reset, invalid HTTP
    BLOCKED_ADDRESS = "WebhookBlockedAddress"  # private/loopback target while not allowed
    GONE = "WebhookGone"  # 410: the watch is disabled
    WATCH_MISSING = "WatchMissing"  # app or watch removed meanwhile: nothing to do


@dataclass
class WatchersInput:
    """Which apps watch a repository, and which of them are behind `commit`."""

    repository_id: str
    commit: str | None = None


@dataclass
class WatchersResult:
    """App ids in stable (sorted) order."""

    app_ids: list[str] = field(default_factory=list)
    behind_app_ids: list[str] = field(default_factory=list)  # not yet at `commit`


@dataclass
class ChunkResume:
    """Where a chunked file stood: the first chunk the app has not acknowledged yet.

    `deliver_changes` heartbeats it while it sends a chunked file, and a failed try
    carries it in its error's details; DeliverFiles hands it to the app's next try in
    the same pass (`DeliverInput.resume`). The activity uses it only for the same
    path, git blob and ledger generation, so a stale one just means chunk 0.
    """

    path: str
    blob_id: str
    generation: str
    next_chunk: int

    @staticmethod
    def from_details(details: Iterable[object]) -> ChunkResume | None:
        """The latest position in heartbeat or error details (dicts once decoded), if any."""
        for item in reversed(list(details)):
            if isinstance(item, ChunkResume):
                return item
            if isinstance(item, dict) and isinstance(item.get("next_chunk"), int):
                try:
                    return ChunkResume(
                        path=str(item["path"]),
                        blob_id=str(item["blob_id"]),
                        generation=str(item["generation"]),
                        next_chunk=int(item["next_chunk"]),
                    )
                except KeyError:
                    return None
        return None


@dataclass
class DeliverInput:
    """Deliver one app's changes for one repository at `commit` (None: empty repository)."""

    app_id: str
    repository_id: str
    commit: str | None
    # A previous try's position in a chunked file of this commit; the activity's own
    # heartbeat details (a retry of the same activity) take precedence.
    resume: ChunkResume | None = None


@dataclass
class DeliverResult:
    """What one delivery run did for one app."""

    app_id: str
    status: str  # a WatchStatus value
    created: int = 0
    updated: int = 0
    deleted: int = 0
    skipped: int = 0
    error_type: str | None = None
    error: str | None = None  # redacted

    @property
    def delivered(self) -> int:
        """Files acknowledged in this run."""
        return self.created + self.updated + self.deleted


@dataclass
class AcknowledgedCounts:
    """Files a failed `deliver_changes` try had delivered, read from the `created`,
    `updated` and `deleted` of its heartbeat: the detail of its error, or the last
    heartbeat details of a try that timed out (a killed worker)."""

    created: int = 0
    updated: int = 0
    deleted: int = 0

    @staticmethod
    def from_details(details: Sequence[object]) -> AcknowledgedCounts:
        """Read them back from error or heartbeat details (a dict once decoded)."""
        first = details[0] if details else None
        if isinstance(first, AcknowledgedCounts):
            return first
        if not isinstance(first, dict):
            return AcknowledgedCounts()
        return AcknowledgedCounts(
            created=int(first.get("created", 0)),
            updated=int(first.get("updated", 0)),
            deleted=int(first.get("deleted", 0)),
        )


@dataclass
class RecordFailureInput:
    """Mark a watch failed after its delivery activity ran out of attempts."""

    app_id: str
    repository_id: str
    error_type: str
    error: str  # already redacted


@dataclass
class BreakerInfo:
    """The breaker as a notice reports it."""

    status: str  # "open" or "closed"
    consecutive_failures: int
    threshold: int
    cooldown_until: str | None = None  # ISO-8601 UTC
    opened_at: str | None = None  # ISO-8601 UTC (sync_recovered)
    failed_syncs: int = 0  # failed syncs while open (sync_recovered)


@dataclass
class NoticeInput:
    """Send `sync_failed` or `sync_recovered` to one app."""

    app_id: str
    repository_id: str
    event: str  # "sync_failed" | "sync_recovered"
    transition_id: str  # stable per breaker transition: makes the webhook-id idempotent
    breaker: BreakerInfo
    error_type: str | None = None
    error_message: str | None = None  # redacted
    commit: str | None = None  # sync_recovered
    occurred_at: str = ""  # ISO-8601 UTC of the transition (workflow time)


@dataclass
class NoticeResult:
    """Whether the app acknowledged the notice."""

    app_id: str
    delivered: bool
    error_type: str | None = None
    error: str | None = None
