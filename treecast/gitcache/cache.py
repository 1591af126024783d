"""This worker's bare git caches: one per repository id, used under a file lock.

`RepositoryCache` (in `treecast.gitcache.handle`) is the object callers use; the
functions here are its building blocks: the cache's path and lock, creating and
repairing it, pinning commits against gc.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from models.git import GitErrorType
from treecast.config import Settings
from treecast.gitcache.command import HEARTBEAT_SECONDS, run_git
from treecast.gitcache.errors import GitError, heartbeat
from treecast.gitcache.objects import IDLE, ObjectChecker, batch_check, is_object_id

log = logging.getLogger(__name__)

# Where a fetch by ref name lands (servers refusing fetch by id), and the refs that
# keep commits from gc: a fetch by id writes its pin directly.
HEAD_REF = "refs/treecast/head"
KEEP_PREFIX = "refs/treecast/keep/"

_REPO_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


# -- the cache and its lock -------------------------------------------------------------


def cache_path(settings: Settings, repository_id: str) -> Path:
    """The bare repository this worker keeps for `repository_id`."""
    if not _REPO_ID.match(repository_id):
        raise ValueError(f"invalid repository id: {repository_id[:100]!r}")
    return settings.git_cache_dir / f"{repository_id}.git"


@contextlib.contextmanager
def cache_lock(
    settings: Settings, repository_id: str, *, timeout: float | None = None
) -> Iterator[Path]:
    """Hold this worker's exclusive lock on one repository's cache; yields the cache path.

    An `flock` on a lock file beside the cache: it serialises threads of one
    process (each opens its own file description) and processes on one host,
    and the kernel drops it when a worker dies. While waiting it heartbeats.
    Waiting longer than `timeout` (default: four git timeouts) raises a retryable
    GitTimeout.
    """
    path = cache_path(settings, repository_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    limit = settings.git_timeout_seconds * 4 if timeout is None else timeout
    deadline = time.monotonic() + limit
    fd = os.open(path.parent / f"{repository_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        delay = 0.01
        last_beat = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
            now = time.monotonic()
            if now >= deadline:
                raise GitError(
                    GitErrorType.TIMEOUT,
                    f"the git cache of {repository_id} stayed busy for {limit:g} s",
                )
            if now - last_beat >= HEARTBEAT_SECONDS:
                heartbeat(f"waiting for the git cache of {repository_id}")
                last_beat = now
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
        try:
            yield path
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


_CACHE_CONFIG = (
    # Keep every fetch as a pack: index-pack writes it whole or not at all, so a
    # fetch killed half-way never leaves a commit without its trees and blobs.
    ("transfer.unpackLimit", "1"),
    ("fetch.unpackLimit", "1"),
    # gc runs inside our lock and timeout, never in the background.
    ("gc.autoDetach", "false"),
    ("maintenance.autoDetach", "false"),
    ("core.logAllRefUpdates", "false"),
)


def _config_sections(pairs: tuple[tuple[str, str], ...]) -> str:
    """`pairs` (`section.name`, value) as git config file text."""
    return "".join(
        f"[{key.rpartition('.')[0]}]\n\t{key.rpartition('.')[2]} = {value}\n"
        for key, value in pairs
    )


# What `git init --bare` writes that a cache needs (no hooks, description or info/):
# written directly, a `git` process less for every new cache (docs/performance.md). Of
# its folders only those git looks for (`objects`, `refs`) and the one every fetch
# writes to: git makes `objects/info` and `refs/heads` when it needs them, and each
# folder made costs a new cache ~0.25 ms of the worker's CPU here (Seventh round).
_CORE_CONFIG = (
    ("core.repositoryformatversion", "0"),
    ("core.filemode", "true"),
    ("core.bare", "true"),
)
_SKELETON = ("objects/pack", "refs")


def _init_cache(settings: Settings, path: Path) -> None:
    """Create an empty bare cache atomically (build beside it, then rename)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        for folder in _SKELETON:
            (tmp / folder).mkdir(parents=True)
        (tmp / "HEAD").write_text("ref: refs/heads/main\n", encoding="utf-8")
        (tmp / "config").write_text(
            _config_sections((*_CORE_CONFIG, *_CACHE_CONFIG)), encoding="utf-8"
        )
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def looks_valid(path: Path) -> bool:
    return (path / "HEAD").is_file() and (path / "objects").is_dir() and (path / "refs").is_dir()


