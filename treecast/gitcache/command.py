"""Running one git command: timeout, heartbeats (`errors.heartbeats`), credentials for
that command only, and classified, redacted errors (`GitError`).

The token never reaches a cache's config, a URL on disk, a log line or an error
message: it travels to git as an `http.extraHeader` in the environment of the one
command that needs it.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import select
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from models.git import GitErrorType
from treecast.config import Settings
from treecast.gitcache.environment import git_env
from treecast.gitcache.errors import GitError, heartbeat
from treecast.gitcache.ssh import SshCredentials, host_key_message, is_host_key_failure
from treecast.redact import redact

log = logging.getLogger(__name__)

# How often a long git command (or a wait for the lock) heartbeats.
HEARTBEAT_SECONDS = 5.0


# -- errors ------------------------------------------------------------------------

# Checked in this order: an HTTP 401 is reported with "unable to access", so auth beats
# network, and ref errors beat the broad "not found" of a missing repository.
_CLASSIFIERS: tuple[tuple[GitErrorType, tuple[str, ...]], ...] = (
    # ssh refused the server's host key (before "the remote end hung up" reads as network).
    (
        GitErrorType.HOST_KEY_MISMATCH,
        (
            "remote host identification has changed",
            "host key verification failed",
            "you have requested strict checking",
        ),
    ),
    # transfer.fsckObjects refused what the remote sent (before "index-pack failed"
    # could read as a damaged cache).
    (GitErrorType.UNSAFE_CONTENT, ("fsck error", "hasdotgit", "hasdotdot", "fullpathname")),
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
    GitErrorType.AUTHENTICATION_FAILED: (
        "the remote refused access; check the repository's credentials "
        "(token, deploy key or GitHub App installation)"
    ),
    GitErrorType.REPOSITORY_NOT_FOUND: (
        "the remote has no such repository; check its URL and credentials"
    ),
    GitErrorType.REF_NOT_FOUND: "the remote has no such ref; check the watched ref",
    GitErrorType.NETWORK: "the remote could not be reached; it will be retried",
    GitErrorType.UNSAFE_CONTENT: "the remote holds objects git refuses to fetch (fsck)",
}


def classify_git_error(stderr: str) -> GitErrorType:
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


# What git may be given to reach a remote: a token (http) or a deploy key (ssh).
AnyCredentials = Credentials | SshCredentials


def _git_env(
    credentials: AnyCredentials | None, extra: Sequence[tuple[str, str]]
) -> dict[str, str]:
    config = list(extra)
    if isinstance(credentials, Credentials):
        config += [
            ("http.extraHeader", credentials.header()),
            # git sends an extra header to wherever the remote redirects, another host
            # included: with a token, a redirect is refused (the URL must be updated).
            ("http.followRedirects", "false"),
        ]
    return git_env(config)


# -- running git ---------------------------------------------------------------------


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
    credentials: AnyCredentials | None = None,
    input: bytes | None = None,
    check: bool = True,
    timeout: float | None = None,
    config: Sequence[tuple[str, str]] = (),
) -> subprocess.CompletedProcess[bytes]:
    """Run one git command with a timeout, heartbeats and redacted, classified errors.

    Raises a `GitError` when the command times out or (with `check`) exits non-zero;
    its message is redacted. `CacheCorrupt` is raised instead when the stderr shows a
    damaged local repository and `cwd` is a cache.
    """
    limit = settings.git_timeout_seconds if timeout is None else timeout
    secrets = credentials.secrets() if credentials else []
    command = ["git", *args]
    what = f"git {args[0]}" if args else "git"
    log.debug("running %s", redact(" ".join(command), secrets))
    started = time.monotonic()
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env=_git_env(credentials, [*settings.git_config_pairs(), *config]),
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
            raise GitError(
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
            heartbeat(f"{what} running for {time.monotonic() - started:.0f} s")
        except BaseException:
            _kill(proc)
            raise
    result = subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)
    if check and proc.returncode != 0:
        raise _failure(what, stderr, secrets, cwd, credentials)
    return result


def _failure(
    what: str,
    stderr: bytes,
    secrets: list[str],
    cwd: Path | None,
    credentials: AnyCredentials | None = None,
) -> Exception:
    """The classified, redacted error of a git command that exited non-zero."""
    text = redact(stderr.decode(errors="replace").strip(), secrets)
    error_type = classify_git_error(text)
    if error_type == GitErrorType.HOST_KEY_MISMATCH or is_host_key_failure(text):
        pinned = credentials.host_keys if isinstance(credentials, SshCredentials) else ()
        return GitError(
            GitErrorType.HOST_KEY_MISMATCH, redact(host_key_message(what, text, pinned), secrets)
        )
    # A connection cut mid-pack also makes index-pack complain: that is the network,
    # not the cache, and throwing the cache away would not help.
    benign = (GitErrorType.NETWORK, GitErrorType.UNSAFE_CONTENT)
    if cwd is not None and _looks_corrupt(text) and error_type not in benign:
        return CacheCorrupt(text)
    detail = " | ".join(line.strip() for line in text.splitlines() if line.strip())
    if len(detail) > 600:
        detail = detail[:600] + "…"
    message = (
        f"{what} failed ({_HINTS.get(error_type, 'see git output')}): {detail or 'no message'}"
    )
    return GitError(error_type, redact(message, secrets))


def stream_records(
    args: Sequence[str],
    *,
    settings: Settings,
    cwd: Path,
    timeout: float | None = None,
    separator: bytes = b"\0",
) -> Iterator[bytes]:
    """Run a local git command and yield its NUL-terminated (or `separator`-terminated)
    output records as they come.

    For output that may be huge (a tree listing): memory stays at one read buffer plus
    what the caller keeps, and a caller that stops early (a limit was reached) kills git
    at once. Same timeout, heartbeats and errors as `run_git`.
    """
    limit = settings.git_timeout_seconds if timeout is None else timeout
    what = f"git {args[0]}" if args else "git"
    started = time.monotonic()
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            ["git", *args],
            cwd=cwd,
            env=_git_env(None, settings.git_config_pairs()),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
            start_new_session=True,
        )
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        pending = b""
        finished = False
        beat = started
        try:
            while True:
                remaining = limit - (time.monotonic() - started)
                if remaining <= 0:
                    raise GitError(
                        GitErrorType.TIMEOUT,
                        f"{what} did not finish within {limit:g} s (TREECAST_GIT_TIMEOUT_SECONDS)",
                    )
                ready, _, _ = select.select([fd], [], [], min(remaining, HEARTBEAT_SECONDS))
                now = time.monotonic()
                if now - beat >= HEARTBEAT_SECONDS:
                    # Also while output flows: a long listing must not look like a lost task.
                    heartbeat(f"{what} running for {now - started:.0f} s")
                    beat = now
                if not ready:
                    continue
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    break
                *records, pending = (pending + chunk).split(separator)
                yield from records
            if pending:
                yield pending
            proc.wait()
            finished = True
        finally:
            if not finished:
                _kill(proc)
            proc.stdout.close()
        if proc.returncode != 0:
            errors.seek(0)
            raise _failure(what, errors.read(1 << 20), [], cwd)
