"""deliver_changes against a real git remote and the example receiver on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select
from temporalio.converter import DataConverter
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory
from temporalio.testing import ActivityEnvironment

from activities.delivery import DeliveryActivities
from activities.watches import WatchActivities
from examples.receiver import Received, Receiver
from models.delivery import (
    AppDelivery,
    ChunkResume,
    DeliverInput,
    DeliveryErrorType,
    DeliveryProgress,
    RecordFailureInput,
    WatchersInput,
)
from models.tables import App, DeliveryAttempt, Watch, WatchAccess, WatchStatus
from tests.support.gitrepos import WorkRepo
from tests.support.receiver_fixture import ledger_rows, register, set_secrets, watch_row
from treecast.config import Settings
from treecast.crypto import generate_webhook_secret
from treecast.db import session_scope
from treecast.gitcache.objects import BlobReader
from treecast.store import watches as watch_rows
from treecast.store.ledger import count_ledger, forget_ledger
from treecast.webhooks.sender import WebhookSender

BINARY = bytes(range(256)) * 40  # 10 KiB with NUL bytes


def as_json(value: Any) -> Any:
    """`value` after a trip through Temporal's default converter (dataclasses become dicts)."""
    converter = DataConverter.default.payload_converter
    return converter.from_payloads(converter.to_payloads([value]))[0]


class Run:
    """One app watching one WorkRepo, delivered through an ActivityEnvironment."""

    def __init__(self, settings: Settings, tmp: Path, rcv: Receiver, secrets: list[str]) -> None:
        self.settings = settings
        self.repo = WorkRepo(tmp / "repo")
        self.receiver = rcv
        self.base_url = rcv.url
        self.secrets = secrets
        self.app_id = ""
        self.repository_id = ""
        self.beats: list[Any] = []
        self.env = ActivityEnvironment()
        # As Temporal stores them: plain JSON, the way DeliverFiles and the CLI read them.
        self.env.on_heartbeat = lambda *details: self.beats.append(as_json(details[0]))

    def register(self) -> None:
        self.app_id, self.repository_id = register(
            self.settings, self.base_url, self.secrets, self.repo.url
        )

    def move_to(self, base_url: str) -> None:
        """The app's base URL becomes `base_url`."""
        with session_scope(self.settings.database_url) as session:
            app = session.get(App, self.app_id)
            assert app is not None
            app.base_url = base_url
            session.add(app)

    def letters(self, names: str) -> str:
        """A file NAME.txt holding its name for each letter of `names`, committed, and the
        app registered; returns the commit."""
        for name in names:
            self.repo.write(f"{name}.txt", name)
        commit = self.repo.commit()
        self.register()
        return commit

    def deliver(
        self, commit: str | None, *, resume_from: Any = None, resume: ChunkResume | None = None
    ) -> AppDelivery:
        """One try; `resume_from` as a retry's heartbeat details, `resume` as DeliverFiles'."""
        if resume_from is not None:
            self.env.info = dataclasses.replace(self.env.info, heartbeat_details=[resume_from])
        result = self.env.run(
            DeliveryActivities(self.settings).deliver_changes,
            DeliverInput(self.app_id, self.repository_id, commit, resume=resume),
        )
        assert isinstance(result, AppDelivery)
        return result

    def watch(self) -> Watch:
        return watch_row(self.settings, self.app_id, self.repository_id)

    def ledger(self) -> dict[str, str]:
        return {row.path: row.sha256 for row in ledger_rows(self.settings, self.app_id)}

    def attempts(self) -> list[DeliveryAttempt]:
        with session_scope(self.settings.database_url) as session:
            return list(
                session.exec(
                    select(DeliveryAttempt).where(DeliveryAttempt.app_id == self.app_id)
                ).all()
            )


@pytest.fixture
def run(settings: Settings, tmp_path: Path, receiver: Receiver, receiver_secret: str) -> Run:
    return Run(settings, tmp_path, receiver, [receiver_secret])


def sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def ok_files(rcv: Receiver) -> list[Received]:
    return [r for r in rcv.file_requests() if not r.duplicate]


# -- the happy path ------------------------------------------------------------------


