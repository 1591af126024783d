"""Resolving the watched ref and fetching it into this worker's cache (`sync_ref`).

The first sync of a repository asks the remote what the ref is (`git ls-remote
--symref`, or one smart-HTTP request: `ask_remote`) and fetches that commit. It
remembers the answer in the cache (`RefMemo`), so later syncs are one `git fetch` of the
ref by name, as bare git would do it; the remote is asked again every `MEMO_SECONDS`
(the default branch may change its name) and whenever fetching by name fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
import logging
import os
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from models.git import GitErrorType
from treecast.config import Settings
from treecast.gitcache import partial
from treecast.gitcache.cache import (
    HEAD_REF,
    KEEP_PREFIX,
    keep_commit,
    peeled_commit,
    prepare_cache,
    rebuild_cache,
    rev_parse_commit,
)
from treecast.gitcache.command import AnyCredentials, CacheCorrupt, Credentials, run_git
from treecast.gitcache.errors import GitError
from treecast.gitcache.objects import ObjectChecker, is_object_id
from treecast.gitcache.pinning import pinned_remote
from treecast.gitcache.smarthttp import RefClient
from treecast.gitcache.ssh import SshCredentials, SshFiles, ssh_files
from treecast.gitcache.tree import TreeStats, is_partial
from treecast.urls import vet_git_url

log = logging.getLogger(__name__)

# The first fetch into an empty cache is shallow: the cache never needs history,
# only the trees of the commits it syncs, and a depth-1 clone of a long-lived
# repository is much smaller. Later fetches are not: a shallow fetch makes the
# server recompute the shallow boundary, measured at 200-390 ms for one new
# commit against 80-170 ms for a plain fetch that negotiates from the commits
# already here (docs/performance.md). The price: a force-push to an unrelated
# history fetches that history whole, once.
FETCH_DEPTH = 1


@dataclass(frozen=True)
class RemoteRef:
    """What the remote says a ref is: its full name and object (None: no commits yet)."""

    name: str  # the short name reported in SnapshotResult.ref ("main", "v1.0", a commit id)
    full_name: str | None  # refs/heads/..., refs/tags/..., HEAD, or None for a commit id
    oid: str | None


def _is_token(credentials: AnyCredentials | None) -> bool:
    return credentials is not None and not isinstance(credentials, SshCredentials)


@contextlib.contextmanager
def _ssh_files(credentials: AnyCredentials | None) -> Iterator[SshFiles | None]:
    """The deploy key's private files for one git command (None without a key)."""
    if not isinstance(credentials, SshCredentials):
        yield None
        return
    with ssh_files(credentials) as files:
        yield files


def ls_remote(
    settings: Settings, url: str, credentials: AnyCredentials | None, patterns: list[str]
) -> list[tuple[str, str]]:
    """`git ls-remote --symref` of the vetted, pinned remote: (object id or "ref: ...", name)
    rows for the refs matching `patterns` (all refs when empty)."""
    with _ssh_files(credentials) as ssh:
        target, pins = pinned_remote(settings, url, token=_is_token(credentials), ssh=ssh)
        out = run_git(
            ["ls-remote", "--symref", target, *patterns],
            settings=settings,
            credentials=credentials,
            config=pins,
        ).stdout.decode(errors="replace")
    rows: list[tuple[str, str]] = []
    for line in out.splitlines():
        left, _, right = line.partition("\t")
        rows.append((left.strip(), right.strip()))
    return rows


def speaks_smart_http(settings: Settings, url: str, credentials: AnyCredentials | None) -> bool:
    """Whether the remote's refs may be asked for by smart HTTP without git (`smarthttp`;
    else it is git's to do: ssh, a deploy key, file://, or a proxy or CA bundle in
    TREECAST_GIT_CONFIG)."""
    if settings.git_config or not url.lower().startswith(("https://", "http://")):
        return False
    return credentials is None or isinstance(credentials, Credentials)


