"""App rows: adding, finding (by id, API token or imported Docora token), listing with
their watch counts, changing and removing them with everything of theirs."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, func, or_
from sqlmodel import Session, col, select

from models.tables import App, DeliveredFile, DeliveryAttempt, Watch, utcnow


class AppOrder(StrEnum):
    """How a list of apps is ordered."""

    CREATED = "created"  # oldest first (the CLI)
    ID = "id"  # by id, for cursors (the API)
    NAME = "name"  # by name (the admin page)


@dataclass
class AppCount:
    """An app and how many repositories it watches."""

    app: App
    watches: int


def get(session: Session, app_id: str) -> App | None:
    return session.get(App, app_id)


def add(session: Session, app: App) -> App:
    """Store a new app (its secrets already encrypted)."""
    session.add(app)
    session.flush()
    return app


def update(session: Session, app: App, *, touch: bool = True, **columns: Any) -> App:
    """Set the given columns of an app, and (`touch`) its `updated_at`."""
    for name, value in columns.items():
        if not hasattr(App, name):
            raise AttributeError(f"apps has no column {name}")
        setattr(app, name, value)
    if touch:
        app.updated_at = utcnow()
    session.add(app)
    return app


def by_token_id(session: Session, token_id: str) -> App | None:
    """The app whose API token has this id (one indexed lookup)."""
    return session.exec(select(App).where(col(App.token_id) == token_id)).first()


def by_docora_digest(session: Session, digest: str) -> str | None:
    """The id of the app whose imported Docora token has this SHA-256 (once verified)."""
    return session.exec(select(App.id).where(col(App.docora_token_sha256) == digest)).first()


def unverified_docora_hashes(session: Session) -> list[tuple[str, str | None]]:
    """`(app id, bcrypt hash)` of the imported Docora tokens never verified yet, by id."""
    rows = session.exec(
        select(App.id, App.docora_token_hash)
        .where(col(App.docora_token_hash).is_not(None), col(App.docora_token_sha256).is_(None))
        .order_by(col(App.id))
    ).all()
    return [(app_id, stored) for app_id, stored in rows]


def listing(
    session: Session,
    *,
    search: str = "",
    order: AppOrder = AppOrder.CREATED,
    after: str | None = None,
    offset: int = 0,
    limit: int | None = None,
    with_total: bool = False,
) -> tuple[list[AppCount], int | None]:
    """Apps with their watch counts: those whose name, id or base URL contains `search`,
    in `order`, after the id `after` (with `AppOrder.ID`), `offset` skipped, at most
    `limit`; and, `with_total`, how many match."""
    where: Any = True
    if search:
        pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where = or_(
            col(App.name).ilike(pattern, escape="\\"),
            col(App.id).ilike(pattern, escape="\\"),
            col(App.base_url).ilike(pattern, escape="\\"),
        )
    total: int | None = None
    if with_total:
        total = int(session.exec(select(func.count()).select_from(App).where(where)).one())
    query = select(App).where(where)
    if after:
        query = query.where(col(App.id) > after)
    ordering = {
        AppOrder.CREATED: (col(App.created_at), col(App.id)),
        AppOrder.ID: (col(App.id),),
        AppOrder.NAME: (col(App.name), col(App.id)),
    }[order]
    query = query.order_by(*ordering).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    apps = session.exec(query).all()
    counting = select(Watch.app_id, func.count()).group_by(Watch.app_id)
    if limit is not None:  # a page: count its apps' watches only
        counting = counting.where(col(Watch.app_id).in_([a.id for a in apps]))
    counts = dict(session.exec(counting).all())
    return [AppCount(a, int(counts.get(a.id, 0))) for a in apps], total


def remove(session: Session, app_id: str) -> list[str]:
    """Delete the app, its watches, ledgers and delivery log; the repositories it watched."""
    repository_ids = sorted(
        session.exec(select(Watch.repository_id).where(col(Watch.app_id) == app_id)).all()
    )
    session.exec(delete(DeliveredFile).where(col(DeliveredFile.app_id) == app_id))
    session.exec(delete(DeliveryAttempt).where(col(DeliveryAttempt.app_id) == app_id))
    session.exec(delete(Watch).where(col(Watch.app_id) == app_id))
    session.exec(delete(App).where(col(App.id) == app_id))
    return repository_ids


def count(session: Session) -> int:
    return int(session.exec(select(func.count()).select_from(App)).one())
