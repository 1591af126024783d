"""An example Treecast receiver that mirrors a repository into a folder.

It shows what a receiver must do (see docs/webhooks.md):

* verify every request with the `standardwebhooks` package (bad signatures and
  timestamps more than 5 minutes off get 401);
* deduplicate by `webhook-id` (a retried message is acknowledged, not re-applied);
* reassemble chunked files in order and check each file's SHA-256;
* apply a `/batch` (apps with batch delivery on) event by event, answering 2xx only
  when every event applied;
* write files on create/update and remove them on delete, refusing any path that
  would escape the mirror folder or that a file system could take for `.git`
  (`.git/hooks/post-checkout`, `.GIT/config`, `git~1`, `.g\u200cit`: git's own
  rules, the same as `treecast.paths`, copied here so this file stays standalone);
* refuse a missing, malformed or oversized `Content-Length` in one line
  (411/400/413), and bound the time one request may take to arrive, so a client
  that trickles bytes cannot hold a thread forever;
* log `sync_failed` / `sync_recovered` notices;
* on `sync_completed` (apps that opted in), compute the mirror's tree digest and compare it
  with the one delivered; on a mismatch, ask Treecast to reconcile (`--api-url` and
  `--api-token`): it sends the files that differ, and nothing else (docs/webhooks.md,
  "Verifying a mirror").

Run it:  python -m examples.receiver --port 8080 --secret whsec_... --mirror ./mirror \
             [--api-url http://127.0.0.1:8000 --api-token tc_...]

Tests import `Receiver`, start it on 127.0.0.1 port 0 in a thread, and use its
hooks (`fail_next`, `drop_next`, `delay_next`) to make deliveries fail on purpose.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

FILE_EVENTS = ("create", "update", "delete")
NOTICE_EVENTS = ("sync_failed", "sync_recovered", "sync_completed")
BATCH_EVENT = "batch"  # several file events in one request (apps that opted in)
MAX_BODY_BYTES = 64 * 1024 * 1024
READ_TIMEOUT_SECONDS = 30.0  # one recv (headers or body) may wait this long
REQUEST_DEADLINE_SECONDS = 120.0  # the whole request (line, headers, body) must arrive by then


@dataclass
class Received:
    """One verified request, as the receiver saw it."""

    event: str
    path: str | None
    webhook_id: str
    status: int  # what the receiver answered
    duplicate: bool = False
    chunk_index: int | None = None
    signatures: int = 0  # how many v1 signatures the header carried
    raw_path: str = ""  # the request path as sent
    # The body without `file.content` (kept small for assertions), and `headers`.
    payload: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Transfer:
    """A chunked file being reassembled into a temp file (never held whole in memory)."""

    path: str
    sha: str
    size: int
    total: int
    temp: Path
    next_index: int = 0
    hasher: Any = field(default_factory=hashlib.sha256)


@dataclass
class _Fault:
    """A planned failure for the next `count` requests."""

    count: int
    status: int | None = None  # None: drop the connection without answering
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0
    event: str | None = None  # only requests for this event (None: any)
    where: Callable[[Received], bool] | None = None  # only requests this accepts


def _without_content(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        return {}
    small = dict(payload)
    if isinstance(small.get("file"), dict):
        small["file"] = {k: v for k, v in small["file"].items() if k != "content"}
    return small


class MirrorError(Exception):
    """A request the mirror refuses; `status` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# -- paths a receiver must never write (a copy of treecast/paths.py: keep them equal) -------

_HFS_IGNORABLE = frozenset(
    "\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    "\u206a\u206b\u206c\u206d\u206e\u206f\ufeff"
)
_HFS_STRIP = {ord(c): None for c in _HFS_IGNORABLE}
_NTFS_DOTGIT = re.compile(r"(?:\.git|git~1)[. ]*(?::.*)?", re.IGNORECASE | re.DOTALL)
_DRIVE = re.compile(r"[A-Za-z]:")


