"""The notice activity: one `sync_failed` or `sync_recovered` POST to one app."""

from __future__ import annotations

from temporalio import activity

from models.delivery import DeliveryErrorType, NoticeInput, NoticeResult
from models.events import SyncEvent
from models.tables import WatchStatus
from treecast.config import Settings
from treecast.db import session_scope
from treecast.redact import redact
from treecast.store.attempts import prune_delivery_log, record_attempt
from treecast.store.targets import load_target
from treecast.webhooks import payloads
from treecast.webhooks.sender import WebhookSender, failure_error
from treecast.webhooks.signing import SigningScheme, redaction_terms, webhook_id


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
        settings = self.settings
        with session_scope(settings.database_url) as session:
            target = load_target(settings, session, input.app_id, input.repository_id)
        if target is None:
            return NoticeResult(
                app_id=input.app_id,
                delivered=False,
                error_type=DeliveryErrorType.WATCH_MISSING,
                error="the app or its watch was removed",
            )
        if target.watch_status == WatchStatus.DISABLED:
            return NoticeResult(
                app_id=input.app_id,
                delivered=False,
                error_type=DeliveryErrorType.GONE,
                error="the watch is disabled (the app answered 410 Gone)",
            )
        docora = target.scheme == SigningScheme.DOCORA
        if docora and input.event != SyncEvent.SYNC_FAILED and not target.treecast_events:
            # Docora has no such event; a docora app gets it only when it asked for it.
            return NoticeResult(
                app_id=input.app_id,
                delivered=False,
                error_type=None,
                error=f"{input.event} is not sent to docora-scheme apps without treecast_events",
            )
        key = [target.client_auth_key] if target.client_auth_key else []
        terms = redaction_terms([*target.secrets, *key])
        timestamp = input.occurred_at or payloads.iso_utc()
        if input.event == SyncEvent.SYNC_FAILED and docora:
            body = payloads.docora_sync_failed_body(
                repo=target.repository,
                error_message=redact(input.error_message or "", terms),
                breaker=input.breaker,
                retry_count=target.retry_count,
                timestamp=timestamp,
            )
        elif input.event == SyncEvent.SYNC_FAILED:
            body = payloads.sync_failed_body(
                repo=target.repository,
                error_type=input.error_type,
                error_message=redact(input.error_message or "", terms),
                breaker=input.breaker,
                timestamp=timestamp,
            )
        else:
            body = payloads.sync_recovered_body(
                repo=target.repository,
                commit_sha=input.commit,
                breaker=input.breaker,
                timestamp=timestamp,
            )
        msg_id = webhook_id(
            "notice", input.app_id, input.repository_id, input.event, input.transition_id
        )
        timeout = settings.notice_timeout_seconds
        with WebhookSender(
            settings,
            target.base_url,
            target.secrets,
            timeout=timeout,
            scheme=target.scheme,
            app_id=target.app_id,
            client_auth_key=target.client_auth_key,
        ) as sender:
            outcome = sender.post(input.event, msg_id, body, input.event)
        with session_scope(settings.database_url) as session:
            record_attempt(
                session,
                app_id=input.app_id,
                repository_id=input.repository_id,
                event=input.event,
                path=None,
                webhook_id=msg_id,
                outcome=outcome,
            )
            prune_delivery_log(session, input.app_id, settings.delivery_log_keep)
        if outcome.ok:
            activity.logger.info(
                "sent %s for %s to %s", input.event, input.repository_id, input.app_id
            )
            return NoticeResult(app_id=input.app_id, delivered=True)
        if outcome.error_type == DeliveryErrorType.GONE:
            return NoticeResult(
                app_id=input.app_id,
                delivered=False,
                error_type=outcome.error_type,
                error=outcome.error,
            )
        activity.logger.warning(
            "%s for %s to %s failed: %s: %s",
            input.event,
            input.repository_id,
            input.app_id,
            outcome.error_type,
            redact(outcome.error or "", terms),
        )
        raise failure_error(outcome, [*target.secrets, *key])
