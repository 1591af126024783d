"""The `deliver_changes` activity: push one app its changes for one repository.

Changes come from `activities.changes.compute_changes` (deletes, creates,
updates, each by path) and are sent one request at a time. After every 2xx the
ledger row is written in its own transaction, so a retried or restarted
activity recomputes the changes, finds the acknowledged files already in the
ledger and resumes after them. A chunked file's progress (`ChunkResume`) lives
in the heartbeat details, together with the try's counts; a failed try carries
both in its error's details, and DeliverFiles passes the position to the app's
next try (`DeliverInput.resume`), which resumes at the first unacknowledged
chunk. Webhook ids are stable across retries, so anything re-sent anyway is a
duplicate the receiver can drop.

File bytes are streamed from git: a file above the chunk threshold is read
twice (once to hash and classify it, once to send it), one chunk at a time.
"""

from __future__ import annotations

import base64
import contextvars
import hashlib
import threading
import time
import traceback
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict
from typing import Any

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError, CancelledError

from activities import payloads
from activities.http_client import PostOutcome, make_client
from activities.notices import NoticeActivities
from activities.payloads import ChunkPlan, ContentProbe, Event
from activities.signing import redaction_terms, stable_digest, webhook_id
from activities.watchers import (
    AppTarget,
    LedgerWriter,
    WatchChanged,
    load_target,
    note_watch_failure,
    prune_delivery_log,
    record_attempt,
)
from models.changes import ChangeKind, FileChange
from models.delivery import (
    ChunkResume,
    DeliverInput,
    DeliverResult,
    DeliveryErrorType,
)
from models.tables import Watch, WatchStatus, new_generation, utcnow
from treecast import metrics
from treecast.db import session_scope
from treecast.redact import redact

REMOVED = "removed"  # DeliverResult.status when the app or watch no longer exists
HEARTBEAT_EVERY_SECONDS = 1.0  # between files; every chunk heartbeats regardless
PRUNE_EVERY_ATTEMPTS = 500
_READ_PIECE = 1 << 20  # bytes per read while hashing a large blob


class _Gone(Exception):
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


class _HeartbeatPump:
    """Repeats the latest heartbeat every second from a side thread while an attempt runs.

    Why: the heartbeat timeout is short so that a killed worker is noticed within
    seconds, yet one POST may legitimately take up to the file timeout (and a big
    blob read a while). The pump keeps a live attempt alive through those; a dead
    process stops pumping, and Temporal retries the activity elsewhere.
    """

    def __init__(self, run: _Run) -> None:
        self._run = run
        self._stop = threading.Event()
        # The copied context carries the activity's context into the side thread.
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._loop,), name="treecast-heartbeat", daemon=True
        )

    def __enter__(self) -> _HeartbeatPump:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_EVERY_SECONDS):
            run = self._run
            if time.monotonic() - run.last_beat >= HEARTBEAT_EVERY_SECONDS:
                run.last_beat = time.monotonic()
                try:
                    activity.heartbeat(run.details)
                except Exception as error:  # a missed beat is retried a second later
                    activity.logger.debug("heartbeat failed: %s", error)


class DeliveryActivities(NoticeActivities):
    """Webhook-sending activities: `deliver_changes` here, `send_notice` inherited."""

    @activity.defn(name="deliver_changes")
    def deliver_changes(self, input: DeliverInput) -> DeliverResult:
        """Deliver one app's changes for one repository at `input.commit`, resumably.

        Returns status `synced`, `disabled` (the app answered 410, or the watch was
        already disabled) or `removed` (app or watch gone). A refused or failed
        request raises a retryable ApplicationError whose type is a DeliveryErrorType,
        after counting the attempt on the watch; any other exception becomes a
        retryable ApplicationError typed with its class name. Either way the error's
        detail is the try's latest heartbeat, counts up to date (with the chunk position
        to resume at, if any).
        """
        run = _Run(self, input)
        try:
            with _HeartbeatPump(run):
                result = run.run()
        except CancelledError:
            raise  # Temporal's own (cancel, heartbeat failure, shutdown): never rewrapped
        except ApplicationError as error:
            activity.logger.warning(
                "delivery of %s to %s failed after %d files: %s: %s",
                input.repository_id,
                input.app_id,
                run.done,
                error.type,
                error.message,
            )
            raise run.failure(
                error.message,
                type=error.type,
                non_retryable=error.non_retryable,
                next_retry_delay=error.next_retry_delay,
                category=error.category,  # benign when the app refused or was unreachable
            ) from None
        except Exception as error:
            # Anything else (a database or git hiccup, a bug) fails the try the same
            # way, retryable, so its counts and chunk position are not lost; its text is
            # redacted before it reaches the log or Temporal's history.
            error_type = type(error).__name__
            secrets = run.secrets()
            message = redact(str(error).strip() or error_type, secrets)
            activity.logger.warning(
                "delivery of %s to %s failed after %d files: %s\n%s",
                input.repository_id,
                input.app_id,
                run.done,
                error_type,
                redact("".join(traceback.format_exception(error)).rstrip(), secrets),
            )
            raise run.failure(message, type=error_type) from None
        activity.logger.info(
            "delivered %s at %s to %s: %s, %d created, %d updated, %d deleted",
            input.repository_id,
            (input.commit or "empty")[:12],
            input.app_id,
            result.status,
            result.created,
            result.updated,
            result.deleted,
        )
        return result


