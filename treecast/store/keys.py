"""The secret key this database belongs to: every cipher is checked against it first."""

from __future__ import annotations

import functools
import hmac

from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from models.tables import KeyFingerprint, utcnow
from treecast.config import ConfigError, Settings, resolve_secret_key
from treecast.crypto import Cipher
from treecast.db import session_scope


def _refusal(mine: str, stored: str) -> ConfigError:
    return ConfigError(
        f"TREECAST_SECRET_KEY is not the key this database's secrets were stored with "
        f"(key {mine}, database {stored}); set the key it was created with"
    )


@functools.lru_cache(maxsize=8)
def _checked(database_url: str, key: str) -> None:
    mine = Cipher(key).fingerprint
    with session_scope(database_url) as session:
        row = session.get(KeyFingerprint, 1)
        if row is not None and not hmac.compare_digest(row.fingerprint, mine):
            raise _refusal(mine, row.fingerprint)


def cipher(settings: Settings) -> Cipher:
    """The process's cipher, once its key is known to be this database's (`ConfigError`
    naming TREECAST_SECRET_KEY when it is not)."""
    key = resolve_secret_key(settings)
    _checked(settings.database_url, key)
    return Cipher(key)


def remember(session: Session, used: Cipher) -> None:
    """Record which key encrypts this database's secrets, in the transaction that stores
    the first one (a later key that differs is refused by `cipher`)."""
    row = session.get(KeyFingerprint, 1)
    if row is None:
        # Two processes storing their first secret at once both find no row: the second
        # insert is skipped (not a unique-key failure), and the row is compared below.
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        session.execute(
            dialect.insert(KeyFingerprint)
            .values(id=1, fingerprint=used.fingerprint, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["id"])
        )
        row = session.get(KeyFingerprint, 1, populate_existing=True)
    if row is not None and not hmac.compare_digest(row.fingerprint, used.fingerprint):
        raise _refusal(used.fingerprint, row.fingerprint)
