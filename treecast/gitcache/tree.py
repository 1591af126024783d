"""Listing a commit's files with git itself, and deciding which of them each app gets.

The tree comes from `git ls-tree -r -z -l` (NUL-separated, so any byte in a path
is safe). Regular and executable files are delivered; symlinks, submodules and
paths that are not valid UTF-8 are skipped and counted. A `.treecastignore` at
the root (gitignore syntax) excludes files for every app; a watch's path globs
narrow it further for that app.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from models.git import GitErrorType, SnapshotStats
from treecast.config import Settings
from treecast.gitcache.command import stream_records
from treecast.gitcache.errors import GitError
from treecast.gitcache.objects import (
    BlobReader,
    ObjectChecker,
    batch_check,
    blob_sizes,
    is_object_id,
)
from treecast.globs import GlobSpec, skip_with_warning
from treecast.paths import unsafe_path_reason

log = logging.getLogger(__name__)

IGNORE_FILE = ".treecastignore"

MODE_FILE = "100644"
MODE_EXECUTABLE = "100755"
MODE_SYMLINK = "120000"
MODE_SUBMODULE = "160000"
MODE_ABSENT = "000000"
FILE_MODES = (MODE_FILE, MODE_EXECUTABLE)

# Bigger ignore files are refused: nobody writes 1 MiB of ignore rules, and it is read whole.
MAX_IGNORE_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class TreeFile:
    """One deliverable file of a commit."""

    path: str
    blob_id: str
    size: int
    mode: str


@dataclass
class TreeStats(SnapshotStats):
    """Counts of one commit's tree (after `.treecastignore`, before any app's globs)."""

    ignored: int = 0
    invalid_paths: list[str] = field(default_factory=list)  # escaped, for reports and logs
    unsafe_paths: list[str] = field(default_factory=list)  # the first few, with the reason

    def add(self, other: TreeStats, sign: int = 1) -> None:
        """Add (or with sign=-1 subtract) another set of counts."""
        self.file_count += sign * other.file_count
        self.total_bytes += sign * other.total_bytes
        self.skipped_symlinks += sign * other.skipped_symlinks
        self.skipped_submodules += sign * other.skipped_submodules
        self.skipped_invalid_paths += sign * other.skipped_invalid_paths
        self.skipped_unsafe_paths += sign * other.skipped_unsafe_paths
        self.ignored += sign * other.ignored


# -- filters -------------------------------------------------------------------------------


def _spec(lines: list[str], what: str) -> GlobSpec | None:
    """The patterns as one linear-time matcher, leaving out (with a warning) any line that
    is invalid: one bad line in a repository's ignore file must not fail every sync.

    Past the matcher's limits (number of patterns, their total size) the whole file is
    ignored with a warning: it would cost every path of every sync.
    """
    if not lines:
        return None
    try:
        spec = GlobSpec.from_lines(lines, on_invalid=skip_with_warning(what))
    except ValueError as refused:
        log.warning("ignoring the whole %s: %s", what, refused)
        return None
    return spec if len(spec) else None


class FileFilter:
    """Which paths one app receives: not ignored by `.treecastignore`, and matching its globs."""

    def __init__(self, ignore_lines: Iterable[str] = (), globs: Iterable[str] = ()) -> None:
        self.ignore = _spec([line for line in ignore_lines if line.strip()], IGNORE_FILE)
        self.globs = _spec([g for g in globs if g.strip()], "path glob")

    def ignored(self, path: str) -> bool:
        """True when `.treecastignore` excludes the path (for every app)."""
        return self.ignore is not None and self.ignore.match_file(path)

    def wanted(self, path: str) -> bool:
        """True when the app receives the path."""
        if self.ignored(path):
            return False
        return self.globs is None or self.globs.match_file(path)


class _Memo:
    """A small thread-safe LRU for results keyed by git object ids (which never change)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, ...], object] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, ...]) -> object | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: tuple[str, ...], value: object) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


# The snapshot and then each app's change computation ask for the same ignore file, the
# same diff and (a first sync) the same listing on one worker: remember them (small diffs
# and listings only, to bound memory: at most 32 x 2,000 listed records, a few MB).
_IGNORE_MEMO = _Memo(64)
_DIFF_MEMO = _Memo(16)
MEMO_MAX_DIFF_ENTRIES = 5000
_LISTING_MEMO = _Memo(32)
MEMO_MAX_LISTING_RECORDS = 2000


