"""`sync_completed`: after an app was brought to a commit, one event with the tree digest
its copy should now hash to (apps that opted in; docs/webhooks.md, "Verifying a mirror").

Sent after the delivery is recorded as finished, so an app that answers it with a
reconcile finds its watch settled. The digest is the ledger's, which then equals the
commit's tree as the app receives it; an `lfs` watch has none (its ledger keys are the
LFS objects' SHA-256, not git blob ids).
"""

from __future__ import annotations

from models.delivery import DeliveryErrorType
from treecast.config import Settings
from treecast.db import session_scope
from treecast.delivery.digest import SHA1, digest_of, object_format_of
from treecast.delivery.target import AppTarget, open_sender, refusal
from treecast.store import watches
from treecast.store.attempts import record_attempt
from treecast.store.mirrors import sorted_ledger
from treecast.webhooks import payloads
from treecast.webhooks.payloads import Event
from treecast.webhooks.signing import webhook_id


def completion_body(settings: Settings, target: AppTarget, commit: str | None) -> bytes:
    """The `sync_completed` body for the app's ledger as it stands."""
    app_id, repository_id = target.app_id, target.repository.repository_id
    digest: str | None = None
    files: int | None = None
    with session_scope(settings.database_url) as session:
        watch = watches.get(session, app_id, repository_id)
        if watch is not None and not watch.lfs:
            digest, files = digest_of(sorted_ledger(session, app_id, repository_id))
    return payloads.sync_completed_body(
        repo=target.repository,
        commit_sha=commit,
        object_format=object_format_of(commit) if commit else SHA1,
        tree_digest=digest,
        files=files,
        timestamp=payloads.iso_utc(),
    )


def announce_completion(settings: Settings, target: AppTarget, commit: str | None) -> bool:
    """POST `sync_completed` for `commit` and log the attempt; False on a 410 (the watch is
    then disabled). Any other failure raises the run's `WebhookError`; a retried run sends
    it again with the same webhook-id (`target.generation` is the run's)."""
    repository_id = target.repository.repository_id
    body = completion_body(settings, target, commit)
    msg_id = webhook_id("completed", target.app_id, repository_id, target.generation, commit or "")
    with open_sender(settings, target, timeout=settings.notice_timeout_seconds) as sender:
        outcome = sender.post(Event.SYNC_COMPLETED, msg_id, body, Event.SYNC_COMPLETED)
    with session_scope(settings.database_url) as session:
        record_attempt(
            session,
            app_id=target.app_id,
            repository_id=repository_id,
            event=Event.SYNC_COMPLETED,
            path=None,
            webhook_id=msg_id,
            outcome=outcome,
        )
    if outcome.ok:
        return True
    if outcome.error_type == DeliveryErrorType.GONE:
        return False
    raise refusal(target, outcome)
