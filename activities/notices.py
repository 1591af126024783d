"""The `send_notice` activity: one `sync_failed` or `sync_recovered` POST to one app.

`NoticeActivities` also holds what every webhook-sending activity shares
(signing a body for the app, posting it, logging the attempt), and
`activities.delivery.DeliveryActivities` extends it, so the worker registers
both `deliver_changes` and `send_notice` from one object.
"""

from __future__ import annotations

from datetime import timedelta
from typing import NoReturn

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities import payloads
from activities.http_client import PostOutcome, endpoint_url, make_client, post_webhook
from activities.signing import redaction_terms, signed_headers, webhook_id
from activities.watchers import (
    AppTarget,
    load_target,
    prune_delivery_log,
    record_attempt,
)
from models.delivery import DeliveryErrorType, NoticeInput, NoticeResult
from models.tables import WatchStatus
from treecast import metrics
from treecast.config import Settings
from treecast.db import session_scope
from treecast.redact import redact


class NoticeActivities:
    """Sends breaker notices; the base of `DeliveryActivities`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # -- shared by the webhook-sending activities -----------------------------------

    def _load(self, app_id: str, repository_id: str) -> AppTarget | None:
        with session_scope(self.settings.database_url) as session:
            return load_target(self.settings, session, app_id, repository_id)

    def _post(
        self,
        client: httpx.Client,
        target: AppTarget,
        *,
        event: str,
        msg_id: str,
        body: bytes,
        timeout: float,
        what: str,
    ) -> PostOutcome:
        """Sign `body` with every active secret of the app and POST it to `{base_url}/{event}`."""
        headers = signed_headers(target.secrets, msg_id, event, body)
        outcome = post_webhook(
            client,
            endpoint_url(target.base_url, event),
            body,
            headers,
            timeout=timeout,
            what=what,
            secrets=target.secrets,
        )
        metrics.record_webhook(
            event, "ok" if outcome.ok else str(outcome.error_type), outcome.duration_ms, len(body)
        )
        return outcome

    @staticmethod
    def _raise(outcome: PostOutcome, secrets: list[str]) -> NoReturn:
        """Turn a failed outcome into the activity's ApplicationError."""
        assert outcome.error_type is not None
        message = redact(outcome.error or outcome.error_type, redaction_terms(secrets))
        delay = timedelta(seconds=outcome.retry_after) if outcome.retry_after is not None else None
        raise ApplicationError(
            message,
            type=outcome.error_type,
            # Retrying cannot reach a forbidden address; everything else may recover.
            non_retryable=outcome.error_type == DeliveryErrorType.BLOCKED_ADDRESS,
            next_retry_delay=delay,
            # An app that is down or refuses is expected: the SDK logs it at DEBUG, not
            # as a warning with a traceback; the activities log one line themselves.
            category=ApplicationErrorCategory.BENIGN,
        )

    # -- the activity ---------------------------------------------------------------

    @activity.defn(name="send_notice")
    def send_notice(self, input: NoticeInput) -> NoticeResult:
        """POST one breaker notice to one app; idempotent through its webhook-id.

        Returns `delivered=False` without raising when the app or watch is gone,
        the watch is disabled, or the app answers 410 (which disables the watch).
        Any other failure raises a retryable ApplicationError (a DeliveryErrorType).
        """
        target = self._load(input.app_id, input.repository_id)
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
        timestamp = input.occurred_at or payloads.iso_utc()
        if input.event == payloads.Event.SYNC_FAILED:
            body = payloads.sync_failed_body(
                repo=target.repository,
                error_type=input.error_type,
                error_message=redact(input.error_message or "", redaction_terms(target.secrets)),
                breaker=input.breaker,
                timestamp=timestamp,
            )
        elif input.event == payloads.Event.SYNC_RECOVERED:
            body = payloads.sync_recovered_body(
                repo=target.repository,
                commit_sha=input.commit,
                breaker=input.breaker,
                timestamp=timestamp,
            )
        else:
            raise ApplicationError(
                f"unknown notice event {input.event!r}", type="ValueError", non_retryable=True
            )
        msg_id = webhook_id(
            "notice", input.app_id, input.repository_id, input.event, input.transition_id
        )
        timeout = self.settings.notice_timeout_seconds
        with make_client(self.settings, timeout=timeout) as client:
            outcome = self._post(
                client,
                target,
                event=input.event,
                msg_id=msg_id,
                body=body,
                timeout=timeout,
                what=input.event,
            )
        with session_scope(self.settings.database_url) as session:
            record_attempt(
                session,
                app_id=input.app_id,
                repository_id=input.repository_id,
                event=input.event,
                path=None,
                webhook_id=msg_id,
                outcome=outcome,
            )
            prune_delivery_log(session, input.app_id, self.settings.delivery_log_keep)
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
            redact(outcome.error or "", redaction_terms(target.secrets)),
        )
        self._raise(outcome, target.secrets)
