"""Sending one app its file changes for one repository: the loop behind `deliver_changes`.

Changes come from `treecast.changes.compute_changes` (deletes, creates, updates,
each by path) and are sent one request at a time. After every 2xx the ledger row is
written in its own transaction, so a retried or restarted try recomputes the
changes, finds the acknowledged files already in the ledger and resumes after them.
A chunked file's position travels in the try's progress (`DeliveryProgress.chunk`),
so the app's next try resumes at the first unacknowledged chunk. Webhook ids are
stable across retries, so anything re-sent anyway is a duplicate the receiver can drop.

File bytes are streamed from git: a file above the chunk threshold is read twice
(once to hash and classify it, once to send it), one chunk at a time.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import Any

from temporalio.exceptions import ApplicationError

from models.changes import ChangeKind, FileChange
from models.delivery import (
    AppDelivery,
    ChunkResume,
    DeliverInput,
    DeliveryErrorType,
    DeliveryProgress,
    DeliveryStatus,
)
from models.tables import WatchStatus
from treecast import metrics
from treecast.changes import compute_changes
from treecast.config import Settings
from treecast.db import session_scope
from treecast.gitcache.objects import BlobReader
from treecast.gitcache.repository import RepositoryCache
from treecast.store.attempts import note_skipped_paths, prune_delivery_log, record_attempt
from treecast.store.ledger import LedgerWriter, WatchChanged
from treecast.store.repositories import load_access
from treecast.store.targets import AppTarget, load_target
from treecast.store.watches import finish_delivery, note_watch_failure, start_delivery
from treecast.webhooks import payloads
from treecast.webhooks.payloads import ChunkPlan, ContentProbe, Event
from treecast.webhooks.sender import WebhookSender, failure_error
from treecast.webhooks.signing import SigningScheme, redaction_terms, stable_digest, webhook_id
from treecast.webhooks.transport import PostOutcome

log = logging.getLogger(__name__)

HEARTBEAT_EVERY_SECONDS = 1.0  # between files; every chunk heartbeats regardless
RESIGN_AFTER_SECONDS = 60.0  # a request signed longer ago than this is signed again
PRUNE_EVERY_ATTEMPTS = 500
_READ_PIECE = 1 << 20  # bytes per read while hashing a large blob


class Gone(Exception):
    """The app answered 410: stop this run successfully with the watch disabled."""


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


# One path a request moves in the ledger: (event, path, (blob_id, sha256) or None, forget).
_Entry = tuple[str, str, tuple[str, str] | None, bool]


@dataclass(slots=True)
class _Send:
    """One request, built and signed-to-be: what to POST and what its 2xx records."""

    event: str  # the endpoint: create, update, delete or batch
    msg_id: str
    body: bytes
    what: str  # for errors and logs
    path: str | None  # the delivery log's path (None for a batch)
    entries: list[_Entry]  # empty for a chunk before the last
    chunk: ChunkResume | None = None  # a chunk: its position, reported while on the wire
    restart: ChunkResume | None = None  # where to restart if the app refuses this chunk
    clears_resume: bool = False  # the first chunk sent of a chunked file
    headers: dict[str, str] | None = None  # signed when it was built
    signed_at: float = 0.0  # time.monotonic() of the signature


class _Ahead:
    """The requests of a run, each built while the answer to the one before is awaited.

    `build_next` is the transport's hook for "request N is written, its answer not yet
    read" (`WebhookSender.post(on_sent=...)`): it reads request N+1's file from git and
    builds and signs its body then, on the sending thread, in time that thread would
    spend waiting anyway. No second thread: handing each request over between two
    threads (a wake-up, the GIL changing hands) cost more on loopback than the building
    itself. At most one built request waits (memory: one in flight, one built). An
    error while building is raised by `next`, after the requests before it.
    """

    def __init__(self, sends: Generator[_Send, None, None], sender: WebhookSender) -> None:
        self._sends = sends
        self._sender = sender
        # The request after the one `next` returned, once built (or the error building it).
        self._pending: tuple[_Send | None, Exception | None] | None = None
        self._exhausted = False

    def __enter__(self) -> _Ahead:
        return self

    def __exit__(self, *exc: object) -> None:
        self._sends.close()

    def build_next(self) -> None:
        """Build the request after the one `next` returned, unless it is built already."""
        if self._pending is not None:
            return
        if self._exhausted:
            self._pending = (None, None)
            return
        try:
            send = next(self._sends, None)
            if send is not None:
                send.headers = self._sender.sign(send.event, send.msg_id, send.body)
                send.signed_at = time.monotonic()
        except Exception as error:  # raised by `next`, once the request in flight is done
            self._exhausted = True
            self._pending = (None, error)
            return
        self._exhausted = send is None
        self._pending = (send, None)

    def next(self) -> _Send | None:
        """The next request (None after the last), built now unless it was built ahead."""
        self.build_next()
        assert self._pending is not None
        (send, error), self._pending = self._pending, None
        if error is not None:
            raise error
        return send


class FileDelivery:
    """One try at delivering one app its changes for one repository at one commit.

    `beat` is called with the latest progress whenever it is worth reporting (at most
    once a second between files, at every chunk); `progress` always holds the latest.
    """

    target: AppTarget  # loaded first thing in `run`
    ledger: LedgerWriter  # used on the run's own thread only

    def __init__(
        self,
        settings: Settings,
        input: DeliverInput,
        *,
        resume: ChunkResume | None,
        beat: Callable[[DeliveryProgress], None],
    ) -> None:
        self.settings = settings
        self.input = input
        self._beat_out = beat
        self.result = AppDelivery(app_id=input.app_id, status=DeliveryStatus.SYNCED)
        self.attempts_since_prune = 0
        self.last_beat = time.monotonic()
        self.done = 0
        self.total = 0
        # Where a previous try left a chunked file. It stays in the progress until the
        # first chunked file has used it.
        self.resume = resume
        self.progress = self._progress()  # the latest

    def secrets(self) -> list[str]:
        """The app's secrets in every form that could show up in text (none before loading)."""
        target = getattr(self, "target", None)
        if target is None:
            return []
        key = [target.client_auth_key] if target.client_auth_key else []
        return redaction_terms([*target.secrets, *key])

    def failure(self, message: str, **kwargs: Any) -> ApplicationError:
        """The try's error: its progress travels with it, counts as of this moment.

        The counts let the pass add up what this try did deliver; the chunk position
        (the one last reported) is where the app's next try resumes.
        """
        progress = replace(
            self.progress,
            created=self.result.created,
            updated=self.result.updated,
            deleted=self.result.deleted,
        )
        return ApplicationError(message, progress, **kwargs)

    # -- entry ----------------------------------------------------------------------

    def run(self) -> AppDelivery:
        """Deliver every change; returns synced, disabled (410 or already disabled) or removed.

        Raises an ApplicationError (a DeliveryErrorType) when a request is refused or fails.
        """
        app_id, repository_id = self.input.app_id, self.input.repository_id
        settings = self.settings
        with session_scope(settings.database_url) as session:
            target = load_target(settings, session, app_id, repository_id)
            if target is None:
                self.result.status = DeliveryStatus.REMOVED
                self.result.error_type = DeliveryErrorType.WATCH_MISSING
                return self.result
            if target.watch_status == WatchStatus.DISABLED:
                self.result.status = DeliveryStatus.DISABLED
                return self.result
            if not target.access_granted:  # refused meanwhile: not one more file
                self.result.status = DeliveryStatus.DISABLED
                self.result.error_type = DeliveryErrorType.ACCESS_REFUSED
                self.result.error = "the app's own access to the repository does not hold"
                return self.result
            start_delivery(session, app_id, repository_id)
            access = load_access(settings, session, repository_id)
        self.target = target
        cache = RepositoryCache(settings, repository_id)
        with session_scope(settings.database_url) as session, cache.reading():
            changes = compute_changes(session, cache, access, app_id, self.input.commit)
            if changes:
                note_skipped_paths(session, app_id, repository_id, self.input.commit)
        self.total = len(changes)
        self._beat(force=True)
        try:
            self._deliver_all(cache, changes)
        except Gone as gone:
            self.result.status = DeliveryStatus.DISABLED
            self.result.error_type = DeliveryErrorType.GONE
            self.result.error = str(gone)
            return self.result
        except WatchChanged as changed:
            # Unwatched, removed or redelivered meanwhile: stop sending; a redeliver's
            # own sync starts over with the fresh generation.
            log.info("delivery stopped: %s", changed)
            self.result.status = DeliveryStatus.REMOVED
            self.result.error_type = DeliveryErrorType.WATCH_MISSING
            self.result.error = str(changed)
            return self.result
        with session_scope(settings.database_url) as session:
            finish_delivery(session, app_id, repository_id, self.input.commit)
            prune_delivery_log(session, app_id, settings.delivery_log_keep)
        self.result.status = DeliveryStatus.SYNCED
        return self.result

    def _deliver_all(self, cache: RepositoryCache, changes: list[FileChange]) -> None:
        needs_git = any(c.kind != ChangeKind.DELETE for c in changes)
        with ExitStack() as stack:
            sender = stack.enter_context(
                WebhookSender(
                    self.settings,
                    self.target.base_url,
                    self.target.secrets,
                    timeout=self.settings.file_timeout_seconds,
                    scheme=self.target.scheme,
                    app_id=self.target.app_id,
                    client_auth_key=self.target.client_auth_key,
                )
            )
            self.ledger = LedgerWriter(
                self.settings.database_url,
                self.input.app_id,
                self.input.repository_id,
                self.target.generation,
            )
            stack.callback(self.ledger.close)
            reader = None
            if needs_git:
                if self.input.commit is None:
                    raise RuntimeError("changes to send but no commit to read them from")
                # compute_changes fetched the commit here if this worker lacked it.
                reader = stack.enter_context(cache.blobs())
            # While request N's answer is awaited, request N+1's file(s) are read from
            # git and its body built and signed (`_Ahead`). N+1 leaves only after N's 2xx
            # is committed to the ledger (`_finish`), so the ledger never runs ahead of
            # acknowledgements and a kill re-sends at most the one request on the wire.
            # At most two bodies are alive: the one in flight and the one built.
            # (Closed before the reader it uses.)
            ahead = stack.enter_context(_Ahead(self._sends(changes, reader), sender))
            while (send := ahead.next()) is not None:
                if send.clears_resume:
                    self.resume = None  # only the first chunked file after a restart resumes
                self._beat(chunk=send.chunk)
                # Signed when it was built, unless that was long ago (a slow answer before
                # it): receivers refuse timestamps more than 5 minutes off.
                fresh = time.monotonic() - send.signed_at < RESIGN_AFTER_SECONDS
                headers = send.headers if fresh else None
                # The next request is built once this one is written, while its answer
                # is awaited (the time spent building is not counted against its timeout).
                outcome = sender.post(
                    send.event,
                    send.msg_id,
                    send.body,
                    send.what,
                    headers=headers,
                    on_sent=ahead.build_next,
                )
                self._finish(send, outcome)

    def _finish(self, send: _Send, outcome: PostOutcome) -> None:
        """Record the answer to `send` (a 2xx: in the ledger) and count it; raise when it
        failed."""
        self._record(send, outcome)
        if outcome.ok:
            for kind, _path, _ledger, _forget in send.entries:
                if kind == ChangeKind.DELETE:
                    self.result.deleted += 1
                elif kind == ChangeKind.CREATE:
                    self.result.created += 1
                else:
                    self.result.updated += 1
                self.done += 1
        elif send.restart is not None:
            # The app refused the first chunk after resuming (it may have lost the
            # earlier ones): the next attempt sends the whole file again.
            self._beat(chunk=send.restart)
        self._check(outcome)

    # -- heartbeats -----------------------------------------------------------------

    def _progress(self, chunk: ChunkResume | None = None) -> DeliveryProgress:
        """Progress ("N of M files"), the files acknowledged so far, and a chunk position."""
        return DeliveryProgress(
            done=self.done,
            total=self.total,
            created=self.result.created,
            updated=self.result.updated,
            deleted=self.result.deleted,
            # An unused position is still the place to resume.
            chunk=chunk if chunk is not None else self.resume,
        )

    def _beat(self, *, force: bool = False, chunk: ChunkResume | None = None) -> None:
        # Always the latest, so a heartbeat pump never repeats a stale count.
        self.progress = self._progress(chunk)
        now = time.monotonic()
        if not force and chunk is None and now - self.last_beat < HEARTBEAT_EVERY_SECONDS:
            return
        self.last_beat = now
        self._beat_out(self.progress)

    # -- one message ----------------------------------------------------------------

    def _id(self, *parts: str | int | None) -> str:
        t: AppTarget = self.target
        return webhook_id(t.app_id, t.repository.repository_id, t.generation, *parts)

    def _record(self, send: _Send, outcome: PostOutcome) -> None:
        """Log the attempt and, on success, move the ledger, in one transaction."""
        app_id, repository_id = self.input.app_id, self.input.repository_id
        self.attempts_since_prune += 1
        prune = self.attempts_since_prune >= PRUNE_EVERY_ATTEMPTS
        if prune:
            self.attempts_since_prune = 0
        if outcome.ok:
            kinds = Counter(kind for kind, _path, _ledger, _forget in send.entries)
            files = metrics.current().files_delivered
            for kind, count in kinds.items():
                files.with_additional_attributes({"event": kind}).add(count)
            entries = [(path, ledger, forget) for _kind, path, ledger, forget in send.entries]
            if send.event == Event.BATCH:
                self.ledger.acknowledged_batch(
                    webhook_id=send.msg_id,
                    http_status=outcome.status,
                    duration_ms=outcome.duration_ms,
                    excerpt=outcome.excerpt,
                    entries=entries,
                )
            else:
                path, ledger, forget = entries[0] if entries else (send.path or "", None, False)
                self.ledger.acknowledged(
                    event=send.event,
                    path=path,
                    webhook_id=send.msg_id,
                    http_status=outcome.status,
                    duration_ms=outcome.duration_ms,
                    excerpt=outcome.excerpt,
                    ledger=ledger,
                    forget=forget,
                )
            if prune:
                with session_scope(self.settings.database_url) as session:
                    prune_delivery_log(session, app_id, self.settings.delivery_log_keep)
            return
        with session_scope(self.settings.database_url) as session:
            record_attempt(
                session,
                app_id=app_id,
                repository_id=repository_id,
                event=send.event,
                path=send.path,
                webhook_id=send.msg_id,
                outcome=outcome,
            )
            if outcome.error_type != DeliveryErrorType.GONE:
                assert outcome.error_type is not None
                note_watch_failure(
                    session, app_id, repository_id, outcome.error_type, outcome.error or ""
                )
            if prune:
                prune_delivery_log(session, app_id, self.settings.delivery_log_keep)

    def _check(self, outcome: PostOutcome) -> None:
        """Stop the run on a failed outcome (after `_record` stored it)."""
        if outcome.ok:
            return
        if outcome.error_type == DeliveryErrorType.GONE:
            raise Gone(outcome.error or "the app answered 410 Gone")
        key = [self.target.client_auth_key] if self.target.client_auth_key else []
        raise failure_error(outcome, [*self.target.secrets, *key])

    # -- building the requests (while the previous one is on the wire) ----------------

    def _sends(
        self, changes: list[FileChange], reader: BlobReader | None
    ) -> Generator[_Send, None, None]:
        """Every request of this run, in order, built one at a time as they are pulled.

        Without batching each change is one request (a chunked file several). For an app
        that opted in, consecutive non-chunked events go together in `/batch` requests
        of at most `batch_max_files` events and `batch_max_bytes` bytes (a single event
        larger than that goes as a batch of one); a chunked file ends the batch before it
        and goes alone, chunk by chunk, as for everyone.
        """
        batching = self.target.batch
        # Where a previous try left a chunked file; only the first chunked file may use it.
        resume = self.resume
        max_files = self.settings.batch_max_files
        max_bytes = self.settings.batch_max_bytes - payloads.BATCH_OVERHEAD
        events: list[bytes] = []
        entries: list[_Entry] = []
        ids: list[str] = []
        size = 0
        for change in changes:
            if change.kind == ChangeKind.DELETE:
                single = self._delete(change)
            else:
                assert reader is not None
                built = self._file(reader, change, resume)
                if not isinstance(built, _Send):
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

    def _batch(self, events: list[bytes], entries: list[_Entry], ids: list[str]) -> _Send:
        """One `/batch` request; its id is derived from its events' own ids, so a retried
        batch (same events, same order) keeps its webhook-id."""
        first, last = entries[0][1], entries[-1][1]
        what = f"batch of {len(events)} ({first}" + (f" .. {last})" if len(events) > 1 else ")")
        return _Send(
            event=Event.BATCH,
            msg_id=self._id(Event.BATCH, *ids),
            body=payloads.batch_body(events),
            what=what,
            path=None,
            entries=list(entries),
        )

    def _delete(self, change: FileChange) -> _Send:
        body = payloads.delete_body(
            repo=self.target.repository,
            path=change.path,
            sha=change.previous_sha256,
            commit_sha=self.input.commit,
            timestamp=payloads.iso_utc(),
        )
        return _Send(
            event=ChangeKind.DELETE,
            msg_id=self._id(ChangeKind.DELETE, change.path, change.previous_sha256),
            body=body,
            what=f"delete {change.path}",
            path=change.path,
            entries=[(ChangeKind.DELETE, change.path, None, True)],
        )

    def _file(
        self, reader: BlobReader, change: FileChange, resume: ChunkResume | None
    ) -> _Send | Iterator[_Send]:
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
                commit_sha=self.input.commit,
                timestamp=timestamp,
                previous_sha=change.previous_sha256,
            )
            return _Send(
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
    ) -> Iterator[_Send]:
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
                commit_sha=self.input.commit,
                timestamp=timestamp,
                previous_sha=change.previous_sha256,
                chunk=(transfer, index, plan.total),
            )
            last = index == plan.total - 1
            yield _Send(
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
