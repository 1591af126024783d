"""Standard Webhooks signing (pure): headers, signatures and idempotency ids.

See https://www.standardwebhooks.com: the signed content is
`{webhook-id}.{webhook-timestamp}.{body}` and the signature header is a
space-separated list of `v1,<base64 HMAC-SHA256>`, one per active secret, so a
receiver keeps verifying while an app rotates its secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Sequence

from treecast import __version__
from treecast.crypto import WHSEC_PREFIX

USER_AGENT = f"Treecast/{__version__} (+https://www.standardwebhooks.com)"
EVENT_HEADER = "treecast-event"
WEBHOOK_ID_PREFIX = "msg_"


def secret_key_bytes(secret: str) -> bytes:
    """The HMAC key of a `whsec_` secret (the base64 part, decoded)."""
    body = secret[len(WHSEC_PREFIX) :] if secret.startswith(WHSEC_PREFIX) else secret
    # Receivers (and the standardwebhooks package) accept unpadded base64; do the same.
    return base64.b64decode(body + "=" * (-len(body) % 4))


def redaction_terms(secrets: Sequence[str]) -> list[str]:
    """Every form of the secrets worth scrubbing from text: `whsec_...` and the bare key."""
    terms: list[str] = []
    for secret in secrets:
        terms.append(secret)
        if secret.startswith(WHSEC_PREFIX):
            terms.append(secret[len(WHSEC_PREFIX) :])
    return terms


def sign(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one `v1,<sig>` per secret, space-separated."""
    if not secrets:
        raise ValueError(
            "the app has no webhook secret; add one with `starter.py app rotate-secret`"
        )
    to_sign = msg_id.encode() + b"." + str(timestamp).encode() + b"." + body
    signatures = []
    for secret in secrets:
        digest = hmac.new(secret_key_bytes(secret), to_sign, hashlib.sha256).digest()
        signatures.append("v1," + base64.b64encode(digest).decode())
    return " ".join(signatures)


def signed_headers(
    secrets: Sequence[str],
    msg_id: str,
    event: str,
    body: bytes,
    timestamp: int | None = None,
) -> dict[str, str]:
    """Every header of one webhook request, signed for all of the app's active secrets."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        EVENT_HEADER: event,
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secrets, msg_id, ts, body),
    }


def stable_digest(*parts: str | int | None) -> bytes:
    """SHA-256 of an unambiguous encoding of `parts` (JSON, so no separator can collide)."""
    encoded = json.dumps(list(parts), separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode()).digest()


def webhook_id(*parts: str | int | None) -> str:
    """A deterministic `webhook-id` for one logical message.

    The same parts (app, repository, generation, event, path, content, chunk
    index, ...) give the same id on every retry, so receivers can deduplicate;
    any differing part gives a different id.
    """
    return WEBHOOK_ID_PREFIX + stable_digest(*parts).hex()[:32]


# --- signing schemes ----------------------------------------------------------------


class SigningScheme:
    """Values of `App.signing_scheme` (None in the database means the default)."""

    STANDARD = "standard-webhooks"
    DOCORA = "docora"
    ALL = (STANDARD, DOCORA)


DOCORA_USER_AGENT = f"Treecast/{__version__} (Docora-compatible)"


def docora_signature(client_auth_key: str, timestamp: int, body: bytes) -> str:
    """Docora's `X-Docora-Signature`: `sha256=` + hex HMAC-SHA256 of `{timestamp}.{body}`,
    keyed with the UTF-8 bytes of the app's client_auth_key."""
    to_sign = str(timestamp).encode() + b"." + body
    return "sha256=" + hmac.new(client_auth_key.encode(), to_sign, hashlib.sha256).hexdigest()


def docora_headers(
    client_auth_key: str, app_id: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    """Every header of one Docora-signed request (Docora sends no event or id header)."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "content-type": "application/json",
        "user-agent": DOCORA_USER_AGENT,
        "X-Docora-App-Id": app_id,
        "X-Docora-Timestamp": str(ts),
        "X-Docora-Signature": docora_signature(client_auth_key, ts, body),
    }


def headers_for_scheme(
    scheme: str | None,
    secrets: Sequence[str],
    msg_id: str,
    event: str,
    body: bytes,
    *,
    app_id: str = "",
    client_auth_key: str | None = None,
    timestamp: int | None = None,
) -> dict[str, str]:
    """The signed headers for an app's scheme: `signed_headers` or `docora_headers`."""
    if scheme == SigningScheme.DOCORA:
        if not client_auth_key:
            raise ValueError(
                "the app uses the docora scheme but has no client_auth_key; "
                "set one with `starter.py app update --scheme docora --client-auth-key-env VAR`"
            )
        return docora_headers(client_auth_key, app_id, body, timestamp)
    return signed_headers(secrets, msg_id, event, body, timestamp)
