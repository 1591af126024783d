"""The `snapshot_repository` activity: fetch the watched ref once, record the commit.

Only small metadata leaves the activity (`SnapshotResult`); file lists and
content stay in git, where delivery reads them by commit and blob id.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlmodel import Session, col, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.git_cache import (
    RepoAccess,
    cache_lock,
    git_error,
    has_object,
    keep_commit,
    load_access,
    prune_kept,
    sync_ref,
)
from activities.git_objects import blob_sizes
from activities.git_tree import (
    TreeStats,
    diff_stats,
    diff_trees,
    file_blobs,
    ignore_filter,
    list_tree,
    touches_ignore_file,
)
from models.git import GitErrorType, SnapshotInput, SnapshotResult
from models.tables import Snapshot, Watch, utcnow
from treecast.config import Settings
from treecast.db import session_scope
from treecast.redact import redact

log = logging.getLogger(__name__)

# Snapshot rows (and pinned commits) kept per repository.
KEEP_SNAPSHOTS = 20


def _stats_from_row(row: Snapshot) -> TreeStats:
    return TreeStats(
        file_count=row.file_count,
        total_bytes=row.total_bytes,
        skipped_symlinks=row.skipped_symlinks,
        skipped_submodules=row.skipped_submodules,
        skipped_invalid_paths=row.skipped_invalid_paths,
    )


def tree_stats(settings: Settings, path: Path, commit: str, previous: Snapshot | None) -> TreeStats:
    """The counts of `commit`: carried over from the previous snapshot through a tree diff
    when the cache still holds it (work proportional to the change), else a full listing."""
    if previous is not None and previous.commit == commit:
        return _stats_from_row(previous)
    if previous is not None and previous.commit and has_object(settings, path, previous.commit):
        entries = diff_trees(settings, path, previous.commit, commit)
        if not touches_ignore_file(entries):
            sizes = blob_sizes(path, file_blobs(entries))
            stats = _stats_from_row(previous)
            stats.add(diff_stats(entries, sizes, ignore_filter(settings, path, commit)))
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
    session: Session, repository_id: str, commit: str | None, stats: TreeStats
) -> set[str]:
    """Record a sync (a repeat of the newest commit only refreshes its time), keep the newest
    `KEEP_SNAPSHOTS`, and return the commits worth keeping in the cache."""
    latest = _latest(session, repository_id)
    if latest is not None and latest.commit == commit:
        latest.taken_at = utcnow()
        session.add(latest)
    else:
        session.add(
            Snapshot(
                repository_id=repository_id,
                commit=commit,
                file_count=stats.file_count,
                total_bytes=stats.total_bytes,
                skipped_symlinks=stats.skipped_symlinks,
                skipped_submodules=stats.skipped_submodules,
                skipped_invalid_paths=stats.skipped_invalid_paths,
            )
        )
    session.flush()
    rows = session.exec(
        select(Snapshot)
        .where(Snapshot.repository_id == repository_id)
        .order_by(col(Snapshot.taken_at).desc(), col(Snapshot.id).desc())
    ).all()
    for old in rows[KEEP_SNAPSHOTS:]:
        session.delete(old)
    keep = {row.commit for row in rows[:KEEP_SNAPSHOTS] if row.commit}
    delivered = session.exec(
        select(Watch.delivered_commit).where(Watch.repository_id == repository_id)
    ).all()
    keep.update(c for c in delivered if c)
    return keep


class GitActivities:
    """The git activities of one worker process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @activity.defn(name="snapshot_repository")
    def snapshot_repository(self, input: SnapshotInput) -> SnapshotResult:
        """Fetch the repository's ref into this worker's cache and record its commit.

        Raises ApplicationError typed with a `GitErrorType` (message redacted).
        """
        access = load_access(self.settings, input.repository_id)
        try:
            return self._snapshot(access)
        except ApplicationError:
            raise  # already classified and redacted by run_git
        except Exception as exc:
            secrets = access.credentials.secrets() if access.credentials else []
            raise git_error(
                GitErrorType.OTHER,
                redact(f"snapshot of {access.repository_id} failed: {exc}", secrets),
            ) from None

    def _snapshot(self, access: RepoAccess) -> SnapshotResult:
        settings = self.settings
        with cache_lock(settings, access.repository_id) as path:
            outcome = sync_ref(settings, path, access.url, access.ref, access.credentials)
            stats = TreeStats()
            with session_scope(settings.database_url) as session:
                previous = _latest(session, access.repository_id)
            if outcome.commit is not None:
                stats = tree_stats(settings, path, outcome.commit, previous)
                keep_commit(settings, path, outcome.commit)
            with session_scope(settings.database_url) as session:
                keep = record_snapshot(session, access.repository_id, outcome.commit, stats)
            prune_kept(settings, path, keep)
        log.info(
            "synced %s at %s (%s): %d files, %d bytes",
            access.repository_id,
            outcome.ref or "(default branch)",
            outcome.commit or "no commits",
            stats.file_count,
            stats.total_bytes,
        )
        return SnapshotResult(
            repository_id=access.repository_id,
            commit=outcome.commit,
            ref=outcome.ref,
            file_count=stats.file_count,
            total_bytes=stats.total_bytes,
            skipped_symlinks=stats.skipped_symlinks,
            skipped_submodules=stats.skipped_submodules,
            skipped_invalid_paths=stats.skipped_invalid_paths,
        )
