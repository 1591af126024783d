"""Snapshot rows: one per successful sync of a repository, the newest few kept."""

from __future__ import annotations

from sqlalchemy import bindparam, insert
from sqlalchemy import select as sa_select
from sqlmodel import Session, delete, select, update

from models.git import SnapshotStats
from models.tables import Snapshot, Watch, utcnow
from treecast.store import stamps
from treecast.store.detached import detached

# Snapshot rows (and pinned commits) kept per repository.
KEEP_SNAPSHOTS = 20

# Stale pins are dropped once every this many new snapshots (listing the pins costs a
# git process; a few extra pinned commits cost nothing).
PRUNE_EVERY = 10

# What every sync writes, built once and run as Core on the session's connection (no
# ORM objects; docs/performance.md, First wave).
_TABLE = Snapshot.metadata.tables["snapshots"]
_INSERT = insert(_TABLE).returning(_TABLE.c.id)
_REFRESH = update(_TABLE).where(_TABLE.c.id == bindparam("snapshot_id"))
# All but the newest KEEP_SNAPSHOTS rows of a repository, in one statement.
_DROP_STALE = delete(_TABLE).where(
    _TABLE.c.id.in_(
        sa_select(_TABLE.c.id)
        .where(_TABLE.c.repository_id == bindparam("repository_id"))
        .order_by(_TABLE.c.taken_at.desc(), _TABLE.c.id.desc())
        .offset(KEEP_SNAPSHOTS)
    )
)


_NEWEST = (
    sa_select(_TABLE)
    .where(_TABLE.c.repository_id == bindparam("repository_id"))
    .order_by(_TABLE.c.taken_at.desc(), _TABLE.c.id.desc())
    .limit(1)
)


def latest(session: Session, repository_id: str) -> Snapshot | None:
    """The newest snapshot of a repository (a detached copy, to read)."""
    row = session.connection().execute(_NEWEST, {"repository_id": repository_id}).first()
    return detached(Snapshot, row) if row is not None else None


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
    connection = session.connection()
    if newest is not None and newest.commit == commit:
        connection.execute(_REFRESH, {"snapshot_id": newest.id, "taken_at": utcnow()})
        return None
    row_id = connection.execute(
        _INSERT, {"repository_id": repository_id, "commit": commit, **stats.counts()}
    ).scalar_one()
    if newest is not None:  # a first snapshot has none older to drop
        connection.execute(_DROP_STALE, {"repository_id": repository_id})
    if row_id % PRUNE_EVERY:
        return None
    kept = session.exec(
        select(Snapshot.commit).where(Snapshot.repository_id == repository_id)
    ).all()
    delivered = session.exec(
        select(Watch.delivered_commit).where(Watch.repository_id == repository_id)
    ).all()
    return {c for c in [*kept, *delivered] if c}