def read_ignore_lines(repo_path: Path, blob_id: str | None) -> list[str]:
    """The lines of a `.treecastignore` blob (none when absent or too big)."""
    if blob_id is None:
        return []
    key = (str(repo_path), blob_id)
    cached = _IGNORE_MEMO.get(key)
    if isinstance(cached, list):
        return cached
    with BlobReader(repo_path) as reader:
        if reader.size(blob_id) > MAX_IGNORE_BYTES:
            log.warning("%s is larger than %d bytes; ignoring it", IGNORE_FILE, MAX_IGNORE_BYTES)
            return []
        lines = reader.read(blob_id).decode("utf-8", errors="replace").splitlines()
    _IGNORE_MEMO.put(key, lines)
    return lines


def ignore_blob_name(commit: str) -> str:
    """The `batch_check` name of a commit's root `.treecastignore`."""
    return f"{commit}:{IGNORE_FILE}"


def ignore_blob_at(
    settings: Settings, repo_path: Path, commit: str, checker: ObjectChecker | None = None
) -> str | None:
    """The blob id of the root `.treecastignore` at `commit` (None when there is none);
    asked of `checker` when given (one git process less)."""
    name = ignore_blob_name(commit)
    info = (checker.check([name]) if checker is not None else batch_check(repo_path, [name]))[0]
    return info.oid if info is not None and info.kind == "blob" else None


def filter_for(repo_path: Path, ignore_blob: str | None, globs: Iterable[str] = ()) -> FileFilter:
    """The filter given the commit's `.treecastignore` blob (or None) and an app's globs."""
    return FileFilter(read_ignore_lines(repo_path, ignore_blob), globs)


def ignore_filter(
    settings: Settings, repo_path: Path, commit: str, globs: Iterable[str] = ()
) -> FileFilter:
    """The filter for `commit`: its own `.treecastignore`, plus an app's globs."""
    return filter_for(repo_path, ignore_blob_at(settings, repo_path, commit), globs)


# -- classification shared by listing and diffs -----------------------------------------------


def escape_path(raw: bytes) -> str:
    """A printable form of a path that is not valid UTF-8."""
    return raw.decode("utf-8", errors="backslashreplace")


def classify(mode: str, raw_path: bytes, stats: TreeStats) -> str | None:
    """The path as text when the entry is a deliverable file; otherwise count why not.

    Listing and diffing both go through here, so counts kept incrementally from a
    diff equal counts from a full listing.
    """
    if mode == MODE_SUBMODULE:
        stats.skipped_submodules += 1
        return None
    if mode == MODE_SYMLINK:
        stats.skipped_symlinks += 1
        return None
    if mode not in FILE_MODES:
        return None
    try:
        path = raw_path.decode("utf-8")
    except UnicodeDecodeError:
        stats.skipped_invalid_paths += 1
        stats.invalid_paths.append(escape_path(raw_path))
        return None
    reason = unsafe_path_reason(path)
    if reason is not None:
        # Never delivered: `..`, `.git`, absolute... (what a crafted tree can hold).
        stats.skipped_unsafe_paths += 1
        if len(stats.unsafe_paths) < 10:
            stats.unsafe_paths.append(f"{escape_path(raw_path)} ({reason})")
        return None
    return path


# -- listing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TreeLimits:
    """How much of a tree Treecast will read before refusing the repository (`TreeTooLarge`).

    The defaults admit the largest repositories people sync (a few million files, paths
    up to git's own 4 KiB) while refusing a crafted "tree bomb": a few hundred bytes of
    trees that name the same subtree over and over list millions of paths. Such a tree
    repeats one subtree object many times; real trees almost never do.
    """

    max_entries: int = 5_000_000  # files, links and submodules in one snapshot
    max_path_bytes: int = 4096
    max_depth: int = 2048  # path components (a 4 KiB path of one-letter folders)
    max_total_bytes: int = 100 * 1024**3  # sizes the tree announces
    max_subtree_repeats: int = 10_000  # times one subtree object may appear


def limits_of(settings: Settings) -> TreeLimits:
    """The tree limits `TREECAST_TREE_*` set."""
    return TreeLimits(
        max_entries=settings.tree_max_entries,
        max_path_bytes=settings.tree_max_path_bytes,
        max_total_bytes=settings.tree_max_total_bytes,
        max_subtree_repeats=settings.tree_max_subtree_repeats,
    )


MODE_TREE = "040000"


def too_large(commit: str, reason: str, setting: str | None = None) -> GitError:
    """The non-retryable error of a tree past a limit, naming the limit and the setting
    that raises it (the breaker, `status` and the `sync_failed` notice show it)."""
    raise_it = (
        f"over the limit {setting}; raise it to accept this tree (docs/configuration.md)"
        if setting
        else "over a fixed limit"
    )
    return GitError(
        GitErrorType.TREE_TOO_LARGE, f"the tree of {commit[:12]} is refused: {reason}, {raise_it}"
    )