def test_first_delivery_then_changes_in_order(
    any_db_settings: Settings, tmp_path: Path, receiver: Receiver, receiver_secret: str
) -> None:
    run = Run(any_db_settings, tmp_path, receiver, [receiver_secret])
    run.repo.write("README.md", "# Héllo\n\tworld \u2028\n")
    run.repo.write("docs/a.md", "a\n")
    run.repo.write("docs/b.md", "b\n")
    run.repo.write("img/logo.bin", BINARY)
    run.repo.write("latin1.txt", "café".encode("latin-1"))
    run.repo.write("spaced name/ü.txt", "ü\n")
    first = run.repo.commit("first")
    run.register()

    result = run.deliver(first)
    assert (result.status, result.created, result.updated, result.deleted) == ("synced", 6, 0, 0)
    assert receiver.files() == run.repo.files_at(first)
    by_path = {r.path: r.payload for r in ok_files(receiver)}
    readme = by_path["README.md"]
    assert "content_encoding" not in readme["file"]
    assert readme["file"]["sha"] == sha("# Héllo\n\tworld \u2028\n")
    assert readme["commit_sha"] == first
    assert readme["repository"]["repository_id"] == run.repository_id
    assert readme["repository"]["url"] == run.repo.url
    assert readme["repository"]["name"] == "remote.git"
    assert by_path["img/logo.bin"]["file"]["content_encoding"] == "base64"
    assert by_path["latin1.txt"]["file"]["content_encoding"] == "base64"  # not valid UTF-8
    assert by_path["img/logo.bin"]["file"]["size"] == len(BINARY)
    watch = run.watch()
    assert (watch.status, watch.delivered_commit, watch.retry_count) == ("synced", first, 0)
    assert watch.last_synced_at is not None and watch.last_error is None
    assert run.ledger() == {p: sha(b) for p, b in run.repo.files_at(first).items()}

    # delete, create and update in one commit: deletes first, then creates, then updates
    receiver.requests.clear()
    run.repo.remove("docs/b.md")
    run.repo.remove("latin1.txt")
    run.repo.write("docs/a.md", "a changed\n")
    run.repo.write("img/logo.bin", BINARY[::-1])
    run.repo.write("new/c.md", "c\n")
    run.repo.write("0-first.md", "zero\n")
    second = run.repo.commit("second")
    result = run.deliver(second)
    assert (result.created, result.updated, result.deleted) == (2, 2, 2)
    sent = [(r.event, r.path) for r in ok_files(receiver)]
    assert sent == [
        ("delete", "docs/b.md"),
        ("delete", "latin1.txt"),
        ("create", "0-first.md"),
        ("create", "new/c.md"),
        ("update", "docs/a.md"),
        ("update", "img/logo.bin"),
    ]
    payloads = {(r.event, r.path): r.payload for r in ok_files(receiver)}
    assert payloads[("delete", "docs/b.md")]["file"] == {"path": "docs/b.md", "sha": sha("b\n")}
    assert payloads[("update", "docs/a.md")]["previous_sha"] == sha("a\n")
    assert payloads[("update", "docs/a.md")]["file"]["sha"] == sha("a changed\n")
    assert receiver.files() == run.repo.files_at(second)
    assert run.watch().delivered_commit == second

    # nothing changed: nothing sent, still synced
    receiver.requests.clear()
    assert run.deliver(second).delivered == 0
    assert receiver.requests == []


def test_headers_and_trailing_slash(run: Run) -> None:
    run.base_url = run.receiver.url + "/"
    run.repo.write("a.txt", "a")
    commit = run.repo.commit()
    run.register()
    run.deliver(commit)
    (request,) = run.receiver.requests
    assert request.raw_path == "/create"
    assert request.headers["treecast-event"] == "create"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("Treecast/")
    assert request.headers["webhook-id"].startswith("msg_")


def test_empty_repository_deletes_everything(run: Run) -> None:
    run.repo.write("a.txt", "a")
    commit = run.repo.commit()
    run.register()
    run.deliver(commit)
    result = run.deliver(None)
    assert (result.status, result.deleted) == ("synced", 1)
    assert run.receiver.files() == {} and run.ledger() == {}
    assert run.watch().delivered_commit is None


# -- chunking ------------------------------------------------------------------------


