"""Signing a body too big to hold: the same headers `signing.headers_for_scheme` makes for
a webhook, computed over the body's pieces as they are read (a manifest of 100,000
files). Pure; equal to the one-piece signature byte for byte (tests/api/test_mirrors_api.py
verifies a streamed manifest with `standardwebhooks`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterable, Sequence

from treecast.webhooks.signing import (
    DOCORA_USER_AGENT,
    EVENT_HEADER,
    USER_AGENT,
    SigningScheme,
    secret_key_bytes,
)


def streamed_headers(
    scheme: str | None,
    secrets: Sequence[str],
    msg_id: str,
    event: str,
    pieces: Iterable[bytes],
    *,
    content_type: str,
    app_id: str = "",
    client_auth_key: str | None = None,
    timestamp: int | None = None,
) -> dict[str, str]:
    """The signed headers of the body `pieces` make up, in the app's scheme (Standard
    Webhooks: one `v1,` signature per secret; docora: `X-Docora-Signature`)."""
    ts = int(time.time()) if timestamp is None else timestamp
    prefix = str(ts).encode() + b"."
    if scheme == SigningScheme.DOCORA:
        if not client_auth_key:
            raise ValueError("the app uses the docora scheme but has no client_auth_key")
        mac = hmac.new(client_auth_key.encode(), prefix, hashlib.sha256)
        for piece in pieces:
            mac.update(piece)
        return {
            "content-type": content_type,
            "user-agent": DOCORA_USER_AGENT,
            "X-Docora-App-Id": app_id,
            "X-Docora-Timestamp": str(ts),
            "X-Docora-Signature": "sha256=" + mac.hexdigest(),
        }
    if not secrets:
        raise ValueError("the app has no webhook secret; add one with `app rotate-secret`")
    to_sign = msg_id.encode() + b"." + prefix
    macs = [hmac.new(secret_key_bytes(s), to_sign, hashlib.sha256) for s in secrets]
    for piece in pieces:
        for mac in macs:
            mac.update(piece)
    signature = " ".join("v1," + base64.b64encode(mac.digest()).decode() for mac in macs)
    return {
        "content-type": content_type,
        "user-agent": USER_AGENT,
        EVENT_HEADER: event,
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": signature,
    }
