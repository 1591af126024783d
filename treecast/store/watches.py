"""A watch's delivery state: who is behind, failures, 410s, and a finished delivery."""

from __future__ import annotations

import json
from collections.abc import Mapping

from sqlmodel import Session, col, select

from models.delivery import DeliveryErrorType
from models.tables import Watch, WatchAccess, WatchStatus, new_generation, utcnow
from treecast.gitcache.tree import parse_globs
from treecast.redact import redact

MAX_ERROR_CHARS = 2000


def watchers(
    session: Session, repository_id: str, commit: str | None
) -> tuple[list[str], list[str]]:
    """Apps watching a repository whose own access holds (sorted), and those of them not
    yet synced at `commit`. An app whose access was refused or is not proven yet gets
    nothing: no files and no breaker notices (docs/security.md, "Tenants")."""
    rows = [
        w
        for w in session.exec(
            select(Watch).where(Watch.repository_id == repository_id).order_by(col(Watch.app_id))
        ).all()
        if w.access in WatchAccess.DELIVERABLE
    ]
    behind = [
        w.app_id
        for w in rows
        if w.status != WatchStatus.DISABLED
        and (w.delivered_commit != commit or w.status != WatchStatus.SYNCED)
    ]
    return [w.app_id for w in rows], behind


def note_watch_failure(
    session: Session, app_id: str, repository_id: str, error_type: str, error: str
) -> None:
    """Count a failed delivery attempt on the watch and keep its redacted error."""
    watch = session.get(Watch, (app_id, repository_id))
    if watch is None:
        return
    watch.retry_count += 1
    watch.last_error = redact(error)[:MAX_ERROR_CHARS]
    watch.last_error_type = error_type
    session.add(watch)


def disable_watch(session: Session, app_id: str, repository_id: str, error: str) -> None:
    """The app answered 410 Gone: stop delivering until it is watched again."""
    watch = session.get(Watch, (app_id, repository_id))
    if watch is None:
        return
    watch.status = WatchStatus.DISABLED
    watch.last_error = redact(error)[:MAX_ERROR_CHARS]
    watch.last_error_type = DeliveryErrorType.GONE
    session.add(watch)


def record_failure(
    session: Session, app_id: str, repository_id: str, error_type: str, error: str
) -> None:
    """Mark a watch `failed` with its redacted error once delivery ran out of tries."""
    watch = session.get(Watch, (app_id, repository_id))
    if watch is None or watch.status == WatchStatus.DISABLED:
        return
    watch.status = WatchStatus.FAILED
    watch.last_error = redact(error)[:MAX_ERROR_CHARS]
    watch.last_error_type = error_type
    session.add(watch)


def start_delivery(session: Session, app_id: str, repository_id: str) -> None:
    """A delivery run began."""
    watch = session.get(Watch, (app_id, repository_id))
    if watch is not None:
        watch.status = WatchStatus.SYNCING
        session.add(watch)


MAX_HELD_LINES = 50


def finish_delivery(
    session: Session,
    app_id: str,
    repository_id: str,
    commit: str | None,
    held: Mapping[str, str] | None = None,
    generation: str | None = None,
) -> bool:
    """Every change of `commit` was acknowledged: the watch is synced there.

    A new ledger generation: the next deliberate re-send gets fresh webhook ids. With
    paths `held` back (path → reason) the ledger does not equal the commit's tree, so no
    commit is recorded as delivered: the next sync compares the whole tree and retries
    them; their reasons are the watch's `held_back`. With the `generation` the run
    started at, a ledger reset since (redeliver, reconcile) wins: nothing is recorded
    and False is returned.
    """
    watch = session.get(Watch, (app_id, repository_id))
    if watch is None:
        return False
    if generation is not None and watch.ledger_generation != generation:
        return False
    watch.status = WatchStatus.SYNCED
    watch.delivered_commit = None if held else commit
    watch.held_back = held_lines(held) if held else None
    watch.last_synced_at = utcnow()
    watch.ledger_generation = new_generation()
    watch.retry_count = 0
    watch.last_error = None
    watch.last_error_type = None
    session.add(watch)
    return True


def reset_watch(session: Session, app_id: str, repository_id: str) -> None:
    """A watch to retry: pending again, its failure forgotten (its ledger kept); an app
    whose access was refused is checked again at the next sync."""
    watch = session.get(Watch, (app_id, repository_id))
    if watch is None:
        return
    watch.status = WatchStatus.PENDING
    watch.retry_count, watch.last_error, watch.last_error_type = 0, None, None
    check_access_soon(watch)
    session.add(watch)


def check_access_soon(watch: Watch) -> None:
    """Have the next sync ask the git host about an app whose access is not granted (the
    app or an operator asked for it, e.g. after putting a key back on the host)."""
    if watch.access not in WatchAccess.DELIVERABLE:
        watch.access_checked_at = None


def held_lines(held: Mapping[str, str]) -> str:
    """What was held back as the stored JSON list of reasons (the first `MAX_HELD_LINES`)."""
    lines = [redact(reason)[:500] for _path, reason in sorted(held.items())]
    if len(lines) > MAX_HELD_LINES:
        lines = [*lines[:MAX_HELD_LINES], f"and {len(lines) - MAX_HELD_LINES} more held back"]
    return json.dumps(lines)


def every_watch_has_paths(session: Session, repository_id: str) -> bool:
    """True when the repository has watches and each narrows it with `paths` (globs):
    then its cache fetches by what is watched (a partial clone)."""
    rows = session.exec(select(Watch.path_globs).where(Watch.repository_id == repository_id)).all()
    return bool(rows) and all(parse_globs(raw) for raw in rows)