@pytest.fixture
def chunky_run(settings: Settings, tmp_path: Path, receiver: Receiver, receiver_secret: str) -> Run:
    """A `Run` whose chunk threshold (4 KiB) and size (1 KiB) make BINARY 14 chunks."""
    small = settings.model_copy(update={"chunk_threshold_bytes": 4096, "chunk_size_bytes": 1024})
    return Run(small, tmp_path, receiver, [receiver_secret])


def test_large_files_go_in_chunks_and_are_reassembled(chunky_run: Run) -> None:
    run = chunky_run
    big_text = ("línea de texto número %d\n" * 400 % tuple(range(400))).encode()
    run.repo.write("big.bin", BINARY)  # 10,240 bytes -> 14 chunks of 768 bytes
    run.repo.write("big.txt", big_text)  # text above the threshold: base64 chunks
    run.repo.write("small.bin", BINARY[:3000])  # 4,000 base64 chars: not chunked
    commit = run.repo.commit()
    run.register()
    run.deliver(commit)
    assert run.receiver.files() == run.repo.files_at(commit)
    chunks = [r for r in ok_files(run.receiver) if r.path == "big.bin"]
    assert [r.chunk_index for r in chunks] == list(range(14))
    assert {r.payload["file"]["chunk"]["id"] for r in chunks} == {
        chunks[0].payload["file"]["chunk"]["id"]
    }
    assert all(r.payload["file"]["chunk"]["total"] == 14 for r in chunks)
    assert all(r.payload["file"]["sha"] == sha(BINARY) for r in chunks)
    text_chunks = [r for r in ok_files(run.receiver) if r.path == "big.txt"]
    assert len(text_chunks) > 1
    assert all(r.payload["file"]["content_encoding"] == "base64" for r in text_chunks)
    (small,) = [r for r in ok_files(run.receiver) if r.path == "small.bin"]
    assert small.chunk_index is None
    assert len({r.webhook_id for r in run.receiver.requests}) == len(run.receiver.requests)


def cut_at_chunk_5(run: Run, *before: str) -> tuple[str, pytest.ExceptionInfo[ApplicationError]]:
    """Files `before` (holding their names), then big.bin, committed and delivered in chunks
    to a receiver that refuses chunk 5 once: the commit, and the try's failure."""
    for path in before:
        run.repo.write(path, path[0])
    run.repo.write("big.bin", BINARY)
    commit = run.repo.commit()
    run.register()
    run.receiver.fail_next(500, where=lambda r: r.chunk_index == 5)
    with pytest.raises(ApplicationError) as failure:
        run.deliver(commit)
    return commit, failure


def test_a_failed_chunk_resumes_after_the_last_acknowledged_one(chunky_run: Run) -> None:
    run = chunky_run
    commit, failure = cut_at_chunk_5(run)
    assert run.ledger() == {}  # the ledger waits for the last chunk
    failed_id = run.receiver.requests[-1].webhook_id
    last = run.beats[-1]
    assert last["chunk"]["next_chunk"] == 5 and last["chunk"]["path"] == "big.bin"
    # The failure carries the same position, for a new try started by DeliverFiles.
    (beat,) = failure.value.details
    assert beat == DeliveryProgress.from_details([last]) and beat.delivered == 0

    run.receiver.requests.clear()
    run.deliver(commit, resume_from=last)
    assert [r.chunk_index for r in run.receiver.requests] == list(range(5, 14))
    assert run.receiver.requests[0].webhook_id == failed_id
    assert run.receiver.files() == run.repo.files_at(commit)
    assert run.ledger() == {"big.bin": sha(BINARY)}