def unsafe_path_reason(path: str) -> str | None:
    """Why `path` must not be written (one line), or None when it is safe.

    git's verify_path rules (`.git` in any case, its HFS+ and NTFS spellings),
    `..`, `.`, empty components, absolute paths, NUL, and the Windows forms
    (`..\\`, `C:`). A copy of `treecast.paths.unsafe_path_reason`.
    """
    if not path:
        return "the path is empty"
    if "\0" in path:
        return "the path contains a NUL byte"
    if path.startswith(("/", "\\")):
        return "the path is absolute"
    if _DRIVE.match(path):
        return "the path starts with a Windows drive"
    for component in path.split("/"):
        if component == "":
            return "the path has an empty component (//, or a trailing /)"
        if component in (".", ".."):
            return f"the path has a {component!r} component"
        for part in component.split("\\"):
            if part in (".", ".."):
                return f"the path has a {part!r} component (Windows separates at \\)"
            if "." in part and not part.strip(". "):
                return f"the path has a {part!r} component (Windows drops trailing dots and spaces)"
            if part.lower() == ".git":
                return "the path has a .git component"
            if part.translate(_HFS_STRIP).lower() == ".git":
                return "the path has a component macOS (HFS+) reads as .git"
            if _NTFS_DOTGIT.fullmatch(part) is not None:
                return "the path has a component Windows (NTFS) reads as .git"
    return None


def safe_target(root: Path, path: str) -> Path:
    """The file under `root` for a repository path; refuses unsafe or escaping paths."""
    reason = unsafe_path_reason(path) if isinstance(path, str) else "the path is not a string"
    if reason is not None:
        raise MirrorError(400, f"refusing path {path!r}: {reason}")
    target = (root / PurePosixPath(path)).resolve()
    if not target.is_relative_to(root.resolve()):
        raise MirrorError(400, f"refusing path {path!r}: it escapes the mirror")
    return target


# -- verifying the mirror (docs/webhooks.md, "Verifying a mirror") ---------------------------


