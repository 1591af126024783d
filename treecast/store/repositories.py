"""Repository rows: registering, finding (by id, by URL and ref, by URL for push hooks),
listing with their watch counts, the push secret, pausing, and removing one with
everything of it."""

from __future__ import annotations

from sqlalchemy import delete, func
from sqlmodel import Session, col, select

from models.tables import DeliveredFile, DeliveryAttempt, Repository, Snapshot, Watch, utcnow


def get(session: Session, repository_id: str) -> Repository | None:
    return session.get(Repository, repository_id)


def find(session: Session, url: str, ref: str) -> Repository | None:
    """The registered repository with this normalised URL and ref, if any."""
    return session.exec(
        select(Repository).where(col(Repository.url) == url, Repository.ref == ref)
    ).first()


def push_secret_of(session: Session, url: str) -> str | None:
    """The push secret (encrypted) another ref of the same URL has: one push hook on the
    git host serves every ref of it."""
    sibling = session.exec(
        select(Repository).where(
            col(Repository.url) == url, col(Repository.push_secret_encrypted).is_not(None)
        )
    ).first()
    return sibling.push_secret_encrypted if sibling is not None else None


def add(session: Session, repository: Repository) -> Repository:
    """Store a new repository."""
    session.add(repository)
    session.flush()
    return repository


def set_interval(session: Session, repository: Repository, interval: int) -> None:
    """A new poll interval; the remote checks learn it at once."""
    repository.poll_interval_seconds = interval
    repository.updated_at = repository.changed_at = utcnow()
    session.add(repository)


def touch(session: Session, repository_id: str) -> None:
    """Mark the repository changed: whoever caches what its fetch needs reads it again,
    and the remote checks learn it at once (`store.stamps`)."""
    repository = session.get(Repository, repository_id)
    if repository is not None:
        repository.updated_at = repository.changed_at = utcnow()
        session.add(repository)


def set_paused(session: Session, repository: Repository, paused: bool) -> None:
    """Record a pause or resume, so the remote checks skip (or check again) the repository."""
    repository.paused = paused
    repository.changed_at = utcnow()
    session.add(repository)


def set_push_secret(session: Session, url: str, encrypted: str) -> None:
    """A new push secret for every ref of the repository at `url` (they share it)."""
    for row in session.exec(select(Repository).where(col(Repository.url) == url)):
        row.push_secret_encrypted = encrypted
        row.updated_at = utcnow()
        session.add(row)


def at_urls(session: Session, urls: list[str]) -> list[Repository]:
    """Registered repositories whose normalised URL is one of `urls`."""
    if not urls:
        return []
    return list(session.exec(select(Repository).where(col(Repository.url).in_(urls))).all())


def listing(session: Session) -> list[Repository]:
    """Every repository, oldest first."""
    query = select(Repository).order_by(col(Repository.created_at), col(Repository.id))
    return list(session.exec(query).all())


def ids(session: Session) -> list[str]:
    """Every repository's id, oldest first."""
    query = select(Repository.id).order_by(col(Repository.created_at), col(Repository.id))
    return list(session.exec(query).all())


def count(session: Session) -> int:
    return int(session.exec(select(func.count()).select_from(Repository)).one())


def remove(session: Session, repository_id: str) -> None:
    """Delete the repository, its watches, ledgers, snapshots and delivery log."""
    for table in (DeliveredFile, DeliveryAttempt, Watch, Snapshot):
        session.exec(delete(table).where(col(table.repository_id) == repository_id))
    session.exec(delete(Repository).where(col(Repository.id) == repository_id))
