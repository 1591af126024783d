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
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import replace
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
from treecast.store.attempts import prune_delivery_log, record_attempt
from treecast.store.ledger import LedgerWriter, WatchChanged
from treecast.store.repositories import load_access
from treecast.store.targets import AppTarget, load_target
from treecast.store.watches import finish_delivery, note_watch_failure, start_delivery
from treecast.webhooks import payloads
from treecast.webhooks.payloads import ChunkPlan, ContentProbe
from treecast.webhooks.sender import WebhookSender, failure_error
from treecast.webhooks.signing import SigningScheme, redaction_terms, stable_digest, webhook_id
from treecast.webhooks.transport import PostOutcome

log = logging.getLogger(__name__)

HEARTBEAT_EVERY_SECONDS = 1.0  # between files; every chunk heartbeats regardless
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


class FileDelivery:
    """One try at delivering one app its changes for one repository at one commit.

    `beat` is called with the latest progress whenever it is worth reporting (at most
    once a second between files, at every chunk); `progress` always holds the latest.
    """

    target: AppTarget  # loaded first thing in `run`
    writer: ThreadPoolExecutor  # ledger writes (see `_deliver_all`)
    ledger: LedgerWriter  # used on the writer thread only

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
        self.pending: Future[None] | None = None

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
            start_delivery(session, app_id, repository_id)
            access = load_access(settings, session, repository_id)
        self.target = target
        cache = RepositoryCache(settings, repository_id)
        with session_scope(settings.database_url) as session:
            changes = compute_changes(session, cache, access, app_id, self.input.commit)
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
            # One writer thread: the ledger row of file N is committed while file N+1
            # is read from git and built; the request for N+1 waits for it (`_post`).
            # So the ledger never runs ahead of acknowledgements, and a kill re-sends
            # at most the one file that was on the wire.
            self.writer = stack.enter_context(
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="treecast-ledger")
            )
            self.ledger = LedgerWriter(
                self.settings.database_url,
                self.input.app_id,
                self.input.repository_id,
                self.target.generation,
            )
            # Closed on the writer thread, after its last write (callbacks run LIFO,
            # so this runs before the executor shuts down).
            stack.callback(lambda: self.writer.submit(self.ledger.close).result())
            reader = None
            if needs_git:
                if self.input.commit is None:
                    raise RuntimeError("changes to send but no commit to read them from")
                # compute_changes fetched the commit here if this worker lacked it.
                reader = stack.enter_context(cache.blobs())
            for change in changes:
                self._beat()
                if change.kind == ChangeKind.DELETE:
                    self._send_delete(sender, change)
                    self.result.deleted += 1
                else:
                    assert reader is not None
                    self._send_file(sender, reader, change)
                    if change.kind == ChangeKind.CREATE:
                        self.result.created += 1
                    else:
                        self.result.updated += 1
                self.done += 1
            self._drain()

    def _drain(self) -> None:
        """Wait for the outstanding ledger write (re-raising its error)."""
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.result()

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

    def _post(
        self, sender: WebhookSender, event: str, msg_id: str, body: bytes, what: str
    ) -> PostOutcome:
        # The previous file's ledger row is written while this body was read from git
        # and built; it must be committed before the next request leaves, so a killed
        # worker re-sends at most the one file in flight (docs/reliability.md).
        self._drain()
        return sender.post(event, msg_id, body, what)

    def _record(
        self,
        event: str,
        path: str,
        msg_id: str,
        outcome: PostOutcome,
        ledger: tuple[str, str] | None = None,
        forget: bool = False,
    ) -> None:
        """Log the attempt and, on success, move the ledger, in one transaction."""
        app_id, repository_id = self.input.app_id, self.input.repository_id
        self.attempts_since_prune += 1
        prune = self.attempts_since_prune >= PRUNE_EVERY_ATTEMPTS
        if prune:
            self.attempts_since_prune = 0
        if outcome.ok:
            if ledger is not None or forget:
                metrics.current().files_delivered.with_additional_attributes({"event": event}).add(
                    1
                )
            attempt = {
                "event": event,
                "webhook_id": msg_id,
                "http_status": outcome.status,
                "duration_ms": outcome.duration_ms,
                "excerpt": outcome.excerpt,
            }
            self._drain()
            self.pending = self.writer.submit(self._write_ok, path, ledger, forget, attempt, prune)
            return
        self._drain()
        with session_scope(self.settings.database_url) as session:
            record_attempt(
                session,
                app_id=app_id,
                repository_id=repository_id,
                event=event,
                path=path,
                webhook_id=msg_id,
                outcome=outcome,
            )
            if outcome.error_type != DeliveryErrorType.GONE:
                assert outcome.error_type is not None
                note_watch_failure(
                    session, app_id, repository_id, outcome.error_type, outcome.error or ""
                )
            if prune:
                prune_delivery_log(session, app_id, self.settings.delivery_log_keep)

    def _write_ok(
        self,
        path: str,
        ledger: tuple[str, str] | None,
        forget: bool,
        attempt: dict[str, Any],
        prune: bool,
    ) -> None:
        """(On the writer thread) log a 2xx and move the ledger in one transaction."""
        self.ledger.acknowledged(path=path, ledger=ledger, forget=forget, **attempt)
        if prune:
            with session_scope(self.settings.database_url) as session:
                prune_delivery_log(session, self.input.app_id, self.settings.delivery_log_keep)

    def _check(self, outcome: PostOutcome) -> None:
        """Stop the run on a failed outcome (after `_record` stored it)."""
        if outcome.ok:
            return
        if outcome.error_type == DeliveryErrorType.GONE:
            raise Gone(outcome.error or "the app answered 410 Gone")
        key = [self.target.client_auth_key] if self.target.client_auth_key else []
        raise failure_error(outcome, [*self.target.secrets, *key])

    def _send_delete(self, sender: WebhookSender, change: FileChange) -> None:
        body = payloads.delete_body(
            repo=self.target.repository,
            path=change.path,
            sha=change.previous_sha256,
            commit_sha=self.input.commit,
            timestamp=payloads.iso_utc(),
        )
        msg_id = self._id(ChangeKind.DELETE, change.path, change.previous_sha256)
        outcome = self._post(sender, ChangeKind.DELETE, msg_id, body, f"delete {change.path}")
        self._record(ChangeKind.DELETE, change.path, msg_id, outcome, forget=True)
        self._check(outcome)

    def _send_file(self, sender: WebhookSender, reader: BlobReader, change: FileChange) -> None:
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
            msg_id = self._id(event, change.path, change.blob_id, change.previous_sha256)
            outcome = self._post(sender, event, msg_id, body, f"{event} {change.path}")
            self._record(event, change.path, msg_id, outcome, ledger=(change.blob_id, sha))
            self._check(outcome)
            return
        if data is not None:
            pieces: Iterable[bytes] = (
                data[i : i + plan.raw_chunk_bytes] for i in range(0, size, plan.raw_chunk_bytes)
            )
        else:
            pieces = _exact_pieces(
                reader.iter_bytes(change.blob_id, plan.raw_chunk_bytes), plan.raw_chunk_bytes
            )
        self._send_chunks(sender, change, event, plan, pieces, sha, size, timestamp)

    def _send_chunks(
        self,
        sender: WebhookSender,
        change: FileChange,
        event: ChangeKind,
        plan: ChunkPlan,
        pieces: Iterable[bytes],
        sha: str,
        size: int,
        timestamp: str,
    ) -> None:
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
        resume = self.resume
        if (
            resume is not None
            and resume.path == change.path
            and resume.blob_id == change.blob_id
            and resume.generation == t.generation
            and 0 < resume.next_chunk < plan.total
        ):
            start = resume.next_chunk
        self.resume = None  # only the first chunked file after a restart can resume
        position = ChunkResume(change.path, change.blob_id, t.generation, 0)
        for index, raw in enumerate(pieces):
            if index < start:
                continue  # acknowledged by an earlier attempt (its bytes are skipped, not sent)
            self._beat(chunk=replace(position, next_chunk=index))
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
            msg_id = self._id(
                event, change.path, change.blob_id, change.previous_sha256, "chunk", index
            )
            what = f"{event} {change.path} chunk {index + 1}/{plan.total}"
            outcome = self._post(sender, event, msg_id, body, what)
            last = index == plan.total - 1
            self._record(
                event,
                change.path,
                msg_id,
                outcome,
                ledger=(change.blob_id, sha) if last else None,
            )
            if not outcome.ok and index == start and start > 0:
                # The app refused the first chunk after resuming (it may have lost the
                # earlier ones): the next attempt sends the whole file again.
                self._beat(chunk=position)
            self._check(outcome)
