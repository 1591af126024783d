"""The one public webhook sender: sign a body for an app and POST it to `{base_url}/{event}`.

File deliveries, batches and breaker notices all go through `WebhookSender`, so
signing, the SSRF guard, the deadline and the metrics are written once. A failed
answer becomes a `WebhookError`, which the activities turn into Temporal's error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import httpx

from models.delivery import DeliveryErrorType
from treecast import metrics
from treecast.config import Settings
from treecast.redact import redact
from treecast.webhooks.signing import headers_for_scheme, redaction_terms, signed_headers
from treecast.webhooks.transport import (
    PostOutcome,
    endpoint_url,
    make_client,
    post_webhook,
    while_waiting,
)


class WebhookSender:
    """A keep-alive, guarded client posting signed webhooks to one app (a context manager)."""

    def __init__(
        self,
        settings: Settings,
        base_url: str,
        secrets: Sequence[str],
        *,
        timeout: float,
        scheme: str | None = None,
        app_id: str = "",
        client_auth_key: str | None = None,
    ) -> None:
        self.base_url = base_url
        self.secrets = list(secrets)
        self.timeout = timeout
        # The app's signing scheme (see `signing.headers_for_scheme`); None: Standard Webhooks.
        self.scheme = scheme
        self.app_id = app_id
        self.client_auth_key = client_auth_key
        # Every secret that must never show in error text.
        self.redacted = [*self.secrets, *([client_auth_key] if client_auth_key else [])]
        self._client = make_client(settings, timeout=timeout)
        self._urls: dict[str, httpx.URL] = {}  # parsed once per endpoint, not per request

    def __enter__(self) -> WebhookSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()

    def _url(self, event: str) -> httpx.URL:
        url = self._urls.get(event)
        if url is None:
            url = self._urls[event] = httpx.URL(endpoint_url(self.base_url, event))
        return url

    def sign(self, event: str, msg_id: str, body: bytes) -> dict[str, str]:
        """The signed headers of a request, made now (for `post(..., headers=)`)."""
        return self.headers(event, msg_id, body)

    def post(
        self,
        event: str,
        msg_id: str,
        body: bytes,
        what: str,
        *,
        headers: dict[str, str] | None = None,
        on_sent: Callable[[], None] | None = None,
    ) -> PostOutcome:
        """Sign `body` in the app's scheme (unless `headers` were signed beforehand with
        `sign`) and POST it; never raises for HTTP or network failures (see
        `PostOutcome`). `on_sent` runs once the request is written, while the answer is
        awaited (not at all when the request could not be written)."""
        if headers is None:
            headers = self.headers(event, msg_id, body)
        with while_waiting(on_sent):
            outcome = post_webhook(
                self._client,
                self._url(event),
                body,
                headers,
                timeout=self.timeout,
                what=what,
                secrets=self.redacted,
            )
        metrics.record_webhook(
            event, "ok" if outcome.ok else str(outcome.error_type), outcome.duration_ms, len(body)
        )
        return outcome

    def headers(self, event: str, msg_id: str, body: bytes) -> dict[str, str]:
        """The signed headers of one request, in the app's scheme."""
        if self.scheme is None:
            return signed_headers(self.secrets, msg_id, event, body)
        return headers_for_scheme(
            self.scheme,
            self.secrets,
            msg_id,
            event,
            body,
            app_id=self.app_id,
            client_auth_key=self.client_auth_key,
        )


class WebhookError(Exception):
    """A webhook the app refused or never got: `type` is a `DeliveryErrorType` value, the
    message is redacted, `retry_after` (seconds) comes from a 429's or 503's Retry-After."""

    def __init__(self, error_type: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.type = error_type
        self.message = message
        self.retry_after = retry_after
        # Retrying cannot reach a forbidden address; everything else may recover.
        self.non_retryable = error_type == DeliveryErrorType.BLOCKED_ADDRESS

    @classmethod
    def of(cls, outcome: PostOutcome, secrets: Sequence[str]) -> WebhookError:
        """The error of a failed outcome, its text redacted of `secrets` in every form."""
        assert outcome.error_type is not None
        message = redact(outcome.error or outcome.error_type, redaction_terms(secrets))
        return cls(outcome.error_type, message, outcome.retry_after)
