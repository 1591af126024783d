"""The notice activity: one `sync_failed` or `sync_recovered` POST to one app."""

from __future__ import annotations

from temporalio import activity

from activities.failures import application_error
from models.delivery import NoticeInput, NoticeResult
from treecast.config import Settings
from treecast.delivery import notices
from treecast.webhooks.sender import WebhookError


class NoticeActivities:
    """Sends breaker notices."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @activity.defn
    def send_notice(self, input: NoticeInput) -> NoticeResult:
        """POST one breaker notice to one app; idempotent through its webhook-id.

        Returns `delivered=False` without raising when the app or watch is gone,
        the watch is disabled, or the app answers 410 (which disables the watch).
        Any other failure raises a retryable ApplicationError (a DeliveryErrorType).
        """
        try:
            result = notices.send_notice(self.settings, input)
        except WebhookError as error:
            activity.logger.warning(
                "%s for %s to %s failed: %s: %s",
                input.event,
                input.repository_id,
                input.app_id,
                error.type,
                error.message,
            )
            raise application_error(error) from None
        if result.delivered:
            activity.logger.info(
                "sent %s for %s to %s", input.event, input.repository_id, input.app_id
            )
        return result
