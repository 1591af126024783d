"""The database reads and writes of the admin page (overview counts, app search, failed
watches, the delivery log with filters, retrying a watch). `TreecastService` calls these;
nothing above the service layer does."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_
from sqlmodel import Session, col, select

from models.tables import App, DeliveryAttempt, Repository, Watch
from treecast.service import registry
from treecast.service.errors import UserError, shown
from treecast.store import watches as store_watches
from treecast.store.snapshots import latest
from treecast.webhooks.signing import SigningScheme

# Outcomes the delivery log filters on.
OUTCOMES = ("delivered", "failed")
MAX_SEARCH = 200


@dataclass
class Counts:
    """What the overview counts straight from the database."""

    apps: int
    repositories: int
    watches_by_status: dict[str, int]
    deliveries_last_hour: int
    failed_deliveries_last_hour: int


@dataclass
class FailedWatch:
    """A watch that needs an operator: its delivery failed, or its repository's breaker
    is open (`cause` says which)."""

    app_id: str
    app_name: str
    repository_id: str
    url: str
    status: str
    error_type: str | None
    error: str | None
    retry_count: int
    last_synced_at: str | None
    cause: str = "delivery"


@dataclass
class AdminDelivery:
    """One row of the admin's delivery log (any app)."""

    id: int
    app_id: str
    repository_id: str
    event: str
    path: str | None
    http_status: int | None
    error: str | None
    duration_ms: float
    attempted_at: str

    @property
    def ok(self) -> bool:
        """The app acknowledged it (a 2xx answer)."""
        return self.error is None and self.http_status is not None and self.http_status < 300


@dataclass
class RepositoryRow:
    """A repository for the admin lists: the database's view (live state added later)."""

    repository_id: str
    url: str
    ref: str
    poll_interval_seconds: int
    watches: int
    last_snapshot_commit: str | None
    last_snapshot_at: str | None
    watch_rows: list[dict[str, Any]] = field(default_factory=list)
    credentials: str = "none"  # CredentialInfo.summary(): the kind and its public parts


def iso(value: datetime | None) -> str | None:
    """A stored time as ISO-8601 UTC (SQLite hands back naive datetimes)."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def counts(session: Session) -> Counts:
    """The overview's numbers."""
    since = datetime.now(UTC) - timedelta(hours=1)
    by_status = dict(session.exec(select(Watch.status, func.count()).group_by(Watch.status)).all())
    recent = select(func.count()).select_from(DeliveryAttempt)
    recent = recent.where(col(DeliveryAttempt.attempted_at) >= since)
    failed = recent.where(
        or_(col(DeliveryAttempt.error).is_not(None), col(DeliveryAttempt.http_status) >= 300)
    )
    return Counts(
        apps=int(session.exec(select(func.count()).select_from(App)).one()),
        repositories=int(session.exec(select(func.count()).select_from(Repository)).one()),
        watches_by_status={str(k): int(v) for k, v in by_status.items()},
        deliveries_last_hour=int(session.exec(recent).one()),
        failed_deliveries_last_hour=int(session.exec(failed).one()),
    )


def search_apps(
    session: Session, query: str, offset: int, limit: int
) -> tuple[list[dict[str, Any]], int]:
    """Apps whose name, id or base URL contains `query`, by name; and how many match."""
    query = (query or "").strip()
    if len(query) > MAX_SEARCH:
        raise UserError(f"the search is longer than {MAX_SEARCH} characters")
    where: Any = True
    if query:
        pattern = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where = or_(
            col(App.name).ilike(pattern, escape="\\"),
            col(App.id).ilike(pattern, escape="\\"),
            col(App.base_url).ilike(pattern, escape="\\"),
        )
    total = int(session.exec(select(func.count()).select_from(App).where(where)).one())
    apps = session.exec(
        select(App).where(where).order_by(col(App.name), col(App.id)).offset(offset).limit(limit)
    ).all()
    ids = [a.id for a in apps]
    watch_counts = dict(
        session.exec(
            select(Watch.app_id, func.count())
            .where(col(Watch.app_id).in_(ids))
            .group_by(Watch.app_id)
        ).all()
    )
    rows = [
        {
            "app_id": a.id,
            "name": a.name,
            "base_url": a.base_url,
            "watches": int(watch_counts.get(a.id, 0)),
            "created_at": iso(a.created_at) or "",
            "batch": bool(a.batch),
            "scheme": a.signing_scheme or SigningScheme.STANDARD,
        }
        for a in apps
    ]
    return rows, total