def vet_static(settings: Settings, url: str, credentials: AnyCredentials | None) -> None:
    """The URL's checks that need no DNS (scheme, a token over http, option-like hosts);
    raises the non-retryable GitUrlRefused."""
    try:
        vet_git_url(
            url,
            allow_private=settings.allow_private_urls,
            allow_file=settings.allow_file_urls,
            token=credentials is not None,
            allow_insecure=settings.allow_insecure_transport,
            resolve=_no_lookup,
        )
    except ValueError as refused:
        raise GitError(
            GitErrorType.URL_REFUSED, f"the repository's URL is refused: {refused}"
        ) from None


def _no_lookup(host: str, port: int) -> list[str]:
    return []  # `RefClient` resolves and vets every address it connects to


class _AskGit(Exception):
    """The smart-HTTP answer is not one to decide on: git is asked instead."""


@functools.cache
def _tls_context(https: bool) -> ssl.SSLContext:
    # https: what git's curl trusts, the system's CA store (read once: ~35 ms). Over http
    # the client never uses one: a context that trusts nothing, made once.
    return ssl.create_default_context() if https else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def _ls_refs_over_http(
    settings: Settings, url: str, credentials: AnyCredentials | None, patterns: list[str]
) -> list[tuple[str, str]]:
    """`ls_remote`'s rows (HEAD's symref among them) by one smart-HTTP request, no git
    started. `_AskGit` for every ref and for any answer but a clean one, so git's errors
    stay the ones raised; a timeout is raised as is (git would wait as long again)."""
    if not patterns or not speaks_smart_http(settings, url, credentials):
        raise _AskGit
    assert credentials is None or isinstance(credentials, Credentials)
    https = url.lower().startswith("https://")
    client = RefClient(settings.allow_private_urls, _tls_context(https), idle_per_host=0)
    timeout = settings.git_timeout_seconds

    async def ask() -> list[tuple[str, str]] | None:
        try:
            return await client.ls_refs(url, credentials, patterns, timeout, symrefs=True)
        finally:
            client.close()

    try:
        vet_static(settings, url, credentials)
        rows = asyncio.run(ask())
    except GitError as exc:
        if exc.type == GitErrorType.TIMEOUT:
            raise
        raise _AskGit from None
    if rows is None:
        raise _AskGit
    return rows


def ask_remote(
    settings: Settings, url: str, ref: str, credentials: AnyCredentials | None = None
) -> RemoteRef:
    """`resolve_remote_ref` by one smart-HTTP request where it can (a first sync asks it
    beside its fetch: no git process to compete with that one), else by git, which also
    answers whatever the request does not settle (every error, a missing ref)."""
    lister = functools.partial(_ls_refs_over_http, settings, url, credentials)
    with contextlib.suppress(_AskGit):
        return resolve_remote_ref(settings, url, ref, credentials, lister)
    return resolve_remote_ref(settings, url, ref, credentials)


def _short(full_name: str) -> str:
    for prefix in ("refs/heads/", "refs/tags/"):
        if full_name.startswith(prefix):
            return full_name[len(prefix) :]
    return full_name


