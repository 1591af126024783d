"""Inputs and results of the delivery and notice activities (ids and commits only)."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from temporalio.converter import value_to_type

from models.events import SyncEvent


class DeliveryErrorType(StrEnum):
    """`ApplicationError.type` values raised by the delivery activities."""

    HTTP_STATUS = "WebhookHttpError"  # non-2xx answer (3xx included: redirects are not followed)
    TRANSPORT = "WebhookTransportError"  # timeout, connection refused/reset, invalid HTTP
    BLOCKED_ADDRESS = "WebhookBlockedAddress"  # private/loopback target while not allowed
    GONE = "WebhookGone"  # 410: the watch is disabled
    WATCH_MISSING = "WatchMissing"  # app or watch removed meanwhile: nothing to do
    ACCESS_REFUSED = "AccessRefused"  # the app's own access does not hold: nothing sent


class DeliveryStatus(StrEnum):
    """How one app's delivery of one commit ended (`AppDelivery.status`)."""

    SYNCED = "synced"  # every change acknowledged
    FAILED = "failed"  # out of tries; recorded on the watch
    DISABLED = "disabled"  # the app answered 410 Gone (or the watch was already disabled)
    REMOVED = "removed"  # the app or its watch is gone (or was reset meanwhile)


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

    The activity uses it only for the same path, git blob and ledger generation, so a
    stale one just means chunk 0.
    """

    path: str
    blob_id: str
    generation: str
    next_chunk: int


@dataclass
class DeliveryProgress:
    """What a `deliver_changes` try has done so far: its heartbeat, and the detail of its error.

    One type for the activity that writes it, DeliverFiles that adds up failed tries
    and resumes chunked files from it, and `sync --wait` that shows "N of M files".
    `chunk` is set while a chunked file is under way (or a position is still unused).
    """

    done: int = 0
    total: int = 0
    created: int = 0
    updated: int = 0
    deleted: int = 0
    chunk: ChunkResume | None = None

    @property
    def delivered(self) -> int:
        """Files acknowledged so far."""
        return self.created + self.updated + self.deleted

    @staticmethod
    def from_details(details: Sequence[object]) -> "DeliveryProgress | None":
        """The latest progress in heartbeat or error details (decoded as plain JSON), if any.

        Also reads the flat shape written before `chunk` was its own object (the
        position's fields beside the counts), so recorded histories replay.
        """
        latest = details[-1] if details else None
        if isinstance(latest, DeliveryProgress):
            return latest
        if not isinstance(latest, dict):
            return None
        raw = dict(latest)
        if "chunk" not in raw and isinstance(raw.get("next_chunk"), int):
            keys = ("path", "blob_id", "generation", "next_chunk")
            raw["chunk"] = {k: raw[k] for k in keys if k in raw}
        for key in ("path", "blob_id", "generation", "next_chunk"):
            raw.pop(key, None)
        try:
            progress: DeliveryProgress = value_to_type(DeliveryProgress, raw)
        except (TypeError, ValueError, KeyError):
            return None
        return progress


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
class AppDelivery:
    """What delivering one commit did for one app: the activity's result, and each app's
    line in a pass (with what failed tries had delivered added in)."""

    app_id: str
    status: DeliveryStatus
    created: int = 0
    updated: int = 0
    deleted: int = 0
    skipped: int = 0
    error_type: str | None = None
    error: str | None = None  # redacted

    @property
    def delivered(self) -> int:
        """Files acknowledged."""
        return self.created + self.updated + self.deleted

    def add(self, earlier: DeliveryProgress) -> None:
        """Count what earlier (failed) tries acknowledged."""
        self.created += earlier.created
        self.updated += earlier.updated
        self.deleted += earlier.deleted


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
    event: SyncEvent
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
