"""The git activity: fetch the watched ref once per repository, record the commit.

Only small metadata leaves it (`SnapshotResult`); file lists and content stay in
git, where delivery reads them by commit and blob id. It also keeps each watching
app's own access to the repository current (`treecast.access.AccessRun`): the
fetch uses one app's credentials, and the apps due a check are asked about.
"""

from __future__ import annotations

from temporalio import activity

from activities.failures import application_error
from models.git import GitErrorType, SnapshotInput, SnapshotResult, SnapshotStats
from treecast.access import AccessRun
from treecast.config import Settings
from treecast.db import session_scope
from treecast.gitcache.errors import GitError
from treecast.gitcache.repository import RepositoryCache
from treecast.gitcache.tree import TreeStats
from treecast.redact import redact
from treecast.store.snapshots import latest, record_snapshot


class GitActivities:
    """The git activities of one worker process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @activity.defn
    def snapshot_repository(self, input: SnapshotInput) -> SnapshotResult:
        """Fetch the repository's ref into this worker's cache and record its commit.

        Raises ApplicationError typed with a `GitErrorType` (message redacted).
        """
        secrets: list[str] = []  # filled once the token is decrypted
        try:
            return self._snapshot(input.repository_id, secrets)
        except GitError as err:
            failure = err  # already classified and redacted by run_git
        except Exception as exc:
            failure = GitError(
                GitErrorType.OTHER,
                redact(f"snapshot of {input.repository_id} failed: {exc}", secrets),
            )
        # One line per failed sync (the error is benign, so the SDK adds no traceback).
        activity.logger.warning(
            "sync of %s failed: %s: %s", input.repository_id, failure.type, failure.message
        )
        raise application_error(failure) from None

    def _snapshot(self, repository_id: str, secrets: list[str]) -> SnapshotResult:
        settings = self.settings
        repository = RepositoryCache(settings, repository_id, heartbeat=activity.heartbeat)
        with repository.locked() as cache:
            # Two transactions: the reads before git runs, the writes after it (none is
            # held open while git fetches).
            with session_scope(settings.database_url) as session:
                access = AccessRun(settings, repository_id, session)
                previous = latest(session, repository_id)
            outcome = access.fetch(cache, secrets, partial=access.partial)
            stats = TreeStats()
            new_commit = outcome.commit is not None and (
                previous is None or previous.commit != outcome.commit
            )
            if outcome.commit is not None:
                before = SnapshotStats.of(previous) if previous is not None else None
                stats = cache.tree_stats(
                    outcome.commit, previous.commit if previous else None, before, outcome.stats
                )
                if not outcome.fetched and new_commit:
                    # Back to a commit the cache had anyway: pin it again (a fetch pins itself).
                    cache.keep(outcome.commit)
            # Before the commit is handed to delivery: an app that lost its access is
            # marked now and is not among those delivered to (a new commit: every app).
            access.check_due(new_commit=new_commit)
            with session_scope(settings.database_url) as session:
                keep = record_snapshot(session, repository_id, outcome.commit, stats, previous)
                refused = access.save(session)
            if keep is not None:
                cache.prune(keep)
        activity.logger.info(
            "synced %s at %s (%s): %d files, %d bytes%s",
            repository_id,
            outcome.ref or "(default branch)",
            outcome.commit or "no commits",
            stats.file_count,
            stats.total_bytes,
            f", {stats.skipped_unsafe_paths} unsafe paths never delivered"
            if stats.skipped_unsafe_paths
            else "",
        )
        if refused:
            activity.logger.warning(
                "%s: the git host refused the credentials of %s; nothing more is delivered to them",
                repository_id,
                ", ".join(refused),
            )
        return SnapshotResult(
            repository_id=repository_id,
            commit=outcome.commit,
            ref=outcome.ref,
            refused_app_ids=refused,
            **stats.counts(),
        )
