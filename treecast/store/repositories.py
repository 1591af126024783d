"""Credentials as stored on a watch, and what git needs to reach a repository.

Each app's watch holds its own credentials (docs/security.md, "Tenants"). One fetch
serves every app watching a repository, so a fetch uses the credentials of one of them:
the app whose credentials fetched last (`Repository.fetched_with`) while they still
hold, else another whose access holds, else none. Whether each app may receive what was
fetched is decided per app, by its own access (`treecast.store.access`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, bindparam, exists, or_, update
from sqlmodel import Session, SQLModel, col, select

from models.git import GitErrorType
from models.tables import Repository, Watch, WatchAccess
from treecast.config import Settings
from treecast.credentials.github_app import GitHubApp, installation_token
from treecast.gitcache.command import AnyCredentials, Credentials
from treecast.gitcache.errors import GitError
from treecast.gitcache.repository import RemoteAccess, RepositoryCache
from treecast.gitcache.ssh import SshCredentials, parse_host_keys
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


def decrypt(settings: Settings, stored: StoredCredentials) -> AnyCredentials | None:
    """What git needs from stored credentials: the token or deploy key decrypted, or a
    GitHub App installation token from this process's cache (minted when there is none
    fresh; `stored.github_token_expires_at` is set to its expiry, never the token)."""
    if stored.ssh_key_encrypted:
        key = keys.cipher(settings).decrypt(stored.ssh_key_encrypted)
        return SshCredentials(key, parse_host_keys(stored.ssh_host_keys or ""))
    if stored.github_app_key_encrypted and stored.github_app_id and stored.github_installation_id:
        app = GitHubApp(
            api_url=settings.github_api_url,
            app_id=stored.github_app_id,
            installation_id=stored.github_installation_id,
            private_key=keys.cipher(settings).decrypt(stored.github_app_key_encrypted),
        )
        minted = installation_token(app)
        stored.github_token_expires_at = minted.expires_at
        return Credentials(minted.token)
    if stored.token_encrypted:
        return Credentials(keys.cipher(settings).decrypt(stored.token_encrypted))
    return None


def watch_access(
    settings: Settings, session: Session, watch: Watch, url: str, ref: str
) -> RemoteAccess:
    """The repository as git reaches it with this watch's own credentials (a GitHub App
    token's new expiry is recorded on the watch)."""
    stored = StoredCredentials.of(watch)
    credentials = decrypt(settings, stored)
    if _naive(stored.github_token_expires_at) != _naive(watch.github_token_expires_at):
        watch.github_token_expires_at = stored.github_token_expires_at
        session.add(watch)
    return RemoteAccess(
        repository_id=watch.repository_id, url=url, ref=ref, credentials=credentials
    )


_REPOSITORIES, _WATCHES = (SQLModel.metadata.tables[name] for name in ("repositories", "watches"))
_ONE_WATCH = (_WATCHES.c.app_id == bindparam("app")) & (
    _WATCHES.c.repository_id == bindparam("repo")
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


def app_access(
    settings: Settings, session: Session, repository_id: str, app_id: str
) -> RemoteAccess:
    """The repository as git reaches it for one app's delivery: with that app's own
    credentials (none without them), never another app's, so what a delivery fetches
    beyond the commit (a submodule, an LFS object) the app's own access reaches.
    RepositoryNotFound when the repository or the watch is gone."""
    ids = {"app": app_id, "repo": repository_id}
    row = session.connection().execute(_APP_ACCESS, ids).first()
    if row is None:
        raise GitError(
            GitErrorType.REPOSITORY_NOT_FOUND,
            f"repository {repository_id} or its watch by {app_id} is gone (removed meanwhile?)",
        )
    stored = StoredCredentials.of(row)
    credentials = decrypt(settings, stored)
    if _naive(stored.github_token_expires_at) != _naive(row.github_token_expires_at):
        # A GitHub App token was minted: its expiry is recorded on the watch.
        session.connection().execute(
            _TOKEN_EXPIRY, {**ids, "expires": stored.github_token_expires_at}
        )
    return RemoteAccess(
        repository_id=repository_id,
        url=row.url,
        ref=row.ref or "",
        credentials=credentials,
        tenant=app_id,
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


def load_access(settings: Settings, session: Session, repository_id: str) -> RemoteAccess:
    """The repository's URL, ref and the credentials a fetch uses now (see `fetch_order`;
    none when no watch has usable ones). RepositoryNotFound if it is not registered."""
    row = session.get(Repository, repository_id)
    if row is None:
        raise GitError(
            GitErrorType.REPOSITORY_NOT_FOUND,
            f"repository {repository_id} is not registered (removed meanwhile?)",
        )
    watches = list(session.exec(select(Watch).where(Watch.repository_id == repository_id)).all())
    order = fetch_order(row, watches)
    if order:
        return watch_access(settings, session, order[0], row.url, row.ref or "")
    return RemoteAccess(
        repository_id=repository_id, url=row.url, ref=row.ref or "", credentials=None
    )


def _naive(value: object) -> object:
    """A datetime without its zone (SQLite gives them back naive), for comparing."""
    return value.replace(tzinfo=None) if isinstance(value, datetime) else value


def ensure_commit(settings: Settings, repository_id: str, commit: str) -> RepositoryCache:
    """The repository's cache on this worker, holding `commit` (fetched if it lacks it)."""
    from treecast.db import session_scope

    with session_scope(settings.database_url) as session:
        access = load_access(settings, session, repository_id)
    cache = RepositoryCache(settings, repository_id)
    cache.ensure_commit(access, commit)
    return cache
