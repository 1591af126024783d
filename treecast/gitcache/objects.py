"""Streaming reads of blobs from a bare git cache, without a working tree.

`BlobReader` keeps one `git cat-file --batch` process per context, so reading
thousands of files costs one process, and `iter_bytes` hands a large file over
in chunks so it is never held whole in memory by the reader. A reader or checker
that is done leaves its process open for the next one on the same cache (`IDLE`):
a first sync's delivery asks the process its snapshot started.
"""

from __future__ import annotations

import atexit
import functools
import os
import re
import subprocess
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

_OID = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")

# Drained objects are read in pieces of this size so draining a huge blob stays flat in memory.
_DRAIN_CHUNK = 1 << 20


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """End a `cat-file` process: close its input, wait briefly, kill if it lingers."""
    try:
        if proc.stdin:
            proc.stdin.close()
        proc.wait(timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        proc.kill()
        proc.wait()
    finally:
        if proc.stdout:
            proc.stdout.close()


def _identity(repo_path: Path) -> tuple[int, int] | None:
    """What tells a cache from one rebuilt at the same path (None: no cache there)."""
    try:
        found = os.stat(repo_path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


class IdleProcesses:
    """The `cat-file` processes readers and checkers left open, one per cache and mode,
    taken by the next reader or checker of that cache (so one is never shared).

    Bounded (the least recently left are stopped) and stopped after `idle_seconds`
    unused. A process stands for the cache it started in: one rebuilt since (a new
    directory at the path) or written by `git gc` here (`forget`) gets a new process.
    git finds objects fetched after a process started (it re-reads its packs on a
    miss), as within one sync.
    """

    def __init__(self, size: int = 32, idle_seconds: float = 60.0) -> None:
        self.size, self.idle_seconds = size, idle_seconds
        self._items: OrderedDict[
            tuple[str, str], tuple[subprocess.Popen[bytes], tuple[int, int] | None, float]
        ] = OrderedDict()
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def take(self, repo_path: Path, mode: str) -> subprocess.Popen[bytes] | None:
        """An open process of `repo_path`'s cache in `mode`, now the caller's (None: none)."""
        with self._lock:
            stale = self._expired()
            item = self._items.pop((str(repo_path), mode), None)
        for proc in stale:
            stop_process(proc)
        if item is None:
            return None
        proc, identity, _since = item
        if proc.poll() is None and identity is not None and identity == _identity(repo_path):
            return proc
        stop_process(proc)
        return None

    def give(self, repo_path: Path, mode: str, proc: subprocess.Popen[bytes]) -> None:
        """Leave `proc` (between requests, nothing unread) for the next reader of the cache."""
        if proc.poll() is not None:
            stop_process(proc)
            return
        with self._lock:
            stale = self._expired()
            key = (str(repo_path), mode)
            if key in self._items:
                stale.append(self._items.pop(key)[0])
            self._items[key] = (proc, _identity(repo_path), time.monotonic())
            while len(self._items) > self.size:
                stale.append(self._items.popitem(last=False)[1][0])
        for old in stale:
            stop_process(old)

    def forget(self, repo_path: Path | None = None) -> None:
        """Stop the open processes of one cache (it is being rebuilt, or git packed it), or
        of every cache."""
        with self._lock:
            gone = [key for key in self._items if repo_path is None or key[0] == str(repo_path)]
            stale = [self._items.pop(key)[0] for key in gone]
        for proc in stale:
            stop_process(proc)

    def _expired(self) -> list[subprocess.Popen[bytes]]:
        """Pop the processes unused for `idle_seconds` (under the lock); after a fork, the
        parent's are not this process's to use."""
        if os.getpid() != self._pid:
            self._items.clear()
            self._pid = os.getpid()
            return []
        deadline = time.monotonic() - self.idle_seconds
        stale = []
        while self._items:
            key, (proc, _identity, since) = next(iter(self._items.items()))
            if since > deadline:
                break
            del self._items[key]
            stale.append(proc)
        return stale


IDLE = IdleProcesses()
atexit.register(IDLE.forget)

# One `cat-file` answering lookups (`info NAME`) and reads (`contents ID`) alike, so a
# checker's process serves the reader after it (git 2.36; older: one process for each).
COMMANDS = "--batch-command"


@functools.cache
def commands_supported() -> bool:
    """Whether this worker's git has `cat-file --batch-command` (asked once a process)."""
    try:
        out = subprocess.run(
            ["git", "version"], capture_output=True, check=False, env=_git_env()
        ).stdout
    except OSError:
        return False
    found = re.search(rb"(\d+)\.(\d+)", out)
    return found is not None and (int(found[1]), int(found[2])) >= (2, 36)


def _spawn(repo_path: Path, mode: str) -> subprocess.Popen[bytes]:
    """An open `git cat-file` of the cache in `mode`: one left idle, or a new one."""
    proc = IDLE.take(repo_path, mode)
    if proc is not None:
        return proc
    return subprocess.Popen(
        ["git", "-C", str(repo_path), "cat-file", mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=_git_env(),
    )


class BlobNotFound(LookupError):
    """The object is not in the cache (or is not a blob)."""


def is_object_id(value: str) -> bool:
    """True for a full lowercase SHA-1 (40) or SHA-256 (64) hex object id."""
    return bool(_OID.match(value))


def _check_oid(blob_id: str) -> None:
    if not is_object_id(blob_id):
        # Refuse anything else: a newline or space would desynchronise the batch protocol.
        raise ValueError(f"not a git object id: {blob_id[:80]!r}")


def _git_env() -> dict[str, str]:
    from treecast.gitcache.environment import git_env

    return git_env()


class BlobReader:
    """Reads blobs of one bare repository through one long-lived `git cat-file --batch`.

    Use as a context manager. Not thread-safe: give each thread its own reader.
    Requests are strictly sequential; a caller that stops iterating `iter_bytes`
    early leaves the rest of that blob unread, and the reader drains it before
    the next request so the stream stays in sync.
    """

    def __init__(self, repo_path: Path | str) -> None:
        self.repo_path = Path(repo_path)
        self._proc: subprocess.Popen[bytes] | None = None
        self._check: subprocess.Popen[bytes] | None = None
        self._remaining = 0  # unread bytes of the current object (its trailing LF excluded)
        self._pending_lf = False  # the current object's trailing LF is not read yet
        self._serial = 0  # bumps on each request so a stale iterator can tell it is stale
        self._broken = False  # a process stopped or out of step: never left for another
        self._mode = COMMANDS if commands_supported() else "--batch"  # self._proc's

    # -- lifecycle -----------------------------------------------------------------

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Done: leave the git processes for the next reader of the cache, or stop those
        that are not between two requests (safe to call twice)."""
        reusable = not self._broken and self._remaining == 0 and not self._pending_lf
        for proc, mode in ((self._proc, self._mode), (self._check, "--batch-check")):
            if proc is None:
                continue
            if reusable:
                IDLE.give(self.repo_path, mode, proc)
            else:
                stop_process(proc)
        self._proc = None
        self._check = None

    def _batch(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            self._proc = _spawn(self.repo_path, self._mode)
        return self._proc

    def _stopped(self, message: str) -> OSError:
        """The error of a process that stopped or fell out of step (never reused)."""
        self._broken = True
        return OSError(message)

    # -- protocol ------------------------------------------------------------------

    @staticmethod
    def _pipes(proc: subprocess.Popen[bytes]) -> tuple[IO[bytes], IO[bytes]]:
        assert proc.stdin is not None and proc.stdout is not None
        return proc.stdin, proc.stdout

    def _drain(self) -> None:
        """Skip what is left of the current object, so the next header is at the stream head."""
        if self._proc is None:
            return
        _, out = self._pipes(self._proc)
        while self._remaining > 0:
            got = out.read(min(self._remaining, _DRAIN_CHUNK))
            if not got:
                raise self._stopped("git cat-file ended in the middle of an object")
            self._remaining -= len(got)
        if self._pending_lf:
            if out.read(1) != b"\n":
                raise self._stopped("git cat-file --batch stream is out of sync")
            self._pending_lf = False

    def _request(self, blob_id: str) -> int:
        """Ask for one blob and read its header; returns the size (content not yet read)."""
        _check_oid(blob_id)
        self._drain()
        self._serial += 1
        command = b"contents " if self._mode == COMMANDS else b""
        header = self._ask(self._batch(), command + blob_id.encode())
        parts = header.split()
        if len(parts) == 2 and parts[1] in (b"missing", b"ambiguous"):
            raise BlobNotFound(f"blob {blob_id} is not in the cache")
        if len(parts) != 3:
            raise self._stopped(f"unexpected git cat-file header: {header[:200]!r}")
        kind, size = parts[1], int(parts[2])
        self._remaining, self._pending_lf = size, True
        if kind != b"blob":
            self._drain()
            raise BlobNotFound(f"object {blob_id} is a {kind.decode()}, not a blob")
        return size

    def _ask(self, proc: subprocess.Popen[bytes], request: bytes) -> bytes:
        """Send one request line; the answer's first line (a header)."""
        stdin, out = self._pipes(proc)
        try:
            stdin.write(request + b"\n")
            stdin.flush()
        except BrokenPipeError:
            raise self._stopped(f"git cat-file stopped in {self.repo_path}") from None
        line = out.readline()
        if not line.endswith(b"\n"):
            raise self._stopped(f"git cat-file stopped in {self.repo_path}")
        return line

    # -- public API ----------------------------------------------------------------

    def size(self, blob_id: str) -> int:
        """Size in bytes of a blob (raises BlobNotFound)."""
        _check_oid(blob_id)
        if self._mode == COMMANDS:
            self._drain()
            line = self._ask(self._batch(), b"info " + blob_id.encode())
        else:
            if self._check is None:
                self._check = _spawn(self.repo_path, "--batch-check")
            line = self._ask(self._check, blob_id.encode())
        parts = line.split()
        if len(parts) != 3 or parts[1] != b"blob":
            raise BlobNotFound(f"blob {blob_id} is not in the cache")
        return int(parts[2])

    def iter_bytes(self, blob_id: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The blob's bytes in chunks of at most `chunk_size` (raises BlobNotFound at once).

        The header is read eagerly, so a missing blob fails here rather than on
        the first `next()`.
        """
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        self._request(blob_id)
        return self._chunks(self._serial, chunk_size)

    def _chunks(self, serial: int, chunk_size: int) -> Iterator[bytes]:
        assert self._proc is not None
        _, out = self._pipes(self._proc)
        while True:
            if serial != self._serial:
                raise RuntimeError("a BlobReader iterator was used after a newer request")
            if self._remaining <= 0:
                break
            piece = out.read(min(chunk_size, self._remaining))
            if not piece:
                raise self._stopped("git cat-file ended in the middle of a blob")
            self._remaining -= len(piece)
            yield piece
        self._drain()  # the trailing LF

    def read(self, blob_id: str) -> bytes:
        """The whole blob (for small files; use `iter_bytes` for large ones)."""
        size = self._request(blob_id)
        assert self._proc is not None
        _, out = self._pipes(self._proc)
        data = out.read(size)
        if len(data) != size:
            raise self._stopped("git cat-file ended in the middle of a blob")
        self._remaining = 0
        self._drain()
        return data


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What `git cat-file --batch-check` says about one name."""

    oid: str
    kind: str  # blob, tree, commit, tag
    size: int


def _parse_check(line: bytes) -> ObjectInfo | None:
    parts = line.split()
    if len(parts) == 3 and is_object_id(parts[0].decode()):
        return ObjectInfo(parts[0].decode(), parts[1].decode(), int(parts[2]))
    return None  # "<name> missing" / "ambiguous"


def _check_names(names: Sequence[str]) -> None:
    for name in names:
        if "\n" in name or not name:
            raise ValueError(f"not a usable object name: {name[:80]!r}")


class ObjectChecker:
    """One long-lived `git cat-file --batch-check` for many lookups during one sync.

    Starting git costs milliseconds; a sync asks several small questions (is the
    commit here, the previous one, the ignore file, the sizes of changed blobs), so
    one process answers them all (and, left open when it is done, those of the next
    checker of the cache: `IDLE`). git re-scans its packs on a miss, so objects
    fetched after the process started are found too. Not thread-safe.
    """

    _BATCH = 500  # names written before reading answers, so neither pipe fills up

    def __init__(self, repo_path: Path | str) -> None:
        self.repo_path = Path(repo_path)
        self._proc: subprocess.Popen[bytes] | None = None
        self._asking = False  # a round's answers are not all read
        self._mode = COMMANDS if commands_supported() else "--batch-check"

    def __enter__(self) -> ObjectChecker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Done: leave the git process for the next checker of the cache (a later lookup
        here takes one again)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if self._asking:
                stop_process(proc)
            else:
                IDLE.give(self.repo_path, self._mode, proc)

    def discard(self) -> None:
        """Stop the git process: it read a cache that is being thrown away."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc)

    def check(self, names: Sequence[str]) -> list[ObjectInfo | None]:
        """Answers in the order asked; None where a name resolves to nothing."""
        _check_names(names)
        answers: list[ObjectInfo | None] = []
        for start in range(0, len(names), self._BATCH):
            answers.extend(self._round(names[start : start + self._BATCH]))
        return answers

    def _round(self, names: Sequence[str]) -> list[ObjectInfo | None]:
        if self._proc is None:
            if not (self.repo_path / "objects").is_dir():
                raise OSError(f"{self.repo_path} is not a git cache")
            self._proc = _spawn(self.repo_path, self._mode)
        assert self._proc.stdin is not None and self._proc.stdout is not None
        command = "info " if self._mode == COMMANDS else ""
        self._asking = True
        try:
            self._proc.stdin.write("".join(f"{command}{name}\n" for name in names).encode())
            self._proc.stdin.flush()
            lines = [self._proc.stdout.readline() for _ in names]
        except BrokenPipeError:
            self.discard()
            raise OSError(f"git cat-file --batch-check stopped in {self.repo_path}") from None
        if any(not line.endswith(b"\n") for line in lines):
            self.discard()
            raise OSError(f"git cat-file --batch-check stopped in {self.repo_path}")
        self._asking = False
        return [_parse_check(line) for line in lines]


def batch_check(repo_path: Path | str, names: Sequence[str]) -> list[ObjectInfo | None]:
    """Look up many object names (ids, `X^{commit}`, `X:path`) in one git process.

    Answers come in the order asked; None where the name resolves to nothing.
    One process for several questions keeps a sync's fixed cost low.
    """
    if not names:
        return []
    _check_names(names)
    proc = subprocess.run(
        ["git", "-C", str(repo_path), "cat-file", "--batch-check"],
        input=("\n".join(names) + "\n").encode(),
        capture_output=True,
        check=False,
        env=_git_env(),
    )
    if proc.returncode != 0:
        raise OSError(
            f"git cat-file --batch-check failed in {repo_path}: "
            + proc.stderr.decode(errors="replace").strip()[:300]
        )
    return [_parse_check(line) for line in proc.stdout.split(b"\n")[: len(names)]]


def blob_sizes(
    repo_path: Path | str, blob_ids: Iterable[str], checker: ObjectChecker | None = None
) -> dict[str, int]:
    """Sizes of many blobs in one `git cat-file --batch-check` (missing ones are left out)."""
    ids = sorted(set(blob_ids))
    for oid in ids:
        _check_oid(oid)
    answers = checker.check(ids) if checker is not None else batch_check(repo_path, ids)
    sizes: dict[str, int] = {}
    for oid, info in zip(ids, answers, strict=True):
        if info is not None and info.kind == "blob":
            sizes[oid] = info.size
    return sizes
