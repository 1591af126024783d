"""Fetching by what is watched: a cache that is a partial clone (`--filter=blob:none`).

When every watch of a repository has `paths`, its cache fetches commits and trees only;
the blobs a delivery needs are fetched afterwards, in batches (`fill`), so bytes over the
wire and on disk grow with the watched subtree, not the repository. A server that does
not advertise `filter` sends everything, as before (git falls back by itself).

A partial cache names a promisor remote (`PROMISOR`) without a URL: git's own lazy
fetching of a missing object therefore fails at once, without touching the network (it
would fetch with no vetting, no pinning and no credentials). Treecast never asks git
about a blob it may lack: listings skip sizes (`tree.is_partial`), the few blobs every
read needs (`.treecastignore`, `.gitmodules`, `.lfsconfig`, `.gitattributes`) are fetched
with each commit (`fetch_support_blobs`), and so are the blobs the watches receive, in
the same fetch (`Prefetch`, noted in `FILLED_FILE`); a delivery fetches what is still
missing before reading (a watch widened since, more blobs than one batch).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from enum import Enum
from pathlib import Path

from models.git import GitErrorType
from treecast.config import Settings
from treecast.gitcache.command import AnyCredentials, stream_records
from treecast.gitcache.errors import GitError
from treecast.gitcache.objects import ObjectChecker, blob_sizes, is_object_id
from treecast.gitcache.tree import (
    FILE_MODES,
    IGNORE_FILE,
    FileFilter,
    TreeStats,
    classify,
    count_unfiltered,
    is_partial,
    parse_ls_tree_record,
    read_ignore_lines,
    warn_skipped,
)

log = logging.getLogger(__name__)

PROMISOR = "treecast"
FILTER = "blob:none"
# Blob ids per `git fetch --stdin`: one request, a bounded answer.
FETCH_BATCH = 2000
# What the last snapshot fetched for its commit: every blob the watches with these globs
# receive (`Prefetch`), so their deliveries need not look for missing ones (`fill`).
FILLED_FILE = "treecast-filled.json"

# The blobs every read of a commit may need, fetched with the commit.
_IGNORE_PATH = IGNORE_FILE.encode()
_ROOT_SUPPORT = {_IGNORE_PATH, b".gitmodules", b".lfsconfig", b".gitattributes"}


def mark_partial(path: Path) -> None:
    """Make the cache a partial clone whose promisor remote has no URL (see above)."""
    if is_partial(path):
        return
    with (path / "config").open("a", encoding="utf-8") as config:
        config.write(
            "[core]\n\trepositoryformatversion = 1\n"
            f"[extensions]\n\tpartialclone = {PROMISOR}\n"
            f'[remote "{PROMISOR}"]\n\tpromisor = true\n\tpartialclonefilter = {FILTER}\n'
        )


def missing_objects(settings: Settings, path: Path, commit: str) -> set[str]:
    """The objects of `commit`'s tree the cache does not hold, without asking git to fetch
    them (a walk of the trees, which a partial cache holds)."""
    args = ["rev-list", "--objects", "--missing=print", "--no-walk", commit]
    missing: set[str] = set()
    for line in stream_records(args, settings=settings, cwd=path, separator=b"\n"):
        if line.startswith(b"?"):
            oid = line[1:].strip().decode()
            if is_object_id(oid):
                missing.add(oid)
    return missing


def fetch_blobs(
    settings: Settings,
    path: Path,
    url: str,
    credentials: AnyCredentials | None,
    oids: Iterable[str],
) -> int:
    """Fetch `oids` from the remote in batches (vetted and pinned as every fetch); returns
    how many were asked for."""
    from treecast.gitcache.remote import promisor_fetch

    wanted = sorted({oid for oid in oids if is_object_id(oid)})
    for start in range(0, len(wanted), FETCH_BATCH):
        batch = wanted[start : start + FETCH_BATCH]
        promisor_fetch(settings, path, url, credentials, "\n".join(batch) + "\n")
    return len(wanted)


class _AllMissing(Enum):
    """Every blob of the commit is missing (a first fetch into a partial cache)."""

    ALL = "all"


_ALL = _AllMissing.ALL
_Missing = set[str] | _AllMissing


class _Support:
    """The support blobs among a listing's entries, and the files some of `watched` (a
    watch's globs each) receive, `.treecastignore` aside, gathered as they stream by."""

    def __init__(self, watched: Sequence[Sequence[str]] = ()) -> None:
        self.found: set[str] = set()
        self.ignore_blob: str | None = None  # the root `.treecastignore`'s
        self.files: list[tuple[str, str]] = []  # (path, blob id)
        self._filters = [FileFilter((), globs) for globs in watched]
        self._skipped = TreeStats()  # `classify`'s counts, which the listing keeps itself

    def seen(self, mode: str, oid: str, raw_path: bytes, path: str | None) -> None:
        """One entry of the listing; `path` as `classify` gave it (None: skipped)."""
        name = raw_path.rsplit(b"/", 1)[-1]
        if raw_path in _ROOT_SUPPORT or name == b".gitattributes":
            self.found.add(oid)
            if raw_path == _IGNORE_PATH:
                self.ignore_blob = oid
        if path is not None and mode in FILE_MODES and any(f.wanted(path) for f in self._filters):
            self.files.append((path, oid))

    def listed(self, mode: str, oid: str, raw_path: bytes) -> None:
        """One entry of a listing that did not classify it."""
        files = self._filters and mode in FILE_MODES
        path = classify(mode, raw_path, self._skipped) if files else None
        self.seen(mode, oid, raw_path, path)