def resolve_remote_ref(
    settings: Settings,
    url: str,
    ref: str,
    credentials: AnyCredentials | None = None,
    lister: Callable[[list[str]], list[tuple[str, str]]] | None = None,
) -> RemoteRef:
    """Ask the remote what `ref` is: a branch, a tag, a full ref, a commit id, or ""
    for the remote's default branch (`git ls-remote --symref` HEAD, or `lister`'s rows
    of the same form for these patterns)."""
    ls_remote_rows = lister or functools.partial(ls_remote, settings, url, credentials)
    ref = ref.strip()
    if is_object_id(ref.lower()):
        return RemoteRef(name=ref.lower(), full_name=None, oid=ref.lower())
    if not ref:
        rows = ls_remote_rows(["HEAD"])
        symref = next(
            (left[len("ref: ") :] for left, right in rows if left.startswith("ref: ")), None
        )
        oid = next((left for left, right in rows if right == "HEAD" and is_object_id(left)), None)
        if oid is None and ls_remote_rows([]):
            # HEAD names a branch that does not exist while others do. Syncing that as an
            # empty repository would delete every file at every app: refuse instead.
            raise GitError(
                GitErrorType.REF_NOT_FOUND,
                "the remote's HEAD names no existing branch (its default branch is gone?); "
                "set the repository's ref to one of its branches",
            )
        if symref is None:
            # A detached remote HEAD still names a commit; no rows at all means no commits.
            return RemoteRef(name="HEAD", full_name="HEAD" if oid else None, oid=oid)
        return RemoteRef(name=_short(symref), full_name=symref, oid=oid)
    candidates = [ref] if ref.startswith("refs/") else [f"refs/heads/{ref}", f"refs/tags/{ref}"]
    found = dict((right, left) for left, right in ls_remote_rows(candidates))
    for full_name in candidates:
        if full_name in found and is_object_id(found[full_name]):
            return RemoteRef(name=_short(full_name), full_name=full_name, oid=found[full_name])
    if not ls_remote_rows([]):
        # No refs at all: a new repository nobody pushed to yet is empty, not misconfigured.
        return RemoteRef(name=_short(ref), full_name=None, oid=None)
    raise GitError(
        GitErrorType.REF_NOT_FOUND,
        f"the ref {ref!r} is neither a branch nor a tag of the remote; fix the repository's ref",
    )


def _has_history(path: Path) -> bool:
    """True when an earlier fetch left commits here (so a plain fetch only brings what is new)."""
    if (path / "shallow").exists():
        return True
    keep = path / KEEP_PREFIX.rstrip("/")
    if keep.is_dir() and any(keep.iterdir()):
        return True
    packed = path / "packed-refs"
    return packed.exists() and KEEP_PREFIX.encode() in packed.read_bytes()


def fetch(
    settings: Settings,
    path: Path,
    url: str,
    source: str,
    destination: str,
    credentials: AnyCredentials | None,
    *,
    filtered: bool = False,
) -> None:
    """Fetch `source` from the remote into `destination`, pinned to vetted addresses;
    `filtered`: commits and trees only, the cache becoming a partial clone (`partial`)."""
    if filtered:
        partial.mark_partial(path)
    with _ssh_files(credentials) as ssh:
        target, pins = pinned_remote(settings, url, token=_is_token(credentials), ssh=ssh)
        if filtered:
            # The promisor remote's URL for this command only (see `partial`).
            pins = [*pins, (f"remote.{partial.PROMISOR}.url", target)]
        run_git(
            [
                "fetch",
                "--quiet",
                "--no-tags",
                "--no-write-fetch-head",
                # gc runs every few snapshots instead (`maintain`), not after every fetch.
                "--no-auto-gc",
                *([] if _has_history(path) else [f"--depth={FETCH_DEPTH}"]),
                *([f"--filter={partial.FILTER}", partial.PROMISOR] if filtered else [target]),
                f"+{source}:{destination}",
            ],
            settings=settings,
            cwd=path,
            credentials=credentials,
            config=pins,
        )


def promisor_fetch(
    settings: Settings, path: Path, url: str, credentials: AnyCredentials | None, wants: str
) -> None:
    """Fetch the objects named in `wants` (ids, one a line) into a partial cache, as git's
    own lazy fetching would, but vetted, pinned and with the repository's credentials."""
    with _ssh_files(credentials) as ssh:
        target, pins = pinned_remote(settings, url, token=_is_token(credentials), ssh=ssh)
        run_git(
            [
                "-c",
                "fetch.negotiationAlgorithm=noop",
                "fetch",
                "--quiet",
                "--no-tags",
                "--no-write-fetch-head",
                "--no-auto-gc",
                "--recurse-submodules=no",
                f"--filter={partial.FILTER}",
                partial.PROMISOR,
                "--stdin",
            ],
            settings=settings,
            cwd=path,
            credentials=credentials,
            config=[*pins, (f"remote.{partial.PROMISOR}.url", target)],
            input=wants.encode(),
        )


