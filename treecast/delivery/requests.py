"""The requests of one delivery run, built one at a time from its changes.

Each change is one request (a chunked file several); for an app that opted in,
consecutive non-chunked events go together in `/batch` requests. Webhook ids are
stable across retries (`signing.webhook_id` of the app, repository, ledger generation
and the change), so anything re-sent is a duplicate the receiver can drop.

File bytes are streamed from git: a file above the chunk threshold is read twice (once
to hash and classify it, once to send it), one chunk at a time.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, replace

from models.changes import ChangeKind, FileChange
from models.delivery import ChunkResume
from treecast.config import Settings
from treecast.delivery.contents import ContentReader
from treecast.delivery.target import AppTarget
from treecast.webhooks import payloads
from treecast.webhooks.payloads import ChunkPlan, ContentProbe, Event
from treecast.webhooks.sender import WebhookSender
from treecast.webhooks.signing import SigningScheme, stable_digest, webhook_id

_READ_PIECE = 1 << 20  # bytes per read while hashing a large blob

# One path a request moves in the ledger: (event, path, (blob_id, sha256) or None, forget).
Entry = tuple[str, str, tuple[str, str] | None, bool]


@dataclass(slots=True)
class Request:
    """One request, built and signed-to-be: what to POST and what its 2xx records."""

    event: str  # the endpoint: create, update, delete or batch
    msg_id: str
    body: bytes
    what: str  # for errors and logs
    path: str | None  # the delivery log's path (None for a batch)
    entries: list[Entry]  # empty for a chunk before the last
    chunk: ChunkResume | None = None  # a chunk: its position, reported while on the wire
    restart: ChunkResume | None = None  # where to restart if the app refuses this chunk
    clears_resume: bool = False  # the first chunk sent of a chunked file
    headers: dict[str, str] | None = None  # signed when it was built
    signed_at: float = 0.0  # time.monotonic() of the signature


def _exact_pieces(pieces: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Re-cut a byte stream into pieces of exactly `size` bytes (the last may be shorter)."""
    buffer = bytearray()
    for piece in pieces:
        buffer += piece
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)


