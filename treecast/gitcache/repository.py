"""`RepositoryCache`: the one object that stands for a repository's git cache on this worker.

Everything Treecast does with git goes through it: sync the watched ref, make sure
a commit is here, list a tree, diff two commits, read blobs, pin and prune. The
functions in `cache`, `remote`, `tree` and `objects` are its building blocks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from models.git import GitErrorType, SnapshotStats
from treecast.config import Settings
from treecast.gitcache import cache, remote, tree
from treecast.gitcache import partial as partial_clone
from treecast.gitcache.command import AnyCredentials, CacheCorrupt
from treecast.gitcache.errors import GitError, Heartbeat, heartbeats
from treecast.gitcache.objects import BlobReader, ObjectChecker, ObjectInfo, batch_check


@dataclass(frozen=True)
class RemoteAccess:
    """What git needs to reach one repository (the token or deploy key decrypted, in memory
    only)."""

    repository_id: str
    url: str
    ref: str
    credentials: AnyCredentials | None
    # Whose credentials these are, when they are one tenant's (an app id) rather than
    # whichever the repository's fetch used: what they fill beyond the repository's own
    # cache (a submodule reached with them) is that tenant's alone.
    tenant: str = ""

    def __repr__(self) -> str:
        return f"RemoteAccess({self.repository_id!r}, {self.url!r}, ref={self.ref!r})"

    def secrets(self) -> list[str]:
        """Every form of the token that could show up in text (none without one)."""
        return self.credentials.secrets() if self.credentials is not None else []


class RepositoryCache:
    """This worker's bare cache of one repository.

    Writing methods (`sync`, `keep`, `prune`, `maintain`) must run inside `locked()`;
    `ensure_commit` takes the lock itself when it has to fetch. Reads (`list_tree`,
    `diff`, `blobs`, `check`) are safe without it once the commit is pinned.
    `heartbeat` is called while git runs long or the lock is awaited within `locked()`
    and `ensure_commit` (see `errors.heartbeats`).
    """

    def __init__(
        self, settings: Settings, repository_id: str, *, heartbeat: Heartbeat | None = None
    ) -> None:
        self.settings = settings
        self.repository_id = repository_id
        self.path: Path = cache.cache_path(settings, repository_id)
        self.heartbeat = heartbeat
        self._checker: ObjectChecker | None = None

    # -- locking and lookups ---------------------------------------------------------

    @contextlib.contextmanager
    def locked(self, *, timeout: float | None = None) -> Iterator[RepositoryCache]:
        """Hold this worker's lock on the cache, with one object checker for the duration."""
        with (
            heartbeats(self.heartbeat),
            cache.cache_lock(self.settings, self.repository_id, timeout=timeout),
            self.reading(),
        ):
            yield self

    @contextlib.contextmanager
    def reading(self) -> Iterator[RepositoryCache]:
        """One object checker for the lookups of a read (a delivery's), unless one is open:
        each lookup outside it starts a git process of its own."""
        if self._checker is not None:
            yield self
            return
        with ObjectChecker(self.path) as checker:
            self._checker = checker
            try:
                yield self
            finally:
                self._checker = None

    def check(self, names: list[str]) -> list[ObjectInfo | None]:
        """Look up object names (`X^{commit}`, `X:path`, ids); None where absent.

        Raises OSError when there is no usable cache on this worker.
        """
        if self._checker is not None:
            return self._checker.check(names)
        return batch_check(self.path, names)

    def has_commit(self, commit: str) -> bool:
        """True when the cache holds `commit` (or a tag naming one)."""
        return cache.peeled_commit(self.path, commit, self._checker) is not None

    # -- writing (under `locked`) --------------------------------------------------------

    def sync(
        self, access: RemoteAccess, *, partial: bool = False, watched: Sequence[Sequence[str]] = ()
    ) -> remote.SyncOutcome:
        """Bring the watched ref's current commit into the cache (clone, then fetch what is
        new); `partial`: without the blobs (every watch has `paths`), but for those of a
        new commit that the watches with the glob lists `watched` receive (`fill` fetches
        whatever a delivery still lacks)."""
        return remote.sync_ref(
            self.settings,
            self.path,
            access.url,
            access.ref,
            access.credentials,
            self._checker,
            filtered=partial,
            watched=watched,
        )

    @property
    def partial(self) -> bool:
        """True for a partial clone: blobs nobody asked for are missing (see `fill`)."""
        return tree.is_partial(self.path)

    def fill(
        self,
        access: RemoteAccess,
        commit: str,
        blob_ids: Iterable[str],
        *,
        globs: Sequence[str] | None = None,
    ) -> dict[str, int]:
        """The sizes of blobs of `commit` about to be read, fetching those a partial cache
        lacks first (in batches); `globs`: they are files a watch with these globs
        receives, which the snapshot may have fetched already (`partial.is_filled`)."""
        filled = globs is not None and partial_clone.is_filled(self.path, commit, globs)
        return partial_clone.fill(
            self.settings, self.path, access.url, access.credentials, commit, blob_ids,
            self._checker, filled=filled,
        )  # fmt: skip

    def keep(self, commit: str) -> None:
        """Pin `commit` against gc."""
        cache.keep_commit(self.settings, self.path, commit)

    def prune(self, keep: set[str]) -> None:
        """Drop the pins of commits not in `keep`, then let git tidy up when it is due."""
        cache.prune_kept(self.settings, self.path, keep)
        cache.maintain(self.settings, self.path)
        if self._checker is not None:
            self._checker.discard()  # it read the cache before git packed it

    def tidy(self) -> None:
        """Let git pack the cache when it thinks it is due, under the lock (a submodule's
        cache, which no snapshot prunes, after a fetch)."""
        with heartbeats(self.heartbeat), cache.cache_lock(self.settings, self.repository_id):
            cache.maintain(self.settings, self.path)

    def ensure_commit(self, access: RemoteAccess, commit: str) -> None:
        """Make sure `commit` is here and pinned, fetching it if this worker lacks it.

        For delivery on any worker: the snapshot may have run elsewhere. Raises
        RefNotFound when the remote no longer has the commit.
        """
        if cache.looks_valid(self.path) and self.has_commit(commit):
            return
        settings, path = self.settings, self.path
        with heartbeats(self.heartbeat), cache.cache_lock(settings, self.repository_id):
            cache.prepare_cache(settings, path)
            if not self.has_commit(commit):
                pin = cache.KEEP_PREFIX + commit
                try:
                    remote.fetch(settings, path, access.url, commit, pin, access.credentials)
                except GitError as exc:
                    if exc.type not in (GitErrorType.REF_NOT_FOUND, GitErrorType.OTHER):
                        raise
                    # Servers that refuse fetching by id: fetch the watched ref and look again.
                    remote.sync_ref(settings, path, access.url, access.ref, access.credentials)
                except CacheCorrupt:
                    cache.rebuild_cache(settings, path)
                    if self._checker is not None:
                        self._checker.discard()  # it read the cache just thrown away
                    remote.fetch(settings, path, access.url, commit, pin, access.credentials)
                if not self.has_commit(commit):
                    raise GitError(
                        GitErrorType.REF_NOT_FOUND,
                        f"commit {commit} is no longer on the remote of {self.repository_id}",
                    ) from None
            cache.keep_commit(settings, path, commit)

    # -- reading ------------------------------------------------------------------------

    def ignore_blob(self, commit: str) -> str | None:
        """The blob id of `commit`'s root `.treecastignore` (None when there is none)."""
        info = self.check([tree.ignore_blob_name(commit)])[0]
        return info.oid if info is not None and info.kind == "blob" else None

    def file_filter(self, ignore_blob: str | None, globs: Iterable[str] = ()) -> tree.FileFilter:
        """Which paths an app gets: the commit's `.treecastignore` blob (see `ignore_blob`),
        then the app's globs."""
        return tree.filter_for(self.path, ignore_blob, globs)

    def list_tree(
        self,
        commit: str,
        file_filter: tree.FileFilter | None = None,
        *,
        guard: tree.TreeGuard | None = None,
    ) -> tree.TreeListing:
        """The deliverable files of `commit` (its own `.treecastignore` when no filter is
        given); `guard` counts it within a larger (expanded) tree's limits."""
        return tree.list_tree(
            self.settings, self.path, commit, file_filter, checker=self._checker, guard=guard
        )

    def diff(self, old: str, new: str) -> tuple[list[tree.DiffEntry], dict[str, int]]:
        """Every path that differs between two commits, with the sizes of their file blobs."""
        return tree.diff_with_sizes(self.settings, self.path, old, new, self._checker)

    def tree_stats(
        self,
        commit: str,
        previous_commit: str | None,
        previous: SnapshotStats | None,
        listed: tree.TreeStats | None = None,
    ) -> tree.TreeStats:
        """The counts of `commit`: carried over from the previous snapshot's through a tree
        diff when the cache still holds that commit (work proportional to the change),
        else `listed` (counted by the sync: `SyncOutcome.stats`), else from a full listing."""
        if previous is not None and previous_commit == commit:
            return tree.TreeStats.of(previous)
        if listed is not None:
            return listed
        # A partial cache cannot size the blobs of a diff (they may be missing): listed,
        # without sizes.
        if previous is not None and previous_commit and not self.partial:
            base, ignore = self.check(
                [f"{previous_commit}^{{commit}}", tree.ignore_blob_name(commit)]
            )
            if base is not None:
                entries, sizes = self.diff(previous_commit, commit)
                if not tree.touches_ignore_file(entries):
                    blob = ignore.oid if ignore is not None and ignore.kind == "blob" else None
                    stats = tree.TreeStats.of(previous)
                    stats.add(tree.diff_stats(entries, sizes, self.file_filter(blob)))
                    return stats
        listing = tree.list_tree(
            self.settings, self.path, commit, keep_files=False, checker=self._checker
        )
        return listing.stats

    def blobs(self) -> BlobReader:
        """A reader of this cache's blobs (a context manager; one per thread)."""
        return BlobReader(self.path)