@dataclass(frozen=True)
class SyncOutcome:
    """The commit a sync left in the cache (None: the remote has no commits)."""

    path: Path
    ref: str
    commit: str | None
    # True when the sync brought a commit its previous sync did not have, and pinned it
    # (False: nothing new, or a commit the cache already held, not pinned again here).
    fetched: bool
    # The commit's counts when a partial cache's listing for its support blobs gave them
    # (a new commit; see `partial.fetch_support_blobs`), else None.
    stats: TreeStats | None = None


MEMO_FILE = "treecast-ref.json"
# How long a remembered resolution is trusted before the remote is asked again.
MEMO_SECONDS = 300.0


@dataclass
class RefMemo:
    """What the remote said the watched ref is, and the commit the last sync left."""

    ref: str  # the repository's ref as configured ("" for the default branch)
    name: str  # the short name reported in SnapshotResult.ref
    source: str  # fetched by name: a full ref name, or HEAD for the default branch
    commit: str
    resolved_at: float  # when the remote was last asked (time.time())

    @staticmethod
    def load(path: Path, ref: str) -> RefMemo | None:
        """The memo for `ref`, unless missing, unreadable, for another ref, or too old."""
        try:
            memo = RefMemo(**json.loads((path / MEMO_FILE).read_text()))
        except (OSError, ValueError, TypeError):
            return None
        age = time.time() - memo.resolved_at
        if memo.ref != ref or not 0 <= age < MEMO_SECONDS or not is_object_id(memo.commit):
            return None
        return memo

    def save(self, path: Path) -> None:
        """Write it atomically (a sync killed half-way leaves the old one or none)."""
        tmp = path / (MEMO_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        os.replace(tmp, path / MEMO_FILE)

    @staticmethod
    def forget(path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            (path / MEMO_FILE).unlink()


def _loose_ref(path: Path, name: str) -> str | None:
    """The object id a loose ref file holds (None once gc packed it)."""
    try:
        value = (path / name).read_text().strip()
    except OSError:
        return None
    return value if is_object_id(value) else None


@dataclass(frozen=True)
class _Sync:
    """One `sync_ref`: the cache at `path`, the remote and ref, how to reach and check it."""

    settings: Settings
    path: Path
    url: str
    ref: str
    credentials: AnyCredentials | None
    checker: ObjectChecker | None
    filtered: bool
    watched: Sequence[Sequence[str]] = ()
    # The cache held no commit before this sync (a first fetch): every blob is missing.
    fresh: bool = False
    # A new commit's support step (`support`) already run, by commit: its counts, or the
    # GitError or CacheCorrupt it raised. A first sync runs it for the commit that landed
    # while the remote's answer is awaited (`_first_fetch`).
    early: dict[str, TreeStats | Exception | None] = field(default_factory=dict)

    def fetch(self, refspec: str, into: str) -> None:
        fetch(
            self.settings, self.path, self.url, refspec, into, self.credentials,
            filtered=self.filtered,
        )  # fmt: skip

    def peeled(self, oid: str) -> str | None:
        return peeled_commit(self.path, oid, self.checker)

    def support(self, commit: str, fetched: bool) -> TreeStats | None:
        """A partial cache's step after a sync (`partial.fetch_support_blobs`): the
        commit's support blobs and, when it is new (`fetched`), its counts and the blobs
        the watches receive. Run ahead for this commit (`ahead`): its result, or error."""
        if fetched and commit in self.early:
            done = self.early.pop(commit)
            if isinstance(done, Exception):
                raise done
            return done
        return partial.fetch_support_blobs(
            self.settings, self.path, self.url, self.credentials, commit, count=fetched,
            watched=self.watched if fetched else (), fresh=self.fresh,
        )  # fmt: skip

    def ahead(self, commit: str) -> None:
        """`support` for a new commit, now, keeping its result or the git error it raised
        for when the sync has decided that this is the commit (raised then, as before)."""
        result: TreeStats | Exception | None
        try:
            result = self.support(commit, True)
        except (GitError, CacheCorrupt) as exc:
            result = exc
        self.early[commit] = result


def _sync_by_name(sync: _Sync, memo: RefMemo) -> SyncOutcome | None:
    """One `git fetch` of the remembered ref; None when asking the remote again may help
    (the ref is gone or changed its kind: `_sync_once` resolves it afresh)."""
    settings, path = sync.settings, sync.path
    try:
        sync.fetch(memo.source, HEAD_REF)
    except GitError as exc:
        if exc.type not in (GitErrorType.REF_NOT_FOUND, GitErrorType.OTHER):
            raise
        return None
    oid = _loose_ref(path, HEAD_REF)
    commit: str | None
    if oid is None:
        commit = rev_parse_commit(settings, path, HEAD_REF)  # packed by gc; peels too
    elif oid == memo.commit or memo.source == "HEAD" or memo.source.startswith("refs/heads/"):
        commit = oid  # a branch names a commit (git refuses anything else there)
    else:
        commit = sync.peeled(oid)  # a tag may name a tag object
    if not commit:
        return None
    moved = commit != memo.commit
    if moved:
        keep_commit(settings, path, commit)
        memo.commit = commit
        memo.save(path)
    return SyncOutcome(path=path, ref=memo.name, commit=commit, fetched=moved)


def _sync_once(sync: _Sync) -> SyncOutcome:
    path, ref = sync.path, sync.ref
    memo = RefMemo.load(path, ref)
    if memo is not None:
        outcome = _sync_by_name(sync, memo)
        if outcome is not None:
            return outcome
        RefMemo.forget(path)
    outcome, remote = _resolve_and_fetch(sync)
    if outcome.commit is not None and remote.full_name is not None:
        RefMemo(
            ref=ref,
            name=outcome.ref,
            # The default branch is fetched as the remote's HEAD, so a new default is
            # followed at once (its name is refreshed when the memo expires).
            source="HEAD" if not ref.strip() else remote.full_name,
            commit=outcome.commit,
            resolved_at=time.time(),
        ).save(path)
    return outcome


def _resolve_and_fetch(sync: _Sync) -> tuple[SyncOutcome, RemoteRef]:
    """Ask the remote what the ref is, then fetch that commit by id (into an empty cache:
    `_first_fetch`)."""
    if not _has_history(sync.path) and not is_object_id(sync.ref.strip().lower()):
        return _first_fetch(sync)
    remote = resolve_remote_ref(sync.settings, sync.url, sync.ref, sync.credentials)
    return _fetch_resolved(sync, remote), remote


def _first_fetch(sync: _Sync) -> tuple[SyncOutcome, RemoteRef]:
    """A first sync: the remote is asked what the ref is (on a side thread, by smart HTTP
    where it can: `ask_remote`) while the ref
    it most likely is (the remote's HEAD, the branch of that name, the full ref) is fetched
    by name, so the question costs no round trip of its own. The answer decides, as in
    every sync: its errors are raised, and when it names another object than the one that
    landed (a tag, a ref moved meanwhile) that object is fetched by id as usual."""
    ref = sync.ref.strip()
    guess = "HEAD" if not ref else ref if ref.startswith("refs/") else f"refs/heads/{ref}"
    landed: str | None = None
    failure: GitError | None = None
    # The caller's heartbeat (a context variable) goes with the question to its thread.
    context = contextvars.copy_context()
    with ThreadPoolExecutor(1, thread_name_prefix="treecast-resolve") as pool:
        asked = pool.submit(context.run, ask_remote, sync.settings, sync.url, ref, sync.credentials)
        try:
            sync.fetch(guess, HEAD_REF)
            landed = _loose_ref(sync.path, HEAD_REF)
        except GitError as exc:
            failure = exc
        branch = guess == "HEAD" or guess.startswith("refs/heads/")
        if branch and landed is not None and not asked.done() and is_partial(sync.path):
            # A branch names a commit. A partial cache's listing and blob fetch for it need
            # not wait for the answer, which almost always names that commit (when it does
            # not, they were for nothing and run again for the answer's commit).
            sync.ahead(landed)
        remote = asked.result()
    if remote.oid is None:
        return SyncOutcome(path=sync.path, ref=remote.name, commit=None, fetched=False), remote
    if failure is not None and failure.type == GitErrorType.TIMEOUT:
        raise failure  # fetching by id would wait as long again
    if landed is None or landed != remote.oid:
        return _fetch_resolved(sync, remote), remote
    commit = _commit_named(sync, remote)
    keep_commit(sync.settings, sync.path, commit)
    return SyncOutcome(path=sync.path, ref=remote.name, commit=commit, fetched=True), remote


def _fetch_resolved(sync: _Sync, remote: RemoteRef) -> SyncOutcome:
    """Bring the commit `remote` names into the cache: fetched by id (by name when the
    server refuses that), unless it is here already."""
    settings, path = sync.settings, sync.path
    if remote.oid is None:
        return SyncOutcome(path=path, ref=remote.name, commit=None, fetched=False)
    commit = sync.peeled(remote.oid)
    if commit is not None:
        return SyncOutcome(path=path, ref=remote.name, commit=commit, fetched=False)
    try:
        # By id: we get exactly what ls-remote saw, and the fetch itself pins it.
        sync.fetch(remote.oid, KEEP_PREFIX + remote.oid)
    except GitError as exc:
        if exc.type not in (GitErrorType.REF_NOT_FOUND, GitErrorType.OTHER) or not remote.full_name:
            raise
        # A server that refuses fetching by id (or a ref that moved meanwhile): by name.
        sync.fetch(remote.full_name, HEAD_REF)
        commit = rev_parse_commit(settings, path, HEAD_REF)
        keep_commit(settings, path, commit)
        return SyncOutcome(path=path, ref=remote.name, commit=commit, fetched=True)
    commit = _commit_named(sync, remote)
    if commit != remote.oid:
        keep_commit(settings, path, commit)
    return SyncOutcome(path=path, ref=remote.name, commit=commit, fetched=True)


def _commit_named(sync: _Sync, remote: RemoteRef) -> str:
    """The commit `remote`'s object (now in the cache) is or peels to."""
    assert remote.oid is not None
    branch = remote.full_name == "HEAD" or (remote.full_name or "").startswith("refs/heads/")
    # A branch names a commit; a tag or a given id may name a tag object: peel it.
    commit = remote.oid if branch else sync.peeled(remote.oid)
    if commit is None:
        raise GitError(GitErrorType.REF_NOT_FOUND, f"{sync.ref or 'HEAD'} does not name a commit")
    return commit


def sync_ref(
    settings: Settings,
    path: Path,
    url: str,
    ref: str,
    credentials: AnyCredentials | None = None,
    checker: ObjectChecker | None = None,
    *,
    filtered: bool = False,
    watched: Sequence[Sequence[str]] = (),
) -> SyncOutcome:
    """Bring the ref's current commit into the cache at `path` (call under `cache_lock`).

    The first sync clones (a shallow fetch into an empty cache), later ones fetch
    only what is new; a damaged cache is rebuilt once and the sync retried. `filtered`:
    without blobs (`partial`): the few every read needs are fetched with the commit, and
    with a new commit those the watches with the glob lists `watched` receive.
    """
    prepare_cache(settings, path)
    fresh = not _has_history(path)
    sync = _Sync(settings, path, url, ref, credentials, checker, filtered, watched, fresh)
    outcome = _sync_ref(sync)
    if outcome.commit is not None and is_partial(path):
        # A new commit is counted by the same listing (a snapshot counts every new one).
        outcome = replace(outcome, stats=sync.support(outcome.commit, outcome.fetched))
    return outcome


def _sync_ref(sync: _Sync) -> SyncOutcome:
    try:
        return _sync_once(sync)
    except CacheCorrupt as exc:
        log.warning("git cache %s looks damaged (%s); rebuilding", sync.path.name, exc)
        if sync.checker is not None:
            sync.checker.discard()
        sync.early.clear()  # what was fetched ahead is thrown away with the cache
        rebuild_cache(sync.settings, sync.path)
        try:
            return _sync_once(sync)
        except CacheCorrupt as again:
            raise GitError(
                GitErrorType.OTHER, f"git cache {sync.path.name} is unusable: {again}"
            ) from None
