"""The repository as git reaches it: a watch's stored credentials decrypted (a deploy
key, a token, or a GitHub App installation token minted here), for a fetch or for one
app's delivery (docs/security.md, "Tenants"). Whose credentials a fetch uses is
`treecast.store.credentials.fetch_order`.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, select

from models.git import GitErrorType
from models.tables import Repository, Watch
from treecast.config import Settings
from treecast.credentials.github_app import GitHubApp, installation_token
from treecast.db import session_scope
from treecast.gitcache.command import AnyCredentials, Credentials
from treecast.gitcache.errors import GitError
from treecast.gitcache.repository import RemoteAccess, RepositoryCache
from treecast.gitcache.ssh import SshCredentials, parse_host_keys
from treecast.store import credentials as credentials_store
from treecast.store import keys
from treecast.store.credentials import StoredCredentials, fetch_order


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


def app_access(
    settings: Settings, session: Session, repository_id: str, app_id: str
) -> RemoteAccess:
    """The repository as git reaches it for one app's delivery: with that app's own
    credentials (none without them), never another app's, so what a delivery fetches
    beyond the commit (a submodule, an LFS object) the app's own access reaches.
    RepositoryNotFound when the repository or the watch is gone."""
    found = credentials_store.of_watch(session, app_id, repository_id)
    if found is None:
        raise GitError(
            GitErrorType.REPOSITORY_NOT_FOUND,
            f"repository {repository_id} or its watch by {app_id} is gone (removed meanwhile?)",
        )
    url, ref, stored = found
    expires = stored.github_token_expires_at
    credentials = decrypt(settings, stored)
    if _naive(stored.github_token_expires_at) != _naive(expires):
        # A GitHub App token was minted: its expiry is recorded on the watch.
        credentials_store.note_token_expiry(
            session, app_id, repository_id, stored.github_token_expires_at
        )
    return RemoteAccess(
        repository_id=repository_id, url=url, ref=ref, credentials=credentials, tenant=app_id
    )


def unregistered(repository_id: str) -> GitError:
    """The error of a repository removed meanwhile (not retried)."""
    return GitError(
        GitErrorType.REPOSITORY_NOT_FOUND,
        f"repository {repository_id} is not registered (removed meanwhile?)",
    )


def load_access(settings: Settings, session: Session, repository_id: str) -> RemoteAccess:
    """The repository's URL, ref and the credentials a fetch uses now (see `fetch_order`;
    none when no watch has usable ones). RepositoryNotFound if it is not registered."""
    row = session.get(Repository, repository_id)
    if row is None:
        raise unregistered(repository_id)
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
    with session_scope(settings.database_url) as session:
        access = load_access(settings, session, repository_id)
    cache = RepositoryCache(settings, repository_id)
    cache.ensure_commit(access, commit)
    return cache