def test_a_new_try_resumes_at_the_position_in_its_input(
    chunky_run: Run,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # DeliverFiles starts every try as a new activity (no heartbeat details): the
    # position comes in DeliverInput.resume. A try that fails before reaching the
    # chunked file (here with an unexpected exception) passes the unused position on.
    run = chunky_run
    commit, failure = cut_at_chunk_5(run, "a.txt")
    progress = DeliveryProgress.from_details(failure.value.details)
    assert progress is not None
    resume = progress.chunk
    assert resume is not None and (resume.path, resume.next_chunk) == ("big.bin", 5)
    assert (progress.created, progress.updated, progress.deleted) == (1, 0, 0)  # a.txt

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"lost https://user:pw@db.example/ while signing with {run.secrets[0]}")

    with monkeypatch.context() as patch:
        patch.setattr("treecast.webhooks.payloads.plan_chunks", broken)
        with pytest.raises(ApplicationError) as failure:
            run.deliver(commit, resume=resume)
    error = failure.value
    assert (error.type, error.non_retryable) == ("RuntimeError", False)
    assert "https://***@db.example/" in error.message and run.secrets[0] not in error.message
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "RuntimeError" in logged and "user:pw" not in logged and run.secrets[0] not in logged
    progress = DeliveryProgress.from_details(error.details)
    assert progress is not None and progress.delivered == 0
    assert progress.chunk == resume  # not used, so still standing

    run.receiver.requests.clear()
    run.deliver(commit, resume=resume)
    assert [r.chunk_index for r in run.receiver.requests] == list(range(5, 14))
    assert run.receiver.files() == run.repo.files_at(commit)


def test_a_receiver_that_lost_its_chunks_gets_the_file_again(chunky_run: Run) -> None:
    run = chunky_run
    commit, _ = cut_at_chunk_5(run)
    # The app restarts and forgets its partial transfers (a fresh run.receiver, same mirror).
    run.receiver.stop()
    fresh = Receiver(run.secrets, run.receiver.mirror, port=run.receiver.port).start()
    try:
        with pytest.raises(ApplicationError, match="409"):
            run.deliver(commit, resume_from=run.beats[-1])
        assert run.beats[-1]["chunk"]["next_chunk"] == 0
        run.deliver(commit, resume_from=run.beats[-1])
        assert [r.chunk_index for r in ok_files(fresh)] == list(range(14))
        assert fresh.files() == run.repo.files_at(commit)
    finally:
        fresh.stop()


# -- signatures ----------------------------------------------------------------------


def test_rotation_signs_with_both_secrets(run: Run, tmp_path: Path) -> None:
    old = run.secrets[0]
    new = generate_webhook_secret()
    run.repo.write("a.txt", "a")
    first = run.repo.commit()
    run.register()
    set_secrets(run.settings, run.app_id, [old, new])
    run.deliver(first)
    assert run.receiver.requests[0].signatures == 2
    # A receiver that already switched to the new secret verifies too.
    with Receiver([new], tmp_path / "mirror-new") as switched:
        run.receiver.stop()
        run.move_to(switched.url)
        run.repo.write("b.txt", "b")
        second = run.repo.commit()
        run.deliver(second)
        assert [(r.path, r.status) for r in switched.requests] == [("b.txt", 200)]
        assert switched.rejected == []
    # The retired secret alone no longer verifies: a receiver with it rejects.
    set_secrets(run.settings, run.app_id, [new])
    with Receiver([old], tmp_path / "mirror-old") as stale:
        run.move_to(stale.url)
        run.repo.write("c.txt", "c")
        third = run.repo.commit()
        with pytest.raises(ApplicationError, match="401"):
            run.deliver(third)
        assert len(stale.rejected) == 1


# -- failures, retries and resume ----------------------------------------------------


def test_resume_after_failure_never_resends_acknowledged_files(run: Run) -> None:
    commit = run.letters("abcde")
    run.receiver.fail_next(500, where=lambda r: r.path == "c.txt")
    with pytest.raises(ApplicationError) as failure:
        run.deliver(commit)
    assert failure.value.type == DeliveryErrorType.HTTP_STATUS
    assert not failure.value.non_retryable
    assert set(run.ledger()) == {"a.txt", "b.txt"}
    # What this try did deliver travels with the failure, for the pass's totals; so
    # does its latest heartbeat, with the same counts (no chunk position here).
    (beat,) = failure.value.details
    assert beat == DeliveryProgress(done=2, total=5, created=2)
    watch = run.watch()
    assert watch.status == WatchStatus.SYNCING and watch.retry_count == 1
    assert watch.last_error == "create c.txt: the app answered HTTP 500"
    failed_id = run.receiver.requests[-1].webhook_id

    run.deliver(commit)
    sent = Counter(r.path for r in run.receiver.requests)
    assert sent == {"a.txt": 1, "b.txt": 1, "c.txt": 2, "d.txt": 1, "e.txt": 1}
    retried = [r for r in run.receiver.requests if r.path == "c.txt"]
    assert retried[0].webhook_id == retried[1].webhook_id == failed_id
    assert run.receiver.files() == run.repo.files_at(commit)
    watch = run.watch()
    assert (watch.status, watch.retry_count, watch.last_error) == ("synced", 0, None)


