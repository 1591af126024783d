"""Reaching one app, for files and notices alike: where and how to send (`AppTarget`),
whether to send, with what, and the refusal when it failed."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session

from models.delivery import DeliveryErrorType
from models.tables import WatchAccess, WatchStatus
from treecast.config import Settings
from treecast.store import keys
from treecast.store.watches import target_columns
from treecast.urls import owner_and_name
from treecast.webhooks.payloads import RepositoryRef
from treecast.webhooks.sender import WebhookError, WebhookSender
from treecast.webhooks.signing import SigningScheme
from treecast.webhooks.transport import PostOutcome


@dataclass(frozen=True)
class AppTarget:
    """Where and how to send one app its webhooks for one repository (secrets decrypted)."""

    app_id: str
    base_url: str
    secrets: list[str]
    repository: RepositoryRef
    watch_status: str  # a WatchStatus value
    # Changes when the app's copy is reset (a successful sync, or `redeliver`), so a
    # deliberate re-send gets fresh webhook ids while retries keep the same ones.
    generation: str
    batch: bool = False  # the app takes several file events per `/batch` request
    # The app's signing scheme (None: Standard Webhooks) and, for `docora`, its HMAC key.
    scheme: str | None = None
    client_auth_key: str | None = None
    treecast_events: bool = False  # a docora app that also wants sync_recovered
    retry_count: int = 0  # the watch's, for Docora's sync_failed body
    # The app's own access to the repository holds: files go only to such an app.
    access_granted: bool = True
    sync_completed: bool = False  # the app wants each finished commit's tree digest


def load_target(
    settings: Settings, session: Session, app_id: str, repository_id: str
) -> AppTarget | None:
    """The app, repository and watch as an `AppTarget`, or None when any is gone."""
    row = target_columns(session, app_id, repository_id)
    if row is None:
        return None
    cipher = keys.cipher(settings)
    owner, name = owner_and_name(row.url)
    docora = row.signing_scheme == SigningScheme.DOCORA
    return AppTarget(
        app_id=row.app_id,
        base_url=row.base_url,
        secrets=cipher.decrypt_list(row.secrets_encrypted),
        repository=RepositoryRef(
            repository_id=repository_id,
            url=row.url,
            owner=owner,
            name=name,
            ref=row.ref or None,
            docora=docora,
        ),
        watch_status=row.status,
        generation=row.ledger_generation,
        # Batches are a Treecast-only format: a docora app gets them only when it asked.
        batch=bool(row.batch) and (not docora or bool(row.treecast_events)),
        scheme=SigningScheme.DOCORA if docora else None,
        client_auth_key=(
            cipher.decrypt(row.client_auth_key_encrypted)
            if docora and row.client_auth_key_encrypted
            else None
        ),
        treecast_events=bool(row.treecast_events),
        retry_count=row.retry_count,
        access_granted=row.access in WatchAccess.DELIVERABLE,
        sync_completed=bool(row.sync_completed),
    )


def skip_reason(target: AppTarget | None, *, files: bool = False) -> DeliveryErrorType | None:
    """Why nothing is sent (None: send): the app, repository or watch is gone
    (`WATCH_MISSING`), the watch is disabled because the app answered 410 (`GONE`), or,
    for `files`, the app's own access to the repository does not hold (`ACCESS_REFUSED`:
    notices still go, so the refused app hears why)."""
    if target is None:
        return DeliveryErrorType.WATCH_MISSING
    if target.watch_status == WatchStatus.DISABLED:
        return DeliveryErrorType.GONE
    if files and not target.access_granted:
        return DeliveryErrorType.ACCESS_REFUSED
    return None


def secrets_of(target: AppTarget) -> list[str]:
    """The app's secrets that must never show in text: its signing secrets and Docora key."""
    return [*target.secrets, *([target.client_auth_key] if target.client_auth_key else [])]


def open_sender(settings: Settings, target: AppTarget, *, timeout: float) -> WebhookSender:
    """A sender signing for the app in its scheme (a context manager)."""
    return WebhookSender(
        settings,
        target.base_url,
        target.secrets,
        timeout=timeout,
        scheme=target.scheme,
        app_id=target.app_id,
        client_auth_key=target.client_auth_key,
    )


def refusal(target: AppTarget, outcome: PostOutcome) -> WebhookError:
    """A failed answer as the error the run raises, redacted of the app's secrets."""
    return WebhookError.of(outcome, secrets_of(target))
