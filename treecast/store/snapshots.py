"""Snapshot rows: one per successful sync of a repository, the newest few kept."""

from __future__ import annotations

from sqlmodel import Session, col, delete, select, update

from models.git import SnapshotStats
from models.tables import Snapshot, Watch, utcnow
from treecast.store import stamps

# Snapshot rows (and pinned commits) kept per repository.
KEEP_SNAPSHOTS = 20

# Stale pins are dropped once every this many new snapshots (listing the pins costs a
# git process; a few extra pinned commits cost nothing).
PRUNE_EVERY = 10


def latest(session: Session, repository_id: str) -> Snapshot | None:
    """The newest snapshot of a repository."""
    query = (
        select(Snapshot)
        .where(Snapshot.repository_id == repository_id)
        .order_by(col(Snapshot.taken_at).desc(), col(Snapshot.id).desc())
        .limit(1)
    )
    return session.exec(query).first()


def was_synced(session: Session, repository_id: str, commit: str) -> bool:
    """True when one of the repository's kept snapshots is at `commit`."""
    query = select(Snapshot.id).where(
        Snapshot.repository_id == repository_id, Snapshot.commit == commit
    )
    return session.exec(query.limit(1)).first() is not None


def record_snapshot(
    session: Session,
    repository_id: str,
    commit: str | None,
    stats: SnapshotStats,
    newest: Snapshot | None,
) -> set[str] | None:
    """Record a sync (a repeat of the newest commit only refreshes its time) and keep the
    newest `KEEP_SNAPSHOTS`. Every `PRUNE_EVERY` new rows, returns the commits worth
    keeping in the cache (the caller then drops other pins and lets git tidy up)."""
    stamps.stamp(session, repository_id)  # the remote checks compare with it from now
    if newest is not None and newest.commit == commit:
        session.exec(
            update(Snapshot).where(col(Snapshot.id) == newest.id).values(taken_at=utcnow())
        )
        return None
    row = Snapshot(repository_id=repository_id, commit=commit, **stats.counts())
    session.add(row)
    session.flush()
    newest_first = (
        select(Snapshot.id)
        .where(Snapshot.repository_id == repository_id)
        .order_by(col(Snapshot.taken_at).desc(), col(Snapshot.id).desc())
    )
    stale = list(session.exec(newest_first.offset(KEEP_SNAPSHOTS)).all())
    if stale:
        session.exec(delete(Snapshot).where(col(Snapshot.id).in_(stale)))
    if (row.id or 0) % PRUNE_EVERY:
        return None
    kept = session.exec(
        select(Snapshot.commit).where(Snapshot.repository_id == repository_id)
    ).all()
    delivered = session.exec(
        select(Watch.delivered_commit).where(Watch.repository_id == repository_id)
    ).all()
    return {c for c in [*kept, *delivered] if c}