class TreeGuard:
    """Counts one listing or diff against the limits as its records stream in."""

    def __init__(self, commit: str, limits: TreeLimits) -> None:
        self.commit, self.limits = commit, limits
        self.entries = 0
        self.total = 0
        self.repeats: dict[str, int] = {}

    def tree(self, oid: str) -> None:
        seen = self.repeats.get(oid, 0) + 1
        self.repeats[oid] = seen
        if seen > self.limits.max_subtree_repeats:
            raise too_large(
                self.commit,
                f"one subtree ({oid[:12]}) appears more than {self.limits.max_subtree_repeats} "
                "times (a tree bomb?)",
                "TREECAST_TREE_MAX_SUBTREE_REPEATS",
            )

    def entry(self, raw_path: bytes, size: int) -> None:
        limits = self.limits
        self.entries += 1
        self.total += size
        if self.entries > limits.max_entries:
            raise too_large(
                self.commit, f"more than {limits.max_entries} entries", "TREECAST_TREE_MAX_ENTRIES"
            )
        if len(raw_path) > limits.max_path_bytes:
            raise too_large(
                self.commit,
                f"a path is longer than {limits.max_path_bytes} bytes",
                "TREECAST_TREE_MAX_PATH_BYTES",
            )
        if raw_path.count(b"/") >= limits.max_depth:
            raise too_large(self.commit, f"a path is deeper than {limits.max_depth} levels")
        if self.total > limits.max_total_bytes:
            raise too_large(
                self.commit,
                f"its files add up to more than {limits.max_total_bytes} bytes",
                "TREECAST_TREE_MAX_TOTAL_BYTES",
            )


def parse_ls_tree_record(record: bytes) -> tuple[str, str, int, bytes] | None:
    """One `git ls-tree -z [-l]` record as (mode, object id, size, raw path); None if
    malformed.

    The record is "<mode> SP <type> SP <object> SP* <size> TAB <path>" (size "-" for
    trees and submodules; no size at all without `-l`, read as 0).
    """
    meta, tab, raw_path = record.partition(b"\t")
    fields = meta.split()
    if len(fields) == 3:
        fields.append(b"0")
    if not tab or len(fields) != 4 or not raw_path:
        return None
    mode, _kind, oid, size = fields
    if size != b"-" and not size.isdigit():
        return None
    return mode.decode(), oid.decode(), (int(size) if size != b"-" else 0), raw_path


def is_partial(repo_path: Path) -> bool:
    """True for a cache fetched with `--filter=blob:none` (`remote.PARTIAL_REMOTE`): blobs
    nobody asked for are missing, and asking git for their sizes would fail."""
    try:
        config = (repo_path / "config").read_text(errors="replace")
    except OSError:
        return False
    return "partialclone = " in config.lower()


def _ls_tree(
    settings: Settings,
    repo_path: Path,
    commit: str,
    limits: TreeLimits,
    guard: TreeGuard | None = None,
) -> Iterator[tuple[str, str, int, bytes]]:
    """The files, links and submodules of `commit`, streamed and checked against `limits`
    (or counted by `guard`, shared by the listings of an expanded tree). A partial cache
    is listed without sizes (0): git would have to fetch each missing blob to tell."""
    guard = guard if guard is not None else TreeGuard(commit, limits)
    partial = is_partial(repo_path)
    for mode, oid, size, raw_path in _ls_tree_records(settings, repo_path, commit, partial):
        if mode == MODE_TREE:
            guard.tree(oid)
            continue
        guard.entry(raw_path, size)
        yield mode, oid, size, raw_path


def _ls_tree_records(
    settings: Settings, repo_path: Path, commit: str, partial: bool
) -> Iterator[tuple[str, str, int, bytes]]:
    """`git ls-tree`'s parsed records of `commit`, trees included, from the memo when a
    small listing of it was read on this worker before (a commit id names one tree
    forever; a partial cache's has no sizes, so it is its own key)."""
    key = (str(repo_path), commit, "partial" if partial else "sized")
    cached = _LISTING_MEMO.get(key)
    if isinstance(cached, tuple):
        yield from cached
        return
    kept: list[tuple[str, str, int, bytes]] | None = [] if is_object_id(commit) else None
    sizes = [] if partial else ["-l"]
    args = ["ls-tree", "-r", "-t", "-z", *sizes, "--full-tree", commit]
    for record in stream_records(args, settings=settings, cwd=repo_path):
        parsed = parse_ls_tree_record(record)
        if parsed is None:
            continue
        if kept is not None:
            kept.append(parsed)
            if len(kept) > MEMO_MAX_LISTING_RECORDS:
                kept = None
        yield parsed
    if kept is not None:  # read to the end, and small
        _LISTING_MEMO.put(key, tuple(kept))


