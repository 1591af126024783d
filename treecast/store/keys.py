"""The secret key this database belongs to: every cipher is checked against it first."""

from __future__ import annotations

import functools
import hashlib
import hmac

from sqlalchemy.exc import IntegrityError

from models.tables import KeyFingerprint
from treecast.config import ConfigError, Settings, resolve_secret_key
from treecast.crypto import Cipher
from treecast.db import session_scope


def fingerprint(key: str) -> str:
    """A short, one-way fingerprint of a key (safe to store and print)."""
    return hmac.new(key.encode(), b"treecast key fingerprint v1", hashlib.sha256).hexdigest()[:16]


@functools.lru_cache(maxsize=8)
def _checked(database_url: str, key: str) -> None:
    mine = fingerprint(key)
    with session_scope(database_url) as session:
        row = session.get(KeyFingerprint, 1)
        if row is None:
            session.add(KeyFingerprint(id=1, fingerprint=mine))
            try:
                session.flush()
            except IntegrityError:  # another process recorded it first: compare with it
                session.rollback()
                row = session.get(KeyFingerprint, 1)
        if row is not None and not hmac.compare_digest(row.fingerprint, mine):
            raise ConfigError(
                f"TREECAST_SECRET_KEY is not the key this database's secrets were stored with "
                f"(key {mine}, database {row.fingerprint}); set the key it was created with"
            )


def cipher(settings: Settings) -> Cipher:
    """The process's cipher, once its key is known to be this database's (`ConfigError`
    naming TREECAST_SECRET_KEY when it is not). The first process records its key."""
    key = resolve_secret_key(settings)
    _checked(settings.database_url, key)
    return Cipher(key)
