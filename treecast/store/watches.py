"""Watch rows: an app watching a repository (made, changed, listed, removed), its
credentials and access, and its delivery state (who is behind, failures, 410s, a
finished delivery)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import bindparam, delete, func, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from models.contents import SubmoduleMode
from models.delivery import DeliveryErrorType
from models.tables import (
    App,
    DeliveredFile,
    Repository,
    Watch,
    WatchAccess,
    WatchStatus,
    new_generation,
    parse_globs,
    utcnow,
)
from treecast.redact import redact
from treecast.store import stamps
from treecast.store.credentials import StoredCredentials

MAX_ERROR_CHARS = 2000

# The statements every sync runs, built once: Core on the session's connection, without
# the ORM's per-row objects (a handful of rows, many times a second in a first wave;
# docs/performance.md, First wave).
_TABLE = Watch.metadata.tables["watches"]
_WATCHES = _TABLE.c
_APPS = App.metadata.tables["apps"]
_REPOSITORIES = Repository.metadata.tables["repositories"]
# (Named apart from the columns: an UPDATE reserves the column names for its values.)
_ONE_WATCH = (_WATCHES.app_id == bindparam("app")) & (
    _WATCHES.repository_id == bindparam("repository")
)
_WATCHERS = (
    sa_select(_WATCHES.app_id, _WATCHES.access, _WATCHES.status, _WATCHES.delivered_commit)
    .where(_WATCHES.repository_id == bindparam("repository"))
    .order_by(_WATCHES.app_id)
)
_CONTENTS = sa_select(
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
# The same, unless a ledger reset (redeliver, reconcile) came after the run started.
_FINISH_AT = _FINISH.where(_WATCHES.ledger_generation == bindparam("started_at"))


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


class WatchedContents(NamedTuple):
    """What of a repository one app receives, and the commit it last received whole."""

    path_globs: str  # the stored JSON list (`parse_globs`)
    delivered_commit: str | None
    submodules: str | None  # a stored `SubmoduleMode` value
    lfs: bool | None


def watched_contents(session: Session, app_id: str, repository_id: str) -> WatchedContents | None:
    """The watch's contents columns (None when the app does not watch the repository)."""
    ids = {"app": app_id, "repository": repository_id}
    row = session.connection().execute(_CONTENTS, ids).first()
    return WatchedContents._make(row) if row is not None else None


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
    values = {
        "app": app_id,
        "repository": repository_id,
        "commit": None if held else commit,
        "held": held_lines(held) if held else None,
        "now": utcnow(),
        "generation": new_generation(),
    }
    if generation is None:
        done = session.connection().execute(_FINISH, values)
    else:
        done = session.connection().execute(_FINISH_AT, {**values, "started_at": generation})
    return bool(done.rowcount)


def reset_watch(session: Session, app_id: str, repository_id: str) -> None:
    """A watch to retry: pending again, its failure forgotten (its ledger kept); an app
    whose access was refused is checked again at the next sync."""
    watch = session.get(Watch, (app_id, repository_id))
    if watch is None:
        return
    watch.status = WatchStatus.PENDING
    watch.retry_count, watch.last_error, watch.last_error_type = 0, None, None
    session.add(watch)
    check_access_soon(session, watch)


def check_access_soon(session: Session, watch: Watch) -> None:
    """Have the next sync ask the git host about an app whose access is not granted (the
    app or an operator asked for it, e.g. after putting a key back on the host)."""
    if watch.access not in WatchAccess.DELIVERABLE:
        watch.access_checked_at = None
        session.add(watch)


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


def deliverable_globs(watches: list[Watch]) -> list[list[str]]:
    """The distinct glob lists of the watches still delivered to (not disabled, access
    not refused): what a partial cache fetches with a new commit."""
    globs: list[list[str]] = []
    for watch in watches:
        if watch.status == WatchStatus.DISABLED or watch.access == WatchAccess.REFUSED:
            continue
        listed = parse_globs(watch.path_globs)
        if listed and listed not in globs:
            globs.append(listed)
    return globs


class TargetColumns(NamedTuple):
    """The app, repository and watch columns that say where and how to reach one app for
    one repository (`treecast.delivery.target.AppTarget`)."""

    app_id: str
    base_url: str
    secrets_encrypted: str
    batch: bool | None
    signing_scheme: str | None
    client_auth_key_encrypted: str | None
    treecast_events: bool | None
    sync_completed: bool | None
    url: str
    ref: str | None
    status: str
    ledger_generation: str
    retry_count: int
    access: str | None


