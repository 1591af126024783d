"""Submodules: a commit's gitlinks expanded into the files of the commits they pin.

Each gitlink's URL comes from that commit's `.gitmodules` (hostile input: parsed by
`git config --blob`, which runs nothing and follows no include), relative URLs are
resolved against the parent's URL as git does, and the result goes through the same URL
policy as a registered repository (`treecast.urls.vet_git_url`), again at every fetch
(`pinning`). Each submodule URL has its own cache, fetched at exactly the pinned commit
and shared by every repository that uses it, unless the parent's credentials are needed
to reach it: those are sent only to the parent's own host, and such a cache is the
parent's alone, and the tenant's whose credentials they are (a shared cache must never
stand in for an app's own access).

What cannot be expanded (refused, unreachable, past a limit) is `held`: its path is
neither delivered nor deleted, with the reason for the watch's status.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from models.contents import SubmoduleMode
from treecast.config import Settings
from treecast.gitcache.command import AnyCredentials, run_git
from treecast.gitcache.errors import GitError
from treecast.gitcache.repository import RemoteAccess, RepositoryCache
from treecast.gitcache.tree import (
    FILE_MODES,
    MODE_SUBMODULE,
    DiffEntry,
    FileFilter,
    TreeGuard,
    TreeLimits,
    gitlink_path,
    list_tree,
)
from treecast.paths import unsafe_path_reason
from treecast.urls import DEFAULT_PORTS, VettedGitUrl, normalise_git_url, vet_git_url

GITMODULES = ".gitmodules"
# Larger `.gitmodules` files are refused whole: nobody lists megabytes of submodules.
MAX_GITMODULES_BYTES = 64 * 1024


@dataclass(frozen=True)
class SubmoduleLimits:
    """How far a watch's submodules are expanded (the tree limits count the whole tree)."""

    max_depth: int = 5  # nested levels below the repository (recursive)
    max_count: int = 100  # submodules in one expanded tree


@dataclass(frozen=True)
class Origin:
    """Where a file of an expanded tree lives: the cache holding its blob, the remote it
    came from (for Git LFS) and the commit of that repository (its `.gitattributes`)."""

    cache: RepositoryCache
    access: RemoteAccess
    commit: str
    prefix: str  # "" for the repository itself, "path/of/submodule/" below it


@dataclass(frozen=True, slots=True)
class ExpandedFile:
    """One deliverable file of an expanded tree."""

    blob_id: str
    size: int
    origin: Origin


@dataclass
class Expansion:
    """The files of a commit with its submodules expanded (filtered for one watch).

    `files` maps a full path to its file, or None where a diff says it is gone (or not
    for this watch); `held` maps a path, or a folder ending in "/", to why it is held back.
    """

    files: dict[str, ExpandedFile | None] = field(default_factory=dict)
    held: dict[str, str] = field(default_factory=dict)


class NeedsListing(Exception):
    """A diff that cannot be expanded piece by piece (a submodule added, removed or
    moved): the caller lists the whole tree instead."""


# -- .gitmodules ------------------------------------------------------------------------


def read_gitmodules(settings: Settings, cache: RepositoryCache, commit: str) -> dict[str, str]:
    """The commit's `.gitmodules` as gitlink path → URL (as written, maybe relative).

    Raises ValueError with the reason when the file is too large or unreadable.
    """
    info = cache.check([f"{commit}:{GITMODULES}"])[0]
    if info is None or info.kind != "blob":
        return {}
    if info.size > MAX_GITMODULES_BYTES:
        raise ValueError(f"{GITMODULES} is larger than {MAX_GITMODULES_BYTES} bytes")
    try:
        out = run_git(
            ["config", "--blob", info.oid, "--null", "--list"], settings=settings, cwd=cache.path
        ).stdout
    except GitError as error:
        raise ValueError(f"{GITMODULES} cannot be read: {error.message}") from None
    paths: dict[str, str] = {}
    urls: dict[str, str] = {}
    for record in out.split(b"\0"):
        key, _, value = record.decode("utf-8", errors="replace").partition("\n")
        section, _, rest = key.partition(".")
        submodule, _, variable = rest.rpartition(".")
        if section.lower() != "submodule" or not submodule:
            continue
        if variable.lower() == "path":
            paths[submodule] = value
        elif variable.lower() == "url":
            urls[submodule] = value
    return {path: urls.get(name, "") for name, path in paths.items()}


# -- URLs --------------------------------------------------------------------------------


