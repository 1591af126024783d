"""Repository rows as git needs them."""

from __future__ import annotations

from sqlmodel import Session

from models.git import GitErrorType
from models.tables import Repository
from treecast.config import Settings
from treecast.credentials.github_app import GitHubApp, installation_token
from treecast.gitcache.command import AnyCredentials, Credentials
from treecast.gitcache.errors import GitError
from treecast.gitcache.repository import RemoteAccess, RepositoryCache
from treecast.gitcache.ssh import SshCredentials, parse_host_keys
from treecast.store import keys


def load_access(settings: Settings, session: Session, repository_id: str) -> RemoteAccess:
    """The repository's URL, ref and credentials (RepositoryNotFound if not registered):
    its token or deploy key decrypted, or a GitHub App installation token from this
    process's cache, minted when there is none fresh (its expiry is recorded on the row,
    never the token)."""
    row = session.get(Repository, repository_id)
    if row is None:
        raise GitError(
            GitErrorType.REPOSITORY_NOT_FOUND,
            f"repository {repository_id} is not registered (removed meanwhile?)",
        )
    credentials: AnyCredentials | None = None
    if row.ssh_key_encrypted:
        key = keys.cipher(settings).decrypt(row.ssh_key_encrypted)
        credentials = SshCredentials(key, parse_host_keys(row.ssh_host_keys or ""))
    elif row.github_app_key_encrypted and row.github_app_id and row.github_installation_id:
        app = GitHubApp(
            api_url=settings.github_api_url,
            app_id=row.github_app_id,
            installation_id=row.github_installation_id,
            private_key=keys.cipher(settings).decrypt(row.github_app_key_encrypted),
        )
        minted = installation_token(app)
        credentials = Credentials(minted.token)
        if _naive(row.github_token_expires_at) != _naive(minted.expires_at):
            row.github_token_expires_at = minted.expires_at
            session.add(row)
    elif row.token_encrypted:
        token = keys.cipher(settings).decrypt(row.token_encrypted)
        credentials = Credentials(token)
    return RemoteAccess(
        repository_id=repository_id, url=row.url, ref=row.ref or "", credentials=credentials
    )


def _naive(value: object) -> object:
    """A datetime without its zone (SQLite gives them back naive), for comparing."""
    from datetime import datetime

    return value.replace(tzinfo=None) if isinstance(value, datetime) else value


def ensure_commit(settings: Settings, repository_id: str, commit: str) -> RepositoryCache:
    """The repository's cache on this worker, holding `commit` (fetched if it lacks it)."""
    from treecast.db import session_scope

    with session_scope(settings.database_url) as session:
        access = load_access(settings, session, repository_id)
    cache = RepositoryCache(settings, repository_id)
    cache.ensure_commit(access, commit)
    return cache
