"""What the remote-check sweep re-reads each second: the repositories changed since.

Every write a sweep must learn of at once (a registration, a new interval, a watch, a
pause, a recorded sync) stamps `Repository.changed_at`; the sweep of each shard asks
for the rows stamped since its last read, with one indexed query (docs/workflows.md).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, select, update
from sqlmodel import Session, col

from models.tables import Repository, utcnow

_TABLE = Repository.metadata.tables["repositories"]
# Every recorded sync runs it: built once, run as Core on the session's connection.
_STAMP = update(_TABLE).where(_TABLE.c.id == bindparam("repository_id"))


def stamp(session: Session, repository_id: str) -> None:
    """Stamp the repository changed, in the caller's transaction."""
    session.connection().execute(_STAMP, {"repository_id": repository_id, "changed_at": utcnow()})


def stamped_since(session: Session, since: datetime) -> list[tuple[str, datetime]]:
    """(id, changed_at) of the repositories stamped after `since`."""
    query = select(col(Repository.id), col(Repository.changed_at)).where(
        col(Repository.changed_at) > since
    )
    return [(rid, at) for rid, at in session.execute(query).all()]
