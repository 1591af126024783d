"""Where and how to send one app its webhooks for one repository."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, select
from sqlmodel import Session, SQLModel

from models.tables import WatchAccess
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


_APPS, _REPOSITORIES, _WATCHES = (
    SQLModel.metadata.tables[name] for name in ("apps", "repositories", "watches")
)
# The app, repository and watch columns a target needs, in one statement built once
# (each delivery and notice reads it; docs/performance.md, First wave).
_TARGET = (
    select(
        _APPS.c.id,
        _APPS.c.base_url,
        _APPS.c.secrets_encrypted,
        _APPS.c.batch,
        _APPS.c.signing_scheme,
        _APPS.c.client_auth_key_encrypted,
        _APPS.c.treecast_events,
        _REPOSITORIES.c.url,
        _REPOSITORIES.c.ref,
        _WATCHES.c.status,
        _WATCHES.c.ledger_generation,
        _WATCHES.c.retry_count,
        _WATCHES.c.access,
    )
    .select_from(
        _WATCHES.join(_APPS, _APPS.c.id == _WATCHES.c.app_id).join(
            _REPOSITORIES, _REPOSITORIES.c.id == _WATCHES.c.repository_id
        )
    )
    .where(
        (_WATCHES.c.app_id == bindparam("app")) & (_WATCHES.c.repository_id == bindparam("repo"))
    )
)


def load_target(
    settings: Settings, session: Session, app_id: str, repository_id: str
) -> AppTarget | None:
    """The app, repository and watch rows as an `AppTarget`, or None when any is gone."""
    row = session.connection().execute(_TARGET, {"app": app_id, "repo": repository_id}).first()
    if row is None:
        return None
    cipher = keys.cipher(settings)
    owner, name = owner_and_name(row.url)
    docora = row.signing_scheme == SigningScheme.DOCORA
    return AppTarget(
        app_id=row.id,
        base_url=row.base_url,
        secrets=cipher.decrypt_list(row.secrets_encrypted),
        repository=RepositoryRef(
            repository_id=repository_id,
            url=row.url,
            owner=owner,
            name=name,
            ref=row.ref or None,
            docora=docora,
        ),
        watch_status=row.status,
        generation=row.ledger_generation,
        # Batches are a Treecast-only format: a docora app gets them only when it asked.
        batch=bool(row.batch) and (not docora or bool(row.treecast_events)),
        scheme=SigningScheme.DOCORA if docora else None,
        client_auth_key=(
            cipher.decrypt(row.client_auth_key_encrypted)
            if docora and row.client_auth_key_encrypted
            else None
        ),
        treecast_events=bool(row.treecast_events),
        retry_count=row.retry_count,
        access_granted=row.access in WatchAccess.DELIVERABLE,
    )
