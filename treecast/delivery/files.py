"""One try at bringing one app to one commit of one repository: load, compute, send, record.

- load: the app's target and the repository's access (database), then what git says
  about the commit (fetched here if this worker lacks it) and the ledger rows it touches;
- compute: the changes (`treecast.delivery.changes`, pure);
- send: one request at a time (`treecast.delivery.requests`), each built and signed
  while the answer to the one before is awaited;
- record: every answer as it comes (a 2xx moves the ledger in its own transaction),
  then the finished delivery.

A retried or restarted try recomputes the changes, finds the acknowledged files in the
ledger and resumes after them. A chunked file's position travels in the try's progress
(`DeliveryProgress.chunk`), so the app's next try resumes at the first unacknowledged
chunk. Nothing here knows Temporal: progress goes to a `beat` callback, failures are
raised as the libraries' typed errors (`WebhookError`, `GitError`) and anything else.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace

from models.changes import ChangeKind, FileChange
from models.delivery import (
    AppDelivery,
    ChunkResume,
    DeliverInput,
    DeliveryErrorType,
    DeliveryProgress,
    DeliveryStatus,
)
from treecast import metrics
from treecast.config import Settings
from treecast.db import session_scope
from treecast.delivery.completion import announce_completion
from treecast.delivery.contents import ContentReader, Sources
from treecast.delivery.loading import load_changes, record_changes
from treecast.delivery.requests import Ahead, Request, RequestBuilder
from treecast.delivery.target import (
    AppTarget,
    load_target,
    open_sender,
    refusal,
    secrets_of,
    skip_reason,
)
from treecast.gitcache.repository import RepositoryCache
from treecast.remote_access import app_access
from treecast.store.attempts import note_skipped_paths, prune_delivery_log, record_attempt
from treecast.store.ledger import LedgerWriter, WatchChanged
from treecast.store.watches import finish_delivery, note_watch_failure, start_delivery
from treecast.webhooks.payloads import Event
from treecast.webhooks.signing import redaction_terms
from treecast.webhooks.transport import PostOutcome

log = logging.getLogger(__name__)

HEARTBEAT_EVERY_SECONDS = 1.0  # between files; every chunk heartbeats regardless
RESIGN_AFTER_SECONDS = 60.0  # a request signed longer ago than this is signed again
PRUNE_EVERY_ATTEMPTS = 500


class Gone(Exception):
    """The app answered 410: stop this run successfully with the watch disabled."""


class FileDelivery:
    """One try at delivering one app its changes for one repository at one commit.

    `beat` is called with the latest progress whenever it is worth reporting (at most
    once a second between files, at every chunk, and from a side thread at least once
    a second while a request or a git read takes longer); `progress` always holds the
    latest.
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
        return redaction_terms(secrets_of(target)) if target is not None else []

    def final_progress(self) -> DeliveryProgress:
        """The progress a failed try reports: counts as of this moment.

        The counts let the pass add up what this try did deliver; the chunk position
        (the one last reported) is where the app's next try resumes.
        """
        return replace(
            self.progress,
            created=self.result.created,
            updated=self.result.updated,
            deleted=self.result.deleted,
        )

    # -- the steps ------------------------------------------------------------------

    def run(self) -> AppDelivery:
        """Deliver every change; returns synced, disabled (410 or already disabled) or removed.

        Raises a `WebhookError` when a request is refused or fails (after recording it),
        a `GitError` when git fails, and whatever else went wrong.
        """
        with _Pump(self):
            return self._run()

    def _run(self) -> AppDelivery:
        app_id, repository_id = self.input.app_id, self.input.repository_id
        settings = self.settings
        with session_scope(settings.database_url) as session:
            target = load_target(settings, session, app_id, repository_id)
            skipped = skip_reason(target, files=True)
            if skipped == DeliveryErrorType.WATCH_MISSING:
                self.result.status = DeliveryStatus.REMOVED
                self.result.error_type = skipped
                return self.result
            if skipped == DeliveryErrorType.GONE:
                self.result.status = DeliveryStatus.DISABLED
                return self.result
            if skipped == DeliveryErrorType.ACCESS_REFUSED:  # refused meanwhile: not one more file
                self.result.status = DeliveryStatus.DISABLED
                self.result.error_type = skipped
                self.result.error = "the app's own access to the repository does not hold"
                return self.result
            assert target is not None
            start_delivery(session, app_id, repository_id)
            # The app's own credentials: what this delivery fetches, its access reaches.
            access = app_access(settings, session, repository_id, app_id)
        self.target = target
        cache = RepositoryCache(settings, repository_id)
        with session_scope(settings.database_url) as session, cache.reading():
            computed = load_changes(session, cache, access, app_id, self.input.commit)
            record_changes(session, app_id, repository_id, computed)
            if computed.changes:
                note_skipped_paths(session, app_id, repository_id, self.input.commit)
        changes = computed.changes
        self.total = len(changes)
        self._beat(force=True)
        try:
            self._send_all(cache, changes, computed.sources)
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
            finished = finish_delivery(
                session, app_id, repository_id, self.input.commit, computed.held, target.generation
            )
            prune_delivery_log(session, app_id, settings.delivery_log_keep)
        if not finished:
            # Reset meanwhile (redeliver, reconcile): its own sync delivers again.
            self.result.status = DeliveryStatus.REMOVED
            self.result.error_type = DeliveryErrorType.WATCH_MISSING
            self.result.error = str(WatchChanged(app_id, repository_id))
            return self.result
        if target.sync_completed and not announce_completion(settings, target, self.input.commit):
            self.result.status = DeliveryStatus.DISABLED
            self.result.error_type = DeliveryErrorType.GONE
            return self.result
        self.result.status = DeliveryStatus.SYNCED
        return self.result

    def _send_all(
        self, cache: RepositoryCache, changes: list[FileChange], sources: Sources
    ) -> None:
        needs_git = any(c.kind != ChangeKind.DELETE for c in changes)
        with ExitStack() as stack:
            sender = stack.enter_context(
                open_sender(self.settings, self.target, timeout=self.settings.file_timeout_seconds)
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
                # The load step fetched the commit here if this worker lacked it.
                reader = stack.enter_context(ContentReader(cache, sources))
            # While request N's answer is awaited, request N+1's file(s) are read from
            # git and its body built and signed (`Ahead`). N+1 leaves only after N's 2xx
            # is committed to the ledger (`_record`), so the ledger never runs ahead of
            # acknowledgements and a kill re-sends at most the one request on the wire.
            # At most two bodies are alive: the one in flight and the one built.
            # (Closed before the reader it uses.)
            builder = RequestBuilder(self.settings, self.target, self.input.commit)
            ahead = stack.enter_context(
                Ahead(builder.requests(changes, reader, self.resume), sender)
            )
            while (request := ahead.next()) is not None:
                if request.clears_resume:
                    self.resume = None  # only the first chunked file after a restart resumes
                self._beat(chunk=request.chunk)
                # Signed when it was built, unless that was long ago (a slow answer before
                # it): receivers refuse timestamps more than 5 minutes off.
                fresh = time.monotonic() - request.signed_at < RESIGN_AFTER_SECONDS
                # The next request is built once this one is written, while its answer
                # is awaited (the time spent building is not counted against its timeout).
                outcome = sender.post(
                    request.event,
                    request.msg_id,
                    request.body,
                    request.what,
                    headers=request.headers if fresh else None,
                    on_sent=ahead.build_next,
                )
                self._record(request, outcome)
                self._count(request, outcome)

    # -- recording answers ----------------------------------------------------------

    def _record(self, request: Request, outcome: PostOutcome) -> None:
        """Log the attempt and, on success, move the ledger, in one transaction."""
        app_id, repository_id = self.input.app_id, self.input.repository_id
        self.attempts_since_prune += 1
        prune = self.attempts_since_prune >= PRUNE_EVERY_ATTEMPTS
        if prune:
            self.attempts_since_prune = 0
        if outcome.ok:
            kinds = Counter(kind for kind, _path, _ledger, _forget in request.entries)
            files = metrics.current().files_delivered
            for kind, count in kinds.items():
                files.with_additional_attributes({"event": kind}).add(count)
            entries = [(path, ledger, forget) for _kind, path, ledger, forget in request.entries]
            path: str | None = None  # a batch's log row has none
            if request.event != Event.BATCH:
                entries = entries[:1] or [(request.path or "", None, False)]
                path = entries[0][0]
            self.ledger.acknowledged(
                event=request.event,
                path=path,
                webhook_id=request.msg_id,
                http_status=outcome.status,
                duration_ms=outcome.duration_ms,
                excerpt=outcome.excerpt,
                entries=entries,
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
                event=request.event,
                path=request.path,
                webhook_id=request.msg_id,
                outcome=outcome,
            )
            if outcome.error_type != DeliveryErrorType.GONE:
                assert outcome.error_type is not None
                note_watch_failure(
                    session, app_id, repository_id, outcome.error_type, outcome.error or ""
                )
            if prune:
                prune_delivery_log(session, app_id, self.settings.delivery_log_keep)

    def _count(self, request: Request, outcome: PostOutcome) -> None:
        """Count an acknowledged request; stop the run on a failed one (recorded already)."""
        if outcome.ok:
            for kind, _path, _ledger, _forget in request.entries:
                if kind == ChangeKind.DELETE:
                    self.result.deleted += 1
                elif kind == ChangeKind.CREATE:
                    self.result.created += 1
                else:
                    self.result.updated += 1
                self.done += 1
            return
        if request.restart is not None:
            # The app refused the first chunk after resuming (it may have lost the
            # earlier ones): the next attempt sends the whole file again.
            self._beat(chunk=request.restart)
        if outcome.error_type == DeliveryErrorType.GONE:
            raise Gone(outcome.error or "the app answered 410 Gone")
        raise refusal(self.target, outcome)

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
        # Always the latest, so the pump never repeats a stale count.
        self.progress = self._progress(chunk)
        now = time.monotonic()
        if not force and chunk is None and now - self.last_beat < HEARTBEAT_EVERY_SECONDS:
            return
        self.last_beat = now
        self._beat_out(self.progress)


class _Pump:
    """Repeats the latest progress every second from a side thread while a try runs.

    Why: the heartbeat timeout is short so that a killed worker is noticed within
    seconds, yet one POST may legitimately take up to the file timeout (and a big
    blob read a while). The pump keeps a live try alive through those; a dead
    process stops pumping, and the app's next try follows elsewhere.
    """

    def __init__(self, run: FileDelivery) -> None:
        self._run = run
        self._stop = threading.Event()
        # The caller's context (an activity's, which its heartbeat needs) in the side thread.
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._loop,), name="treecast-heartbeat", daemon=True
        )

    def __enter__(self) -> _Pump:
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
                    run._beat_out(run.progress)
                except Exception as error:  # a missed beat is retried a second later
                    log.debug("heartbeat failed: %s", error)
