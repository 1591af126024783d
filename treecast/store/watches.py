"""A watch's delivery state: who is behind, failures, 410s, and a finished delivery."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import bindparam, update
from sqlmodel import Session, select

from models.delivery import DeliveryErrorType
from models.tables import Watch, WatchAccess, WatchStatus, new_generation, utcnow
from treecast.gitcache.tree import parse_globs
from treecast.redact import redact

MAX_ERROR_CHARS = 2000

# The statements every sync runs, built once: Core on the session's connection, without
# the ORM's per-row objects (a handful of rows, many times a second in a first wave;
# docs/performance.md, First wave).
_TABLE = Watch.metadata.tables["watches"]
_WATCHES = _TABLE.c
# (Named apart from the columns: an UPDATE reserves the column names for its values.)
_ONE_WATCH = (_WATCHES.app_id == bindparam("app")) & (
    _WATCHES.repository_id == bindparam("repository")
)
_WATCHERS = (
    select(_WATCHES.app_id, _WATCHES.access, _WATCHES.status, _WATCHES.delivered_commit)
    .where(_WATCHES.repository_id == bindparam("repository"))
    .order_by(_WATCHES.app_id)
)
_CONTENTS = select(
    _WATCHES.path_globs, _WATCHES.delivered_commit, _WATCHES.submodules, _WATCHES.lfs
).where(_ONE_WATCH)
_START = update(_TABLE).where(_ONE_WATCH).values(status=WatchStatus.SYNCING)
_FINISH = (
    update(_TABLE)
    .where(_ONE_WATCH)
    .values(
        status=WatchStatus.SYNCED,
        delivered_commit=bindparam("commit"),
        held_back=bindparam("held"),
        last_synced_at=bindparam("now"),
        ledger_generation=bindparam("generation"),
        retry_count=0,
        last_error=None,
        last_error_type=None,
    )
)


def watchers(
    session: Session, repository_id: str, commit: str | None
) -> tuple[list[str], list[str]]:
    """Apps watching a repository whose own access holds (sorted), and those of them not
    yet synced at `commit`. An app whose access was refused or is not proven yet gets
    nothing: no files and no breaker notices (docs/security.md, "Tenants")."""
    found = session.connection().execute(_WATCHERS, {"repository": repository_id})
    rows = [w for w in found if w.access in WatchAccess.DELIVERABLE]
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


@dataclass(frozen=True)
class WatchedContents:
    """What of a repository one app receives, and the commit it last received whole."""

    path_globs: str  # the stored JSON list (`parse_globs`)
    delivered_commit: str | None
    submodules: str | None  # a stored `SubmoduleMode` value
    lfs: bool | None


def watched_contents(session: Session, app_id: str, repository_id: str) -> WatchedContents | None:
    """The watch's contents columns (None when the app does not watch the repository)."""
    ids = {"app": app_id, "repository": repository_id}
    row = session.connection().execute(_CONTENTS, ids).first()
    return WatchedContents(*row) if row is not None else None


def start_delivery(session: Session, app_id: str, repository_id: str) -> None:
    """A delivery run began."""
    session.connection().execute(_START, {"app": app_id, "repository": repository_id})


MAX_HELD_LINES = 50


def finish_delivery(
    session: Session,
    app_id: str,
    repository_id: str,
    commit: str | None,
    held: Mapping[str, str] | None = None,
) -> None:
    """Every change of `commit` was acknowledged: the watch is synced there.

    A new ledger generation: the next deliberate re-send gets fresh webhook ids. With
    paths `held` back (path → reason) the ledger does not equal the commit's tree, so no
    commit is recorded as delivered: the next sync compares the whole tree and retries
    them; their reasons are the watch's `held_back`.
    """
    session.connection().execute(
        _FINISH,
        {
            "app": app_id,
            "repository": repository_id,
            "commit": None if held else commit,
            "held": held_lines(held) if held else None,
            "now": utcnow(),
            "generation": new_generation(),
        },
    )


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


def every_watch_has_paths(path_globs: list[str]) -> bool:
    """True when a repository has watches and each narrows it with `paths` (the watches'
    stored globs): then its cache fetches by what is watched (a partial clone)."""
    return bool(path_globs) and all(parse_globs(raw) for raw in path_globs)
