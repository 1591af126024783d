"""This worker's bare git caches: one per repository id, used under a file lock.

Resolving the watched ref and fetching it live in `activities.git_fetch`.

Every git command goes through `run_git`, which adds the timeout, the
heartbeat, the credentials (for that one command only) and the error
classification, and redacts whatever leaves it. The token never reaches the
cache's config, a URL on disk, a log line or an error message: it travels to
git as an `http.extraHeader` in the environment of the one command.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities.git_objects import ObjectChecker, batch_check, is_object_id
from models.git import GitErrorType
from treecast.config import Settings
from treecast.redact import redact

log = logging.getLogger(__name__)

# Where a fetch by ref name lands (servers refusing fetch by id), and the refs that
# keep commits from gc: a fetch by id writes its pin directly.
HEAD_REF = "refs/treecast/head"
KEEP_PREFIX = "refs/treecast/keep/"

# How often a long git command (or a wait for the lock) heartbeats.
HEARTBEAT_SECONDS = 5.0

_REPO_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


# -- errors ------------------------------------------------------------------------


def git_error(error_type: str, message: str) -> ApplicationError:
    """An ApplicationError of a `GitErrorType`, non-retryable where retrying cannot help.

    Benign: an unreachable or misconfigured remote is expected, so the SDK logs it at
    DEBUG instead of a warning with a traceback; the snapshot activity logs one line.
    """
    return ApplicationError(
        message,
        type=error_type,
        non_retryable=error_type in GitErrorType.NON_RETRYABLE,
        category=ApplicationErrorCategory.BENIGN,
    )


# Checked in this order: an HTTP 401 is reported with "unable to access", so auth beats
# network, and ref errors beat the broad "not found" of a missing repository.
_CLASSIFIERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        GitErrorType.AUTHENTICATION_FAILED,
        (
            "authentication failed",
            "could not read username",
            "could not read password",
            "terminal prompts disabled",
            "the requested url returned error: 401",
            "the requested url returned error: 403",
            "permission denied (publickey",
            "invalid username or password",
            "invalid credentials",
            "access denied",
            "http basic: access denied",
        ),
    ),
    (
        GitErrorType.REF_NOT_FOUND,
        (
            "couldn't find remote ref",
            "not our ref",
            "unknown revision",
            "bad revision",
            "no such ref",
            "invalid refspec",
        ),
    ),
    (
        GitErrorType.REPOSITORY_NOT_FOUND,
        (
            "repository not found",
            "does not appear to be a git repository",
            "invalid gitfile format",  # a file:// URL naming a regular file
            "the requested url returned error: 404",
            "the requested url returned error: 30",  # a redirect, refused with a token
            "not found",
            "no such repository",
            "project you were looking for could not be found",
        ),
    ),
    (
        GitErrorType.NETWORK,
        (
            "could not resolve host",
            "could not resolve hostname",
            "failed to connect",
            "couldn't connect to server",
            "connection refused",
            "connection timed out",
            "connection reset",
            "operation timed out",
            "network is unreachable",
            "early eof",
            "the remote end hung up",
            "unable to access",
            "rpc failed",
            "transfer closed",
            "ssl",
            "gnutls",
            "tls",
            "http/2 stream",
            "empty reply from server",
            "the requested url returned error: 5",
        ),
    ),
)

# Signs that the cache itself is damaged (a rebuild helps, a retry of the same command does not).
_CORRUPTION = (
    "not a git repository",
    "bad object",
    "corrupt",
    "unable to read",
    "loose object",
    "index-pack failed",
    "invalid index-pack output",
    "packfile",
    "bad config",
    "unable to create",
    "shallow file has changed",
)


# What a person should do about each kind of failure (errors say what to do in one line).
_HINTS = {
    GitErrorType.AUTHENTICATION_FAILED: "the remote refused access; check the repository's token",
    GitErrorType.REPOSITORY_NOT_FOUND: "the remote has no such repository; check its URL and token",
    GitErrorType.REF_NOT_FOUND: "the remote has no such ref; check the watched ref",
    GitErrorType.NETWORK: "the remote could not be reached; it will be retried",
}


def classify_git_error(stderr: str) -> str:
    """The `GitErrorType` that best describes a failed git command's stderr."""
    lowered = stderr.lower()
    for error_type, needles in _CLASSIFIERS:
        if any(needle in lowered for needle in needles):
            return error_type
    return GitErrorType.OTHER


def _looks_corrupt(stderr: str) -> bool:
    lowered = stderr.lower()
    return any(needle in lowered for needle in _CORRUPTION)


class CacheCorrupt(Exception):
    """The cache needs a rebuild; raised internally and handled by `sync_ref`."""


# -- credentials and environment -----------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """An access token for one repository (never printed: see __repr__)."""

    token: str
    username: str = "x-access-token"

    def __repr__(self) -> str:
        return "Credentials(***)"

    def header(self) -> str:
        """The HTTP Authorization header git sends (Basic, as GitHub and GitLab accept)."""
        pair = f"{self.username}:{self.token}".encode()
        return "Authorization: Basic " + base64.b64encode(pair).decode()

    def secrets(self) -> list[str]:
        """Every form of the secret that could show up in text, for redaction."""
        pair = f"{self.username}:{self.token}".encode()
        return [self.token, base64.b64encode(pair).decode()]