# One joined read built once (each delivery and notice reads it).
_TARGET = (
    sa_select(
        _APPS.c.id,
        _APPS.c.base_url,
        _APPS.c.secrets_encrypted,
        _APPS.c.batch,
        _APPS.c.signing_scheme,
        _APPS.c.client_auth_key_encrypted,
        _APPS.c.treecast_events,
        _APPS.c.sync_completed,
        _REPOSITORIES.c.url,
        _REPOSITORIES.c.ref,
        _WATCHES.status,
        _WATCHES.ledger_generation,
        _WATCHES.retry_count,
        _WATCHES.access,
    )
    .select_from(
        _TABLE.join(_APPS, _APPS.c.id == _WATCHES.app_id).join(
            _REPOSITORIES, _REPOSITORIES.c.id == _WATCHES.repository_id
        )
    )
    .where(_ONE_WATCH)
)


def target_columns(session: Session, app_id: str, repository_id: str) -> TargetColumns | None:
    """`TargetColumns` of the app's watch of a repository, or None when the app, the
    repository or the watch is gone."""
    ids = {"app": app_id, "repository": repository_id}
    row = session.connection().execute(_TARGET, ids).first()
    return TargetColumns._make(row) if row is not None else None


# -- watching ---------------------------------------------------------------------------------


def get(session: Session, app_id: str, repository_id: str) -> Watch | None:
    return session.get(Watch, (app_id, repository_id))


def add(session: Session, watch: Watch) -> Watch:
    """Store a watch as it is (an import's: its state and credentials given)."""
    session.add(watch)
    session.flush()
    return watch


def watch(
    session: Session,
    app_id: str,
    repository_id: str,
    globs: list[str],
    submodules: SubmoduleMode | None = None,
    lfs: bool | None = None,
) -> tuple[Watch, bool]:
    """Make an app watch a repository, or set its globs and (when given) its submodule and
    LFS choices; a disabled or failed watch is pending again. True when it is new.

    A changed watch forgets its `delivered_commit`: what it may see changed, so the next
    delivery compares the whole tree (docs/contracts.md, "The change computation")."""
    mode = None if submodules in (None, SubmoduleMode.OFF) else str(submodules)
    existing = session.get(Watch, (app_id, repository_id))
    if existing is not None:
        existing.path_globs = json.dumps(globs)
        if submodules is not None:
            existing.submodules = mode
        if lfs is not None:
            existing.lfs = lfs or None
        if existing.status in (WatchStatus.DISABLED, WatchStatus.FAILED):
            existing.status = WatchStatus.PENDING
            existing.retry_count = 0
            existing.last_error = None
            existing.last_error_type = None
        existing.delivered_commit = None
        session.add(existing)
        stamps.stamp(session, repository_id)
        return existing, False
    created = Watch(
        app_id=app_id,
        repository_id=repository_id,
        path_globs=json.dumps(globs),
        submodules=mode,
        lfs=lfs or None,
    )
    session.add(created)
    session.flush()
    stamps.stamp(session, repository_id)  # one the remote checks check from now
    return created, True


def differs(
    watch: Watch | None,
    globs: list[str] | None,
    submodules: SubmoduleMode | None,
    lfs: bool | None,
) -> bool:
    """Whether watching with these (None: as they are) changes anything: a new watch does."""
    if watch is None:
        return True
    mode = None if submodules in (None, SubmoduleMode.OFF) else str(submodules)
    return (
        (globs is not None and globs != json.loads(watch.path_globs))
        or (submodules is not None and mode != watch.submodules)
        or (lfs is not None and lfs != bool(watch.lfs))
    )


def set_credentials(
    session: Session, watch: Watch, stored: StoredCredentials, *, pending: str | None
) -> None:
    """Put checked credentials on a watch: granted now (`pending` None: the git host
    accepted them), or pending for that reason (a generated key, dropped credentials)
    until a sync finds the host accepts what it holds. A failed or disabled watch is
    pending again, its failure forgotten."""
    stored.write_to(watch)
    watch.access_checked_at = utcnow()
    watch.access_error = pending
    watch.access = WatchAccess.GRANTED if pending is None else WatchAccess.PENDING
    if watch.status in (WatchStatus.FAILED, WatchStatus.DISABLED):
        watch.status = WatchStatus.PENDING
    watch.retry_count, watch.last_error, watch.last_error_type = 0, None, None
    session.add(watch)