class RequestBuilder:
    """Builds the requests that bring one app to one commit of one repository."""

    def __init__(self, settings: Settings, target: AppTarget, commit: str | None) -> None:
        self.settings = settings
        self.target = target
        self.commit = commit

    def requests(
        self, changes: list[FileChange], reader: ContentReader | None, resume: ChunkResume | None
    ) -> Generator[Request, None, None]:
        """Every request of the run, in order, built one at a time as they are pulled.

        Without batching each change is one request (a chunked file several). For an app
        that opted in, consecutive non-chunked events go together in `/batch` requests
        of at most `batch_max_files` events and `batch_max_bytes` bytes (a single event
        larger than that goes as a batch of one); a chunked file ends the batch before it
        and goes alone, chunk by chunk, as for everyone. `resume` is where a previous try
        left a chunked file; only the first chunked file may use it.
        """
        batching = self.target.batch
        max_files = self.settings.batch_max_files
        max_bytes = self.settings.batch_max_bytes - payloads.BATCH_OVERHEAD
        events: list[bytes] = []
        entries: list[Entry] = []
        ids: list[str] = []
        size = 0
        for change in changes:
            if change.kind == ChangeKind.DELETE:
                single = self._delete(change)
            else:
                assert reader is not None
                built = self._file(reader, change, resume)
                if not isinstance(built, Request):
                    resume = None
                    if events:
                        yield self._batch(events, entries, ids)
                        events, entries, ids, size = [], [], [], 0
                    yield from built
                    continue
                single = built
            if not batching:
                yield single
                continue
            event = payloads.batch_event(single.event, single.body)
            if events and (len(events) >= max_files or size + 1 + len(event) > max_bytes):
                yield self._batch(events, entries, ids)
                events, entries, ids, size = [], [], [], 0
            size += len(event) + (1 if events else 0)
            events.append(event)
            entries.extend(single.entries)
            ids.append(single.msg_id)
        if events:
            yield self._batch(events, entries, ids)

    def _id(self, *parts: str | int | None) -> str:
        t = self.target
        return webhook_id(t.app_id, t.repository.repository_id, t.generation, *parts)

    def _batch(self, events: list[bytes], entries: list[Entry], ids: list[str]) -> Request:
        """One `/batch` request; its id is derived from its events' own ids, so a retried
        batch (same events, same order) keeps its webhook-id."""
        first, last = entries[0][1], entries[-1][1]
        what = f"batch of {len(events)} ({first}" + (f" .. {last})" if len(events) > 1 else ")")
        return Request(
            event=Event.BATCH,
            msg_id=self._id(Event.BATCH, *ids),
            body=payloads.batch_body(events),
            what=what,
            path=None,
            entries=list(entries),
        )

    def _delete(self, change: FileChange) -> Request:
        body = payloads.delete_body(
            repo=self.target.repository,
            path=change.path,
            sha=change.previous_sha256,
            commit_sha=self.commit,
            timestamp=payloads.iso_utc(),
        )
        return Request(
            event=ChangeKind.DELETE,
            msg_id=self._id(ChangeKind.DELETE, change.path, change.previous_sha256),
            body=body,
            what=f"delete {change.path}",
            path=change.path,
            entries=[(ChangeKind.DELETE, change.path, None, True)],
        )

    def _file(
        self, reader: ContentReader, change: FileChange, resume: ChunkResume | None
    ) -> Request | Iterator[Request]:
        """A create/update as one request, or (a chunked file) the iterator of its chunks."""
        assert change.blob_id is not None
        event = ChangeKind.CREATE if change.kind == ChangeKind.CREATE else ChangeKind.UPDATE
        threshold = self.settings.chunk_threshold_bytes
        chunk_size = self.settings.chunk_size_bytes
        data: bytes | None = None
        if change.size <= threshold:
            # Small enough to hold: one read, hashed and classified in memory.
            data = reader.read(change.blob_id)
            sha = hashlib.sha256(data).hexdigest()
            size = len(data)
            text = payloads.is_text(data)
        else:
            probe = ContentProbe()
            for piece in reader.iter_bytes(change.blob_id, _READ_PIECE):
                probe.update(piece)
            sha, size, text = probe.sha256, probe.size, probe.finish_is_text()
        if self.target.scheme == SigningScheme.DOCORA:
            plan = payloads.plan_chunks_docora(size, text, threshold, chunk_size)
        else:
            plan = payloads.plan_chunks(size, text, threshold, chunk_size)
        timestamp = payloads.iso_utc()
        if not plan.chunked:
            if data is None:  # a large text file Docora's scheme sends whole
                data = reader.read(change.blob_id)
            content = data.decode("utf-8") if text else base64.b64encode(data).decode("ascii")
            body = payloads.file_body(
                event=event,
                repo=self.target.repository,
                path=change.path,
                sha=sha,
                size=size,
                content=content,
                base64=plan.base64,
                commit_sha=self.commit,
                timestamp=timestamp,
                previous_sha=change.previous_sha256,
            )
            return Request(
                event=event,
                msg_id=self._id(event, change.path, change.blob_id, change.previous_sha256),
                body=body,
                what=f"{event} {change.path}",
                path=change.path,
                entries=[(event, change.path, (change.blob_id, sha), False)],
            )
        if data is not None:
            pieces: Iterable[bytes] = (
                data[i : i + plan.raw_chunk_bytes] for i in range(0, size, plan.raw_chunk_bytes)
            )
        else:
            pieces = _exact_pieces(
                reader.iter_bytes(change.blob_id, plan.raw_chunk_bytes), plan.raw_chunk_bytes
            )
        return self._chunks(change, event, plan, pieces, sha, size, timestamp, resume)

    def _chunks(
        self,
        change: FileChange,
        event: ChangeKind,
        plan: ChunkPlan,
        pieces: Iterable[bytes],
        sha: str,
        size: int,
        timestamp: str,
        resume: ChunkResume | None,
    ) -> Iterator[Request]:
        assert change.blob_id is not None
        t = self.target
        transfer = payloads.chunk_transfer_id(
            stable_digest(
                t.app_id,
                t.repository.repository_id,
                t.generation,
                event,
                change.path,
                change.blob_id,
                change.previous_sha256,
            )
        )
        start = 0
        if (
            resume is not None
            and resume.path == change.path
            and resume.blob_id == change.blob_id
            and resume.generation == t.generation
            and 0 < resume.next_chunk < plan.total
        ):
            start = resume.next_chunk
        position = ChunkResume(change.path, change.blob_id, t.generation, 0)
        first = True
        for index, raw in enumerate(pieces):
            if index < start:
                continue  # acknowledged by an earlier attempt (its bytes are skipped, not sent)
            body = payloads.file_body(
                event=event,
                repo=t.repository,
                path=change.path,
                sha=sha,
                size=size,
                content=base64.b64encode(raw).decode("ascii"),
                base64=True,
                commit_sha=self.commit,
                timestamp=timestamp,
                previous_sha=change.previous_sha256,
                chunk=(transfer, index, plan.total),
            )
            last = index == plan.total - 1
            yield Request(
                event=event,
                msg_id=self._id(
                    event, change.path, change.blob_id, change.previous_sha256, "chunk", index
                ),
                body=body,
                what=f"{event} {change.path} chunk {index + 1}/{plan.total}",
                path=change.path,
                # The file counts, and enters the ledger, with its last chunk's 2xx.
                entries=[(event, change.path, (change.blob_id, sha), False)] if last else [],
                chunk=replace(position, next_chunk=index),
                restart=position if index == start and start > 0 else None,
                clears_resume=first,
            )
            first = False


class Ahead:
    """The requests of a run, each built while the answer to the one before is awaited.

    `build_next` is the transport's hook for "request N is written, its answer not yet
    read" (`WebhookSender.post(on_sent=...)`): it reads request N+1's file from git and
    builds and signs its body then, on the sending thread, in time that thread would
    spend waiting anyway. No second thread: handing each request over between two
    threads (a wake-up, the GIL changing hands) cost more on loopback than the building
    itself. At most one built request waits (memory: one in flight, one built). An
    error while building is raised by `next`, after the requests before it.
    """

    def __init__(self, requests: Generator[Request, None, None], sender: WebhookSender) -> None:
        self._requests = requests
        self._sender = sender
        # The request after the one `next` returned, once built (or the error building it).
        self._pending: tuple[Request | None, Exception | None] | None = None
        self._exhausted = False

    def __enter__(self) -> Ahead:
        return self

    def __exit__(self, *exc: object) -> None:
        self._requests.close()

    def build_next(self) -> None:
        """Build the request after the one `next` returned, unless it is built already."""
        if self._pending is not None:
            return
        if self._exhausted:
            self._pending = (None, None)
            return
        try:
            request = next(self._requests, None)
            if request is not None:
                request.headers = self._sender.sign(request.event, request.msg_id, request.body)
                request.signed_at = time.monotonic()
        except Exception as error:  # raised by `next`, once the request in flight is done
            self._exhausted = True
            self._pending = (None, error)
            return
        self._exhausted = request is None
        self._pending = (request, None)

    def next(self) -> Request | None:
        """The next request (None after the last), built now unless it was built ahead."""
        self.build_next()
        assert self._pending is not None
        (request, error), self._pending = self._pending, None
        if error is not None:
            raise error
        return request
