"""Batch delivery (apps that opted in): `/batch` bodies against the example receiver on 127.0.0.1.

The receiver verifies every request with the `standardwebhooks` package, so each batch
here is also a signature check of the batch body.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select
from temporalio.exceptions import ApplicationError

from activities.delivery import DeliveryActivities
from examples.receiver import Received, Receiver
from models.delivery import DeliverInput
from models.tables import DeliveredFile, DeliveryAttempt
from tests.delivery.test_delivery import BINARY, Run
from tests.support import registering
from treecast.config import Settings
from treecast.db import session_scope
from treecast.service.core import TreecastService
from treecast.webhooks import payloads, signing


def batch_on(run: Run, on: bool = True) -> None:
    registering.blocking(TreecastService(run.settings).apps.update(run.app_id, batch=on))


def batches(rcv: Receiver) -> list[Received]:
    """Verified /batch requests answered with 2xx, duplicates included."""
    return [r for r in rcv.requests if r.event == "batch" and 200 <= r.status < 300]


def nth_batch(rcv: Receiver) -> int:
    """(In a fault's `where`) which batch request the one being handled is, from 1."""
    return sum(1 for r in rcv.requests if r.event == "batch")


def events_of(record: Received) -> list[tuple[str, str]]:
    return [(e["event"], e["file"]["path"]) for e in record.payload["events"]]


def capture_bodies(rcv: Receiver) -> list[tuple[str, dict[str, str], bytes]]:
    """Record (path, headers, raw body) of every request the receiver handles."""
    seen: list[tuple[str, dict[str, str], bytes]] = []
    handle = rcv.handle

    def recording(event: str, body: bytes, headers: dict[str, str], raw_path: str = "") -> Any:
        seen.append((raw_path, dict(headers), body))
        return handle(event, body, headers, raw_path)

    rcv.handle = recording  # type: ignore[method-assign]
    return seen


@pytest.fixture
def brun(settings: Settings, tmp_path: Path, receiver: Receiver, receiver_secret: str) -> Run:
    small = settings.model_copy(update={"batch_max_files": 3})
    return Run(small, tmp_path, receiver, [receiver_secret])


def sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def test_batches_carry_the_usual_events_in_order_and_verify(brun: Run) -> None:
    run = brun
    for name in "abcdefg":
        run.repo.write(f"{name}.txt", f"{name}\n")
    run.repo.write("img/logo.bin", BINARY)
    first = run.repo.commit("first")
    run.register()
    batch_on(run)
    bodies = capture_bodies(run.receiver)

    result = run.deliver(first)
    assert (result.status, result.created) == ("synced", 8)
    assert run.receiver.files() == run.repo.files_at(first)
    sent = batches(run.receiver)
    assert [len(b.payload["events"]) for b in sent] == [3, 3, 2]
    assert [e for b in sent for e in events_of(b)] == [
        ("create", p) for p in sorted(run.repo.files_at(first))
    ]
    assert all(r.raw_path == "/batch" for r in run.receiver.requests)
    assert all(r.headers["treecast-event"] == "batch" for r in sent)
    assert run.receiver.rejected == []
    # Each event is the single request's body, byte for byte, with "event" first.
    raw = json.loads(bodies[0][2])
    assert list(raw) == ["events"]
    event = raw["events"][0]
    assert list(event) == ["event", "repository", "file", "commit_sha", "timestamp"]
    assert event["file"] == {"path": "a.txt", "sha": sha("a\n"), "size": 2, "content": "a\n"}
    assert event["repository"]["repository_id"] == run.repository_id
    logo = [e for b in sent for e in b.payload["events"] if e["file"]["path"] == "img/logo.bin"]
    assert logo[0]["file"]["content_encoding"] == "base64"
    assert run.ledger() == {p: sha(b) for p, b in run.repo.files_at(first).items()}
    # One delivery-log row per batch: event "batch", no path.
    log = run.attempts()
    assert [(a.event, a.path, a.http_status) for a in log] == [("batch", None, 200)] * 3
    assert {a.webhook_id for a in log} == {b.webhook_id for b in sent}

    # deletes, then creates, then updates, across batch boundaries
    run.receiver.requests.clear()
    run.repo.remove("a.txt")
    run.repo.remove("b.txt")
    run.repo.write("c.txt", "c changed\n")
    run.repo.write("0-new.txt", "zero\n")
    run.repo.write("z-new.txt", "zed\n")
    second = run.repo.commit("second")
    result = run.deliver(second)
    assert (result.created, result.updated, result.deleted) == (2, 1, 2)
    sent = batches(run.receiver)
    assert [e for b in sent for e in events_of(b)] == [
        ("delete", "a.txt"),
        ("delete", "b.txt"),
        ("create", "0-new.txt"),
        ("create", "z-new.txt"),
        ("update", "c.txt"),
    ]
    update = sent[-1].payload["events"][-1]
    assert update["previous_sha"] == sha("c\n")
    delete = sent[0].payload["events"][0]
    assert delete == {
        "event": "delete",
        "repository": delete["repository"],
        "file": {"path": "a.txt", "sha": sha("a\n")},
        "commit_sha": second,
        "timestamp": delete["timestamp"],
    }
    assert run.receiver.files() == run.repo.files_at(second)
    assert run.watch().delivered_commit == second


def test_a_batch_is_bounded_by_bytes(brun: Run) -> None:
    run = brun
    run.settings = run.settings.model_copy(update={"batch_max_files": 100, "batch_max_bytes": 1500})
    for i in range(6):
        run.repo.write(f"f{i}.txt", f"{i}" * 300)
    run.repo.write("huge.txt", "h" * 3000)  # larger than a batch: goes as a batch of one
    commit = run.repo.commit()
    run.register()
    batch_on(run)
    bodies = capture_bodies(run.receiver)
    run.deliver(commit)
    assert run.receiver.files() == run.repo.files_at(commit)
    sizes = [len(body) for _, _, body in bodies]
    counts = [len(json.loads(body)["events"]) for _, _, body in bodies]
    assert sum(counts) == 7 and len(counts) > 2
    for size, count in zip(sizes, counts, strict=True):
        assert size <= 1500 or count == 1
    # Every batch is as full as the bound allows: the next event would not have fitted.
    events = [json.loads(body)["events"] for _, _, body in bodies]
    for batch, following in itertools.pairwise(events):
        nxt = payloads.batch_event(following[0]["event"], payloads.to_json(
            {k: v for k, v in following[0].items() if k != "event"}))  # fmt: skip
        assert len(payloads.batch_body([*map(payloads.to_json, batch)])) + 1 + len(nxt) > 1500


def test_a_chunked_file_goes_alone_between_batches(brun: Run) -> None:
    run = brun
    run.settings = run.settings.model_copy(
        update={"chunk_threshold_bytes": 4096, "chunk_size_bytes": 1024}
    )
    run.repo.write("a.txt", "a")
    run.repo.write("b.txt", "b")
    run.repo.write("c.bin", BINARY)  # 10 KiB binary: 14 chunks
    run.repo.write("d.txt", "d")
    commit = run.repo.commit()
    run.register()
    batch_on(run)
    run.deliver(commit)
    assert run.receiver.files() == run.repo.files_at(commit)
    shape = [
        (r.event, r.path if r.event != "batch" else tuple(p for _, p in events_of(r)))
        for r in run.receiver.requests
    ]
    assert shape[0] == ("batch", ("a.txt", "b.txt"))
    assert shape[1:15] == [("create", "c.bin")] * 14
    assert [r.chunk_index for r in run.receiver.requests[1:15]] == list(range(14))
    assert shape[15:] == [("batch", ("d.txt",))]


def test_a_failed_batch_is_resent_whole_with_the_same_id_and_none_of_it_is_in_the_ledger(
    brun: Run,
) -> None:
    run = brun
    commit = run.letters("abcdefgh")
    batch_on(run)
    # The second batch (d, e, f) is refused.
    run.receiver.fail_next(500, where=lambda r: r.event == "batch" and nth_batch(run.receiver) == 2)
    with pytest.raises(ApplicationError) as failure:
        run.deliver(commit)
    assert failure.value.type == "WebhookHttpError"
    assert set(run.ledger()) == {"a.txt", "b.txt", "c.txt"}
    (progress,) = failure.value.details
    assert (progress.done, progress.created) == (3, 3)
    failed = run.receiver.requests[-1]
    assert failed.status == 500 and failed.event == "batch"
    last_error = run.watch().last_error
    assert last_error is not None and last_error.startswith("batch of 3 (d.txt .. f.txt)")
    with session_scope(run.settings.database_url) as session:
        log = session.exec(select(DeliveryAttempt).order_by(col(DeliveryAttempt.id))).all()
        assert [(a.event, a.path, a.http_status) for a in log] == [
            ("batch", None, 200),
            ("batch", None, 500),
        ]

    run.deliver(commit)
    resent = [r for r in run.receiver.requests if r.event == "batch"]
    assert [events_of(r) for r in resent] == [
        [("create", "a.txt"), ("create", "b.txt"), ("create", "c.txt")],
        [("create", "d.txt"), ("create", "e.txt"), ("create", "f.txt")],  # refused
        [("create", "d.txt"), ("create", "e.txt"), ("create", "f.txt")],  # the same batch
        [("create", "g.txt"), ("create", "h.txt")],
    ]
    assert resent[1].webhook_id == resent[2].webhook_id == failed.webhook_id
    assert len({r.webhook_id for r in resent}) == 3
    assert run.receiver.files() == run.repo.files_at(commit)


def test_a_lost_acknowledgement_resends_the_batch_as_a_duplicate(brun: Run) -> None:
    run = brun
    commit = run.letters("abcd")
    batch_on(run)
    run.receiver.delay_next(
        1.0, where=lambda r: r.event == "batch" and nth_batch(run.receiver) == 2
    )
    slow = run.settings.model_copy(update={"file_timeout_seconds": 0.3})
    with pytest.raises(ApplicationError, match="did not answer within"):
        run.env.run(
            DeliveryActivities(slow).deliver_changes,
            DeliverInput(run.app_id, run.repository_id, commit),
        )
    assert set(run.ledger()) == {"a.txt", "b.txt", "c.txt"}
    run.deliver(commit)
    second = [r for r in run.receiver.requests if events_of(r) == [("create", "d.txt")]]
    assert len(second) == 2 and second[0].webhook_id == second[1].webhook_id
    assert set(run.ledger()) == {"a.txt", "b.txt", "c.txt", "d.txt"}


def test_a_crash_while_recording_a_batch_leaves_none_of_it_in_the_ledger(
    brun: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker dies between the 2xx and the commit: the batch is re-sent, same id."""
    from treecast.store.ledger import LedgerWriter

    run = brun
    commit = run.letters("abcdef")
    batch_on(run)
    real = LedgerWriter.acknowledged
    calls = {"n": 0}

    def dying(self: LedgerWriter, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the second batch's 2xx came back; its transaction never commits
            raise RuntimeError("killed before the batch's transaction committed")
        real(self, **kwargs)

    monkeypatch.setattr(LedgerWriter, "acknowledged", dying)
    with pytest.raises(ApplicationError, match="killed"):
        run.deliver(commit)
    assert set(run.ledger()) == {"a.txt", "b.txt", "c.txt"}
    monkeypatch.setattr(LedgerWriter, "acknowledged", real)
    run.deliver(commit)
    sent = [r for r in run.receiver.requests if r.event == "batch"]
    assert [len(r.payload["events"]) for r in sent] == [3, 3, 3]
    assert sent[1].webhook_id == sent[2].webhook_id and sent[2].duplicate
    assert set(run.ledger()) == {f"{n}.txt" for n in "abcdef"}


def test_the_ledger_batch_is_one_transaction(settings: Settings, tmp_path: Path) -> None:
    """A path of a batch that cannot be recorded (watch reset meanwhile) records none."""
    from tests.support.receiver_fixture import register
    from treecast.store.ledger import LedgerWriter, WatchChanged

    app_id, repository_id = register(settings, "http://127.0.0.1:9", ["whsec_" + "A" * 32], "x")
    with session_scope(settings.database_url) as session:
        from models.tables import Watch

        watch = session.get(Watch, (app_id, repository_id))
        assert watch is not None
        generation = watch.ledger_generation
    writer = LedgerWriter(settings.database_url, app_id, repository_id, generation)
    writer.acknowledged(
        event="batch", path=None,
        webhook_id="msg_1", http_status=200, duration_ms=1.0, excerpt=None,
        entries=[("a", ("b1", "s1"), False), ("b", ("b2", "s2"), False)],
    )  # fmt: skip
    stale = LedgerWriter(settings.database_url, app_id, repository_id, "another-generation")
    with pytest.raises(WatchChanged):
        stale.acknowledged(
            event="batch", path=None,
            webhook_id="msg_2", http_status=200, duration_ms=1.0, excerpt=None,
            entries=[("a", None, True), ("c", ("b3", "s3"), False)],
        )  # fmt: skip
    writer.close()
    stale.close()
    with session_scope(settings.database_url) as session:
        rows = session.exec(select(DeliveredFile)).all()
        assert sorted(r.path for r in rows) == ["a", "b"]
        assert [a.webhook_id for a in session.exec(select(DeliveryAttempt)).all()] == ["msg_1"]


def test_apps_without_batch_get_byte_identical_single_requests(
    run_single: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An app that did not opt in gets exactly the requests of before: each body and every
    header rebuilt here from the documented single-request format, time frozen."""
    run = run_single
    run.repo.write("a.txt", "a\n")
    run.repo.write("img/logo.bin", BINARY)
    first = run.repo.commit()
    run.register()
    stamp = "2026-01-02T03:04:05.678Z"
    now = int(time.time())
    monkeypatch.setattr(payloads, "iso_utc", lambda moment=None: stamp)
    monkeypatch.setattr(time, "time", lambda: float(now))
    bodies = capture_bodies(run.receiver)
    from treecast.delivery.target import load_target

    def target_now() -> Any:
        with session_scope(run.settings.database_url) as session:
            target = load_target(run.settings, session, run.app_id, run.repository_id)
        assert target is not None
        return target

    first_target = target_now()
    run.deliver(first)
    # A finished sync starts a new ledger generation: the second round's ids use it.
    second_target = target_now()
    run.repo.remove("a.txt")
    run.repo.write("img/logo.bin", BINARY[::-1])
    second = run.repo.commit()
    run.deliver(second)
    repo = first_target.repository
    gen = first_target.generation

    def expected(
        event: str, msg_parts: tuple[Any, ...], body: bytes
    ) -> tuple[str, dict[str, str], bytes]:
        msg_id = signing.webhook_id(run.app_id, run.repository_id, gen, *msg_parts)
        headers = signing.signed_headers(run.secrets, msg_id, event, body, timestamp=now)
        return f"/{event}", headers, body

    def blob(data: bytes) -> str:
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    logo2 = BINARY[::-1]
    want = [
        expected("create", ("create", "a.txt", blob(b"a\n"), None), payloads.file_body(
            event="create", repo=repo, path="a.txt", sha=sha("a\n"), size=2, content="a\n",
            base64=False, commit_sha=first, timestamp=stamp)),
        expected("create", ("create", "img/logo.bin", blob(BINARY), None), payloads.file_body(
            event="create", repo=repo, path="img/logo.bin", sha=sha(BINARY), size=len(BINARY),
            content=base64.b64encode(BINARY).decode(), base64=True, commit_sha=first,
            timestamp=stamp)),
    ]  # fmt: skip
    assert [
        (p, {k: h[k] for k in w[1]}, b) for (p, h, b), w in zip(bodies[:2], want, strict=True)
    ] == want
    gen = second_target.generation
    want = [
        expected("delete", ("delete", "a.txt", sha("a\n")), payloads.delete_body(
            repo=repo, path="a.txt", sha=sha("a\n"), commit_sha=second, timestamp=stamp)),
        expected("update", ("update", "img/logo.bin", blob(logo2), sha(BINARY)),
                 payloads.file_body(
            event="update", repo=repo, path="img/logo.bin", sha=sha(logo2), size=len(logo2),
            content=base64.b64encode(logo2).decode(), base64=True, commit_sha=second,
            timestamp=stamp, previous_sha=sha(BINARY))),
    ]  # fmt: skip
    got = [(p, {k: h[k] for k in w[1]}, b) for (p, h, b), w in zip(bodies[2:], want, strict=True)]
    assert len(bodies) == 4 and got == want
    # and nothing besides those headers (plus the transport's own)
    assert {k for k in bodies[0][1]} - set(want[0][1]) <= {
        "host", "accept", "accept-encoding", "connection", "content-length"
    }  # fmt: skip


@pytest.fixture
def run_single(settings: Settings, tmp_path: Path, receiver: Receiver, receiver_secret: str) -> Run:
    return Run(settings, tmp_path, receiver, [receiver_secret])


def test_a_database_from_before_batches_gets_the_column(any_db_settings: Settings) -> None:
    """An `apps` table created by an older version gains `batch` (off) on start."""
    from sqlalchemy import text

    from models.tables import App
    from tests.support.receiver_fixture import register
    from treecast.db import add_missing_columns, engine_for

    settings = any_db_settings
    app_id, _ = register(settings, "http://127.0.0.1:9", ["whsec_" + "A" * 32], "x")
    engine = engine_for(settings.database_url)
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE apps DROP COLUMN batch"))
    assert add_missing_columns(engine) == ["apps.batch"]
    assert add_missing_columns(engine) == []
    with session_scope(settings.database_url) as session:
        app = session.get(App, app_id)
        assert app is not None and app.batch is False
