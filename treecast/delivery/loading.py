"""The load step of a delivery: what git says about the commit and what the app acknowledged.

When the app fully acknowledged an earlier commit X that this cache still holds, only
the paths `git diff-tree X Y` reports can differ, so only those are looked up: the work
follows the size of the change, not of the repository. Everything else (no X, X gone
from the cache, a changed `.treecastignore`) compares the whole tree with the whole
ledger.

This relies on one invariant the callers keep: `Watch.delivered_commit` is set only
when the ledger equals that commit's filtered tree, and it is cleared when the watch's
`path_globs` change (globs are not in git, so a diff cannot see them).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from sqlmodel import Session

from models.contents import SubmoduleMode
from models.tables import parse_globs
from treecast.delivery.changes import (
    NOTHING,
    Candidates,
    ChangeSet,
    compute_changes,
    diffed,
    listed,
    wanted_blobs,
)
from treecast.delivery.contents import (
    ContentReader,
    Contents,
    Sources,
    WatchOptions,
    expanded_candidates,
)
from treecast.gitcache.repository import RemoteAccess, RepositoryCache
from treecast.gitcache.tree import (
    FileFilter,
    diff_trees,
    ignore_blob_name,
    touches_ignore_file,
)
from treecast.store.ledger import load_ledger, record_imported_blobs
from treecast.store.watches import watched_contents


def candidates_at(
    cache: RepositoryCache,
    access: RemoteAccess,
    commit: str | None,
    delivered_commit: str | None,
    globs: list[str],
) -> Candidates:
    """The paths that may differ for an app last synced at `delivered_commit` (None: never),
    fetching `commit` into this worker's cache first when it lacks it."""
    if commit is None:
        return NOTHING
    base = delivered_commit
    # One git process answers: is the commit here, is the base here, which ignore file.
    names = [f"{commit}^{{commit}}", ignore_blob_name(commit), f"{base or commit}^{{commit}}"]
    try:
        here, ignore, base_here = cache.check(names)
    except OSError:
        here = ignore = base_here = None  # no usable cache on this worker yet
    if here is None:
        cache.ensure_commit(access, commit)
        here, ignore, base_here = cache.check(names)
    ignore_blob = ignore.oid if ignore is not None and ignore.kind == "blob" else None
    file_filter = cache.file_filter(ignore_blob, globs)
    if cache.partial:
        return _partial_candidates(cache, access, commit, base, base_here, file_filter, globs)
    if base and base_here is not None:
        entries, sizes = cache.diff(base, commit) if base != commit else ([], {})
        if not touches_ignore_file(entries):
            return diffed(entries, sizes, file_filter)
    return listed(cache.list_tree(commit, file_filter).files)


def _partial_candidates(
    cache: RepositoryCache,
    access: RemoteAccess,
    commit: str,
    base: str | None,
    base_here: object,
    file_filter: FileFilter,
    globs: list[str],
) -> Candidates:
    """`candidates_at` in a partial clone: the blobs this app receives are fetched (those
    missing, unless the snapshot fetched them) and sized before anything reads them."""
    if base and base_here is not None:
        entries = diff_trees(cache.settings, cache.path, base, commit) if base != commit else []
        if not touches_ignore_file(entries):
            sizes = cache.fill(access, commit, wanted_blobs(entries, file_filter), globs=globs)
            return diffed(entries, sizes, file_filter)
    files = cache.list_tree(commit, file_filter).files
    sizes = cache.fill(access, commit, (entry.blob_id for entry in files.values()), globs=globs)
    return listed({path: replace(e, size=sizes[e.blob_id]) for path, e in files.items()})


def contents_at(
    cache: RepositoryCache,
    access: RemoteAccess,
    commit: str | None,
    delivered_commit: str | None,
    globs: list[str],
    options: WatchOptions,
) -> Contents:
    """`candidates_at` for a watch with submodules or LFS (`treecast.delivery.contents`)."""
    if options.plain or commit is None:
        return Contents(candidates_at(cache, access, commit, delivered_commit, globs))
    names = [f"{commit}^{{commit}}", ignore_blob_name(commit)]
    if delivered_commit:
        names.append(f"{delivered_commit}^{{commit}}")
    try:
        here, ignore, *base_here = cache.check(names)
    except OSError:
        here = None
    if here is None:
        cache.ensure_commit(access, commit)
        here, ignore, *base_here = cache.check(names)
    ignore_blob = ignore.oid if ignore is not None and ignore.kind == "blob" else None
    base = delivered_commit if base_here and base_here[0] is not None else None
    return expanded_candidates(
        cache.settings, cache, access, commit, base, cache.file_filter(ignore_blob, globs), options
    )


def watch_options(submodules: str | None, lfs: bool | None) -> WatchOptions:
    """A watch's stored submodule and LFS choices (an unknown stored mode reads as off)."""
    try:
        mode = SubmoduleMode.parse(submodules)
    except ValueError:
        mode = SubmoduleMode.OFF
    return WatchOptions(submodules=mode, lfs=bool(lfs))


class ContentHasher:
    """Hashes contents for Docora-imported ledger rows, opening one reader on first use."""

    def __init__(self, cache: RepositoryCache, sources: Sources | None = None) -> None:
        self._cache = cache
        self._sources = sources or {}
        self._reader: ContentReader | None = None

    def __enter__(self) -> ContentHasher:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.close()

    def same_content(self, blob_id: str, sha256: str) -> bool:
        """Whether blob `blob_id` hashes to `sha256`."""
        if self._reader is None:
            self._reader = ContentReader(self._cache, self._sources)
        digest = hashlib.sha256()
        for piece in self._reader.iter_bytes(blob_id):
            digest.update(piece)
        return digest.hexdigest() == sha256


def load_changes(
    session: Session,
    cache: RepositoryCache,
    access: RemoteAccess,
    app_id: str,
    commit: str | None,
) -> ChangeSet:
    """Load what one app's changes at `commit` depend on, and compute them (`commit` None:
    an empty repository, every ledger path a delete). Raises LookupError when the app does
    not watch the repository."""
    repository_id = cache.repository_id
    watch = watched_contents(session, app_id, repository_id)
    if watch is None:
        raise LookupError(f"app {app_id} does not watch repository {repository_id}")
    globs = parse_globs(watch.path_globs)
    options = watch_options(watch.submodules, watch.lfs)
    contents = contents_at(cache, access, commit, watch.delivered_commit, globs, options)
    candidates = contents.candidates
    ledger = load_ledger(session, app_id, repository_id, candidates.ledger_paths())
    with ContentHasher(cache, contents.sources) as hasher:
        changes = compute_changes(candidates, ledger, hasher.same_content)
    changes.sources = contents.sources
    return changes


def record_changes(session: Session, app_id: str, repository_id: str, changes: ChangeSet) -> None:
    """The record step after computing: imported rows found unchanged get their blob ids."""
    record_imported_blobs(session, app_id, repository_id, changes.upgraded)