def test_lost_acknowledgement_is_resent_with_the_same_id(run: Run) -> None:
    run.repo.write("a.txt", "a")
    commit = run.repo.commit()
    run.register()
    run.receiver.delay_next(1.0)  # processed late: Treecast gave up waiting
    slow = run.settings.model_copy(update={"file_timeout_seconds": 0.3})
    with pytest.raises(ApplicationError, match="did not answer within") as failure:
        run.env.run(
            DeliveryActivities(slow).deliver_changes,
            DeliverInput(run.app_id, run.repository_id, commit),
        )
    assert failure.value.type == DeliveryErrorType.TRANSPORT
    run.deliver(commit)
    first, second = run.receiver.requests
    assert first.webhook_id == second.webhook_id


def test_the_next_file_is_read_while_the_answer_before_it_is_awaited(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pipelined reads, and their memory bound: file N+1 is read from git once request N
    # is written and before its answer is read, never earlier (one request built ahead).
    commit = run.letters("abcde")
    posts = {"started": 0, "finished": 0}
    reads: list[tuple[int, int]] = []
    post, read = WebhookSender.post, BlobReader.read

    def counting_post(self: WebhookSender, *args: Any, **kwargs: Any) -> Any:
        posts["started"] += 1
        try:
            return post(self, *args, **kwargs)
        finally:
            posts["finished"] += 1

    def noting_read(self: BlobReader, blob_id: str) -> bytes:
        reads.append((posts["started"], posts["finished"]))
        return read(self, blob_id)

    monkeypatch.setattr(WebhookSender, "post", counting_post)
    monkeypatch.setattr(BlobReader, "read", noting_read)
    assert run.deliver(commit).created == 5
    assert reads == [(0, 0), (1, 0), (2, 1), (3, 2), (4, 3)]


def test_a_git_failure_while_building_the_next_request_comes_after_the_one_in_flight(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = run.letters("abc")
    read = BlobReader.read
    calls: list[str] = []

    def failing_second_read(self: BlobReader, blob_id: str) -> bytes:
        calls.append(blob_id)
        if len(calls) == 2:
            raise OSError("git cat-file stopped")
        return read(self, blob_id)

    monkeypatch.setattr(BlobReader, "read", failing_second_read)
    with pytest.raises(ApplicationError, match="git cat-file stopped") as failure:
        run.deliver(commit)
    # The request on the wire while b.txt was read got its answer recorded first.
    assert failure.value.type == "OSError"
    assert [r.path for r in run.receiver.requests] == ["a.txt"]
    assert set(run.ledger()) == {"a.txt"}
    monkeypatch.setattr(BlobReader, "read", read)
    assert run.deliver(commit).created == 2
    assert run.receiver.files() == run.repo.files_at(commit)


@pytest.mark.parametrize(
    ("status", "headers", "message"),
    [
        (301, {"location": "http://example.com/"}, "redirects are not followed"),
        (404, {}, "HTTP 404"),
        (500, {}, "HTTP 500"),
    ],
)
def test_non_2xx_fail_the_attempt(
    run: Run, status: int, headers: dict[str, str], message: str
) -> None:
    run.repo.write("a.txt", "a")
    commit = run.repo.commit()
    run.register()
    run.receiver.fail_next(status, headers=headers)
    with pytest.raises(ApplicationError, match=message) as failure:
        run.deliver(commit)
    assert failure.value.type == DeliveryErrorType.HTTP_STATUS
    assert failure.value.next_retry_delay is None
    # Expected (an app refusing): the SDK logs it at DEBUG, without a traceback.
    assert failure.value.category == ApplicationErrorCategory.BENIGN
    (attempt,) = run.attempts()
    assert attempt.http_status == status and attempt.error and message in attempt.error


@pytest.mark.parametrize(("status", "value", "seconds"), [(429, "7", 7), (503, "120", 120)])
def test_retry_after_sets_the_next_retry_delay(
    run: Run, status: int, value: str, seconds: int
) -> None:
    run.repo.write("a.txt", "a")
    commit = run.repo.commit()
    run.register()
    run.receiver.fail_next(status, headers={"retry-after": value})
    with pytest.raises(ApplicationError) as failure:
        run.deliver(commit)
    assert failure.value.next_retry_delay == timedelta(seconds=seconds)


def test_dropped_connection_is_a_transport_error(run: Run) -> None:
    run.repo.write("a.txt", "a")
    commit = run.repo.commit()
    run.register()
    run.receiver.drop_next()
    with pytest.raises(ApplicationError) as failure:
        run.deliver(commit)
    assert failure.value.type == DeliveryErrorType.TRANSPORT


def test_410_disables_the_watch(run: Run) -> None:
    run.repo.write("a.txt", "a")
    run.repo.write("b.txt", "b")
    commit = run.repo.commit()
    run.register()
    run.receiver.fail_next(410, where=lambda r: r.path == "b.txt")
    result = run.deliver(commit)
    assert (result.status, result.created, result.error_type) == ("disabled", 1, "WebhookGone")
    assert run.watch().status == WatchStatus.DISABLED
    run.receiver.requests.clear()
    assert run.deliver(commit).status == "disabled"
    assert run.receiver.requests == []
    # record_delivery_failure leaves a disabled watch alone; list_watchers skips it
    watches = WatchActivities(run.settings)
    watches.record_delivery_failure(
        RecordFailureInput(run.app_id, run.repository_id, "WebhookHttpError", "x")
    )
    assert run.watch().status == WatchStatus.DISABLED
    listed = ActivityEnvironment().run(
        watches.list_watchers, WatchersInput(run.repository_id, commit)
    )
    assert listed.app_ids == [run.app_id] and listed.behind_app_ids == []


def test_private_target_is_refused_unless_allowed(run: Run) -> None:
    run.settings = run.settings.model_copy(update={"allow_private_urls": False})
    run.base_url = f"http://localhost:{run.receiver.port}"
    run.repo.write("a.txt", "a")
    commit = run.repo.commit()
    run.register()
    with pytest.raises(ApplicationError, match="TREECAST_ALLOW_PRIVATE_URLS") as failure:
        run.deliver(commit)
    assert failure.value.type == DeliveryErrorType.BLOCKED_ADDRESS
    assert failure.value.non_retryable
    assert run.receiver.requests == []


def test_no_secret_reaches_the_log_or_errors(run: Run) -> None:
    secret = run.secrets[0]
    run.repo.write("a.txt", "a")
    commit = run.repo.commit()
    run.register()
    echo = f"bad signature, expected key {secret} and {secret[6:]}".encode()
    run.receiver.fail_next(400, body=echo)
    with pytest.raises(ApplicationError) as failure:
        run.deliver(commit)
    texts = [str(failure.value), run.watch().last_error or ""]
    for attempt in run.attempts():
        texts += [attempt.error or "", attempt.response_excerpt or "", attempt.webhook_id]
    assert any("bad signature" in t for t in texts)
    for text in texts:
        assert secret not in text and secret[6:] not in text
    assert "***" in (run.attempts()[0].response_excerpt or "")


def test_removed_app_or_watch_returns_quietly(run: Run) -> None:
    run.repo.write("a.txt", "a")
    commit = run.repo.commit()
    run.register()
    with session_scope(run.settings.database_url) as session:
        watch = session.get(Watch, (run.app_id, run.repository_id))
        session.delete(watch)
    result = run.deliver(commit)
    assert (result.status, result.error_type) == ("removed", DeliveryErrorType.WATCH_MISSING)
    assert run.receiver.requests == []


def test_an_app_whose_access_was_refused_meanwhile_gets_not_one_more_file(run: Run) -> None:
    """The snapshot refused the app's credentials after its DeliverFiles was handed the
    commit: the try sends nothing and says why (the app's notice is NotifyBreaker's)."""
    run.repo.write("a.txt", "a")
    commit = run.repo.commit()
    run.register()
    for access in (WatchAccess.REFUSED, WatchAccess.PENDING):
        with session_scope(run.settings.database_url) as session:
            watch = session.get(Watch, (run.app_id, run.repository_id))
            assert watch is not None
            watch.access = access
        result = run.deliver(commit)
        assert (result.status, result.error_type) == ("disabled", DeliveryErrorType.ACCESS_REFUSED)
        assert "access" in (result.error or "")
        assert run.receiver.requests == [] and run.ledger() == {}
    with session_scope(run.settings.database_url) as session:
        watch = session.get(Watch, (run.app_id, run.repository_id))
        assert watch is not None
        watch.access = WatchAccess.GRANTED
    assert run.deliver(commit).status == "synced"
    assert run.ledger().keys() == {"a.txt"}


def test_delivery_log_is_bounded(run: Run) -> None:
    run.settings = run.settings.model_copy(update={"delivery_log_keep": 3})
    for i in range(8):
        run.repo.write(f"f{i}.txt", str(i))
    commit = run.repo.commit()
    run.register()
    run.deliver(commit)
    attempts = run.attempts()
    assert len(attempts) == 3
    assert [a.path for a in sorted(attempts, key=lambda a: a.id or 0)] == [
        "f5.txt",
        "f6.txt",
        "f7.txt",
    ]


def test_failure_record_and_watchers(run: Run) -> None:
    run.repo.write("a.txt", "a")
    commit = run.repo.commit()
    run.register()
    watches = WatchActivities(run.settings)
    env = ActivityEnvironment()
    assert env.run(
        watches.list_watchers, WatchersInput(run.repository_id, commit)
    ).behind_app_ids == [run.app_id]
    env.run(
        watches.record_delivery_failure,
        RecordFailureInput(
            run.app_id, run.repository_id, "WebhookHttpError", "token ghp_abc123 leaked"
        ),
    )
    watch = run.watch()
    assert watch.status == WatchStatus.FAILED and "ghp_abc123" not in (watch.last_error or "")
    run.deliver(commit)
    assert (
        env.run(watches.list_watchers, WatchersInput(run.repository_id, commit)).behind_app_ids
        == []
    )


def test_redeliver_sends_everything_again_with_fresh_ids(run: Run) -> None:
    run.repo.write("a.txt", "a")
    run.repo.write("b/c.txt", "c")
    commit = run.repo.commit()
    run.register()
    run.deliver(commit)
    first_ids = {r.webhook_id for r in run.receiver.requests}
    (run.receiver.mirror / "a.txt").unlink()  # the app lost a file
    assert forget_ledger(run.settings, run.app_id, run.repository_id) == 2
    assert count_ledger(run.settings, run.app_id, run.repository_id) == 0
    watch = run.watch()
    assert (watch.status, watch.delivered_commit) == ("pending", None)
    run.receiver.requests.clear()
    assert run.deliver(commit).created == 2
    assert all(not r.duplicate for r in run.receiver.requests)
    assert not first_ids & {r.webhook_id for r in run.receiver.requests}
    assert run.receiver.files() == run.repo.files_at(commit)
    assert json.loads(json.dumps(run.ledger()))  # ledger rebuilt


@pytest.mark.parametrize("change", ["unwatch", "redeliver"])
def test_a_watch_removed_or_reset_mid_delivery_stops_it_and_keeps_the_ledger_forgotten(
    run: Run, change: str
) -> None:
    for index in range(20):
        run.repo.write(f"f{index:02d}.txt", f"{index}\n")
    commit = run.repo.commit()
    run.register()

    def change_the_watch_at_f05(record: Received) -> bool:
        if record.path == "f05.txt":
            if change == "unwatch":
                with session_scope(run.settings.database_url) as session:
                    watch_rows.unwatch(session, run.app_id, run.repository_id)
            else:
                forget_ledger(run.settings, run.app_id, run.repository_id)
        return False  # answered 200 all the same

    run.receiver.fail_next(500, where=change_the_watch_at_f05)
    result = run.deliver(commit)
    assert result.status == "removed" and result.error_type == DeliveryErrorType.WATCH_MISSING
    # f05 was on its way when the watch changed; nothing after it was sent, and the
    # ledger the change forgot does not come back.
    assert [r.path for r in ok_files(run.receiver)] == [f"f{i:02d}.txt" for i in range(6)]
    assert run.ledger() == {}