def tree_entries(
    settings: Settings, repo_path: Path, commit: str
) -> Iterator[tuple[str, str, int, bytes]]:
    """(mode, object id, size, raw path) of every file, link and submodule of `commit` in
    git's order (ascending bytes of the full path), streamed within the settings' tree
    limits; sizes are 0 in a partial cache."""
    return _ls_tree(settings, repo_path, commit, limits_of(settings))


@dataclass
class TreeListing:
    """The deliverable files of one commit (after `.treecastignore`) and the tree's counts."""

    commit: str
    files: dict[str, TreeFile]
    stats: TreeStats
    ignore_blob: str | None
    # Submodules: gitlink path → the commit it pins (safe UTF-8 paths only).
    gitlinks: dict[str, str] = field(default_factory=dict)


def list_tree(
    settings: Settings,
    repo_path: Path,
    commit: str,
    file_filter: FileFilter | None = None,
    *,
    keep_files: bool = True,
    limits: TreeLimits | None = None,
    checker: ObjectChecker | None = None,
    guard: TreeGuard | None = None,
) -> TreeListing:
    """List `commit` (streamed, within `limits`, by default the settings'); keep the files
    `file_filter` wants.

    Without a filter the commit's own `.treecastignore` applies. `stats` counts what
    `.treecastignore` leaves (globs do not change the repository's counts). With
    `keep_files=False` only the counts are kept (a snapshot needs no file list).
    Raises `TreeTooLarge` past a limit.
    """
    ignore_blob = ignore_blob_at(settings, repo_path, commit, checker)
    if file_filter is None:
        file_filter = FileFilter(read_ignore_lines(repo_path, ignore_blob))
    records = _ls_tree(settings, repo_path, commit, limits or limits_of(settings), guard)
    listing = _listing(commit, records, file_filter, ignore_blob, keep_files=keep_files)
    warn_skipped(commit, listing.stats)
    return listing


def count_unfiltered(
    settings: Settings,
    repo_path: Path,
    commit: str,
    seen: Callable[[str, str, bytes, str | None], None],
) -> TreeStats:
    """The counts of `commit` as `list_tree` gives them when it has no `.treecastignore`,
    from a listing that shows `seen` each entry (mode, object id, raw path, and its path
    as `classify` gave it: None when skipped) and reads no blob (a partial cache may lack
    them all); `warn_skipped` is the caller's. Raises `TreeTooLarge` past a limit."""
    records = _ls_tree(settings, repo_path, commit, limits_of(settings))
    return _listing(commit, records, FileFilter(), None, keep_files=False, seen=seen).stats


def _listing(
    commit: str,
    records: Iterable[tuple[str, str, int, bytes]],
    file_filter: FileFilter,
    ignore_blob: str | None,
    *,
    keep_files: bool,
    seen: Callable[[str, str, bytes, str | None], None] | None = None,
) -> TreeListing:
    stats = TreeStats()
    files: dict[str, TreeFile] = {}
    gitlinks: dict[str, str] = {}
    for mode, oid, size, raw_path in records:
        path = classify(mode, raw_path, stats)
        if seen is not None:
            seen(mode, oid, raw_path, path)
        if path is None:
            if mode == MODE_SUBMODULE and keep_files:
                link = gitlink_path(raw_path)
                if link is not None:
                    gitlinks[link] = oid
            continue
        if file_filter.ignored(path):
            stats.ignored += 1
            continue
        stats.file_count += 1
        stats.total_bytes += size
        if keep_files and (file_filter.globs is None or file_filter.globs.match_file(path)):
            files[path] = TreeFile(path=path, blob_id=oid, size=size, mode=mode)
    return TreeListing(
        commit=commit, files=files, stats=stats, ignore_blob=ignore_blob, gitlinks=gitlinks
    )


def warn_skipped(commit: str, stats: TreeStats) -> None:
    """Log the paths a listing of `commit` skipped (invalid UTF-8, unsafe), once per listing."""
    if stats.invalid_paths:
        log.warning(
            "skipped %d path(s) that are not valid UTF-8 in %s, e.g. %s",
            stats.skipped_invalid_paths,
            commit,
            stats.invalid_paths[0],
        )
    if stats.unsafe_paths:
        log.warning(
            "skipped %d unsafe path(s) in %s, never delivered, e.g. %s",
            stats.skipped_unsafe_paths,
            commit,
            stats.unsafe_paths[0],
        )