def resolve_url(parent_url: str, url: str) -> str:
    """`url` resolved against the parent's URL when relative (`./`, `../`), as git does:
    each `../` takes one path component off the parent's URL. Raises ValueError when
    that would climb past the parent's host (or root), or for an option-like URL."""
    url = url.strip()
    if url.startswith("-"):
        raise ValueError("the URL starts with '-' (git would read it as an option)")
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*::", url):
        raise ValueError("the URL names a git remote helper (ext::, fd::...): it would run it")
    if not url.startswith(("./", "../")):
        return url
    parts = urlsplit(parent_url)
    base, path = f"{parts.scheme}://{parts.netloc}", parts.path.rstrip("/")
    components = [c for c in path.split("/") if c]
    rest = url
    while True:
        if rest.startswith("./"):
            rest = rest[2:]
        elif rest.startswith("../"):
            if not components:
                raise ValueError("the relative URL climbs above the parent's host")
            components.pop()
            rest = rest[3:]
        else:
            break
    if rest in ("", ".", ".."):
        raise ValueError("the relative URL names no repository")
    return f"{base}/{'/'.join([*components, rest])}"


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, effective port) of a registered (normalised) URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or DEFAULT_PORTS.get(scheme)


def cache_id(url: str, parent: RemoteAccess, with_credentials: bool) -> str:
    """The id of a submodule URL's cache: one per URL, or, when the parent's credentials
    reach it, one per URL, parent repository and tenant whose credentials they are."""
    owner = f"{parent.repository_id}\0{parent.tenant}" if with_credentials else ""
    digest = hashlib.sha256(f"{url}\0{owner}".encode()).hexdigest()[:40]
    return f"sub_{digest}"


def submodule_access(settings: Settings, parent: RemoteAccess, raw_url: str) -> RemoteAccess:
    """How to reach a submodule whose `.gitmodules` URL is `raw_url`, vetted by the
    registered-URL policy; the parent's credentials only for the parent's own host.
    Raises ValueError with the reason a person reads in the watch's status."""
    if not raw_url.strip():
        raise ValueError(f"no URL for it in {GITMODULES}")
    resolved = resolve_url(parent.url, raw_url)

    def vet(token: bool) -> VettedGitUrl:
        return vet_git_url(
            resolved,
            allow_private=settings.allow_private_urls,
            allow_file=settings.allow_file_urls,
            token=token,
            allow_insecure=settings.allow_insecure_transport,
        )

    vetted = vet(False)
    # Compared as vetted (scp-like `git@host:path` is ssh://host:22 like the parent's).
    same_host = (vetted.scheme, vetted.host, vetted.port) == _origin(parent.url)
    credentials: AnyCredentials | None = parent.credentials if same_host else None
    if credentials is not None:
        vetted = vet(True)  # a token must not cross plain http unless allowed
    return RemoteAccess(
        repository_id=cache_id(vetted.url, parent, credentials is not None),
        url=vetted.url,
        ref="",
        credentials=credentials,
        tenant=parent.tenant if credentials is not None else "",
    )


# -- expanding ---------------------------------------------------------------------------


