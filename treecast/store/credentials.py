"""Credentials as stored on a watch: the columns, whose a fetch tries first, and which
two apps reach a host as the same client.

Each app's watch holds its own credentials (docs/security.md, "Tenants"). One fetch
serves every app watching a repository, so a fetch uses the credentials of one of them:
the app whose credentials fetched last (`Repository.fetched_with`) while they still
hold, else another whose access holds, else none. Whether each app may receive what was
fetched is decided per app, by its own access (`treecast.store.access`). What git needs
from them (decrypted, a GitHub App token minted) is `treecast.remote_access`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, bindparam, exists, or_, select, update
from sqlmodel import Session, col

from models.tables import Repository, Watch, WatchAccess
from treecast.config import Settings
from treecast.store import keys


@dataclass
class StoredCredentials:
    """A watch's credential columns as stored: secrets are Fernet ciphertext."""

    token_encrypted: str | None = None
    ssh_key_encrypted: str | None = None
    ssh_public_key: str | None = None
    ssh_key_fingerprint: str | None = None
    ssh_host_keys: str | None = None
    github_app_id: str | None = None
    github_installation_id: str | None = None
    github_app_key_encrypted: str | None = None
    github_token_expires_at: datetime | None = None

    @classmethod
    def of(cls, row: Any) -> StoredCredentials:
        """The credential columns of a row (a `Watch`)."""
        return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})

    def write_to(self, row: Any) -> None:
        """Set a row's credential columns to these."""
        for f in fields(self):
            setattr(row, f.name, getattr(self, f.name))

    @property
    def any(self) -> bool:
        """Whether there is a secret to reach the repository with (host keys alone are not)."""
        return bool(self.token_encrypted or self.ssh_key_encrypted or self.github_app_key_encrypted)


def identity(settings: Settings, stored: StoredCredentials) -> tuple[str, ...]:
    """Equal for credentials that reach a host as the same client (two apps with the same
    token, or the same deploy key and host keys): one check answers for both."""
    cipher = keys.cipher(settings)
    if stored.ssh_key_encrypted:
        return ("ssh", stored.ssh_key_fingerprint or "", stored.ssh_host_keys or "")
    if stored.github_app_key_encrypted:
        return (
            "github-app",
            stored.github_app_id or "",
            stored.github_installation_id or "",
            cipher.decrypt(stored.github_app_key_encrypted),
        )
    if stored.token_encrypted:
        return ("token", cipher.decrypt(stored.token_encrypted))
    return ("none",)


def has_credentials() -> ColumnElement[bool]:
    """True for a repository some watch of which has credentials (for queries)."""
    return exists().where(
        col(Watch.repository_id) == Repository.id,
        or_(
            col(Watch.token_encrypted).is_not(None),
            col(Watch.ssh_key_encrypted).is_not(None),
            col(Watch.github_app_key_encrypted).is_not(None),
        ),
    )


def fetch_order(repository: Repository, watches: list[Watch]) -> list[Watch]:
    """The watches whose credentials a fetch tries, in order: the app whose credentials
    fetched last, then those whose access holds, then those not proven yet; watches
    without credentials and those the host refused are left out."""
    usable = [w for w in watches if StoredCredentials.of(w).any and w.access != WatchAccess.REFUSED]
    rank = {None: 1, WatchAccess.GRANTED: 1, WatchAccess.PENDING: 2}
    return sorted(
        usable,
        key=lambda w: (
            0 if w.app_id == repository.fetched_with else rank.get(w.access, 3),
            w.app_id,
        ),
    )


_REPOSITORIES, _WATCHES = (Watch.metadata.tables[name] for name in ("repositories", "watches"))
_ONE_WATCH = (_WATCHES.c.app_id == bindparam("app")) & (
    _WATCHES.c.repository_id == bindparam("repository")
)
# What one app's delivery reaches the repository with, in one statement built once (each
# delivery reads it; docs/performance.md, First wave).
_APP_ACCESS = (
    select(
        _REPOSITORIES.c.url,
        _REPOSITORIES.c.ref,
        *(_WATCHES.c[f.name] for f in fields(StoredCredentials)),
    )
    .select_from(_WATCHES.join(_REPOSITORIES, _REPOSITORIES.c.id == _WATCHES.c.repository_id))
    .where(_ONE_WATCH)
)
_TOKEN_EXPIRY = (
    update(_WATCHES).where(_ONE_WATCH).values(github_token_expires_at=bindparam("expires"))
)


def of_watch(
    session: Session, app_id: str, repository_id: str
) -> tuple[str, str, StoredCredentials] | None:
    """The repository's URL and ref and the app's stored credentials for it (None when
    the repository or the watch is gone)."""
    ids = {"app": app_id, "repository": repository_id}
    row = session.connection().execute(_APP_ACCESS, ids).first()
    return (row.url, row.ref or "", StoredCredentials.of(row)) if row is not None else None


def note_token_expiry(
    session: Session, app_id: str, repository_id: str, expires: datetime | None
) -> None:
    """Record on the watch when its GitHub App token (minted for it) expires."""
    ids = {"app": app_id, "repository": repository_id}
    session.connection().execute(_TOKEN_EXPIRY, {**ids, "expires": expires})