def gitlink_path(raw_path: bytes) -> str | None:
    """A gitlink's path as text when it is one files could be delivered under."""
    try:
        path = raw_path.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return path if unsafe_path_reason(path) is None else None


# -- diffs ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DiffEntry:
    """One path that differs between two commits (mode 000000 = absent on that side)."""

    raw_path: bytes
    old_mode: str
    new_mode: str
    old_blob: str
    new_blob: str


def diff_trees(
    settings: Settings,
    repo_path: Path,
    old: str,
    new: str,
    limits: TreeLimits | None = None,
) -> list[DiffEntry]:
    """Every file path that differs between two commits, streamed and within `limits` (by
    default the settings').

    `git diff-tree -r -t -z --no-renames`: `-t` also reports the changed trees, which
    only feed the repeat check (a diff to a tree bomb is refused like its listing).
    """
    args = ["diff-tree", "-r", "-t", "-z", "--no-renames", "--no-commit-id", "--full-index"]
    guard = TreeGuard(new, limits or limits_of(settings))
    entries: list[DiffEntry] = []
    meta: bytes | None = None
    # raw format: ":<old mode> <new mode> <old oid> <new oid> <status>" NUL "<path>" NUL
    for record in stream_records([*args, old, new], settings=settings, cwd=repo_path):
        if meta is None:
            if record.startswith(b":"):
                meta = record
            continue
        old_mode, new_mode, old_blob, new_blob, _status = meta[1:].split()
        meta = None
        if new_mode.decode() == MODE_TREE or old_mode.decode() == MODE_TREE:
            if new_mode.decode() == MODE_TREE:
                guard.tree(new_blob.decode())
            continue
        guard.entry(record, 0)
        entries.append(
            DiffEntry(
                raw_path=record,
                old_mode=old_mode.decode(),
                new_mode=new_mode.decode(),
                old_blob=old_blob.decode(),
                new_blob=new_blob.decode(),
            )
        )
    return entries


def diff_with_sizes(
    settings: Settings,
    repo_path: Path,
    old: str,
    new: str,
    checker: ObjectChecker | None = None,
) -> tuple[list[DiffEntry], dict[str, int]]:
    """`diff_trees` plus the sizes of the files on both sides, remembered for small diffs."""
    key = (str(repo_path), old, new)
    cached = _DIFF_MEMO.get(key)
    if isinstance(cached, tuple):
        return cached
    entries = diff_trees(settings, repo_path, old, new)
    sizes = blob_sizes(repo_path, file_blobs(entries), checker)
    if len(entries) <= MEMO_MAX_DIFF_ENTRIES:
        _DIFF_MEMO.put(key, (entries, sizes))
    return entries, sizes


def touches_ignore_file(entries: Iterable[DiffEntry]) -> bool:
    """True when a diff changes the root `.treecastignore` (filters differ: diff is not enough)."""
    return any(entry.raw_path == IGNORE_FILE.encode() for entry in entries)


def _count_side(
    mode: str, blob: str, raw_path: bytes, sizes: dict[str, int], ff: FileFilter, into: TreeStats
) -> None:
    if mode == MODE_ABSENT:
        return
    path = classify(mode, raw_path, into)
    if path is None:
        return
    if ff.ignored(path):
        into.ignored += 1
        return
    into.file_count += 1
    into.total_bytes += sizes[blob]


def diff_stats(
    entries: Iterable[DiffEntry], sizes: dict[str, int], file_filter: FileFilter
) -> TreeStats:
    """How a diff changes a tree's counts (new side minus old side), for incremental snapshots.

    `sizes` must hold the size of every file blob on both sides; `file_filter`
    must be the same on both sides (check `touches_ignore_file` first).
    """
    delta = TreeStats()
    for entry in entries:
        old, new = TreeStats(), TreeStats()
        _count_side(entry.old_mode, entry.old_blob, entry.raw_path, sizes, file_filter, old)
        _count_side(entry.new_mode, entry.new_blob, entry.raw_path, sizes, file_filter, new)
        delta.add(new)
        delta.add(old, -1)
    return delta


def file_blobs(entries: Iterable[DiffEntry]) -> set[str]:
    """The blob ids of regular files on either side of a diff (whose sizes a count needs)."""
    blobs: set[str] = set()
    for entry in entries:
        if entry.old_mode in FILE_MODES:
            blobs.add(entry.old_blob)
        if entry.new_mode in FILE_MODES:
            blobs.add(entry.new_blob)
    return blobs
