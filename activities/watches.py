"""The watch activities: who watches a repository, and a delivery that ran out of tries."""

from __future__ import annotations

from temporalio import activity

from models.delivery import RecordFailureInput, WatchersInput, WatchersResult
from treecast.config import Settings
from treecast.db import session_scope
from treecast.store import watches


class WatchActivities:
    """Database activities about watches (no HTTP)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @activity.defn
    def list_watchers(self, input: WatchersInput) -> WatchersResult:
        """Apps watching a repository (sorted) and those not yet synced at `input.commit`."""
        with session_scope(self.settings.database_url) as session:
            app_ids, behind = watches.watchers(session, input.repository_id, input.commit)
        return WatchersResult(app_ids=app_ids, behind_app_ids=behind)

    @activity.defn
    def record_delivery_failure(self, input: RecordFailureInput) -> None:
        """Mark a watch `failed` with its redacted error once delivery ran out of tries."""
        with session_scope(self.settings.database_url) as session:
            watches.record_failure(
                session, input.app_id, input.repository_id, input.error_type, input.error
            )
