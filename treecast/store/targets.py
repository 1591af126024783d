"""Where and how to send one app its webhooks for one repository."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session

from models.tables import App, Repository, Watch
from treecast.config import Settings
from treecast.store import keys
from treecast.urls import owner_and_name
from treecast.webhooks.payloads import RepositoryRef


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
    return AppTarget(
        app_id=app.id,
        base_url=app.base_url,
        secrets=cipher.decrypt_list(app.secrets_encrypted),
        repository=RepositoryRef(
            repository_id=repo.id, url=repo.url, owner=owner, name=name, ref=repo.ref or None
        ),
        watch_status=watch.status,
        generation=watch.ledger_generation,
        batch=bool(app.batch),
    )
