"""Encryption of secrets at rest (Fernet: AES-128-CBC + HMAC-SHA256) and webhook secret format."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets

from cryptography.fernet import Fernet, InvalidToken

WHSEC_PREFIX = "whsec_"


def generate_key() -> str:
    """A new random key for `TREECAST_SECRET_KEY`."""
    return Fernet.generate_key().decode()


def validate_key(key: str) -> None:
    """Raise ValueError unless `key` is a usable Fernet key."""
    try:
        Fernet(key.encode())
    except (ValueError, binascii.Error):
        raise ValueError("not a Fernet key") from None


class Cipher:
    """Encrypts and decrypts short secrets with the process's key."""

    def __init__(self, key: str) -> None:
        self._fernet = Fernet(key.encode())
        # Safe to store and print: one-way, and says which key this is.
        self.fingerprint = hmac.new(
            key.encode(), b"treecast key fingerprint v1", hashlib.sha256
        ).hexdigest()[:16]

    def encrypt(self, plain: str) -> str:
        """Ciphertext (ASCII) for `plain`."""
        return self._fernet.encrypt(plain.encode()).decode()

    def decrypt(self, token: str) -> str:
        """The plain text; raises ValueError (without the token) when the key is wrong."""
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise ValueError(
                "a stored secret cannot be decrypted: TREECAST_SECRET_KEY differs from the key it was stored with"
            ) from None

    def encrypt_list(self, values: list[str]) -> str:
        """Encrypt several secrets as one value (for webhook secret rotation)."""
        return self.encrypt(json.dumps(values))

    def decrypt_list(self, token: str) -> list[str]:
        """Inverse of `encrypt_list`."""
        values = json.loads(self.decrypt(token))
        return [str(v) for v in values]


def generate_webhook_secret() -> str:
    """A new Standard Webhooks secret: `whsec_` + base64 of 32 random bytes."""
    return WHSEC_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def validate_webhook_secret(secret: str) -> None:
    """Raise ValueError with a one-line reason unless `secret` is a usable `whsec_` secret."""
    if not secret.startswith(WHSEC_PREFIX):
        raise ValueError("a webhook secret must start with 'whsec_'")
    body = secret[len(WHSEC_PREFIX) :]
    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret must be 'whsec_' followed by base64") from None
    if not 24 <= len(raw) <= 64:
        raise ValueError("a webhook secret must hold 24 to 64 random bytes")