def support_blobs(
    settings: Settings, path: Path, commit: str, watched: Sequence[Sequence[str]] = ()
) -> _Support:
    """The blob ids of the commit's root `.treecastignore`, `.gitmodules`, `.lfsconfig`
    and every `.gitattributes` (git would need them for any read), and the files
    `watched` receive."""
    support = _Support(watched)
    args = ["ls-tree", "-r", "-z", "--full-tree", commit]
    for record in stream_records(args, settings=settings, cwd=path):
        parsed = parse_ls_tree_record(record)
        if parsed is not None:
            support.listed(parsed[0], parsed[1], parsed[3])
    return support


def fetch_support_blobs(
    settings: Settings,
    path: Path,
    url: str,
    credentials: AnyCredentials | None,
    commit: str,
    *,
    count: bool = False,
    watched: Sequence[Sequence[str]] = (),
    fresh: bool = False,
) -> TreeStats | None:
    """After a commit arrived in a partial cache: fetch the blobs any read of it needs and,
    in the same fetch, those the watches with the glob lists `watched` receive (at most
    one batch; noted in `FILLED_FILE`, so their deliveries find them here). A failure of
    the watches' part is left to their deliveries, which fetch what they lack.

    `count`: the same listing also counts the commit, and its `TreeStats` are returned
    unless they could be wrong (a root `.treecastignore`, which they do not apply, or a
    tree past a limit, which `tree_stats` refuses); otherwise None. `fresh`: the cache held
    no commit before this one (a first fetch, filtered), so every blob is missing and no
    walk of the trees looks for them.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="treecast-missing") as pool:
        # The watches' files are looked for among the missing ones: git walks the trees
        # for those on a side thread (with the caller's heartbeat) while this one reads
        # the listing.
        context = contextvars.copy_context()
        walk = (
            pool.submit(context.run, missing_objects, settings, path, commit)
            if watched and not fresh
            else None
        )
        stats, support = _listed(settings, path, commit, count, watched)
        found = support.found
        missing: _Missing
        if fresh:
            missing = _ALL
        elif walk is not None:
            missing = walk.result()
        else:
            missing = missing_objects(settings, path, commit) if found else set()
    needed = found if missing is _ALL else found & missing
    prefetch: set[str] | None = None  # None: left to the deliveries
    if support.files:
        if support.ignore_blob in needed:
            # Which files the watches receive depends on the ignore file: it comes first.
            fetch_blobs(settings, path, url, credentials, needed)
            needed = set()
        prefetch = _watched_missing(path, support, missing)
    if _fetch_with(settings, path, url, credentials, needed, prefetch):
        note_filled(path, commit, watched)
    return stats


def _listed(
    settings: Settings, path: Path, commit: str, count: bool, watched: Sequence[Sequence[str]]
) -> tuple[TreeStats | None, _Support]:
    """`fetch_support_blobs`' listing: the counts (see there) and what it found."""
    stats: TreeStats | None = None
    support = _Support(watched)
    if count:
        try:
            stats = count_unfiltered(settings, path, commit, support.seen)
        except GitError as exc:
            if exc.type != GitErrorType.TREE_TOO_LARGE:
                raise
            watched = ()  # the snapshot refuses the tree: nobody receives its files
    if stats is None:
        support = support_blobs(settings, path, commit, watched)
    elif support.ignore_blob is not None:
        stats = None
    else:
        warn_skipped(commit, stats)
    return stats, support


