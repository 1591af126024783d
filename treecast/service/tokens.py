"""App bearer tokens: `tc_<token_id>_<secret>`, stored as the token id and a hash of the secret.

The id is public and indexed, so a request costs one lookup whatever the number of apps
(no scan, no per-app bcrypt as in Docora). The secret is 256 random bits, so a plain
SHA-256 is as strong as a slow hash here, and it is compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

PREFIX = "tc_"
_TOKEN = re.compile(r"^tc_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
# Compared against when the token id is unknown, so that answer takes as long as a wrong secret.
_DUMMY_HASH = hashlib.sha256(b"treecast-no-such-token").hexdigest()


@dataclass(frozen=True)
class NewToken:
    """A freshly made token: `token` is shown once, `token_id` and `token_hash` are stored."""

    token: str
    token_id: str
    token_hash: str


def hash_secret(secret: str) -> str:
    """The stored form of a token's secret part."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token() -> NewToken:
    """A new random app token."""
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)  # 43 characters
    return NewToken(f"{PREFIX}{token_id}_{secret}", token_id, hash_secret(secret))


def parse(token: str) -> tuple[str, str] | None:
    """`(token_id, secret)` of a well-formed token, else None."""
    match = _TOKEN.match(token or "")
    return (match.group(1), match.group(2)) if match else None


def token_id_of(token: str) -> str | None:
    """The token id of a well-formed token (for rate limiting), without checking it."""
    parsed = parse(token)
    return parsed[0] if parsed else None


def matches(secret: str, stored_hash: str | None) -> bool:
    """Whether `secret` hashes to `stored_hash`, in constant time (False for no hash)."""
    expected = stored_hash or _DUMMY_HASH
    return hmac.compare_digest(hash_secret(secret), expected) and stored_hash is not None


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison of two secrets (the admin token); hashed first, so the time
    does not depend on where they differ or on their lengths."""
    return hmac.compare_digest(
        hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest()
    )