def unwatch(session: Session, app_id: str, repository_id: str) -> int:
    """Stop the watch and forget what the app received; the ledger rows removed."""
    removed = session.exec(
        delete(DeliveredFile).where(
            col(DeliveredFile.app_id) == app_id,
            col(DeliveredFile.repository_id) == repository_id,
        )
    )
    session.exec(
        delete(Watch).where(col(Watch.app_id) == app_id, col(Watch.repository_id) == repository_id)
    )
    stamps.stamp(session, repository_id)
    return int(removed.rowcount or 0)


# -- reading ----------------------------------------------------------------------------------


def with_repository(
    session: Session, app_id: str, repository_id: str
) -> tuple[Watch, Repository] | None:
    """The app's watch of a repository, with the repository."""
    found = session.exec(
        select(Watch, Repository)
        .join(Repository, col(Repository.id) == Watch.repository_id)
        .where(col(Watch.app_id) == app_id, col(Watch.repository_id) == repository_id)
    ).first()
    return (found[0], found[1]) if found is not None else None


def of_repository(session: Session, repository_id: str) -> list[tuple[Watch, App]]:
    """The watches of one repository with their apps, by app id."""
    rows = session.exec(
        select(Watch, App)
        .join(App, col(App.id) == Watch.app_id)
        .where(col(Watch.repository_id) == repository_id)
        .order_by(col(Watch.app_id))
    ).all()
    return [(w, a) for w, a in rows]


def of_app(
    session: Session, app_id: str, after: str | None = None, limit: int | None = None
) -> list[tuple[Watch, Repository]]:
    """The app's watches with their repositories by repository id, after the cursor."""
    query = (
        select(Watch, Repository)
        .join(Repository, col(Repository.id) == Watch.repository_id)
        .where(col(Watch.app_id) == app_id)
    )
    if after:
        query = query.where(col(Watch.repository_id) > after)
    query = query.order_by(col(Watch.repository_id))
    if limit is not None:
        query = query.limit(limit)
    return [(w, r) for w, r in session.exec(query).all()]


class WatchColumns(NamedTuple):
    """What a listing of one app's watches shows, read as plain columns (a long list
    builds no ORM objects)."""

    app_id: str
    repository_id: str
    url: str
    ref: str
    path_globs: str
    status: str
    delivered_commit: str | None
    last_error_type: str | None
    last_error: str | None
    retry_count: int
    last_synced_at: datetime | None
    created_at: datetime
    access: str | None
    access_checked_at: datetime | None
    access_error: str | None
    submodules: str | None
    lfs: bool | None
    held_back: str | None


_COLUMNS: tuple[Any, ...] = (
    Watch.app_id,
    Repository.id,
    Repository.url,
    Repository.ref,
    Watch.path_globs,
    Watch.status,
    Watch.delivered_commit,
    Watch.last_error_type,
    Watch.last_error,
    Watch.retry_count,
    Watch.last_synced_at,
    Watch.created_at,
    Watch.access,
    Watch.access_checked_at,
    Watch.access_error,
    Watch.submodules,
    Watch.lfs,
    Watch.held_back,
)


def columns_of_app(
    session: Session, app_id: str, after: str | None, limit: int
) -> list[WatchColumns]:
    """`WatchColumns` of the app's watches by repository id, after the cursor."""
    query = (
        sa_select(*_COLUMNS)
        .join(Repository, col(Repository.id) == Watch.repository_id)
        .where(col(Watch.app_id) == app_id)
    )
    if after:
        query = query.where(col(Watch.repository_id) > after)
    rows = session.execute(query.order_by(col(Watch.repository_id)).limit(limit))
    return [WatchColumns._make(row) for row in rows]


def of_app_at(session: Session, app_id: str, repository_ids: list[str]) -> dict[str, Watch]:
    """The app's watches of these repositories, by repository id."""
    if not repository_ids:
        return {}
    rows = session.exec(
        select(Watch).where(
            col(Watch.app_id) == app_id, col(Watch.repository_id).in_(repository_ids)
        )
    ).all()
    return {w.repository_id: w for w in rows}


def listing(
    session: Session,
    *,
    status: str | None = None,
    app_id: str | None = None,
    repository_ids: set[str] | None = None,
) -> list[tuple[Watch, App, Repository]]:
    """Watches (of one app, with one status, or of some repositories) with their apps and
    repositories, by app name, app id, then repository URL."""
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
    return [(w, a, r) for w, a, r in rows.all()]


def counts_by_status(session: Session) -> dict[str, int]:
    """How many watches have each status."""
    rows = session.exec(select(Watch.status, func.count()).group_by(Watch.status)).all()
    return {str(status): int(n) for status, n in rows}
