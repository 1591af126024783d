"""Where and how to send one app its webhooks for one repository."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session

from models.tables import App, Repository, Watch, WatchAccess
from treecast.config import Settings
from treecast.store import keys
from treecast.urls import owner_and_name
from treecast.webhooks.payloads import RepositoryRef
from treecast.webhooks.signing import SigningScheme


@dataclass(frozen=True)
class AppTarget:
    """Where and how to send one app its webhooks for one repository (secrets decrypted)."""

    app_id: str
    base_url: str
    secrets: list[str]
    repository: RepositoryRef
    watch_status: str  # a WatchStatus value
    # Changes when the app's copy is reset (a successful sync, or `redeliver`), so a
    # deliberate re-send gets fresh webhook ids while retries keep the same ones.
    generation: str
    batch: bool = False  # the app takes several file events per `/batch` request
    # The app's signing scheme (None: Standard Webhooks) and, for `docora`, its HMAC key.
    scheme: str | None = None
    client_auth_key: str | None = None
    treecast_events: bool = False  # a docora app that also wants sync_recovered
    retry_count: int = 0  # the watch's, for Docora's sync_failed body
    # The app's own access to the repository holds: files go only to such an app.
    access_granted: bool = True
    sync_completed: bool = False  # the app wants each finished commit's tree digest


def load_target(
    settings: Settings, session: Session, app_id: str, repository_id: str
) -> AppTarget | None:
    """The app, repository and watch rows as an `AppTarget`, or None when any is gone."""
    app = session.get(App, app_id)
    repo = session.get(Repository, repository_id)
    watch = session.get(Watch, (app_id, repository_id))
    if app is None or repo is None or watch is None:
        return None
    cipher = keys.cipher(settings)
    owner, name = owner_and_name(repo.url)
    docora = app.signing_scheme == SigningScheme.DOCORA
    return AppTarget(
        app_id=app.id,
        base_url=app.base_url,
        secrets=cipher.decrypt_list(app.secrets_encrypted),
        repository=RepositoryRef(
            repository_id=repo.id,
            url=repo.url,
            owner=owner,
            name=name,
            ref=repo.ref or None,
            docora=docora,
        ),
        watch_status=watch.status,
        generation=watch.ledger_generation,
        # Batches are a Treecast-only format: a docora app gets them only when it asked.
        batch=bool(app.batch) and (not docora or bool(app.treecast_events)),
        scheme=SigningScheme.DOCORA if docora else None,
        client_auth_key=(
            cipher.decrypt(app.client_auth_key_encrypted)
            if docora and app.client_auth_key_encrypted
            else None
        ),
        treecast_events=bool(app.treecast_events),
        retry_count=watch.retry_count,
        access_granted=watch.access in WatchAccess.DELIVERABLE,
        sync_completed=bool(app.sync_completed),
    )
