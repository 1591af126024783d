"""Each app's changes at a commit, "current state wins": what git shows against the ledger.

Pure: the caller loads what git says about the commit (`Candidates`) and the app's
ledger rows for those paths, and gets the changes back; nothing is read from the
database, fetched or written here (`treecast.delivery.loading` does that around it).

The ledger says what the app acknowledged: path → blob id and SHA-256. A path missing
from it is a create, a different blob an update, a ledger path gone from the tree (or
now excluded) a delete.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from models.changes import ChangeKind, FileChange
from treecast.gitcache.tree import FILE_MODES, DiffEntry, FileFilter, TreeFile
from treecast.paths import unsafe_path_reason
from treecast.store.ledger import IMPORTED_BLOB_ID, LedgerEntry

# (blob id, SHA-256) → whether that blob's content hashes to it (a Docora-imported row).
ContentCheck = Callable[[str, str], bool]


@dataclass(frozen=True)
class Candidates:
    """The paths that may differ at a commit, and what each is there as the app may see it.

    `files` maps a path to its (blob id, size), or None when it is gone or not for this
    app. `complete`: `files` is the whole filtered tree, so every other ledger path is a
    delete; otherwise only these paths can differ (a tree diff's).
    """

    files: Mapping[str, tuple[str, int] | None]
    complete: bool
    # Held back (a submodule or LFS object that could not be had): a path, or a folder
    # ending in "/", → why. Neither sent nor deleted: the app keeps what it has there.
    held: Mapping[str, str] = field(default_factory=dict)

    def ledger_paths(self) -> Collection[str] | None:
        """The ledger rows the computation needs (None: all of them)."""
        return None if self.complete else self.files.keys()

    def is_held(self, path: str) -> bool:
        """True when `path` is held back, itself or as part of a held folder."""
        if not self.held:
            return False
        if path in self.held:
            return True
        return any(path.startswith(prefix) for prefix in self.held if prefix.endswith("/"))


# An empty repository: every ledger path is a delete.
NOTHING = Candidates({}, complete=True)


def listed(files: Mapping[str, TreeFile]) -> Candidates:
    """A full listing of the commit's filtered tree."""
    return Candidates({path: (e.blob_id, e.size) for path, e in files.items()}, complete=True)


def _diff_path(entry: DiffEntry) -> str | None:
    """The entry's path when it could ever have been delivered (UTF-8, safe)."""
    try:
        path = entry.raw_path.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return path if unsafe_path_reason(path) is None else None


def wanted_blobs(entries: list[DiffEntry], file_filter: FileFilter) -> set[str]:
    """The blobs of a diff's new side the app receives (whose sizes `diffed` needs)."""
    blobs: set[str] = set()
    for entry in entries:
        path = _diff_path(entry)
        if path is not None and entry.new_mode in FILE_MODES and file_filter.wanted(path):
            blobs.add(entry.new_blob)
    return blobs


def diffed(entries: list[DiffEntry], sizes: dict[str, int], file_filter: FileFilter) -> Candidates:
    """The paths a tree diff from the app's last delivered commit reports."""
    files: dict[str, tuple[str, int] | None] = {}
    for entry in entries:
        path = _diff_path(entry)
        if path is None:
            continue  # never delivered, so never in a ledger (`classify` counts it)
        wanted = entry.new_mode in FILE_MODES and file_filter.wanted(path)
        files[path] = (entry.new_blob, sizes[entry.new_blob]) if wanted else None
    return Candidates(files, complete=False)


@dataclass
class ChangeSet:
    """The changes in delivery order, and the imported ledger rows found unchanged
    (path → the blob id to record for them, so later syncs compare blob ids)."""

    changes: list[FileChange]
    upgraded: dict[str, str] = field(default_factory=dict)
    held: dict[str, str] = field(default_factory=dict)  # see `Candidates.held`
    # Where the bytes of a change's key are when not in the repository's own cache
    # (`treecast.delivery.contents.Sources`).
    sources: dict[str, Path] = field(default_factory=dict)


def order_changes(changes: Iterable[FileChange]) -> list[FileChange]:
    """Deletes, then creates, then updates, each sorted by path (a reproducible run)."""
    rank = {kind: i for i, kind in enumerate(ChangeKind)}
    return sorted(changes, key=lambda c: (rank[c.kind], c.path))


def compute_changes(
    candidates: Candidates,
    ledger: Mapping[str, LedgerEntry],
    same_content: ContentCheck | None = None,
) -> ChangeSet:
    """What one app must receive for its copy to match `candidates`, in delivery order.

    `ledger` holds the app's rows for `candidates.ledger_paths()`. A row imported from
    Docora has no blob id, only the SHA-256 of what the app acknowledged: it is
    unchanged when `same_content` says the current blob hashes to it (and is then
    upgraded); without `same_content` it is an update.
    """
    paths = ledger.keys() | candidates.files.keys() if candidates.complete else candidates.files
    result = ChangeSet([], held=dict(candidates.held))
    for path in paths:
        if candidates.is_held(path):
            continue
        current = candidates.files.get(path)
        known = ledger.get(path)
        if current is None:
            if known is not None:
                result.changes.append(FileChange(ChangeKind.DELETE, path, None, 0, known.sha256))
            continue
        blob_id, size = current
        if known is None:
            result.changes.append(FileChange(ChangeKind.CREATE, path, blob_id, size, None))
        elif known.blob_id == IMPORTED_BLOB_ID and same_content is not None:
            if same_content(blob_id, known.sha256):
                result.upgraded[path] = blob_id
            else:
                result.changes.append(
                    FileChange(ChangeKind.UPDATE, path, blob_id, size, known.sha256)
                )
        elif known.blob_id != blob_id:
            result.changes.append(FileChange(ChangeKind.UPDATE, path, blob_id, size, known.sha256))
    result.changes = order_changes(result.changes)
    return result
