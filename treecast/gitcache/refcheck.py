"""Does the remote's watched ref still name the commit we have? One question, no fetch.

The cheap question a remote check asks between full syncs: no fetch, no cache, no
lock. It resolves the ref as `remote.resolve_remote_ref` does (the default branch
through HEAD, a branch before a tag of the same name, a tag peeled to its commit)
and reports the object ids the ref names now: by one smart-HTTP request where it
can (`remote_names_over`), else by `git ls-remote` (`remote_names`).
"""

from __future__ import annotations

from enum import Enum

from treecast.config import Settings
from treecast.gitcache import remote
from treecast.gitcache.command import Credentials
from treecast.gitcache.objects import is_object_id
from treecast.gitcache.remote import ls_remote
from treecast.gitcache.repository import RemoteAccess
from treecast.gitcache.smarthttp import RefClient


def check_patterns(ref: str) -> list[str] | None:
    """The ls-remote patterns that find `ref`, most specific first (None: a commit id,
    which never moves)."""
    ref = ref.strip()
    if is_object_id(ref.lower()):
        return None
    if not ref:
        return ["HEAD"]
    if ref.startswith("refs/"):
        return [ref, ref + "^{}"]
    return [f"refs/heads/{ref}", f"refs/tags/{ref}", f"refs/tags/{ref}^{{}}"]


class AskGit(Enum):
    """`remote_names_over` could not ask by smart HTTP: `remote_names` (git) has to."""

    ASK_GIT = "git"


ASK_GIT = AskGit.ASK_GIT


def names_in(patterns: list[str], rows: list[tuple[str, str]]) -> frozenset[str]:
    """The ids the first of `patterns` found names (with its peeled commit, for a tag)."""
    found = {name: oid for oid, name in rows if is_object_id(oid)}
    for name in patterns:
        if name in found and not name.endswith("^{}"):
            peeled = found.get(name + "^{}")
            return frozenset({found[name], peeled} if peeled else {found[name]})
    return frozenset()


def remote_names(settings: Settings, access: RemoteAccess) -> frozenset[str] | None:
    """The object ids the watched ref names on the remote now, by `git ls-remote`: the
    ref's own and, for an annotated tag, the commit it peels to (empty: the ref or the
    repository is empty; None: the ref is a commit id). Raises git's classified
    `GitError`."""
    patterns = check_patterns(access.ref)
    if patterns is None:
        return None
    return names_in(patterns, ls_remote(settings, access.url, access.credentials, patterns))


def speaks_smart_http(settings: Settings, access: RemoteAccess) -> bool:
    """Whether `remote_names_over` may ask by smart HTTP (`remote.speaks_smart_http`)."""
    return remote.speaks_smart_http(settings, access.url, access.credentials)


async def remote_names_over(
    settings: Settings, access: RemoteAccess, client: RefClient, *, vetted: bool = False
) -> frozenset[str] | AskGit | None:
    """`remote_names` by one smart-HTTP request on `client`'s kept-alive connections;
    ASK_GIT when git has to ask (see `speaks_smart_http`, or the server does not speak
    protocol version 2). `vetted`: this very access passed `vet_static` before (its
    checks depend only on the access and the settings; addresses are vetted at connect)."""
    patterns = check_patterns(access.ref)
    if patterns is None:
        return None
    if not speaks_smart_http(settings, access):
        return ASK_GIT
    credentials = access.credentials
    assert credentials is None or isinstance(credentials, Credentials)
    if not vetted:
        vet_static(settings, access)
    rows = await client.ls_refs(access.url, credentials, patterns, settings.git_timeout_seconds)
    return ASK_GIT if rows is None else names_in(patterns, rows)


def vet_static(settings: Settings, access: RemoteAccess) -> None:
    """The URL's checks that need no DNS (`remote.vet_static`)."""
    remote.vet_static(settings, access.url, access.credentials)


def has_moved(known_commit: str | None, names: frozenset[str] | None) -> bool:
    """Whether a sync would find something other than `known_commit`."""
    if names is None:
        return False
    if known_commit is None:
        return bool(names)
    return known_commit not in names