class _Run:
    """The state of one `deliver_changes` attempt."""

    target: AppTarget  # loaded first thing in `run`
    writer: ThreadPoolExecutor  # ledger writes (see `_deliver_all`)
    ledger: LedgerWriter  # used on the writer thread only

    def __init__(self, owner: DeliveryActivities, input: DeliverInput) -> None:
        self.owner = owner
        self.settings = owner.settings
        self.input = input
        self.result = DeliverResult(app_id=input.app_id, status=WatchStatus.SYNCING)
        self.attempts_since_prune = 0
        self.last_beat = time.monotonic()
        self.done = 0
        self.total = 0
        # Where a previous try left a chunked file: a retry of this same activity has
        # it in its heartbeat details, a new try from DeliverFiles in its input. It
        # stays in the heartbeats until the first chunked file has used it.
        self.resume: ChunkResume | None = (
            ChunkResume.from_details(activity.info().heartbeat_details) or input.resume
        )
        self.details: dict[str, Any] = self._details()  # the latest heartbeat
        self.pending: Future[None] | None = None

    def secrets(self) -> list[str]:
        """The app's secrets in every form that could show up in text (none before loading)."""
        target = getattr(self, "target", None)
        return redaction_terms(target.secrets) if target is not None else []

    def failure(self, message: str, **kwargs: Any) -> ApplicationError:
        """The try's error: what it delivered and its latest heartbeat travel with it.

        The counts let the pass add up what this try did deliver (`AcknowledgedCounts`);
        the heartbeat holds the chunk position the app's next try resumes at
        (`ChunkResume`).
        """
        # The latest heartbeat, with the counts as of this moment (`AcknowledgedCounts`
        # reads them back); the chunk position is the one last heartbeated.
        details = {
            **self.details,
            "created": self.result.created,
            "updated": self.result.updated,
            "deleted": self.result.deleted,
        }
        return ApplicationError(message, details, **kwargs)

    # -- entry ----------------------------------------------------------------------

    def run(self) -> DeliverResult:
        app_id, repository_id = self.input.app_id, self.input.repository_id
        with session_scope(self.settings.database_url) as session:
            target = load_target(self.settings, session, app_id, repository_id)
            if target is None:
                self.result.status = REMOVED
                self.result.error_type = DeliveryErrorType.WATCH_MISSING
                return self.result
            if target.watch_status == WatchStatus.DISABLED:
                self.result.status = WatchStatus.DISABLED
                return self.result
            watch = session.get(Watch, (app_id, repository_id))
            assert watch is not None
            watch.status = WatchStatus.SYNCING
            session.add(watch)
        self.target = target

        from activities.changes import compute_changes

        with session_scope(self.settings.database_url) as session:
            changes = compute_changes(
                self.settings, session, app_id, repository_id, self.input.commit
            )
        self.total = len(changes)
        self._beat(force=True)
        try:
            self._deliver_all(changes)
        except _Gone as gone:
            self.result.status = WatchStatus.DISABLED
            self.result.error_type = DeliveryErrorType.GONE
            self.result.error = str(gone)
            return self.result
        except WatchChanged as changed:
            # Unwatched, removed or redelivered meanwhile: stop sending; a redeliver's
            # own sync starts over with the fresh generation.
            activity.logger.info("delivery stopped: %s", changed)
            self.result.status = REMOVED
            self.result.error_type = DeliveryErrorType.WATCH_MISSING
            self.result.error = str(changed)
            return self.result
        with session_scope(self.settings.database_url) as session:
            watch = session.get(Watch, (app_id, repository_id))
            if watch is not None:
                watch.status = WatchStatus.SYNCED
                watch.delivered_commit = self.input.commit
                watch.last_synced_at = utcnow()
                watch.ledger_generation = new_generation()
                watch.retry_count = 0
                watch.last_error = None
                watch.last_error_type = None
                session.add(watch)
            prune_delivery_log(session, app_id, self.settings.delivery_log_keep)
        self.result.status = WatchStatus.SYNCED
        return self.result

    def _deliver_all(self, changes: list[FileChange]) -> None:
        needs_git = any(c.kind != ChangeKind.DELETE for c in changes)
        with ExitStack() as stack:
            client = stack.enter_context(
                make_client(self.settings, timeout=self.settings.file_timeout_seconds)
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
                from activities.git_fetch import ensure_commit
                from activities.git_objects import BlobReader

                if self.input.commit is None:
                    raise RuntimeError("changes to send but no commit to read them from")
                repo_path = ensure_commit(
                    self.settings, self.input.repository_id, self.input.commit
                )
                reader = stack.enter_context(BlobReader(repo_path))
            for change in changes:
                self._beat()
                if change.kind == ChangeKind.DELETE:
                    self._send_delete(client, change)
                    self.result.deleted += 1
                else:
                    assert reader is not None
                    self._send_file(client, reader, change)
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

    def _details(self, chunk: dict[str, Any] | None = None) -> dict[str, Any]:
        """Progress ("N of M files"), the files acknowledged so far, and a chunk position."""
        details: dict[str, Any] = {
            "done": self.done,
            "total": self.total,
            "created": self.result.created,
            "updated": self.result.updated,
            "deleted": self.result.deleted,
        }
        if chunk is not None:
            details.update(chunk)
        elif self.resume is not None:
            details.update(asdict(self.resume))  # not used yet: still the place to resume
        return details

    def _beat(self, *, force: bool = False, chunk: dict[str, Any] | None = None) -> None:
        details = self._details(chunk)
        # Always the latest, so the pump never repeats a stale count.
        self.details = details
        now = time.monotonic()
        if not force and chunk is None and now - self.last_beat < HEARTBEAT_EVERY_SECONDS:
            return
        self.last_beat = now
        activity.heartbeat(details)

    # -- one message ----------------------------------------------------------------

    def _id(self, *parts: str | int | None) -> str:
        t: AppTarget = self.target
        return webhook_id(t.app_id, t.repository.repository_id, t.generation, *parts)

    def _post(
        self, client: httpx.Client, event: str, msg_id: str, body: bytes, what: str
    ) -> PostOutcome:
        # The previous file's ledger row is written while this body was read from git
        # and built; it must be committed before the next request leaves, so a killed
        # worker re-sends at most the one file in flight (docs/reliability.md).
        self._drain()
        return self.owner._post(
            client,
            self.target,
            event=event,
            msg_id=msg_id,
            body=body,
            timeout=self.settings.file_timeout_seconds,
            what=what,
        )

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
            raise _Gone(outcome.error or "the app answered 410 Gone")
        self.owner._raise(outcome, self.target.secrets)

    def _send_delete(self, client: httpx.Client, change: FileChange) -> None:
        body = payloads.delete_body(
            repo=self.target.repository,
            path=change.path,
            sha=change.previous_sha256,
            commit_sha=self.input.commit,
            timestamp=payloads.iso_utc(),
        )
        msg_id = self._id(Event.DELETE, change.path, change.previous_sha256)
        outcome = self._post(client, Event.DELETE, msg_id, body, f"delete {change.path}")
        self._record(Event.DELETE, change.path, msg_id, outcome, forget=True)
        self._check(outcome)

    def _send_file(self, client: httpx.Client, reader: Any, change: FileChange) -> None:
        assert change.blob_id is not None
        event = Event.CREATE if change.kind == ChangeKind.CREATE else Event.UPDATE
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
        plan = payloads.plan_chunks(size, text, threshold, chunk_size)
        timestamp = payloads.iso_utc()
        if not plan.chunked:
            assert data is not None
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
            outcome = self._post(client, event, msg_id, body, f"{event} {change.path}")
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
        self._send_chunks(client, change, event, plan, pieces, sha, size, timestamp)

    def _send_chunks(
        self,
        client: httpx.Client,
        change: FileChange,
        event: str,
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
        progress = {"path": change.path, "blob_id": change.blob_id, "generation": t.generation}
        for index, raw in enumerate(pieces):
            if index < start:
                continue  # acknowledged by an earlier attempt (its bytes are skipped, not sent)
            self._beat(chunk={**progress, "next_chunk": index})
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
            outcome = self._post(client, event, msg_id, body, what)
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
                self._beat(chunk={**progress, "next_chunk": 0})
            self._check(outcome)
