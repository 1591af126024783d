"""Each app's changes at a commit, "current state wins": the tree against the app's ledger.

The ledger (`DeliveredFile` rows) says what the app acknowledged: path → blob id
and SHA-256. A path missing from it is a create, a different blob an update, a
ledger path gone from the tree (or now excluded) a delete.

When the app fully acknowledged an earlier commit X that this cache still holds,
only the paths `git diff-tree X Y` reports can differ, so only those are looked
up: the work follows the size of the change, not of the repository. Everything
else (no X, X gone from the cache, a changed `.treecastignore`) compares the
whole tree with the whole ledger.

This relies on one invariant the callers keep: `Watch.delivered_commit` is set
only when the ledger equals that commit's filtered tree, and it is cleared when
the watch's `path_globs` change (globs are not in git, so a diff cannot see them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from sqlalchemy import update
from sqlmodel import Session, col

from models.changes import ChangeKind, FileChange
from models.tables import DeliveredFile, Watch
from treecast.gitcache.objects import BlobReader
from treecast.gitcache.repository import RemoteAccess, RepositoryCache
from treecast.gitcache.tree import (
    FILE_MODES,
    DiffEntry,
    FileFilter,
    ignore_blob_name,
    parse_globs,
    touches_ignore_file,
)
from treecast.paths import unsafe_path_reason
from treecast.store.ledger import IMPORTED_BLOB_ID, LedgerEntry, load_ledger


def order_changes(changes: Iterable[FileChange]) -> list[FileChange]:
    """Deletes, then creates, then updates, each sorted by path (a reproducible run)."""
    rank = {kind: i for i, kind in enumerate(ChangeKind)}
    return sorted(changes, key=lambda c: (rank[c.kind], c.path))


class ImportedRows:
    """Ledger rows imported from Docora carry no blob id (`blob_id` ""), only the SHA-256 of
    the content the app acknowledged. Such a row is unchanged when the file's current
    content hashes to it: the blob is read and hashed once, and the row then gets its blob
    id (`upgraded`), so later syncs compare blob ids as usual."""

    def __init__(self, cache: RepositoryCache) -> None:
        self._cache = cache
        self._reader: BlobReader | None = None
        self.upgraded: dict[str, str] = {}  # path -> blob id whose content matched

    def same_content(self, path: str, blob_id: str, sha256: str) -> bool:
        """Whether blob `blob_id` hashes to `sha256` (remembering the match for `path`)."""
        if self._reader is None:
            self._reader = self._cache.blobs()
        digest = hashlib.sha256()
        for piece in self._reader.iter_bytes(blob_id):
            digest.update(piece)
        if digest.hexdigest() != sha256:
            return False
        self.upgraded[path] = blob_id
        return True

    def finish(self, session: Session, app_id: str, repository_id: str) -> None:
        """Close the reader and store the blob ids of the rows that matched."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        for path, blob_id in self.upgraded.items():
            session.exec(
                update(DeliveredFile)
                .where(
                    col(DeliveredFile.app_id) == app_id,
                    col(DeliveredFile.repository_id) == repository_id,
                    col(DeliveredFile.path) == path,
                    col(DeliveredFile.blob_id) == IMPORTED_BLOB_ID,
                )
                .values(blob_id=blob_id)
            )


def _decide(
    path: str,
    current: tuple[str, int] | None,
    known: LedgerEntry | None,
    imported: ImportedRows | None = None,
) -> FileChange | None:
    """The change for one path given its current (blob, size) and its ledger entry."""
    if current is None:
        if known is None:
            return None
        return FileChange(ChangeKind.DELETE, path, None, 0, known.sha256)
    blob_id, size = current
    if known is None:
        return FileChange(ChangeKind.CREATE, path, blob_id, size, None)
    if known.blob_id == IMPORTED_BLOB_ID and imported is not None:
        if imported.same_content(path, blob_id, known.sha256):
            return None
        return FileChange(ChangeKind.UPDATE, path, blob_id, size, known.sha256)
    if known.blob_id != blob_id:
        return FileChange(ChangeKind.UPDATE, path, blob_id, size, known.sha256)
    return None


def full_changes(
    session: Session,
    cache: RepositoryCache,
    app_id: str,
    commit: str,
    file_filter: FileFilter,
) -> list[FileChange]:
    """Compare the whole filtered tree with the whole ledger."""
    files = cache.list_tree(commit, file_filter).files
    ledger = load_ledger(session, app_id, cache.repository_id)
    imported = ImportedRows(cache)
    changes: list[FileChange] = []
    try:
        for path in ledger.keys() | files.keys():
            entry = files.get(path)
            state = (entry.blob_id, entry.size) if entry else None
            change = _decide(path, state, ledger.get(path), imported)
            if change is not None:
                changes.append(change)
    finally:
        imported.finish(session, app_id, cache.repository_id)
    return order_changes(changes)


def diff_changes(
    session: Session,
    app_id: str,
    repository_id: str,
    entries: list[DiffEntry],
    sizes: dict[str, int],
    file_filter: FileFilter,
    cache: RepositoryCache | None = None,
) -> list[FileChange]:
    """Changes restricted to the paths a tree diff reports (ledger consulted for each)."""
    current: dict[str, tuple[str, int] | None] = {}
    for entry in entries:
        try:
            path = entry.raw_path.decode("utf-8")
        except UnicodeDecodeError:
            continue  # never delivered, so never in a ledger
        if unsafe_path_reason(path) is not None:
            continue  # never delivered either (`classify` counts it)
        wanted = entry.new_mode in FILE_MODES and file_filter.wanted(path)
        current[path] = (entry.new_blob, 0) if wanted else None
    ledger = load_ledger(session, app_id, repository_id, current.keys())
    imported = ImportedRows(cache) if cache is not None else None
    changes: list[FileChange] = []
    try:
        for path, state in current.items():
            if state is not None:
                state = (state[0], sizes[state[0]])
            change = _decide(path, state, ledger.get(path), imported)
            if change is not None:
                changes.append(change)
    finally:
        if imported is not None:
            imported.finish(session, app_id, repository_id)
    return order_changes(changes)


def compute_changes(
    session: Session,
    cache: RepositoryCache,
    access: RemoteAccess,
    app_id: str,
    commit: str | None,
) -> list[FileChange]:
    """What one app must receive for the repository to be at `commit`, in delivery order.

    `commit` None is an empty repository: every ledger path is a delete. Fetches
    the commit into this worker's cache when missing. Raises LookupError when the app
    does not watch the repository.
    """
    repository_id = cache.repository_id
    watch = session.get(Watch, (app_id, repository_id))
    if watch is None:
        raise LookupError(f"app {app_id} does not watch repository {repository_id}")
    if commit is None:
        ledger = load_ledger(session, app_id, repository_id)
        return order_changes(
            FileChange(ChangeKind.DELETE, path, None, 0, entry.sha256)
            for path, entry in ledger.items()
        )
    base = watch.delivered_commit
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
    file_filter = cache.file_filter(ignore_blob, parse_globs(watch.path_globs))
    if base and base_here is not None:
        entries, sizes = cache.diff(base, commit) if base != commit else ([], {})
        if not touches_ignore_file(entries):
            return diff_changes(session, app_id, repository_id, entries, sizes, file_filter, cache)
    return full_changes(session, cache, app_id, commit, file_filter)