def _clear_leftovers(path: Path) -> None:
    """Remove what a git command killed half-way leaves behind.

    Safe only under `cache_lock`: no other git runs on this cache then, so any
    `*.lock` file is stale, and unfinished `tmp_*` packs are garbage.
    """
    for name in ("shallow.lock", "packed-refs.lock", "config.lock", "HEAD.lock", "index.lock"):
        with contextlib.suppress(FileNotFoundError):
            (path / name).unlink()
    for lock in (path / "refs").rglob("*.lock"):
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
    for tmp in (path / "objects" / "pack").glob("tmp_*"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def prepare_cache(settings: Settings, path: Path) -> Path:
    """Make `path` a usable bare cache (call under `cache_lock`): create, repair or rebuild."""
    if path.exists() and not looks_valid(path):
        log.warning("rebuilding the damaged git cache %s", path.name)
        IDLE.forget(path)
        shutil.rmtree(path, ignore_errors=True)
    if not path.exists():
        _init_cache(settings, path)
    _clear_leftovers(path)
    return path


def rebuild_cache(settings: Settings, path: Path) -> Path:
    """Throw the cache away and start empty (the next fetch clones again)."""
    log.warning("rebuilding the git cache %s", path.name)
    IDLE.forget(path)
    shutil.rmtree(path, ignore_errors=True)
    return prepare_cache(settings, path)


def peeled_commit(path: Path, rev: str, checker: ObjectChecker | None = None) -> str | None:
    """The commit `rev` (a commit or tag id, or a ref) names in the cache; None if absent."""
    if not path.exists():
        return None
    try:
        names = [f"{rev}^{{commit}}"]
        info = (checker.check(names) if checker is not None else batch_check(path, names))[0]
    except OSError:
        return None  # a damaged cache holds nothing usable
    return info.oid if info is not None and info.kind == "commit" else None


def has_object(settings: Settings, path: Path, oid: str) -> bool:
    """True when the cache holds `oid` (a commit or tag id, peeled to a commit)."""
    return peeled_commit(path, oid) is not None


def rev_parse_commit(settings: Settings, path: Path, rev: str) -> str:
    """The commit id `rev` names in the cache."""
    out = run_git(
        ["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], settings=settings, cwd=path
    )
    return out.stdout.decode().strip()


def keep_commit(settings: Settings, path: Path, commit: str) -> None:
    """Pin a commit with a ref so gc never prunes it while apps may still diff against it.

    The pin is the loose ref file `git update-ref` would write (the id and a newline),
    written without starting git: a sync pins every new commit, and the process cost
    a tenth of a one-file sync. Safe because the caller holds `cache_lock`, so no git
    command writes refs in this cache meanwhile; the rename makes it atomic.
    """
    if not is_object_id(commit):
        raise ValueError(f"not a commit id: {commit!r}")
    ref_file = path / KEEP_PREFIX / commit
    ref_file.parent.mkdir(parents=True, exist_ok=True)
    # Named as git names its ref locks, so `_clear_leftovers` removes a stale one.
    lock = ref_file.with_name(commit + ".lock")
    lock.write_text(commit + "\n")
    os.replace(lock, ref_file)


def maintain(settings: Settings, path: Path) -> None:
    """Let git pack and clean the cache when it thinks it is due (fetches skip this); the
    processes left open on it start afresh after."""
    run_git(["gc", "--auto", "--quiet"], settings=settings, cwd=path)
    IDLE.forget(path)


def prune_kept(settings: Settings, path: Path, keep: set[str]) -> None:
    """Drop the pins of commits not in `keep`."""
    out = run_git(
        ["for-each-ref", "--format=%(refname)", KEEP_PREFIX], settings=settings, cwd=path
    ).stdout.decode()
    stale = [ref for ref in out.splitlines() if ref and ref[len(KEEP_PREFIX) :] not in keep]
    if stale:
        commands = "".join(f"delete {ref}\n" for ref in stale).encode()
        run_git(["update-ref", "--stdin"], settings=settings, cwd=path, input=commands)
