"""The load step for a watch that asks for more than the plain tree: submodules expanded,
Git LFS pointers replaced by their objects (docs/repository-contents.md).

It produces the same `Candidates` as a plain watch, plus where each file's bytes are
(`Sources`: a submodule's cache, or a verified LFS object on disk) and what is held back
(`Candidates.held`): a path or folder neither delivered nor deleted, with the reason,
retried at the next sync. A watch without the options never comes here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from models.contents import SubmoduleMode
from treecast.config import Settings
from treecast.delivery.changes import Candidates
from treecast.delivery.lfs import LfsFetcher, LfsRefused, check_url, object_path
from treecast.gitcache.errors import GitError
from treecast.gitcache.lfs import (
    MAX_POINTER_BYTES,
    LfsAttributes,
    Pointer,
    endpoint_of,
    lfsconfig_url,
    parse_pointer,
    ssh_authenticate,
    touches_lfs_setup,
)
from treecast.gitcache.objects import BlobReader
from treecast.gitcache.repository import RemoteAccess, RepositoryCache
from treecast.gitcache.submodules import ExpandedFile, Expander, Expansion, NeedsListing, Origin
from treecast.gitcache.tree import FileFilter, limits_of, touches_ignore_file
from treecast.urls import vet_git_url

# Where the bytes of a file that is not a blob of the repository's own cache are:
# content key (a blob id or an LFS oid) → a git cache folder or an object file.
Sources = dict[str, Path]


@dataclass(frozen=True)
class WatchOptions:
    """What one watch asks for beyond its path globs."""

    submodules: SubmoduleMode = SubmoduleMode.OFF
    lfs: bool = False

    @property
    def plain(self) -> bool:
        """Today's delivery: gitlinks skipped, pointers as text."""
        return self.submodules == SubmoduleMode.OFF and not self.lfs


@dataclass
class Contents:
    """What the load step hands the computation and the sender."""

    candidates: Candidates
    sources: Sources = field(default_factory=dict)


def expanded_candidates(
    settings: Settings,
    cache: RepositoryCache,
    access: RemoteAccess,
    commit: str,
    base: str | None,
    file_filter: FileFilter,
    options: WatchOptions,
) -> Contents:
    """The paths that may differ for this watch at `commit` (from `base`, the commit the
    app fully has, when the cache holds it), with submodules and LFS objects resolved."""
    expander = Expander(settings, options.submodules, file_filter, limits_of(settings))
    expansion: Expansion | None = None
    complete = True
    if base is not None and not cache.partial:  # a partial clone cannot size a diff
        entries, sizes = cache.diff(base, commit) if base != commit else ([], {})
        changed_setup = options.lfs and touches_lfs_setup([e.raw_path for e in entries])
        if not touches_ignore_file(entries) and not changed_setup:
            with contextlib.suppress(NeedsListing):
                expansion = expander.diff(cache, access, entries, sizes, commit)
                complete = False
    if expansion is None:
        expansion = expander.listing(cache, access, commit)
        if cache.partial:
            _fill_partial(cache, access, commit, expansion)
    sources: Sources = {}
    if options.lfs:
        _resolve_lfs(settings, expansion, sources)
    files: dict[str, tuple[str, int] | None] = {}
    for path, entry in expansion.files.items():
        if entry is None:
            files[path] = None
            continue
        files[path] = (entry.blob_id, entry.size)
        if entry.origin.prefix and entry.blob_id not in sources:
            sources[entry.blob_id] = entry.origin.cache.path
    return Contents(Candidates(files, complete=complete, held=dict(expansion.held)), sources)


def _fill_partial(
    cache: RepositoryCache, access: RemoteAccess, commit: str, expansion: Expansion
) -> None:
    """The repository's own files of a partial clone, fetched and sized (its submodules'
    caches are full)."""
    own = {p: e for p, e in expansion.files.items() if e is not None and not e.origin.prefix}
    sizes = cache.fill(access, commit, (e.blob_id for e in own.values()))
    for path, entry in own.items():
        expansion.files[path] = ExpandedFile(entry.blob_id, sizes[entry.blob_id], entry.origin)


# -- Git LFS ----------------------------------------------------------------------------


def _resolve_lfs(settings: Settings, expansion: Expansion, sources: Sources) -> None:
    """Replace each pointer the watch receives by its object (fetched if this worker lacks
    it); hold back, with the reason, each one that cannot be had."""
    by_origin: dict[str, tuple[Origin, list[tuple[str, ExpandedFile]]]] = {}
    for path, entry in expansion.files.items():
        if entry is not None and entry.size <= MAX_POINTER_BYTES:
            by_origin.setdefault(entry.origin.prefix, (entry.origin, []))[1].append((path, entry))
    for origin, small in by_origin.values():
        attributes = LfsAttributes(origin.cache, origin.commit)
        candidates = [(p, e) for p, e in small if attributes.is_lfs(p[len(origin.prefix) :])]
        if not candidates:
            continue
        pointers: dict[str, tuple[Pointer, ExpandedFile]] = {}
        with BlobReader(origin.cache.path) as reader:
            for path, entry in candidates:
                pointer = parse_pointer(reader.read(entry.blob_id))
                if pointer is not None:
                    pointers[path] = (pointer, entry)
        if pointers:
            _fetch_objects(settings, origin, pointers, expansion, sources)