def _git_env(credentials: Credentials | None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        # An operator's askpass helper or config injection must not prompt or leak here.
        if k not in ("GIT_ASKPASS", "SSH_ASKPASS") and not k.startswith("GIT_CONFIG_")
    }
    env["LC_ALL"] = "C"  # classification reads English messages
    env["GIT_TERMINAL_PROMPT"] = "0"  # never wait for a human
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    if credentials is not None:
        # Config through the environment lives only as long as this one command.
        env["GIT_CONFIG_COUNT"] = "2"
        env["GIT_CONFIG_KEY_0"] = "http.extraHeader"
        env["GIT_CONFIG_VALUE_0"] = credentials.header()
        # git sends an extra header to wherever the remote redirects, another host
        # included: with a token, a redirect is refused (the URL must be updated).
        env["GIT_CONFIG_KEY_1"] = "http.followRedirects"
        env["GIT_CONFIG_VALUE_1"] = "false"
    return env


# -- running git ---------------------------------------------------------------------


def _heartbeat(detail: str) -> None:
    if activity.in_activity():
        activity.heartbeat(detail)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    # git spawns helpers (git-remote-http, ssh, upload-pack): kill the whole group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, 9)
    with contextlib.suppress(Exception):
        proc.kill()
    proc.wait()


def run_git(
    args: Sequence[str],
    *,
    settings: Settings,
    cwd: Path | None = None,
    credentials: Credentials | None = None,
    input: bytes | None = None,
    check: bool = True,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run one git command with a timeout, heartbeats and redacted, classified errors.

    Raises an ApplicationError of a `GitErrorType` when the command times out or
    (with `check`) exits non-zero; its message is redacted. `CacheCorrupt` is
    raised instead when the stderr shows a damaged local repository and `cwd`
    is a cache.
    """
    limit = settings.git_timeout_seconds if timeout is None else timeout
    secrets = credentials.secrets() if credentials else []
    command = ["git", "-c", "credential.helper=", *args]
    what = f"git {args[0]}" if args else "git"
    log.debug("running %s", redact(" ".join(command), secrets))
    started = time.monotonic()
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env=_git_env(credentials),
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    pending_input = input
    while True:
        remaining = limit - (time.monotonic() - started)
        if remaining <= 0:
            _kill(proc)
            raise git_error(
                GitErrorType.TIMEOUT,
                f"{what} did not finish within {limit:g} s (TREECAST_GIT_TIMEOUT_SECONDS); "
                "the remote may be slow or unreachable",
            )
        try:
            stdout, stderr = proc.communicate(
                pending_input, timeout=min(remaining, HEARTBEAT_SECONDS)
            )
            break
        except subprocess.TimeoutExpired:
            pending_input = None  # communicate() already queued it
            _heartbeat(f"{what} running for {time.monotonic() - started:.0f} s")
        except BaseException:
            _kill(proc)
            raise
    result = subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)
    if check and proc.returncode != 0:
        text = redact(stderr.decode(errors="replace").strip(), secrets)
        error_type = classify_git_error(text)
        # A connection cut mid-pack also makes index-pack complain: that is the network,
        # not the cache, and throwing the cache away would not help.
        if cwd is not None and _looks_corrupt(text) and error_type != GitErrorType.NETWORK:
            raise CacheCorrupt(text)
        detail = " | ".join(line.strip() for line in text.splitlines() if line.strip())
        if len(detail) > 600:
            detail = detail[:600] + "…"
        message = (
            f"{what} failed ({_HINTS.get(error_type, 'see git output')}): {detail or 'no message'}"
        )
        raise git_error(error_type, redact(message, secrets))
    return result


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
                raise git_error(
                    GitErrorType.TIMEOUT,
                    f"the git cache of {repository_id} stayed busy for {limit:g} s",
                )
            if now - last_beat >= HEARTBEAT_SECONDS:
                _heartbeat(f"waiting for the git cache of {repository_id}")
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


def _init_cache(settings: Settings, path: Path) -> None:
    """Create an empty bare cache atomically (build beside it, then rename)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        run_git(["init", "--bare", "-q", str(tmp)], settings=settings)
        for key, value in _CACHE_CONFIG:
            run_git(["config", key, value], settings=settings, cwd=tmp)
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
        shutil.rmtree(path, ignore_errors=True)
    if not path.exists():
        _init_cache(settings, path)
    _clear_leftovers(path)
    return path


def rebuild_cache(settings: Settings, path: Path) -> Path:
    """Throw the cache away and start empty (the next fetch clones again)."""
    log.warning("rebuilding the git cache %s", path.name)
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
    """Let git pack and clean the cache when it thinks it is due (fetches skip this)."""
    run_git(["gc", "--auto", "--quiet"], settings=settings, cwd=path)


def prune_kept(settings: Settings, path: Path, keep: set[str]) -> None:
    """Drop the pins of commits not in `keep`."""
    out = run_git(
        ["for-each-ref", "--format=%(refname)", KEEP_PREFIX], settings=settings, cwd=path
    ).stdout.decode()
    stale = [ref for ref in out.splitlines() if ref and ref[len(KEEP_PREFIX) :] not in keep]
    if stale:
        commands = "".join(f"delete {ref}\n" for ref in stale).encode()
        run_git(["update-ref", "--stdin"], settings=settings, cwd=path, input=commands)
