"""Every webhook body Treecast sends, built in one place (pure, compact JSON).

Field names and key order follow Docora's payloads so a receiver written for
Docora only needs the new signature check (see docs/webhooks.md).
"""

from __future__ import annotations

import codecs
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from models.delivery import BreakerInfo


class Event:
    """Webhook event names: also the endpoint path under the app's base URL."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    SYNC_FAILED = "sync_failed"
    SYNC_RECOVERED = "sync_recovered"
    SYNC_COMPLETED = "sync_completed"  # a commit fully delivered (apps that opted in)
    BATCH = "batch"  # several file events in one request (apps that opted in)


BASE64 = "base64"


@dataclass(frozen=True)
class RepositoryRef:
    """The `repository` object of every payload."""

    repository_id: str
    url: str
    owner: str
    name: str
    ref: str | None
    # Docora's shape (`github_url`, no `ref`) for apps on the docora signing scheme.
    docora: bool = False


@dataclass(frozen=True)
class ChunkPlan:
    """How one file goes on the wire: whole (`total == 1`, not chunked) or in chunks."""

    base64: bool  # content is base64 (binary, or any chunked file)
    chunked: bool
    total: int  # number of requests
    raw_chunk_bytes: int  # file bytes per chunk (a multiple of 3, so chunks decode alone)


def iso_utc(moment: datetime | None = None) -> str:
    """ISO-8601 UTC with milliseconds and a `Z`, like Docora's timestamps."""
    moment = datetime.now(UTC) if moment is None else moment
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def to_json(payload: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON (the exact bytes that are signed and sent)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def is_text(data: bytes) -> bool:
    """A file is text when it is valid UTF-8 without NUL bytes (so it round-trips exactly)."""
    if b"\0" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class ContentProbe:
    """Streams a file once to learn its SHA-256, size and whether it is text."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._text = True
        self.size = 0

    def update(self, piece: bytes) -> None:
        """Feed the next bytes of the file."""
        self._hash.update(piece)
        self.size += len(piece)
        if self._text:
            if b"\0" in piece:
                self._text = False
            else:
                try:
                    self._decoder.decode(piece)
                except UnicodeDecodeError:
                    self._text = False

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the bytes fed so far."""
        return self._hash.hexdigest()

    def finish_is_text(self) -> bool:
        """True when the whole file was valid UTF-8 without NUL (call after the last piece)."""
        if not self._text:
            return False
        try:
            self._decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            self._text = False
        return self._text


def base64_length(size: int) -> int:
    """Characters of padded base64 for `size` bytes."""
    return 4 * ((size + 2) // 3)


def plan_chunks(size: int, text: bool, threshold: int, chunk_size: int) -> ChunkPlan:
    """Decide whole vs chunked from the encoded size.

    Text is sent as-is (its encoded size is its UTF-8 size); binary as base64. A
    file whose encoded content is above `threshold` goes in `chunk_size`-character
    base64 chunks, text included, so slicing never splits a UTF-8 sequence.
    """
    raw_chunk = (chunk_size // 4) * 3
    encoded = size if text else base64_length(size)
    if encoded <= threshold:
        return ChunkPlan(base64=not text, chunked=False, total=1, raw_chunk_bytes=raw_chunk)
    total = max(1, -(-size // raw_chunk))
    return ChunkPlan(base64=True, chunked=True, total=total, raw_chunk_bytes=raw_chunk)


def chunk_transfer_id(digest: bytes) -> str:
    """A UUID-shaped `file.chunk.id`, stable across retries of the same file send."""
    return str(uuid.UUID(bytes=digest[:16], version=5))


def repository_object(repo: RepositoryRef) -> dict[str, Any]:
    """The `repository` object shared by every event."""
    if repo.docora:
        return {
            "repository_id": repo.repository_id,
            "github_url": repo.url,
            "owner": repo.owner,
            "name": repo.name,
        }
    return {
        "repository_id": repo.repository_id,
        "url": repo.url,
        "owner": repo.owner,
        "name": repo.name,
        "ref": repo.ref,
    }


def file_body(
    *,
    event: str,
    repo: RepositoryRef,
    path: str,
    sha: str,
    size: int,
    content: str,
    base64: bool,
    commit_sha: str | None,
    timestamp: str,
    previous_sha: str | None = None,
    chunk: tuple[str, int, int] | None = None,
) -> bytes:
    """A `create` or `update` body (one chunk of it when `chunk` = (id, index, total))."""
    file: dict[str, Any] = {"path": path, "sha": sha, "size": size, "content": content}
    if base64:
        file["content_encoding"] = BASE64
    if chunk is not None:
        file["chunk"] = {"id": chunk[0], "index": chunk[1], "total": chunk[2]}
    payload: dict[str, Any] = {"repository": repository_object(repo), "file": file}
    if event == Event.UPDATE:
        payload["previous_sha"] = previous_sha
    payload["commit_sha"] = commit_sha
    payload["timestamp"] = timestamp
    return to_json(payload)


def delete_body(
    *, repo: RepositoryRef, path: str, sha: str | None, commit_sha: str | None, timestamp: str
) -> bytes:
    """A `delete` body: the path and the SHA-256 the app last acknowledged."""
    return to_json(
        {
            "repository": repository_object(repo),
            "file": {"path": path, "sha": sha},
            "commit_sha": commit_sha,
            "timestamp": timestamp,
        }
    )


# What a `/batch` body adds around its events: `{"events":[` ... `]}`.
BATCH_OVERHEAD = len(b'{"events":[]}')


def batch_event(event: str, body: bytes) -> bytes:
    """One element of a batch's `events`: the single request's body (`file_body` or
    `delete_body`, byte for byte) with `"event"` as its first key."""
    assert body[:1] == b"{" and event in (Event.CREATE, Event.UPDATE, Event.DELETE)
    return b'{"event":"' + event.encode() + b'",' + body[1:]


def batch_body(events: list[bytes]) -> bytes:
    """A `/batch` body: `{"events":[...]}`, the `batch_event`s in delivery order."""
    return b'{"events":[' + b",".join(events) + b"]}"


def sync_failed_body(
    *,
    repo: RepositoryRef,
    error_type: str | None,
    error_message: str | None,
    breaker: BreakerInfo,
    timestamp: str,
) -> bytes:
    """A `sync_failed` body (the breaker opened or re-opened); the message must be redacted."""
    return to_json(
        {
            "event": Event.SYNC_FAILED,
            "repository": repository_object(repo),
            "error": {"type": error_type or "GitError", "message": error_message or ""},
            "circuit_breaker": {
                "status": breaker.status,
                "consecutive_failures": breaker.consecutive_failures,
                "threshold": breaker.threshold,
                "cooldown_until": breaker.cooldown_until,
            },
            "timestamp": timestamp,
        }
    )


def sync_recovered_body(
    *, repo: RepositoryRef, commit_sha: str | None, breaker: BreakerInfo, timestamp: str
) -> bytes:
    """A `sync_recovered` body (the breaker closed after a successful sync)."""
    return to_json(
        {
            "event": Event.SYNC_RECOVERED,
            "repository": repository_object(repo),
            "commit_sha": commit_sha,
            "circuit_breaker": {
                "status": "closed",
                "opened_at": breaker.opened_at,
                "failed_syncs": breaker.failed_syncs,
            },
            "timestamp": timestamp,
        }
    )


def sync_completed_body(
    *,
    repo: RepositoryRef,
    commit_sha: str | None,
    object_format: str,
    tree_digest: str | None,
    files: int | None,
    timestamp: str,
) -> bytes:
    """A `sync_completed` body: every file of `commit_sha` the app receives is acknowledged,
    and `tree_digest` is what its copy should hash to (None: not computable for the watch)."""
    return to_json(
        {
            "event": Event.SYNC_COMPLETED,
            "repository": repository_object(repo),
            "commit_sha": commit_sha,
            "object_format": object_format,
            "tree_digest": tree_digest,
            "files": files,
            "timestamp": timestamp,
        }
    )


# --- Docora's variants (apps on the docora signing scheme) -----------------------------


def plan_chunks_docora(size: int, text: bool, threshold: int, chunk_size: int) -> ChunkPlan:
    """Docora's rule: only binary files strictly larger than `threshold` bytes are chunked
    (text never is), in `chunk_size`-character base64 slices."""
    raw_chunk = (chunk_size // 4) * 3
    if text or size <= threshold:
        return ChunkPlan(base64=not text, chunked=False, total=1, raw_chunk_bytes=raw_chunk)
    return ChunkPlan(
        base64=True, chunked=True, total=max(1, -(-size // raw_chunk)), raw_chunk_bytes=raw_chunk
    )


def docora_sync_failed_body(
    *,
    repo: RepositoryRef,
    error_message: str | None,
    breaker: BreakerInfo,
    retry_count: int,
    timestamp: str,
) -> bytes:
    """Docora's `sync_failed` body: `error.type` is always `git_failure`, and the recipient's
    own `retry_count` follows the breaker (key order as Docora emits it)."""
    return to_json(
        {
            "event": Event.SYNC_FAILED,
            "repository": repository_object(repo),
            "error": {"type": "git_failure", "message": error_message or ""},
            "circuit_breaker": {
                "status": "open",
                "consecutive_failures": breaker.consecutive_failures,
                "threshold": breaker.threshold,
                "cooldown_until": js_iso(breaker.cooldown_until),
            },
            "retry_count": retry_count,
            "timestamp": js_iso(timestamp),
        }
    )


def js_iso(value: str | None) -> str | None:
    """An ISO-8601 time as Docora wrote them (JavaScript's `toISOString`: UTC, milliseconds,
    `Z`); a value that does not parse is kept as it is."""
    if not value:
        return value
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return iso_utc(moment)