def _endpoint(settings: Settings, origin: Origin) -> tuple[str, dict[str, str]]:
    """The LFS server of `origin` and the headers it wants: its `.lfsconfig`'s when it
    passes the URL policy; an ssh remote's answer to `git-lfs-authenticate`."""
    configured = lfsconfig_url(origin.cache, origin.commit)
    if configured is None:
        if origin.access.url.startswith("file://"):
            raise LfsRefused("Git LFS objects of a file:// repository are not fetched")
        if origin.access.url.startswith("ssh://"):
            try:
                auth = ssh_authenticate(settings, origin.access)
            except GitError as failed:
                raise LfsRefused(failed.message) from None
            return check_url(auth.href, "the LFS server git-lfs-authenticate named"), auth.headers
        return endpoint_of(origin.access.url), {}
    check_url(configured, "the LFS URL in .lfsconfig")
    try:
        # The same rules as a registered URL (private addresses, odd IPv4 forms...);
        # the connection is vetted again when it is made.
        vet_git_url(
            configured,
            allow_private=settings.allow_private_urls,
            allow_file=False,
            token=False,
            allow_insecure=settings.allow_insecure_transport,
        )
    except ValueError as refused:
        raise LfsRefused(f"the LFS URL in .lfsconfig is refused: {refused}") from None
    return configured, {}


def _fetch_objects(
    settings: Settings,
    origin: Origin,
    pointers: dict[str, tuple[Pointer, ExpandedFile]],
    expansion: Expansion,
    sources: Sources,
) -> None:
    def hold(path: str, reason: str) -> None:
        expansion.held[path] = f"LFS object of {path} held back: {reason}"
        expansion.files.pop(path, None)

    def use(path: str, pointer: Pointer, where: Path) -> None:
        expansion.files[path] = ExpandedFile(pointer.oid, pointer.size, origin)
        sources[pointer.oid] = where

    # Every object is asked of the repository's own LFS server, also those this worker
    # keeps: its answer is this repository's proof of access (objects are shared by oid
    # for efficiency, never for authority); only the missing ones are downloaded.
    wanted: dict[str, Pointer] = {}
    for path, (pointer, _entry) in sorted(pointers.items()):
        if pointer.size > settings.lfs_max_bytes:
            hold(path, f"{pointer.size} bytes is more than TREECAST_LFS_MAX_BYTES")
        else:
            wanted[pointer.oid] = pointer
    if not wanted:
        return
    try:
        endpoint, headers = _endpoint(settings, origin)
    except LfsRefused as refusal:
        for path, (pointer, _entry) in pointers.items():
            if pointer.oid in wanted:
                hold(path, str(refusal))
        return
    with _fetcher(settings, origin.access, endpoint, headers) as fetcher:
        try:
            actions = fetcher.download_actions(list(wanted.values()))
            refused = fetcher.refused
        except LfsRefused as failed:
            actions, refused = {}, dict.fromkeys(wanted, str(failed))
        fetched: dict[str, Path | str] = {}
        for oid, pointer in wanted.items():
            if oid not in actions:
                fetched[oid] = refused.get(oid, "the LFS server did not answer for it")
                continue
            stored = _stored(settings, pointer)
            if stored is not None:
                fetched[oid] = stored
                continue
            href, headers = actions[oid]
            try:
                fetched[oid] = fetcher.fetch(pointer, href, headers)
            except LfsRefused as failed:
                fetched[oid] = str(failed)
    for path, (pointer, _entry) in sorted(pointers.items()):
        outcome = fetched.get(pointer.oid)
        if isinstance(outcome, Path):
            use(path, pointer, outcome)
        elif isinstance(outcome, str):
            hold(path, outcome)


def _stored(settings: Settings, pointer: Pointer) -> Path | None:
    path = object_path(settings, pointer.oid)
    return path if path.exists() else None


@contextlib.contextmanager
def _fetcher(
    settings: Settings, access: RemoteAccess, endpoint: str, headers: dict[str, str]
) -> Iterator[LfsFetcher]:
    fetcher = LfsFetcher(settings, access, endpoint, headers=headers)
    try:
        yield fetcher
    finally:
        fetcher.close()


# -- reading ----------------------------------------------------------------------------


class ContentReader:
    """Reads a delivery's files by content key: blobs of the repository's cache, blobs of
    its submodules' caches, verified LFS objects (one git process per cache, opened on
    first use). The same calls as `BlobReader`; a context manager."""

    def __init__(self, cache: RepositoryCache, sources: Mapping[str, Path]) -> None:
        self._cache = cache
        self._sources = sources
        self._readers: dict[Path, BlobReader] = {}

    def __enter__(self) -> ContentReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every git process."""
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()

    def _git(self, key: str) -> BlobReader:
        path = self._sources.get(key, self._cache.path)
        if path not in self._readers:
            self._readers[path] = BlobReader(path)
        return self._readers[path]

    def _file(self, key: str) -> Path | None:
        path = self._sources.get(key)
        return path if path is not None and path.is_file() else None

    def read(self, key: str) -> bytes:
        """The whole content (small files)."""
        path = self._file(key)
        return path.read_bytes() if path is not None else self._git(key).read(key)

    def iter_bytes(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The content in pieces of at most `chunk_size` bytes."""
        path = self._file(key)
        if path is None:
            return self._git(key).iter_bytes(key, chunk_size)
        return _file_pieces(path, chunk_size)


def _file_pieces(path: Path, chunk_size: int) -> Iterator[bytes]:
    with path.open("rb") as source:
        while piece := source.read(chunk_size):
            yield piece