def _watched_missing(path: Path, support: _Support, missing: _Missing) -> set[str] | None:
    """The blobs the watches receive that the cache lacks; None past one batch (the
    deliveries fetch them in batches, each within a delivery's time)."""
    ignore = FileFilter(read_ignore_lines(path, support.ignore_blob))
    lacking = {
        oid
        for name, oid in support.files
        if (missing is _ALL or oid in missing) and not ignore.ignored(name)
    }
    return lacking if len(lacking) <= FETCH_BATCH else None


def _fetch_with(
    settings: Settings,
    path: Path,
    url: str,
    credentials: AnyCredentials | None,
    needed: set[str],
    extra: set[str] | None,
) -> bool:
    """Fetch `needed` (raising its errors) and `extra` with it, in one fetch; True when
    `extra` is here (a failure of the two together is retried with `needed` alone)."""
    if not extra:
        if needed:
            fetch_blobs(settings, path, url, credentials, needed)
        return extra is not None
    try:
        fetch_blobs(settings, path, url, credentials, needed | extra)
    except GitError as error:
        log.warning(
            "fetching the watched blobs into %s failed, left to the deliveries: %s",
            path.name,
            error.message,
        )
        if needed:
            fetch_blobs(settings, path, url, credentials, needed)
        return False
    return True


def note_filled(path: Path, commit: str, watched: Sequence[Sequence[str]]) -> None:
    """Remember that every blob of `commit` the watches with these glob lists receive is
    in the cache (written atomically, under the cache's lock)."""
    tmp = path / (FILLED_FILE + ".tmp")
    tmp.write_text(json.dumps({"commit": commit, "globs": [list(g) for g in watched]}))
    os.replace(tmp, path / FILLED_FILE)


def is_filled(path: Path, commit: str, globs: Sequence[str]) -> bool:
    """True when the last snapshot fetched every blob of `commit` that a watch with `globs`
    receives (`note_filled`)."""
    try:
        noted = json.loads((path / FILLED_FILE).read_text())
        return bool(noted["commit"] == commit and list(globs) in noted["globs"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def fill(
    settings: Settings,
    path: Path,
    url: str,
    credentials: AnyCredentials | None,
    commit: str,
    blob_ids: Iterable[str],
    checker: ObjectChecker | None = None,
    *,
    filled: bool = False,
) -> dict[str, int]:
    """The sizes of `blob_ids` (blobs of `commit`), fetching first those a partial cache
    lacks; asked of `checker` when given (it finds what the fetch brought). `filled`: the
    snapshot fetched them (`is_filled`), so they are sized at once; should one be missing
    after all (git stops at it), the cache is searched and fetched from as usual."""
    wanted = set(blob_ids)
    if filled and wanted:
        with contextlib.suppress(OSError):
            sizes = blob_sizes(path, wanted, checker)
            if len(sizes) == len(wanted):
                return sizes
    if wanted and is_partial(path):
        lacking = wanted & missing_objects(settings, path, commit)
        if lacking:
            fetch_blobs(settings, path, url, credentials, lacking)
    return blob_sizes(path, wanted, checker)
