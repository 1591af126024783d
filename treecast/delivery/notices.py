"""One breaker notice (`sync_failed`, `sync_recovered`) to one app, by the steps files take:
load the app's target, compose the body, send it, record the answer."""

from __future__ import annotations

from models.delivery import DeliveryErrorType, NoticeInput, NoticeResult
from models.events import SyncEvent
from treecast.config import Settings
from treecast.db import session_scope
from treecast.delivery import target as targets
from treecast.delivery.target import AppTarget
from treecast.redact import redact
from treecast.store.attempts import prune_delivery_log, record_attempt
from treecast.webhooks import payloads
from treecast.webhooks.signing import SigningScheme, redaction_terms, webhook_id

# What `send_notice` says when it sends nothing.
_SKIPPED = {
    DeliveryErrorType.WATCH_MISSING: "the app or its watch was removed",
    DeliveryErrorType.GONE: "the watch is disabled (the app answered 410 Gone)",
}


def notice_body(target: AppTarget, input: NoticeInput) -> bytes | None:
    """The notice's body in the app's format (None: this app does not get this event)."""
    docora = target.scheme == SigningScheme.DOCORA
    terms = redaction_terms(targets.secrets_of(target))
    timestamp = input.occurred_at or payloads.iso_utc()
    if input.event == SyncEvent.SYNC_FAILED and docora:
        return payloads.docora_sync_failed_body(
            repo=target.repository,
            error_message=redact(input.error_message or "", terms),
            breaker=input.breaker,
            retry_count=target.retry_count,
            timestamp=timestamp,
        )
    if input.event == SyncEvent.SYNC_FAILED:
        return payloads.sync_failed_body(
            repo=target.repository,
            error_type=input.error_type,
            error_message=redact(input.error_message or "", terms),
            breaker=input.breaker,
            timestamp=timestamp,
        )
    if docora and not target.treecast_events:
        # Docora has no such event; a docora app gets it only when it asked for it.
        return None
    return payloads.sync_recovered_body(
        repo=target.repository,
        commit_sha=input.commit,
        breaker=input.breaker,
        timestamp=timestamp,
    )


def send_notice(settings: Settings, input: NoticeInput) -> NoticeResult:
    """POST one breaker notice to one app; idempotent through its webhook-id.

    Returns `delivered=False` when the app or watch is gone, the watch is disabled, the
    app does not get this event, or it answers 410 (which disables the watch). Any other
    failure raises a `WebhookError` (after recording it).
    """
    with session_scope(settings.database_url) as session:
        target = targets.load_target(settings, session, input.app_id, input.repository_id)
    skipped = targets.skip_reason(target)
    if skipped is not None:
        return NoticeResult(
            input.app_id, delivered=False, error_type=skipped, error=_SKIPPED[skipped]
        )
    assert target is not None
    body = notice_body(target, input)
    if body is None:
        error = f"{input.event} is not sent to docora-scheme apps without treecast_events"
        return NoticeResult(input.app_id, delivered=False, error_type=None, error=error)
    msg_id = webhook_id(
        "notice", input.app_id, input.repository_id, input.event, input.transition_id
    )
    with targets.open_sender(settings, target, timeout=settings.notice_timeout_seconds) as sender:
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
        return NoticeResult(app_id=input.app_id, delivered=True)
    if outcome.error_type == DeliveryErrorType.GONE:
        return NoticeResult(
            app_id=input.app_id,
            delivered=False,
            error_type=outcome.error_type,
            error=outcome.error,
        )
    raise targets.refusal(target, outcome)
