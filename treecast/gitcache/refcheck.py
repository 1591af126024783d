"""Does the remote's watched ref still name the commit we have? One `git ls-remote`.

The cheap question a remote check asks between full syncs: no fetch, no cache, no
lock. It resolves the ref as `remote.resolve_remote_ref` does (the default branch
through HEAD, a branch before a tag of the same name, a tag peeled to its commit)
and reports the object ids the ref names now.
"""

from __future__ import annotations

from treecast.config import Settings
from treecast.gitcache.objects import is_object_id
from treecast.gitcache.remote import ls_remote
from treecast.gitcache.repository import RemoteAccess


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


def remote_names(settings: Settings, access: RemoteAccess) -> frozenset[str] | None:
    """The object ids the watched ref names on the remote now: the ref's own and, for an
    annotated tag, the commit it peels to (empty: the ref or the repository is empty;
    None: the ref is a commit id). Raises the classified `ApplicationError` of git."""
    patterns = check_patterns(access.ref)
    if patterns is None:
        return None
    found = {
        name: oid
        for oid, name in ls_remote(settings, access.url, access.credentials, patterns)
        if is_object_id(oid)
    }
    for name in patterns:
        if name in found and not name.endswith("^{}"):
            peeled = found.get(name + "^{}")
            return frozenset({found[name], peeled} if peeled else {found[name]})
    return frozenset()


def has_moved(known_commit: str | None, names: frozenset[str] | None) -> bool:
    """Whether a sync would find something other than `known_commit`."""
    if names is None:
        return False
    if known_commit is None:
        return bool(names)
    return known_commit not in names
