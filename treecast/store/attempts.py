"""The delivery log: one row per webhook attempt, bounded per app; read newest first,
filtered."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from sqlalchemy import ColumnElement, bindparam, delete, func, or_
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from models.delivery import DeliveryErrorType
from models.tables import DeliveryAttempt, Snapshot
from treecast.store.watches import MAX_ERROR_CHARS, disable_watch


class Outcome(Protocol):
    """What a webhook attempt came to (the webhook transport's `PostOutcome`)."""

    @property
    def status(self) -> int | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def error_type(self) -> str | None: ...
    @property
    def excerpt(self) -> str | None: ...
    @property
    def duration_ms(self) -> float: ...


def record_attempt(
    session: Session,
    *,
    app_id: str,
    repository_id: str,
    event: str,
    path: str | None,
    webhook_id: str,
    outcome: Outcome,
) -> None:
    """Log one webhook attempt; a 410 Gone also disables the watch (same transaction)."""
    session.add(
        DeliveryAttempt(
            app_id=app_id,
            repository_id=repository_id,
            event=event,
            path=path,
            webhook_id=webhook_id,
            http_status=outcome.status,
            error=outcome.error[:MAX_ERROR_CHARS] if outcome.error else None,
            response_excerpt=outcome.excerpt or None,
            duration_ms=round(outcome.duration_ms, 3),
        )
    )
    if outcome.error_type == DeliveryErrorType.GONE:
        disable_watch(session, app_id, repository_id, outcome.error or "")


_ATTEMPTS = DeliveryAttempt.metadata.tables["delivery_attempts"]
# Built once (every finished delivery prunes): Core on the session's connection.
_CUTOFF = (
    sa_select(_ATTEMPTS.c.id)
    .where(_ATTEMPTS.c.app_id == bindparam("app"))
    .order_by(_ATTEMPTS.c.id.desc())
    .offset(bindparam("keep"))
    .limit(1)
)
_PRUNE = delete(_ATTEMPTS).where(
    (_ATTEMPTS.c.app_id == bindparam("app")) & (_ATTEMPTS.c.id <= bindparam("cutoff"))
)


def prune_delivery_log(session: Session, app_id: str, keep: int) -> int:
    """Delete all but the newest `keep` attempts of an app; returns rows deleted."""
    connection = session.connection()
    cutoff = connection.execute(_CUTOFF, {"app": app_id, "keep": keep}).scalar()
    if cutoff is None:
        return 0
    result = connection.execute(_PRUNE, {"app": app_id, "cutoff": cutoff})
    return int(result.rowcount or 0)


SKIPPED_EVENT = "skipped"  # a delivery-log row saying which paths were never sent
_SNAPSHOTS = Snapshot.metadata.tables["snapshots"]
_UNSAFE_PATHS = (
    sa_select(_SNAPSHOTS.c.skipped_unsafe_paths)
    .where(
        (_SNAPSHOTS.c.repository_id == bindparam("repo"))
        & (_SNAPSHOTS.c.commit == bindparam("commit"))
    )
    .limit(1)
)


def note_skipped_paths(
    session: Session, app_id: str, repository_id: str, commit: str | None
) -> None:
    """Say in the app's delivery log that the commit holds paths Treecast never delivers
    (`..`, `.git`, absolute...), as counted by its snapshot; nothing when it holds none."""
    unsafe = (
        session.connection()
        .execute(_UNSAFE_PATHS, {"repo": repository_id, "commit": commit})
        .scalar()
    )
    if not unsafe:
        return
    session.add(
        DeliveryAttempt(
            app_id=app_id,
            repository_id=repository_id,
            event=SKIPPED_EVENT,
            path=None,
            webhook_id="-",
            error=(
                f"{unsafe} unsafe paths in {(commit or '')[:12]} are never "
                "delivered (`..`, `.git`, absolute or Windows-special names); see `status`"
            ),
        )
    )


DELIVERED, FAILED = "delivered", "failed"  # the outcomes the log filters on


def _failed() -> ColumnElement[bool]:
    return or_(col(DeliveryAttempt.error).is_not(None), col(DeliveryAttempt.http_status) >= 300)


def page(
    session: Session,
    *,
    app_id: str | None = None,
    repository_id: str | None = None,
    event: str | None = None,
    outcome: str | None = None,
    before: int | None = None,
    limit: int,
) -> list[DeliveryAttempt]:
    """Attempts newest first, filtered (`outcome`: `DELIVERED` or `FAILED`), older than the
    attempt id `before`."""
    query = select(DeliveryAttempt)
    if app_id:
        query = query.where(col(DeliveryAttempt.app_id) == app_id)
    if repository_id:
        query = query.where(col(DeliveryAttempt.repository_id) == repository_id)
    if event:
        query = query.where(col(DeliveryAttempt.event) == event)
    if outcome == FAILED:
        query = query.where(_failed())
    elif outcome == DELIVERED:
        query = query.where(
            col(DeliveryAttempt.error).is_(None), col(DeliveryAttempt.http_status) < 300
        )
    if before is not None:
        query = query.where(col(DeliveryAttempt.id) < before)
    return list(session.exec(query.order_by(col(DeliveryAttempt.id).desc()).limit(limit)).all())


def events(session: Session) -> list[str]:
    """The events the log holds."""
    return sorted(str(e) for e in session.exec(select(DeliveryAttempt.event).distinct()).all())


def counts_since(session: Session, since: datetime) -> tuple[int, int]:
    """How many attempts since `since`, and how many of them failed."""
    recent = select(func.count()).select_from(DeliveryAttempt)
    recent = recent.where(col(DeliveryAttempt.attempted_at) >= since)
    failed = recent.where(_failed())
    return int(session.exec(recent).one()), int(session.exec(failed).one())
