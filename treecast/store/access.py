"""Each app's own access to a repository, as the database keeps it: who is due a check,
and what the git host said (docs/security.md, "Tenants")."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import bindparam, select, update
from sqlmodel import Session, col
from sqlmodel import select as select_models

from models.tables import Repository, Watch, WatchAccess, WatchStatus, utcnow
from treecast.config import Settings
from treecast.redact import redact
from treecast.store import stamps
from treecast.store.credentials import StoredCredentials
from treecast.store.detached import detached

MAX_ERROR_CHARS = 2000

_REPOSITORIES = Repository.metadata.tables["repositories"]
# Another app's credentials fetched: the remote checks read them again (`updated_at`)
# and learn it at once (`changed_at`, `store.stamps`).
_FETCHED_WITH = (
    update(_REPOSITORIES)
    .where(
        (_REPOSITORIES.c.id == bindparam("repository_id"))
        & _REPOSITORIES.c.fetched_with.is_distinct_from(bindparam("fetched"))
    )
    .values(
        fetched_with=bindparam("fetched"),
        updated_at=bindparam("now"),
        changed_at=bindparam("now"),
    )
)
# A check this close to due is done now: the next full sync comes a jitter later at most.
DUE_FRACTION = 0.9


_WATCHES = Watch.metadata.tables["watches"]
_REPOSITORY = select(_REPOSITORIES).where(_REPOSITORIES.c.id == bindparam("repository_id"))
_WATCHES_OF = (
    select(_WATCHES)
    .where(_WATCHES.c.repository_id == bindparam("repository_id"))
    .order_by(_WATCHES.c.app_id)
)


def watchers_of(session: Session, repository_id: str) -> tuple[Repository, list[Watch]] | None:
    """The repository and its watches, detached copies to read (None when it is not
    registered)."""
    connection, ids = session.connection(), {"repository_id": repository_id}
    repository = connection.execute(_REPOSITORY, ids).first()
    if repository is None:
        return None
    watches = [detached(Watch, w) for w in connection.execute(_WATCHES_OF, ids)]
    return detached(Repository, repository), watches


def recheck_seconds(settings: Settings, repository: Repository) -> float:
    """How often an app's access is checked again: every full sync (every poll when
    remote checks are off, as every poll is then a full sync)."""
    return float(settings.full_sync_seconds or repository.poll_interval_seconds)


def is_due(watch: Watch, now: datetime, every: float) -> bool:
    """Whether the watch's access should be checked again now: never checked (or not
    proven yet), or last checked at least about `every` seconds ago."""
    if watch.access in (None, WatchAccess.PENDING) or watch.access_checked_at is None:
        return True
    checked = watch.access_checked_at
    if checked.tzinfo is None:
        checked = checked.replace(tzinfo=UTC)
    return (now - checked).total_seconds() >= every * DUE_FRACTION


def lost_access_message(url: str, repository_id: str, reason: str, *, has_credentials: bool) -> str:
    """What an app whose access no longer holds reads in its watch's `last_error`."""
    whose = "its credentials" if has_credentials else "it without credentials"
    return redact(
        f"this app's access to {url} no longer holds: the git host refused {whose} "
        f"({reason}); nothing more is delivered until the app has working credentials of "
        f"its own: PUT /api/repositories/{repository_id}/credentials (docs/credentials.md)"
    )[:MAX_ERROR_CHARS]


def grant(watch: Watch, now: datetime) -> None:
    """The host accepted the watch's credentials now: deliveries (re)start."""
    watch.access, watch.access_checked_at, watch.access_error = WatchAccess.GRANTED, now, None
    if watch.status == WatchStatus.FAILED and watch.last_error_type == WatchAccess.ERROR_TYPE:
        watch.status = WatchStatus.PENDING
        watch.retry_count, watch.last_error, watch.last_error_type = 0, None, None


def refuse(watch: Watch, now: datetime, message: str) -> bool:
    """The host refused the watch's credentials now: nothing more is delivered and the
    watch is failed with `message`. True when the app had access until now (it gets one
    `sync_failed`); a watch never proven (a generated key not on the host yet) stays
    pending and only notes why."""
    watch.access_checked_at, watch.access_error = now, message
    if watch.access == WatchAccess.PENDING:
        return False
    lost = watch.access != WatchAccess.REFUSED
    watch.access = WatchAccess.REFUSED
    if watch.status != WatchStatus.DISABLED:
        watch.status = WatchStatus.FAILED
        watch.last_error_type, watch.last_error = WatchAccess.ERROR_TYPE, message
    return lost


def record_verdicts(
    session: Session,
    repository_id: str,
    granted: list[tuple[str, StoredCredentials]],
    refused: list[tuple[str, StoredCredentials, str]],
    fetched_with: str | None,
    expiries: dict[str, datetime | None],
) -> list[str]:
    """Write what the host said of each app's credentials (only where the watch still
    holds the credentials that were checked: a change meanwhile was checked on its own);
    the apps that just lost their access, sorted."""
    now = utcnow()
    lost: list[str] = []
    moved = False  # an app's access changed: who is behind changes for the remote checks
    # The watches as they are now, in one query; the session writes back the columns each
    # verdict changed.
    watches = {
        watch.app_id: watch
        for watch in session.exec(
            select_models(Watch).where(col(Watch.repository_id) == repository_id)
        )
    }
    for app_id, checked in granted:
        watch = watches.get(app_id)
        if watch is not None and _same(watch, checked):
            moved = moved or watch.access != WatchAccess.GRANTED
            grant(watch, now)
    for app_id, checked, message in refused:
        watch = watches.get(app_id)
        if watch is not None and _same(watch, checked):
            before = watch.access
            if refuse(watch, now, message):
                lost.append(app_id)
            moved = moved or watch.access != before
    for app_id, expires in expiries.items():
        watch = watches.get(app_id)
        if watch is not None and expires is not None:
            watch.github_token_expires_at = expires
    # Without loading the row: most syncs fetch with the same credentials as the last.
    switched = session.connection().execute(
        _FETCHED_WITH, {"repository_id": repository_id, "fetched": fetched_with, "now": now}
    )
    if moved and not switched.rowcount:
        stamps.stamp(session, repository_id)  # and learn it at once
    return sorted(lost)


def _same(watch: Watch, checked: StoredCredentials) -> bool:
    """Whether the watch still holds the credentials that were checked (the expiry of a
    GitHub App's last token aside)."""
    now = StoredCredentials.of(watch)
    now.github_token_expires_at = checked.github_token_expires_at
    return now == checked
