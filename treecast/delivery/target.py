"""Reaching one app, for files and notices alike: whether to send, with what, and the
refusal when it failed."""

from __future__ import annotations

from models.delivery import DeliveryErrorType
from models.tables import WatchStatus
from treecast.config import Settings
from treecast.store.targets import AppTarget
from treecast.webhooks.sender import WebhookError, WebhookSender
from treecast.webhooks.transport import PostOutcome


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