class Expander:
    """Expands one watch's view of a commit: its files, and those of its submodules."""

    def __init__(
        self,
        settings: Settings,
        mode: SubmoduleMode,
        file_filter: FileFilter,
        limits: TreeLimits,
        submodule_limits: SubmoduleLimits | None = None,
    ) -> None:
        self.settings = settings
        self.mode = mode
        self.filter = file_filter
        self.limits = limits
        self.sub_limits = submodule_limits or SubmoduleLimits(
            settings.submodule_max_depth, settings.submodule_max_count
        )
        self.count = 0
        self.guard = TreeGuard("", limits)

    # -- full listings

    def listing(self, cache: RepositoryCache, access: RemoteAccess, commit: str) -> Expansion:
        """Every file of `commit` this watch receives, submodules expanded."""
        result = Expansion()
        self.guard = TreeGuard(commit, self.limits)
        root = Origin(cache, access, commit, "")
        listing = cache.list_tree(commit, self.filter, guard=self.guard)
        for path, entry in listing.files.items():
            result.files[path] = ExpandedFile(entry.blob_id, entry.size, root)
        if self.mode != SubmoduleMode.OFF and listing.gitlinks:
            self._list_links(root, listing.gitlinks, result, chain=_chain(access), depth=1)
        return result

    def _list_links(
        self,
        parent: Origin,
        gitlinks: dict[str, str],
        result: Expansion,
        *,
        chain: tuple[str, ...],
        depth: int,
    ) -> None:
        modules = self._modules(parent, gitlinks, result)
        for link, pinned in sorted(gitlinks.items()):
            origin = self._reach(parent, link, pinned, modules, result, chain, depth)
            if origin is None:
                continue
            try:
                listing = list_tree(
                    self.settings, origin.cache.path, pinned, FileFilter(), guard=self.guard
                )
            except GitError as failed:
                result.held[origin.prefix] = self._held(parent, link, failed.message)
                continue
            for path, entry in listing.files.items():
                full = origin.prefix + path
                if self.filter.wanted(full):
                    result.files[full] = ExpandedFile(entry.blob_id, entry.size, origin)
            if listing.gitlinks and self.mode == SubmoduleMode.RECURSIVE:
                self._list_links(
                    origin, listing.gitlinks, result, chain=(*chain, origin.access.url),
                    depth=depth + 1,
                )  # fmt: skip

    def _modules(
        self, parent: Origin, gitlinks: Iterable[str], result: Expansion
    ) -> dict[str, str]:
        try:
            modules = read_gitmodules(self.settings, parent.cache, parent.commit)
        except ValueError as refused:
            for link in gitlinks:
                result.held[parent.prefix + link + "/"] = self._held(parent, link, str(refused))
            return {}
        for path in modules:
            reason = unsafe_path_reason(path)
            if reason is not None:
                # A `.gitmodules` path that escapes names no gitlink: never used, but said.
                result.held[parent.prefix + path] = f"{GITMODULES} path refused: {reason}"
        return modules

    @staticmethod
    def _held(parent: Origin, link: str, reason: str) -> str:
        return f"submodule {parent.prefix + link} held back: {reason}"

    def _reach(
        self,
        parent: Origin,
        link: str,
        pinned: str,
        modules: dict[str, str],
        result: Expansion,
        chain: tuple[str, ...],
        depth: int,
    ) -> Origin | None:
        """The submodule at `link`, its cache holding `pinned`; None (held) when not."""
        prefix = parent.prefix + link + "/"
        limits = self.sub_limits

        def hold(reason: str) -> None:
            result.held[prefix] = self._held(parent, link, reason)

        if depth > limits.max_depth:
            hold(f"deeper than {limits.max_depth} levels of submodules")
            return None
        self.count += 1
        if self.count > limits.max_count:
            hold(f"more than {limits.max_count} submodules")
            return None
        try:
            access = submodule_access(self.settings, parent.access, modules.get(link, ""))
        except ValueError as refused:
            hold(f"its URL is refused: {refused}")
            return None
        if access.url in chain:
            hold("it includes a repository it is part of (a loop)")
            return None
        cache = RepositoryCache(
            self.settings, access.repository_id, heartbeat=parent.cache.heartbeat
        )
        try:
            fetched = not (cache.path.exists() and cache.has_commit(pinned))
            cache.ensure_commit(access, pinned)
            if fetched:
                # Its pins are kept (other repositories may pin the same commits): only
                # packs are tidied, so reads stay fast as bumps accumulate.
                cache.tidy()
        except GitError as failed:
            hold(failed.message)
            return None
        return Origin(cache, access, pinned, prefix)

    # -- diffs

    def diff(
        self,
        cache: RepositoryCache,
        access: RemoteAccess,
        entries: list[DiffEntry],
        sizes: dict[str, int],
        commit: str,
    ) -> Expansion:
        """What a tree diff to `commit` means for this watch, a bumped submodule as the
        diff between its two commits. Raises NeedsListing for anything else that touches
        submodules (one added, removed or re-pointed)."""
        result = Expansion()
        self.guard = TreeGuard(commit, self.limits)
        root = Origin(cache, access, commit, "")
        self._diff(root, entries, sizes, result, chain=_chain(access), depth=1)
        return result

    def _diff(
        self,
        origin: Origin,
        entries: list[DiffEntry],
        sizes: dict[str, int],
        result: Expansion,
        *,
        chain: tuple[str, ...],
        depth: int,
    ) -> None:
        bumped: dict[str, tuple[str, str]] = {}
        for entry in entries:
            links = (entry.old_mode == MODE_SUBMODULE, entry.new_mode == MODE_SUBMODULE)
            if entry.raw_path == GITMODULES.encode() or (any(links) and not all(links)):
                raise NeedsListing()
            if all(links):
                link = gitlink_path(entry.raw_path)
                if link is not None:
                    bumped[link] = (entry.old_blob, entry.new_blob)
                continue
            try:
                path = entry.raw_path.decode("utf-8")
            except UnicodeDecodeError:
                continue  # never delivered, so never in a ledger
            if unsafe_path_reason(path) is not None:
                continue
            full = origin.prefix + path
            if entry.new_mode in FILE_MODES and self.filter.wanted(full):
                if entry.new_blob not in sizes:
                    raise NeedsListing()  # a size we do not have: list instead
                result.files[full] = ExpandedFile(entry.new_blob, sizes[entry.new_blob], origin)
            else:
                result.files[full] = None
        if not bumped or (depth > 1 and self.mode != SubmoduleMode.RECURSIVE):
            return
        modules = self._modules(origin, bumped, result)
        for link, (old, new) in sorted(bumped.items()):
            sub = self._reach(origin, link, new, modules, result, chain, depth)
            if sub is None:
                continue
            try:
                sub.cache.ensure_commit(sub.access, old)
                sub_entries, sub_sizes = sub.cache.diff(old, new)
            except GitError:
                raise NeedsListing() from None
            self._diff(
                sub, sub_entries, sub_sizes, result,
                chain=(*chain, sub.access.url), depth=depth + 1,
            )  # fmt: skip


def _chain(access: RemoteAccess) -> tuple[str, ...]:
    """The repository's URL as its submodules' URLs are compared with it (normalised)."""
    try:
        return (access.url, normalise_git_url(access.url))
    except ValueError:
        return (access.url,)
