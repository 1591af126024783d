"""Signatures verify with the official `standardwebhooks` package, for every active secret."""

from __future__ import annotations

import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from treecast import __version__
from treecast.crypto import generate_webhook_secret
from treecast.webhooks.signing import USER_AGENT, sign, signed_headers, stable_digest, webhook_id


def test_headers_verify_with_standardwebhooks() -> None:
    secret = generate_webhook_secret()
    body = '{"file":{"path":"é/ü.md","content":"Héllo \u2028"}}'.encode()
    headers = signed_headers([secret], "msg_abc", "create", body)
    assert Webhook(secret).verify(body, headers) == {
        "file": {"path": "é/ü.md", "content": "Héllo \u2028"}
    }
    assert headers["content-type"] == "application/json"
    assert headers["treecast-event"] == "create"
    assert headers["user-agent"] == USER_AGENT and __version__ in USER_AGENT
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 5


def test_two_secrets_sign_twice_and_each_verifies_alone() -> None:
    old, new = generate_webhook_secret(), generate_webhook_secret()
    body = b'{"a":1}'
    headers = signed_headers([old, new], "msg_1", "update", body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        Webhook(secret).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_webhook_secret()).verify(body, headers)


def test_tampering_is_detected() -> None:
    secret = generate_webhook_secret()
    headers = signed_headers([secret], "msg_1", "create", b'{"a":1}')
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(b'{"a":2}', headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(b'{"a":1}', {**headers, "webhook-id": "msg_2"})


def test_stale_timestamp_is_rejected_by_receivers() -> None:
    secret = generate_webhook_secret()
    headers = signed_headers([secret], "msg_1", "create", b"{}", timestamp=int(time.time()) - 600)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(b"{}", headers)


def test_signature_matches_the_spec_formula() -> None:
    # The Standard Webhooks reference vector (from the spec's test suite).
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert sign([secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected


def test_webhook_ids_are_stable_and_distinct() -> None:
    a = webhook_id("app", "repo", "", "create", "a.txt", "blob1", None)
    assert a == webhook_id("app", "repo", "", "create", "a.txt", "blob1", None)
    assert a.startswith("msg_") and len(a) == 36
    others = {
        webhook_id("app", "repo", "", "create", "a.txt", "blob2", None),
        webhook_id("app", "repo", "", "update", "a.txt", "blob1", None),
        webhook_id("app2", "repo", "", "create", "a.txt", "blob1", None),
        webhook_id("app", "repo", "g1", "create", "a.txt", "blob1", None),
        webhook_id("app", "repo", "", "create", "a.txt", "blob1", None, "chunk", 0),
    }
    assert a not in others and len(others) == 5
    # Parts are encoded unambiguously: moving a separator does not collide.
    assert stable_digest("a,b", "c") != stable_digest("a", "b,c")
