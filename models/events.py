"""The webhook events Treecast sends; each is also its endpoint under the app's base URL.

File events are `models.changes.ChangeKind` (create, update, delete); breaker
notices are `SyncEvent`.
"""

from enum import StrEnum

from models.changes import ChangeKind


class SyncEvent(StrEnum):
    """Breaker notices sent to every watching app."""

    SYNC_FAILED = "sync_failed"
    SYNC_RECOVERED = "sync_recovered"


WebhookEvent = ChangeKind | SyncEvent
