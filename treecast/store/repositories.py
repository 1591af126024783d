"""Repository rows as git needs them."""

from __future__ import annotations

from sqlmodel import Session

from models.git import GitErrorType
from models.tables import Repository
from treecast.config import Settings
from treecast.gitcache.command import Credentials, git_error
from treecast.gitcache.repository import RemoteAccess, RepositoryCache
from treecast.store import keys


def load_access(settings: Settings, session: Session, repository_id: str) -> RemoteAccess:
    """The repository's URL, ref and decrypted token (RepositoryNotFound if not registered)."""
    row = session.get(Repository, repository_id)
    if row is None:
        raise git_error(
            GitErrorType.REPOSITORY_NOT_FOUND,
            f"repository {repository_id} is not registered (removed meanwhile?)",
        )
    credentials = None
    if row.token_encrypted:
        token = keys.cipher(settings).decrypt(row.token_encrypted)
        credentials = Credentials(token)
    return RemoteAccess(
        repository_id=repository_id, url=row.url, ref=row.ref or "", credentials=credentials
    )


def ensure_commit(settings: Settings, repository_id: str, commit: str) -> RepositoryCache:
    """The repository's cache on this worker, holding `commit` (fetched if it lacks it)."""
    from treecast.db import session_scope

    with session_scope(settings.database_url) as session:
        access = load_access(settings, session, repository_id)
    cache = RepositoryCache(settings, repository_id)
    cache.ensure_commit(access, commit)
    return cache
