"""The `snapshot_repository` activity: fetch the watched ref once, record the commit.

Only small metadata leaves the activity (`SnapshotResult`); file lists and
content stay in git, where delivery reads them by commit and blob id.
"""

from __future__ import annotations

from pathlib import Path

from sqlmodel import Session, col, delete, select, update
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.git_cache import cache_lock, git_error, keep_commit, maintain, prune_kept
from activities.git_fetch import load_access, sync_ref
from activities.git_objects import ObjectChecker
from activities.git_tree import (
    TreeStats,
    diff_stats,
    diff_with_sizes,
    filter_for,
    ignore_blob_name,
    list_tree,
    touches_ignore_file,
)
from models.git import GitErrorType, SnapshotInput, SnapshotResult
from models.tables import Snapshot, Watch, utcnow
from treecast.config import Settings
from treecast.db import session_scope
from treecast.redact import redact

# Snapshot rows (and pinned commits) kept per repository.
KEEP_SNAPSHOTS = 20

# Stale pins are dropped once every this many new snapshots (listing the pins costs a
# git process; a few extra pinned commits cost nothing).
PRUNE_EVERY = 10


def _stats_from_row(row: Snapshot) -> TreeStats:
    return TreeStats(
        file_count=row.file_count,
        total_bytes=row.total_bytes,
        skipped_symlinks=row.skipped_symlinks,
        skipped_submodules=row.skipped_submodules,
        skipped_invalid_paths=row.skipped_invalid_paths,
    )


def tree_stats(
    settings: Settings,
    path: Path,
    commit: str,
    previous: Snapshot | None,
    checker: ObjectChecker,
) -> TreeStats:
    """The counts of `commit`: carried over from the previous snapshot through a tree diff
    when the cache still holds it (work proportional to the change), else a full listing."""
    if previous is not None and previous.commit == commit:
        return _stats_from_row(previous)
    if previous is not None and previous.commit:
        base, ignore = checker.check([f"{previous.commit}^{{commit}}", ignore_blob_name(commit)])
        if base is not None:
            entries, sizes = diff_with_sizes(settings, path, previous.commit, commit, checker)
            if not touches_ignore_file(entries):
                ignore_blob = ignore.oid if ignore is not None and ignore.kind == "blob" else None
                stats = _stats_from_row(previous)
                stats.add(diff_stats(entries, sizes, filter_for(path, ignore_blob)))
                return stats
    return list_tree(settings, path, commit).stats


def _latest(session: Session, repository_id: str) -> Snapshot | None:
    query = (
        select(Snapshot)
        .where(Snapshot.repository_id == repository_id)
        .order_by(col(Snapshot.taken_at).desc(), col(Snapshot.id).desc())
        .limit(1)
    )
    return session.exec(query).first()


def record_snapshot(
    session: Session,
    repository_id: str,
    commit: str | None,
    stats: TreeStats,
    latest: Snapshot | None,
) -> set[str] | None:
    """Record a sync (a repeat of the newest commit only refreshes its time) and keep the
    newest `KEEP_SNAPSHOTS`. Every `PRUNE_EVERY` new rows, returns the commits worth
    keeping in the cache (the caller then drops other pins and lets git tidy up)."""
    if latest is not None and latest.commit == commit:
        session.exec(
            update(Snapshot).where(col(Snapshot.id) == latest.id).values(taken_at=utcnow())
        )
        return None
    row = Snapshot(
        repository_id=repository_id,
        commit=commit,
        file_count=stats.file_count,
        total_bytes=stats.total_bytes,
        skipped_symlinks=stats.skipped_symlinks,
        skipped_submodules=stats.skipped_submodules,
        skipped_invalid_paths=stats.skipped_invalid_paths,
    )
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


class GitActivities:
    """The git activities of one worker process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @activity.defn(name="snapshot_repository")
    def snapshot_repository(self, input: SnapshotInput) -> SnapshotResult:
        """Fetch the repository's ref into this worker's cache and record its commit.

        Raises ApplicationError typed with a `GitErrorType` (message redacted).
        """
        secrets: list[str] = []  # filled once the token is decrypted
        try:
            return self._snapshot(input.repository_id, secrets)
        except ApplicationError as err:
            failure = err  # already classified and redacted by run_git
        except Exception as exc:
            failure = git_error(
                GitErrorType.OTHER,
                redact(f"snapshot of {input.repository_id} failed: {exc}", secrets),
            )
        # One line per failed sync (the error is benign, so the SDK adds no traceback).
        activity.logger.warning(
            "sync of %s failed: %s: %s", input.repository_id, failure.type, failure.message
        )
        raise failure from None

    def _snapshot(self, repository_id: str, secrets: list[str]) -> SnapshotResult:
        settings = self.settings
        with cache_lock(settings, repository_id) as path, ObjectChecker(path) as checker:
            with session_scope(settings.database_url) as session:
                access = load_access(settings, repository_id, session)
                previous = _latest(session, repository_id)
            if access.credentials is not None:
                secrets.extend(access.credentials.secrets())
            outcome = sync_ref(settings, path, access.url, access.ref, access.credentials, checker)
            stats = TreeStats()
            if outcome.commit is not None:
                stats = tree_stats(settings, path, outcome.commit, previous, checker)
                if not outcome.fetched and (previous is None or previous.commit != outcome.commit):
                    # Back to a commit the cache had anyway: pin it again (a fetch pins itself).
                    keep_commit(settings, path, outcome.commit)
            with session_scope(settings.database_url) as session:
                keep = record_snapshot(session, repository_id, outcome.commit, stats, previous)
            if keep is not None:
                prune_kept(settings, path, keep)
                maintain(settings, path)
        activity.logger.info(
            "synced %s at %s (%s): %d files, %d bytes",
            repository_id,
            outcome.ref or "(default branch)",
            outcome.commit or "no commits",
            stats.file_count,
            stats.total_bytes,
        )
        return SnapshotResult(
            repository_id=repository_id,
            commit=outcome.commit,
            ref=outcome.ref,
            file_count=stats.file_count,
            total_bytes=stats.total_bytes,
            skipped_symlinks=stats.skipped_symlinks,
            skipped_submodules=stats.skipped_submodules,
            skipped_invalid_paths=stats.skipped_invalid_paths,
        )
