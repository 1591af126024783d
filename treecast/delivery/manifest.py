"""What an app should hold at a commit, file by file, as git says: its manifest.

The files of the commit's tree that the app receives (its globs and the commit's
`.treecastignore`), streamed in git's order, which is the digest's order (ascending
bytes of the path): a 100,000-file manifest never sits in memory. It is written as
JSON Lines to a spooled temporary file (memory up to `SPOOL_BYTES`, disk beyond) so that
its first line can carry the digest and count, and so that it can be signed before it is
sent (`treecast.webhooks.streaming`). docs/webhooks.md ("Verifying a mirror") is the format.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from treecast.delivery.digest import ManifestEntry, TreeDigest, digest_of, object_format_of
from treecast.gitcache import partial
from treecast.gitcache.objects import batch_check, blob_sizes
from treecast.gitcache.repository import RemoteAccess, RepositoryCache
from treecast.gitcache.tree import (
    FileFilter,
    TreeStats,
    classify,
    ignore_blob_name,
    tree_entries,
)

MANIFEST_VERSION = 1
SPOOL_BYTES = 1 << 20  # kept in memory up to this, then on disk
READ_BYTES = 1 << 16  # per piece when the manifest is streamed out
SIZE_BATCH = 2000  # blobs sized (and in a partial cache fetched) at a time


class UnorderedTree(ValueError):
    """A tree whose entries are not in git's order (a malformed, hand-made tree): its
    manifest and digest would not be a receiver's."""


def commit_filter(
    cache: RepositoryCache, access: RemoteAccess, commit: str, globs: list[str]
) -> FileFilter:
    """The app's filter at `commit` (its globs and the commit's `.treecastignore`),
    fetching the commit into this cache first when it lacks it."""
    names = [f"{commit}^{{commit}}", ignore_blob_name(commit)]
    try:
        here, ignore = cache.check(names)
    except OSError:
        here = ignore = None  # no usable cache here yet
    if here is None:
        cache.ensure_commit(access, commit)
        here, ignore = cache.check(names)
    ignore_blob = ignore.oid if ignore is not None and ignore.kind == "blob" else None
    return cache.file_filter(ignore_blob, globs)


def manifest_files(
    cache: RepositoryCache,
    access: RemoteAccess,
    commit: str,
    globs: list[str],
    *,
    sizes: bool = True,
) -> Iterator[ManifestEntry]:
    """Every file the app receives at `commit`, in the digest's order, with its blob id,
    size (0 without `sizes`) and mode. A partial cache fetches the blobs it lacks to
    size them (with `sizes`). Raises `UnorderedTree` for a tree out of git's order."""
    wanted = commit_filter(cache, access, commit, globs)
    stats = TreeStats()  # `classify` counts what is skipped; nobody reads it here
    measure = sizes and cache.partial  # a full cache lists sizes itself
    pending: list[ManifestEntry] = []
    last: bytes | None = None
    for mode, oid, size, raw_path in tree_entries(cache.settings, cache.path, commit):
        path = classify(mode, raw_path, stats)
        if path is None or not wanted.wanted(path):
            continue
        if last is not None and raw_path <= last:
            raise UnorderedTree(f"the tree of {commit[:12]} is not in git's order at {path!r}")
        last = raw_path
        pending.append(ManifestEntry(path, oid, size, mode))
        if len(pending) >= SIZE_BATCH:
            yield from _sized(cache, access, pending) if measure else pending
            pending = []
    yield from _sized(cache, access, pending) if measure else pending


def _sized(
    cache: RepositoryCache, access: RemoteAccess, entries: list[ManifestEntry]
) -> list[ManifestEntry]:
    """`entries` with the sizes a partial cache's listing lacks, fetching missing blobs."""
    blobs = {entry.blob_id for entry in entries}
    found = blob_sizes(cache.path, blobs)
    lacking = blobs - found.keys()
    if lacking:
        partial.fetch_blobs(cache.settings, cache.path, access.url, access.credentials, lacking)
        answers = batch_check(cache.path, sorted(lacking))  # a fresh process sees the new pack
        found.update({info.oid: info.size for info in answers if info is not None})
    return [ManifestEntry(e.path, e.blob_id, found.get(e.blob_id, 0), e.mode) for e in entries]


def commit_digest(
    cache: RepositoryCache, access: RemoteAccess, commit: str, globs: list[str]
) -> tuple[str, int]:
    """The tree digest of what the app receives at `commit`, and how many files that is."""
    entries = manifest_files(cache, access, commit, globs, sizes=False)
    return digest_of((entry.path, entry.blob_id) for entry in entries)


@dataclass
class BuiltManifest:
    """A manifest written out: its first line's fields and its file lines, spooled.

    `pieces()` yields the whole body (the header line, then the files) and may be called
    again (to sign, then to send); `close()` drops the spooled file.
    """

    header: dict[str, Any]
    _lines: IO[bytes] = field(repr=False)

    @property
    def tree_digest(self) -> str:
        """The digest the header carries."""
        return str(self.header["tree_digest"])

    def header_line(self) -> bytes:
        """The first line of the body."""
        return json.dumps(self.header, separators=(",", ":")).encode() + b"\n"

    def pieces(self) -> Iterator[bytes]:
        """The body, piece by piece."""
        yield self.header_line()
        self._lines.seek(0)
        while piece := self._lines.read(READ_BYTES):
            yield piece

    def entries(self) -> Iterator[dict[str, Any]]:
        """The file lines, parsed (for a front door that shows them otherwise)."""
        self._lines.seek(0)
        for line in self._lines:
            yield json.loads(line)

    def close(self) -> None:
        """Drop the spooled lines."""
        self._lines.close()


def build_manifest(
    cache: RepositoryCache,
    access: RemoteAccess,
    commit: str,
    globs: list[str],
    *,
    about: dict[str, Any],
) -> BuiltManifest:
    """Write the manifest of `commit` for one app; `about` (repository and app ids) leads
    its header, followed by the commit, object format, counts and digest."""
    digest = TreeDigest()
    total = 0
    lines = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 (BuiltManifest closes it)
    try:
        for entry in manifest_files(cache, access, commit, globs):
            digest.add(entry.path, entry.blob_id)
            total += entry.size
            lines.write(entry.json_line())
    except BaseException:
        lines.close()
        raise
    header = {
        "manifest": MANIFEST_VERSION,
        **about,
        "commit": commit,
        "object_format": object_format_of(commit),
        "files": digest.files,
        "bytes": total,
        "tree_digest": digest.hexdigest(),
    }
    return BuiltManifest(header, lines)