def git_blob_id(path: Path, object_format: str = "sha1") -> str:
    """git's id for the file's bytes (`git hash-object`), read in pieces."""
    digest = hashlib.new(object_format, b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as handle:
        while piece := handle.read(1 << 16):
            digest.update(piece)
    return digest.hexdigest()


def mirror_files(root: Path, object_format: str = "sha1") -> Iterator[tuple[str, str]]:
    """(path, blob id) of every file under `root`, sorted by the UTF-8 bytes of the path."""
    paths = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    for path in paths:  # str order is code point order, which is UTF-8 byte order
        yield path, git_blob_id(root / path, object_format)


def tree_digest(files: Iterable[tuple[str, str]]) -> str:
    """SHA-256 over `path` NUL `blob id` LF of each file, in sorted order."""
    digest = hashlib.sha256()
    for path, blob_id in files:
        digest.update(path.encode() + b"\0" + blob_id.encode() + b"\n")
    return digest.hexdigest()


def content_length(values: list[str] | None) -> tuple[int, int | None, str]:
    """(length, error status, reason) from a request's Content-Length header(s).

    Missing: 411. Not one plain decimal number (RFC 9110: digits only, so no sign,
    no spaces), or several different values: 400. Over MAX_BODY_BYTES: 413.
    """
    if not values:
        return 0, 411, "Content-Length is required"
    distinct = {value.strip() for value in values}
    if len(distinct) != 1:
        return 0, 400, "conflicting Content-Length headers"
    value = distinct.pop()
    if not value.isascii() or not value.isdigit() or len(value) > 20:
        return 0, 400, f"Content-Length {value[:30]!r} is not a number of bytes"
    length = int(value)
    if length > MAX_BODY_BYTES:
        return 0, 413, f"the body is larger than {MAX_BODY_BYTES} bytes"
    return length, None, ""


class Receiver:
    """A Standard Webhooks receiver that mirrors files into `mirror`; start/stop in a thread."""

    def __init__(
        self,
        secrets: Iterable[str],
        mirror: Path | str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        quiet: bool = True,
        read_timeout: float = READ_TIMEOUT_SECONDS,
        request_deadline: float = REQUEST_DEADLINE_SECONDS,
        api_url: str | None = None,
        api_token: str | None = None,
    ) -> None:
        # Where to ask for a reconcile when the mirror's digest does not match (optional).
        self.api_url = api_url.rstrip("/") if api_url else None
        self.api_token = api_token
        # (commit, digest delivered, digest of the mirror) of every check, and the answers
        # of the reconciles asked for.
        self.digest_checks: list[tuple[str | None, str | None, str]] = []
        self.reconciles: list[dict[str, Any]] = []
        self._last_completed: dict[str, Any] | None = None
        self._checking = threading.Lock()
        self.read_timeout = read_timeout
        self.request_deadline = request_deadline
        self._verifiers = [Webhook(s) for s in secrets]
        if not self._verifiers:
            raise ValueError("the receiver needs at least one whsec_ secret")
        self.mirror = Path(mirror)
        self.mirror.mkdir(parents=True, exist_ok=True)
        self._staging = Path(tempfile.mkdtemp(prefix="treecast-receiver-"))
        self.quiet = quiet
        self.requests: list[Received] = []
        self.notices: list[dict[str, Any]] = []
        self.rejected: list[tuple[int, str]] = []  # (status, reason) of unverified requests
        self._seen: set[str] = set()
        self._transfers: dict[str, _Transfer] = {}
        self._faults: list[_Fault] = []
        # One request at a time through the mirror: Treecast sends sequentially per
        # app anyway, and this keeps dedup and reassembly simple.
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The base URL to register for an app."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Receiver:
        """Serve in a background thread (polling for `stop` every 50 ms, not the default
        half second: tests start and stop hundreds of receivers)."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the socket and remove the staging folder."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        shutil.rmtree(self._staging, ignore_errors=True)

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted (the command line)."""
        try:
            self._server.serve_forever()
        finally:
            shutil.rmtree(self._staging, ignore_errors=True)

    # -- test hooks ----------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        count: int = 1,
        *,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        event: str | None = None,
        where: Callable[[Received], bool] | None = None,
    ) -> None:
        """Answer the next `count` verified requests (of `event`, matching `where`) with `status`."""
        with self._lock:
            self._faults.append(
                _Fault(
                    count=count,
                    status=status,
                    headers=headers or {},
                    body=body,
                    event=event,
                    where=where,
                )
            )

    def drop_next(
        self,
        count: int = 1,
        *,
        event: str | None = None,
        where: Callable[[Received], bool] | None = None,
    ) -> None:
        """Close the connection without answering the next `count` requests."""
        with self._lock:
            self._faults.append(_Fault(count=count, status=None, event=event, where=where))

    def delay_next(
        self,
        seconds: float,
        count: int = 1,
        *,
        status: int = 200,
        event: str | None = None,
        where: Callable[[Received], bool] | None = None,
    ) -> None:
        """Sleep before answering the next `count` requests (of `event`, matching `where`).

        To provoke timeouts. The delayed requests are not applied to the mirror.
        """
        with self._lock:
            self._faults.append(
                _Fault(count=count, status=status, delay=seconds, event=event, where=where)
            )

    def clear_faults(self) -> None:
        """Forget planned failures."""
        with self._lock:
            self._faults.clear()

    def files(self) -> dict[str, bytes]:
        """Every file in the mirror with its bytes (relative POSIX paths)."""
        root = self.mirror
        return {
            p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    def file_requests(self, *, answered_ok: bool = True) -> list[Received]:
        """Verified file requests (by default those answered with 2xx, duplicates included)."""
        return [
            r
            for r in self.requests
            if r.event in FILE_EVENTS and (not answered_ok or 200 <= r.status < 300)
        ]

    # -- verifying the mirror ----------------------------------------------------------

    def check_mirror(self) -> bool:
        """Compare the mirror's digest with the last `sync_completed`; on a mismatch ask for
        a reconcile (with `api_url` and `api_token`). True when they match."""
        with self._checking:
            done = self._last_completed
            if done is None or not done.get("tree_digest"):
                return True  # nothing to compare with (an lfs watch has no digest)
            object_format = str(done.get("object_format") or "sha1")
            with self._lock:  # no file is written meanwhile
                mine = tree_digest(mirror_files(self.mirror, object_format))
            self.digest_checks.append((done.get("commit_sha"), done["tree_digest"], mine))
            if mine == done["tree_digest"]:
                return True
            repository_id = str(done.get("repository", {}).get("repository_id", ""))
            print(f"mirror of {repository_id} differs from {done.get('commit_sha')}", flush=True)
            if self.api_url and self.api_token and repository_id:
                self.reconciles.append(self.reconcile(repository_id, object_format))
            return False

    def held_lines(self, object_format: str = "sha1") -> Iterator[bytes]:
        """What the mirror holds as reconcile lines (JSON Lines, sorted by path)."""
        for path, blob_id in mirror_files(self.mirror, object_format):
            line = {"path": path, "blob_id": blob_id}
            yield json.dumps(line, ensure_ascii=False).encode() + b"\n"

    def reconcile(self, repository_id: str, object_format: str = "sha1") -> dict[str, Any]:
        """POST what the mirror holds to Treecast's reconcile; its answer (or the error)."""
        with self._lock:
            body = b"".join(self.held_lines(object_format))
        request = urllib.request.Request(
            f"{self.api_url}/api/repositories/{repository_id}/reconcile",
            data=body,
            method="POST",
            headers={
                "Authorization": f"Bearer {self.api_token}",
                "Content-Type": "application/x-ndjson",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                result: dict[str, Any] = json.loads(answer.read())
                return result
        except urllib.error.HTTPError as error:
            return {"error": error.read().decode(errors="replace"), "status": error.code}
        except OSError as error:
            return {"error": str(error)}

    # -- request handling --------------------------------------------------------------

    def _take_fault(self, record: Received) -> _Fault | None:
        for fault in self._faults:
            if (fault.event is None or fault.event == record.event) and (
                fault.where is None or fault.where(record)
            ):
                fault.count -= 1
                if fault.count <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _verify(self, body: bytes, headers: dict[str, str]) -> Any:
        last: Exception | None = None
        for verifier in self._verifiers:
            try:
                return verifier.verify(body, headers)
            except WebhookVerificationError as exc:
                last = exc
        raise WebhookVerificationError(str(last))

    def handle(
        self, event: str, body: bytes, headers: dict[str, str], raw_path: str = ""
    ) -> tuple[int | None, dict[str, str], bytes, float]:
        """Process one request; returns (status or None to drop, headers, body, delay)."""
        if event not in FILE_EVENTS + NOTICE_EVENTS + (BATCH_EVENT,):
            return 404, {}, b'{"error":"unknown endpoint"}', 0.0
        try:
            payload = self._verify(body, headers)
        except (WebhookVerificationError, ValueError, UnicodeDecodeError) as exc:
            self.rejected.append((401, str(exc)))
            return 401, {}, b'{"error":"invalid signature"}', 0.0
        if not isinstance(payload, dict):
            return 400, {}, b'{"error":"the body is not a JSON object"}', 0.0
        msg_id = headers.get("webhook-id", "")
        file = payload.get("file") or {}
        chunk = file.get("chunk") or {}
        record = Received(
            event=event,
            path=file.get("path"),
            webhook_id=msg_id,
            status=200,
            chunk_index=chunk.get("index"),
            signatures=len(headers.get("webhook-signature", "").split()),
            raw_path=raw_path,
            payload=_without_content(payload),
            headers=headers,
        )
        with self._lock:
            self.requests.append(record)
            fault = self._take_fault(record)
            if fault is not None:
                record.status = fault.status or 0
                if fault.delay:
                    return fault.status, fault.headers, fault.body, fault.delay
                return fault.status, fault.headers, fault.body, 0.0
            if msg_id in self._seen:
                record.duplicate = True
                return 200, {}, b'{"ok":true,"duplicate":true}', 0.0
            try:
                if event == BATCH_EVENT:
                    self._apply_batch(payload, record)
                else:
                    self._apply(event, payload)
            except MirrorError as exc:
                record.status = exc.status
                return exc.status, {}, json.dumps({"error": str(exc)}).encode(), 0.0
            self._seen.add(msg_id)
        return 200, {}, b'{"ok":true}', 0.0

    def _apply_batch(self, payload: dict[str, Any], record: Received) -> None:
        """A `/batch`: apply each event in order as its own endpoint would; any refusal
        fails the whole request (Treecast then re-sends the batch whole, and applying
        an event twice leaves the same mirror)."""
        events = payload.get("events")
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            raise MirrorError(400, "a batch needs an events array of objects")
        record.payload = {"events": [_without_content(e) for e in events]}
        for item in events:
            name = item.get("event")
            if name not in FILE_EVENTS or not isinstance(item.get("file"), dict):
                raise MirrorError(400, f"a batch cannot carry event {name!r}")
            if "chunk" in item["file"]:
                raise MirrorError(400, "chunked files are never batched")
            self._apply(name, item)

    def _apply(self, event: str, payload: dict[str, Any]) -> None:
        if event == "sync_completed":
            self.notices.append(payload)
            self._last_completed = payload
            # After the answer: Treecast waits for it, and a reconcile sends files here.
            threading.Thread(target=self.check_mirror, daemon=True).start()
            return
        if event in NOTICE_EVENTS:
            self.notices.append(payload)
            repo = payload.get("repository", {})
            detail = payload.get("error", {}).get("message") or payload.get("commit_sha")
            print(f"{event} {repo.get('owner')}/{repo.get('name')}: {detail}", flush=True)
            return
        file = payload["file"]
        target = safe_target(self.mirror, file["path"])
        if event == "delete":
            if target.is_file():
                target.unlink()
                self._prune_dirs(target.parent)
            return
        chunk = file.get("chunk")
        if chunk is None:
            data = self._decode(file["content"], file.get("content_encoding"))
            if hashlib.sha256(data).hexdigest() != file["sha"] or len(data) != file["size"]:
                raise MirrorError(422, f"{file['path']}: content does not match its sha/size")
            self._write(target, data)
        else:
            self._chunk(target, file, chunk)
        if not self.quiet:
            print(f"{event} {file['path']} ({file['size']} bytes)", flush=True)

    @staticmethod
    def _decode(content: str, encoding: str | None) -> bytes:
        if encoding == "base64":
            try:
                return base64.b64decode(content, validate=True)
            except (binascii.Error, ValueError):
                raise MirrorError(422, "content is not valid base64") from None
        return content.encode("utf-8")

    def _chunk(self, target: Path, file: dict[str, Any], chunk: dict[str, Any]) -> None:
        transfer_id, index, total = str(chunk["id"]), int(chunk["index"]), int(chunk["total"])
        transfer = self._transfers.get(transfer_id)
        if index == 0:
            if transfer is not None:
                transfer.temp.unlink(missing_ok=True)
            fd, name = tempfile.mkstemp(dir=self._staging)
            os.close(fd)
            transfer = _Transfer(
                path=file["path"],
                sha=file["sha"],
                size=int(file["size"]),
                total=total,
                temp=Path(name),
            )
            self._transfers[transfer_id] = transfer
        if transfer is None or index != transfer.next_index:
            # A receiver that lost earlier chunks says so; Treecast then re-sends from 0.
            raise MirrorError(409, f"{file['path']}: chunk {index} arrived out of order")
        # Each chunk is whole base64 quanta, so it decodes on its own.
        data = self._decode(file["content"], file.get("content_encoding"))
        transfer.hasher.update(data)
        with transfer.temp.open("ab") as handle:
            handle.write(data)
        transfer.next_index += 1
        if transfer.next_index < transfer.total:
            return
        del self._transfers[transfer_id]
        size = transfer.temp.stat().st_size
        if transfer.hasher.hexdigest() != transfer.sha or size != transfer.size:
            transfer.temp.unlink(missing_ok=True)
            raise MirrorError(422, f"{file['path']}: reassembled content does not match its sha")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(transfer.temp, target)

    @staticmethod
    def _write(target: Path, data: bytes) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        # A short name: the target's own name may already be at the 255-byte limit.
        temp = target.with_name(f".treecast-{uuid.uuid4().hex}.tmp")
        temp.write_bytes(data)
        os.replace(temp, target)

    def _prune_dirs(self, folder: Path) -> None:
        root = self.mirror.resolve()
        while folder != root and folder.is_relative_to(root):
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as Treecast's client expects
            # Send each answer in one segment: with Nagle on, headers and body as two
            # small writes stall ~40 ms per request on the client's delayed ACK.
            disable_nagle_algorithm = True
            wbufsize = -1  # buffered; http.server flushes after each request

            def log_message(self, format: str, *args: Any) -> None:
                if not receiver.quiet:
                    super().log_message(format, *args)

            # Each recv waits at most this long (http.server then drops the connection).
            timeout = receiver.read_timeout

            def handle_one_request(self) -> None:
                # The whole request must arrive before the deadline: a per-recv timeout
                # alone lets a client send one byte every few seconds forever.
                self._deadline = threading.Timer(receiver.request_deadline, self._cut)
                self._deadline.daemon = True
                self._deadline.start()
                try:
                    super().handle_one_request()
                finally:
                    self._deadline.cancel()

            def _cut(self) -> None:
                self.close_connection = True
                with contextlib.suppress(OSError):  # already closed
                    self.connection.shutdown(socket.SHUT_RDWR)

            def do_POST(self) -> None:
                length, error, reason = content_length(self.headers.get_all("content-length"))
                if error is not None:
                    self.close_connection = True  # the body (if any) is not read
                    self._answer(error, {}, json.dumps({"error": reason}).encode())
                    return
                body = self.rfile.read(length)
                self._deadline.cancel()  # arrived: answering may take its time
                if len(body) < length:  # the client went away, or the deadline cut it
                    self.close_connection = True
                    return
                event = self.path.rstrip("/").rsplit("/", 1)[-1]
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, extra, answer, delay = receiver.handle(event, body, headers, self.path)
                if delay:
                    time.sleep(delay)
                if status is None:
                    self.close_connection = True
                    return
                self._answer(status, extra, answer)

            def _answer(self, status: int, extra: dict[str, str], answer: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(answer)

        return Handler


def main(argv: list[str] | None = None) -> int:
    """Command line: serve until Ctrl-C."""
    parser = argparse.ArgumentParser(description="Example Treecast webhook receiver")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--secret",
        action="append",
        default=[],
        help="whsec_ secret (repeat while rotating; default: $TREECAST_RECEIVER_SECRET)",
    )
    parser.add_argument("--mirror", default="./mirror", help="folder the repository is mirrored to")
    parser.add_argument("--verbose", action="store_true", help="print every file and request")
    parser.add_argument("--api-url", help="Treecast's API, to reconcile a mirror that differs")
    parser.add_argument(
        "--api-token", help="the app's tc_ token (default: $TREECAST_RECEIVER_API_TOKEN)"
    )
    args = parser.parse_args(argv)
    secrets = args.secret or [
        s for s in os.environ.get("TREECAST_RECEIVER_SECRET", "").split() if s
    ]
    if not secrets:
        print("receiver: pass --secret whsec_... (the app's webhook secret)", file=sys.stderr)
        return 2
    receiver = Receiver(
        secrets,
        args.mirror,
        host=args.host,
        port=args.port,
        quiet=not args.verbose,
        api_url=args.api_url,
        api_token=args.api_token or os.environ.get("TREECAST_RECEIVER_API_TOKEN"),
    )
    print(
        f"receiver: listening on http://{args.host}:{receiver.port}, mirroring into {args.mirror}"
    )
    # Ctrl-C and SIGTERM (`docker stop`) both end the loop, also when the parent left
    # SIGINT ignored (a shell's background job: Python then installs no Ctrl-C handler).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    try:
        receiver.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        receiver._server.server_close()
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