def repositories(session: Session) -> list[RepositoryRow]:
    """Every repository with its watch count and latest snapshot, oldest first."""
    rows = []
    for info in registry.list_repositories(session):
        rid = info["repository_id"]
        snapshot = latest(session, rid)
        rows.append(
            RepositoryRow(
                repository_id=rid,
                url=info["url"],
                ref=info["ref"],
                poll_interval_seconds=info["poll_interval_seconds"],
                watches=info["watches"],
                last_snapshot_commit=snapshot.commit if snapshot else None,
                last_snapshot_at=iso(snapshot.taken_at) if snapshot else None,
            )
        )
    return rows


def repository(session: Session, repository_id: str) -> RepositoryRow:
    """One repository with its watches (a `NotFound` for an unknown id)."""
    repo = registry.get_repository(session, repository_id)
    snapshot = latest(session, repository_id)
    watches = registry.watches_of(session, repository_id)
    return RepositoryRow(
        repository_id=repo.id,
        url=repo.url,
        ref=repo.ref,
        poll_interval_seconds=repo.poll_interval_seconds,
        watches=len(watches),
        last_snapshot_commit=snapshot.commit if snapshot else None,
        last_snapshot_at=iso(snapshot.taken_at) if snapshot else None,
        watch_rows=watches,
        credentials=_fetched_with(session, repo),
    )


def _fetched_with(session: Session, repo: Repository) -> str:
    """The credentials the repository's fetches use, and whose they are."""
    fetcher, info = registry.fetch_credentials(session, repo)
    return f"{info.summary()} ({fetcher}'s)" if fetcher else info.summary()


def watches(
    session: Session,
    *,
    status: str | None = None,
    app_id: str | None = None,
    repository_ids: set[str] | None = None,
) -> list[FailedWatch]:
    """Watches (of one app, with one status, or of some repositories), by app then repository."""
    query = (
        select(Watch, App, Repository)
        .join(App, col(App.id) == Watch.app_id)
        .join(Repository, col(Repository.id) == Watch.repository_id)
    )
    if status is not None:
        query = query.where(col(Watch.status) == status)
    if app_id:
        query = query.where(col(Watch.app_id) == app_id)
    if repository_ids is not None:
        query = query.where(col(Watch.repository_id).in_(sorted(repository_ids)))
    rows = session.exec(query.order_by(col(App.name), col(Watch.app_id), col(Repository.url)))
    return [
        FailedWatch(
            app_id=w.app_id,
            app_name=a.name,
            repository_id=r.id,
            url=r.url,
            status=w.status,
            error_type=w.last_error_type,
            error=w.last_error,
            retry_count=w.retry_count,
            last_synced_at=iso(w.last_synced_at),
        )
        for w, a, r in rows.all()
    ]


def reset_watch(session: Session, app_id: str, repository_id: str) -> None:
    """A watch to retry: pending again, its failure forgotten (its ledger kept); an app
    whose access was refused is checked again at the next sync. A `UserError` when there
    is no such watch."""
    registry.get_watch(session, app_id, repository_id)
    store_watches.reset_watch(session, app_id, repository_id)


def delivery_log(
    session: Session,
    *,
    app_id: str | None,
    repository_id: str | None,
    event: str | None,
    outcome: str | None,
    before: int | None,
    limit: int,
) -> list[AdminDelivery]:
    """Delivery attempts, newest first, filtered; `before` is the cursor (an attempt id)."""
    if outcome and outcome not in OUTCOMES:
        raise UserError(f"outcome {shown(outcome)} is not one of {', '.join(OUTCOMES)}")
    query = select(DeliveryAttempt)
    if app_id:
        query = query.where(col(DeliveryAttempt.app_id) == app_id)
    if repository_id:
        query = query.where(col(DeliveryAttempt.repository_id) == repository_id)
    if event:
        query = query.where(col(DeliveryAttempt.event) == event)
    failed = or_(col(DeliveryAttempt.error).is_not(None), col(DeliveryAttempt.http_status) >= 300)
    if outcome == "failed":
        query = query.where(failed)
    elif outcome == "delivered":
        query = query.where(
            col(DeliveryAttempt.error).is_(None), col(DeliveryAttempt.http_status) < 300
        )
    if before is not None:
        query = query.where(col(DeliveryAttempt.id) < before)
    rows = session.exec(query.order_by(col(DeliveryAttempt.id).desc()).limit(limit)).all()
    return [
        AdminDelivery(
            id=int(row.id or 0),
            app_id=row.app_id,
            repository_id=row.repository_id,
            event=row.event,
            path=row.path,
            http_status=row.http_status,
            error=row.error,
            duration_ms=row.duration_ms,
            attempted_at=iso(row.attempted_at) or "",
        )
        for row in rows
    ]


def delivery_events(session: Session) -> list[str]:
    """The events the delivery log holds, for its filter."""
    return sorted(str(e) for e in session.exec(select(DeliveryAttempt.event).distinct()).all())
