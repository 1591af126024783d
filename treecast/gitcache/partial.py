"""Fetching by what is watched: a cache that is a partial clone (`--filter=blob:none`).

When every watch of a repository has `paths`, its cache fetches commits and trees only;
the blobs a delivery needs are fetched afterwards, in batches (`fill`), so bytes over the
wire and on disk grow with the watched subtree, not the repository. A server that does
not advertise `filter` sends everything, as before (git falls back by itself).

A partial cache names a promisor remote (`PROMISOR`) without a URL: git's own lazy
fetching of a missing object therefore fails at once, without touching the network (it
would fetch with no vetting, no pinning and no credentials). Treecast never asks git
about a missing blob: listings skip sizes (`tree.is_partial`), the few blobs every read
needs (`.treecastignore`, `.gitmodules`, `.lfsconfig`, `.gitattributes`) are fetched with
each commit (`fetch_support_blobs`), and a delivery fetches its files' blobs before
reading them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from models.git import GitErrorType
from treecast.config import Settings
from treecast.gitcache.command import AnyCredentials, stream_records
from treecast.gitcache.errors import GitError
from treecast.gitcache.objects import ObjectChecker, blob_sizes, is_object_id
from treecast.gitcache.tree import (
    IGNORE_FILE,
    TreeStats,
    count_unfiltered,
    is_partial,
    parse_ls_tree_record,
    warn_skipped,
)

PROMISOR = "treecast"
FILTER = "blob:none"
# Blob ids per `git fetch --stdin`: one request, a bounded answer.
FETCH_BATCH = 2000

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


class _Support:
    """The support blobs among a listing's entries, gathered as they stream by."""

    def __init__(self) -> None:
        self.found: set[str] = set()
        self.ignore_file = False  # the root `.treecastignore` is among them

    def seen(self, _mode: str, oid: str, raw_path: bytes) -> None:
        name = raw_path.rsplit(b"/", 1)[-1]
        if raw_path in _ROOT_SUPPORT or name == b".gitattributes":
            self.found.add(oid)
            self.ignore_file |= raw_path == _IGNORE_PATH


def support_blobs(settings: Settings, path: Path, commit: str) -> _Support:
    """The blob ids of the commit's root `.treecastignore`, `.gitmodules`, `.lfsconfig`
    and every `.gitattributes` (git would need them for any read)."""
    support = _Support()
    args = ["ls-tree", "-r", "-z", "--full-tree", commit]
    for record in stream_records(args, settings=settings, cwd=path):
        parsed = parse_ls_tree_record(record)
        if parsed is not None:
            support.seen(parsed[0], parsed[1], parsed[3])
    return support


def fetch_support_blobs(
    settings: Settings,
    path: Path,
    url: str,
    credentials: AnyCredentials | None,
    commit: str,
    *,
    count: bool = False,
) -> TreeStats | None:
    """After a commit arrived in a partial cache: fetch the blobs any read of it needs.

    `count`: the same listing also counts the commit, and its `TreeStats` are returned
    unless they could be wrong (a root `.treecastignore`, which they do not apply, or a
    tree past a limit, which `tree_stats` refuses); otherwise None.
    """
    stats: TreeStats | None = None
    support = _Support()
    if count:
        try:
            stats = count_unfiltered(settings, path, commit, support.seen)
        except GitError as exc:
            if exc.type != GitErrorType.TREE_TOO_LARGE:
                raise
    if stats is None:
        support = support_blobs(settings, path, commit)
    elif support.ignore_file:
        stats = None
    else:
        warn_skipped(commit, stats)
    found = support.found
    needed = found & missing_objects(settings, path, commit) if found else set()
    if needed:
        fetch_blobs(settings, path, url, credentials, needed)
    return stats


def fill(
    settings: Settings,
    path: Path,
    url: str,
    credentials: AnyCredentials | None,
    commit: str,
    blob_ids: Iterable[str],
    checker: ObjectChecker | None = None,
) -> dict[str, int]:
    """The sizes of `blob_ids` (blobs of `commit`), fetching first those a partial cache
    lacks; asked of `checker` when given (it finds what the fetch brought)."""
    wanted = set(blob_ids)
    if wanted and is_partial(path):
        lacking = wanted & missing_objects(settings, path, commit)
        if lacking:
            fetch_blobs(settings, path, url, credentials, lacking)
    return blob_sizes(path, wanted, checker)
