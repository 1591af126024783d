"""Fault scenarios on the real stack (issue 7): killed workers, a restarted Temporal
server, a flaky receiver, a dead app, a moving git remote and a lost database.

Everything runs on loopback: a Temporal dev server on a free port (its SQLite file
in the test's data dir), the real worker (in-process, or `worker.py` as a child
process that is SIGKILLed), real git repositories with a bare file:// remote, and
the example receiver. Random choices use fixed seeds, so a failure reproduces.
Each test prints its figures (`pytest -s`); docs/reliability.md ("Faults") quotes them.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from temporalio.client import WorkflowExecutionStatus

from examples.receiver import Received, Receiver
from models.sync import sync_workflow_id
from models.tables import App, WatchStatus
from tests.conftest import free_port
from tests.support.faults_helpers import (
    FaultStack,
    StoppablePostgres,
    WorkerProcess,
    applied,
    duplicates,
    fault_stack,
    files_repo,
    in_process_worker,
    slow_down,
    until,
    until_applied,
    until_delivered,
)
from tests.support.gitrepos import WorkRepo, git
from treecast.crypto import generate_webhook_secret
from treecast.db import session_scope
from treecast.service import workflows as temporal_ops

pytestmark = pytest.mark.e2e

SEED = 20240607


def report(name: str, **figures: object) -> None:
    """Print a scenario's figures (pytest -s shows them; docs/reliability.md quotes them)."""
    print(f"\n[faults] {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


# -- the worker is SIGKILLed mid-delivery --------------------------------------------------


async def test_worker_killed_mid_delivery_resumes_with_at_most_one_duplicate_per_kill(
    tmp_path: Path,
) -> None:
    rng = random.Random(SEED)
    repo, commit = files_repo(tmp_path / "git", 2000)
    expected = repo.files_at(commit)
    secret = generate_webhook_secret()
    async with fault_stack(tmp_path / "data") as stack:
        with Receiver([secret], tmp_path / "mirror") as receiver:
            app_id = stack.add_app(receiver, secret)
            repository_id = stack.add_repository(repo.url)
            stack.watch(app_id, repository_id)
            proc = WorkerProcess(stack.env, tmp_path / "worker.log")
            proc.start()
            started = time.monotonic()
            resumes: list[float] = []
            points = sorted(rng.sample(range(50, 1950), 3))
            try:
                await stack.start_sync(repository_id)
                for point in points:
                    await until_applied(receiver, point)
                    proc.kill()
                    proc.start()
                    # Seconds from the kill to the first new file (Temporal must notice
                    # the dead worker by its missing heartbeats, then retry).
                    resumes.append(
                        round(await until_applied(receiver, len(applied(receiver)) + 1), 1)
                    )
                await until_delivered(stack, app_id, repository_id, commit, 60)
            finally:
                proc.stop()
            total = round(time.monotonic() - started, 1)
            assert receiver.files() == expected
            assert stack.ledger(app_id, repository_id).keys() == expected.keys()
            assert stack.watch_row(app_id, repository_id).status == WatchStatus.SYNCED
            dup = duplicates(receiver)
            report(
                "worker SIGKILL",
                kills=proc.kills,
                kill_points=points,
                duplicates=dup,
                resume_seconds=resumes,
                total_seconds=total,
                file_requests=len(receiver.file_requests()),
            )
            assert proc.kills == 3
            assert dup <= proc.kills  # at most the in-flight file of each kill


# -- the worker is SIGKILLed in the middle of a chunked file ---------------------------------

CHUNK_SIZE = 4096  # encoded characters per chunk: 3,072 file bytes
CHUNKS = 6
KILL_AFTER = 2  # the worker dies once chunk 2 was acknowledged, with chunk 3 on the wire
# Seconds the receiver takes per chunk. The resume point after a kill is the last
# position the worker's heartbeat reported, and the worker heartbeats at most once a
# second (worker.HEARTBEAT_THROTTLE): slower than that, every acknowledged chunk was
# reported, so exactly the one on the wire comes again. Faster chunks may repeat up to
# a second's worth (docs/webhooks.md).
CHUNK_PACE = 1.2


async def test_worker_killed_mid_chunked_file_resumes_at_the_last_reported_chunk(
    tmp_path: Path,
) -> None:
    rng = random.Random(SEED)
    raw = (CHUNK_SIZE // 4) * 3
    repo = WorkRepo(tmp_path / "git")
    repo.write("big.bin", rng.randbytes(raw * (CHUNKS - 1) + 1000))
    commit = repo.commit("one chunked file")
    expected = repo.files_at(commit)
    secret = generate_webhook_secret()
    async with fault_stack(
        tmp_path / "data",
        TREECAST_CHUNK_THRESHOLD_BYTES=str(CHUNK_SIZE),
        TREECAST_CHUNK_SIZE_BYTES=str(CHUNK_SIZE),
    ) as stack:
        with Receiver([secret], tmp_path / "mirror") as receiver:
            app_id = stack.add_app(receiver, secret)
            repository_id = stack.add_repository(repo.url)
            stack.watch(app_id, repository_id)
            proc = WorkerProcess(stack.env, tmp_path / "worker.log")
            killed = threading.Event()
            killed_at: list[int] = []  # index into receiver.requests of the in-flight chunk

            def pace_and_kill(record: Received) -> bool:
                if record.chunk_index is None:
                    return False
                time.sleep(CHUNK_PACE)
                if record.chunk_index == KILL_AFTER + 1 and not killed.is_set():
                    # Chunks 0..KILL_AFTER are acknowledged; this one is on the wire. It
                    # is applied (the receiver got it) but the worker never sees the 2xx.
                    proc.kill()
                    killed_at.append(len(receiver.requests) - 1)
                    killed.set()
                return False

            receiver.fail_next(500, 1_000_000, where=pace_and_kill)
            proc.start()
            try:
                await stack.start_sync(repository_id)
                await until(killed.is_set, 30, f"chunk {KILL_AFTER + 1} on the wire")
                proc.start()
                took = await until_delivered(stack, app_id, repository_id, commit, 30)
            finally:
                proc.stop()
            chunks = [r for r in receiver.file_requests() if r.chunk_index is not None]
            before = [r.chunk_index for r in receiver.requests[: killed_at[0] + 1]]
            after = [r.chunk_index for r in receiver.requests[killed_at[0] + 1 :]]
            sent = Counter(r.chunk_index for r in chunks if r.chunk_index is not None)
            resent = sorted(i for i, n in sent.items() if n > 1 for _ in range(n - 1))
            report(
                "worker SIGKILL mid-chunked file",
                chunks=CHUNKS,
                acknowledged_before_kill=KILL_AFTER + 1,
                sent_before_kill=before,
                sent_after_restart=after,
                chunks_resent=resent,
                duplicates=duplicates(receiver),
                seconds_from_restart_to_delivered=round(took, 1),
            )
            assert receiver.files() == expected
            assert stack.ledger(app_id, repository_id).keys() == expected.keys()
            assert before == list(range(KILL_AFTER + 2))
            # Every chunk acknowledged before the kill was received exactly once.
            assert all(sent[i] == 1 for i in range(KILL_AFTER + 1)), sent
            # The restarted worker resumed at the chunk that was on the wire (a duplicate
            # under the same webhook-id, dropped by the receiver), then the rest once each.
            assert after == list(range(KILL_AFTER + 1, CHUNKS))
            assert duplicates(receiver) <= 1
            assert all(sent[i] == 1 for i in range(KILL_AFTER + 2, CHUNKS)), sent


# -- the Temporal server stops and starts again mid-sync -------------------------------------


async def test_temporal_server_restarted_mid_sync_carries_on(tmp_path: Path) -> None:
    repo, _ = files_repo(tmp_path / "git", 600)
    secret = generate_webhook_secret()
    async with fault_stack(tmp_path / "data") as stack:
        assert stack.client is not None
        with Receiver([secret], tmp_path / "mirror") as receiver:
            slow_down(receiver, 0.01)  # ~6 s for the 600 files: the restart lands mid-delivery
            app_id = stack.add_app(receiver, secret)
            repository_id = stack.add_repository(repo.url, interval=2)
            stack.watch(app_id, repository_id)
            async with in_process_worker(stack):
                await stack.start_sync(repository_id, interval=2)
                handle = stack.client.get_workflow_handle(sync_workflow_id(repository_id))
                run_id = (await handle.describe()).run_id
                await until_applied(receiver, 100)
                at_stop = len(applied(receiver))
                await stack.stop_server()
                # While the server is down: a new commit that only the next poll can find.
                repo.write("dir00/f00000.txt", "changed while Temporal was down\n")
                repo.write("late.txt", "late\n")
                repo.remove("dir01/f00001.txt")
                second = repo.commit("while down")
                await asyncio.sleep(1)
                await stack.start_server()
                took = await until_delivered(stack, app_id, repository_id, second, 60)
                description = await handle.describe()
            assert at_stop < 600
            assert receiver.files() == repo.files_at(second)
            assert description.run_id == run_id  # the same loop: nothing was re-registered
            assert description.status == WorkflowExecutionStatus.RUNNING
            report(
                "dev server restart",
                files_before_stop=at_stop,
                seconds_from_restart_to_new_commit_delivered=round(took, 1),
                duplicates=duplicates(receiver),
            )


# -- the receiver fails half of the requests for a while -----------------------------------


def flaky(receiver: Receiver, rng: random.Random, failures: int, timeout: float) -> None:
    """Fail half the requests at random until `failures` failed (500, reset, timeout in turn)."""
    kinds = ["500", "reset", "timeout"]
    rng.shuffle(kinds)
    chosen: dict[int, str] = {}

    def kind(name: str) -> Callable[[Received], bool]:
        def where(record: Received) -> bool:
            key = id(record)  # records stay in receiver.requests: ids are not reused
            if key not in chosen:
                done = sum(1 for v in chosen.values() if v != "ok")
                fail = done < failures and rng.random() < 0.5
                chosen[key] = kinds[done % len(kinds)] if fail else "ok"
            return chosen[key] == name

        return where

    many = 1_000_000
    receiver.fail_next(500, many, where=kind("500"))
    receiver.drop_next(many, where=kind("reset"))
    receiver.delay_next(timeout + 0.5, many, status=500, where=kind("timeout"))


def delivery_order(changes: list[tuple[str, str | None]]) -> list[tuple[str, str | None]]:
    """The order Treecast promises: deletes, creates, updates, each by path."""
    rank = {"delete": 0, "create": 1, "update": 2}
    return sorted(changes, key=lambda c: (rank[c[0]], c[1] or ""))


async def test_a_flaky_receiver_gets_everything_in_order_and_the_log_shows_the_retries(
    tmp_path: Path,
) -> None:
    rng = random.Random(SEED)
    repo, first = files_repo(tmp_path / "git", 40)
    secret = generate_webhook_secret()
    async with fault_stack(tmp_path / "data", TREECAST_FILE_TIMEOUT_SECONDS="1") as stack:
        with (
            Receiver([secret], tmp_path / "mirror-a") as one,
            Receiver([secret], tmp_path / "mirror-b") as two,
        ):
            receivers = {stack.add_app(one, secret, "a"): one, stack.add_app(two, secret, "b"): two}
            repository_id = stack.add_repository(repo.url)
            for app_id in receivers:
                stack.watch(app_id, repository_id)
            async with in_process_worker(stack):
                await stack.start_sync(repository_id)
                for app_id in receivers:
                    await until_delivered(stack, app_id, repository_id, first, 60)
                # The second commit deletes, creates and updates; half the requests fail.
                for number in range(10):
                    repo.remove(f"dir{number % 20:02d}/f{number:05d}.txt")
                for number in range(10, 25):
                    repo.write(f"dir{number % 20:02d}/f{number:05d}.txt", f"updated {number}\n")
                for number in range(100, 115):
                    repo.write(f"new/n{number}.txt", f"new {number}\n")
                second = repo.commit("mixed change")
                before = {a: len(r.requests) for a, r in receivers.items()}
                for receiver in receivers.values():
                    flaky(receiver, rng, failures=3, timeout=1.0)
                started = time.monotonic()
                await stack.start_sync(repository_id)
                for app_id in receivers:
                    await until_delivered(stack, app_id, repository_id, second, 90)
                took = time.monotonic() - started
        figures: dict[str, object] = {"seconds_to_converge": round(took, 1)}
        for name, (app_id, receiver) in zip("ab", receivers.items(), strict=True):
            assert receiver.files() == repo.files_at(second)
            batch = receiver.requests[before[app_id] :]
            injected = [r for r in batch if not 200 <= r.status < 300]
            sent = [(r.event, r.path) for r in batch if 200 <= r.status < 300 and not r.duplicate]
            assert len(injected) == 3
            assert sent == delivery_order(sent)  # in order per app, retries included
            assert len(sent) == 10 + 15 + 15
            log = stack.attempts(app_id)
            failed = [a for a in log if a.http_status is None or a.http_status >= 300]
            # Every injected failure is in the log, as a 500 or a transport error.
            assert len(failed) == len(injected)
            assert all(a.error for a in failed)
            kinds = sorted("500" if a.http_status else "transport" for a in failed)
            figures[f"app_{name}"] = (
                f"{len(sent)} files, {len(injected)} failures, logged {'/'.join(kinds)}, "
                f"{duplicates(receiver)} duplicates"
            )
        report("flaky receiver", **figures)


# -- one of three apps is down for good ---------------------------------------------------


async def test_one_dead_app_of_three_does_not_hold_back_the_others(tmp_path: Path) -> None:
    repo, first = files_repo(tmp_path / "git", 20)
    secret = generate_webhook_secret()
    dead_port = free_port()
    async with fault_stack(tmp_path / "data", TREECAST_POLL_INTERVAL_SECONDS="2") as stack:
        with (
            Receiver([secret], tmp_path / "mirror-1") as one,
            Receiver([secret], tmp_path / "mirror-2") as two,
        ):
            ids = [stack.add_app(r, secret, n) for r, n in ((one, "one"), (two, "two"))]
            ids.append(stack.add_app(f"http://127.0.0.1:{dead_port}", secret, "dead"))
            # The dead app must come first in the pass's (sorted) app order to prove that
            # it holds nobody back: swap ids if needed by choosing which row is "dead".
            dead = min(ids)
            live = {a: r for a, r in zip([i for i in ids if i != dead], (one, two), strict=True)}
            _point(stack, live, dead, dead_port)
            repository_id = stack.add_repository(repo.url, interval=2)
            for app_id in ids:
                stack.watch(app_id, repository_id)
            async with in_process_worker(stack):
                await stack.start_sync(repository_id, interval=2)
                first_lag = await _all_delivered(stack, live, repository_id, first)
                await until(
                    lambda: stack.watch_row(dead, repository_id).status == WatchStatus.FAILED,
                    60,
                    "the dead app marked failed",
                    step=0.2,
                )
                failed = stack.watch_row(dead, repository_id)
                assert failed.last_error_type == "WebhookTransportError"
                assert failed.last_error
                repo.write("more.txt", "more\n")
                second = repo.commit("second")
                second_lag = await _all_delivered(stack, live, repository_id, second)
                # The dead app comes back on its address: the next poll catches it up.
                with Receiver([secret], tmp_path / "mirror-dead", port=dead_port) as back:
                    caught_up = await until_delivered(stack, dead, repository_id, second, 60)
                    assert back.files() == repo.files_at(second)
            for receiver in live.values():
                assert receiver.files() == repo.files_at(second)
            report(
                "one dead app of three",
                live_apps_first_commit_seconds=round(first_lag, 1),
                live_apps_second_commit_seconds=round(second_lag, 1),
                dead_app_error=f"{failed.last_error_type}: {failed.last_error}"[:80],
                catch_up_seconds_after_return=round(caught_up, 1),
            )
            # "On time": within one poll interval (2 s) plus a little, not behind the
            # dead app's retries (5 attempts over 15 s).
            assert first_lag < 6 and second_lag < 6


def _point(stack: FaultStack, live: dict[str, Receiver], dead: str, dead_port: int) -> None:
    """Point each app row at its receiver (ids were assigned before we knew the order)."""
    with session_scope(stack.settings.database_url) as session:
        for app_id, receiver in [*live.items(), (dead, None)]:
            row = session.get(App, app_id)
            assert row is not None
            row.base_url = receiver.url if receiver else f"http://127.0.0.1:{dead_port}"
            session.add(row)


async def _all_delivered(
    stack: FaultStack, live: dict[str, Receiver], repository_id: str, commit: str
) -> float:
    """Seconds until every live app has `commit`."""
    started = time.monotonic()
    for app_id in live:
        await until_delivered(stack, app_id, repository_id, commit, 60)
    return time.monotonic() - started


# -- the git remote disappears, returns, is force-pushed and replaced ----------------------


async def test_a_moving_git_remote_trips_and_heals_the_breaker_and_the_mirror_follows(
    tmp_path: Path,
) -> None:
    repo, first = files_repo(tmp_path / "git", 10)
    secret = generate_webhook_secret()
    async with fault_stack(tmp_path / "data") as stack:
        assert stack.client is not None
        client = stack.client
        with Receiver([secret], tmp_path / "mirror") as receiver:
            app_id = stack.add_app(receiver, secret)
            repository_id = stack.add_repository(repo.url, interval=1)
            stack.watch(app_id, repository_id)

            async def breaker() -> str:
                status = await temporal_ops.get_status(client, repository_id)
                assert status is not None
                return str(status.breaker_state)

            async with in_process_worker(stack):
                await stack.start_sync(repository_id, interval=1)
                await until_delivered(stack, app_id, repository_id, first, 30)

                # The remote disappears: 2 failed polls open the breaker, one sync_failed.
                hidden = repo.remote.with_name("hidden.git")
                repo.remote.rename(hidden)
                gone_at = time.monotonic()
                await until(lambda: len(receiver.notices) >= 1, 30, "sync_failed")
                opened = time.monotonic() - gone_at
                assert await breaker() == "open"
                assert receiver.notices[0]["event"] == "sync_failed"
                assert receiver.notices[0]["error"]["type"] == "RepositoryNotFound"

                # It comes back with a new commit: the half-open probe closes the breaker.
                hidden.rename(repo.remote)
                repo.write("back.txt", "back\n")
                second = repo.commit("back")
                back_at = time.monotonic()
                healed = await until_delivered(stack, app_id, repository_id, second, 30)
                assert [n["event"] for n in receiver.notices] == ["sync_failed", "sync_recovered"]
                assert await breaker() == "closed"
                assert receiver.files() == repo.files_at(second)
                del back_at

                # A force-push rewrites the last commit.
                git(repo.work, "reset", "-q", "--hard", "HEAD~1")
                repo.write("rewritten.txt", "rewritten\n")
                third = repo.commit("rewritten", force=True)
                forced = await until_delivered(stack, app_id, repository_id, third, 30)
                assert receiver.files() == repo.files_at(third)

                # An unrelated history replaces the branch: old files go, new ones come.
                git(repo.work, "checkout", "-q", "--orphan", "unrelated")
                git(repo.work, "rm", "-q", "-rf", ".")
                repo.write("fresh/readme.md", "a new beginning\n")
                fourth = repo.commit("unrelated", force=True)
                replaced = await until_delivered(stack, app_id, repository_id, fourth, 30)
                assert (
                    receiver.files()
                    == repo.files_at(fourth)
                    == {"fresh/readme.md": b"a new beginning\n"}
                )
                assert await breaker() == "closed"
            assert [n["event"] for n in receiver.notices] == ["sync_failed", "sync_recovered"]
            report(
                "moving git remote",
                seconds_to_open=round(opened, 1),
                seconds_to_heal_and_deliver=round(healed, 1),
                force_push_seconds=round(forced, 1),
                unrelated_history_seconds=round(replaced, 1),
                notices="sync_failed, sync_recovered",
            )


# -- the database is unreachable for a while ------------------------------------------------


@pytest.mark.postgres  # a server of its own, stopped and started again
async def test_a_lost_database_delays_delivery_but_never_marks_unacknowledged_files(
    tmp_path: Path,
) -> None:
    postgres = StoppablePostgres()
    await asyncio.to_thread(postgres.create)
    repo, commit = files_repo(tmp_path / "git", 400)
    expected = repo.files_at(commit)
    secret = generate_webhook_secret()
    violations: list[str] = []
    try:
        async with fault_stack(tmp_path / "data", TREECAST_DATABASE_URL=postgres.url) as stack:
            with Receiver([secret], tmp_path / "mirror") as receiver:
                slow_down(receiver, 0.01)  # ~4 s of delivery: the outage lands mid-way
                app_id = stack.add_app(receiver, secret)
                repository_id = stack.add_repository(repo.url)
                stack.watch(app_id, repository_id)

                def check_ledger() -> None:
                    # Ledger first, acknowledgements second: a row must already be acked.
                    try:
                        ledger = stack.ledger(app_id, repository_id)
                    except Exception:  # the database is down: nothing to compare
                        return
                    acked = {r.path for r in receiver.file_requests() if not r.duplicate}
                    violations.extend(sorted(set(ledger) - acked))

                async with in_process_worker(stack):
                    await stack.start_sync(repository_id)
                    await until_applied(receiver, 100)
                    await asyncio.to_thread(postgres.stop)
                    down_at, at_stop = time.monotonic(), len(applied(receiver))
                    await asyncio.sleep(4)
                    during = len(applied(receiver)) - at_stop
                    await asyncio.to_thread(postgres.start)
                    up_at = time.monotonic()
                    while True:
                        check_ledger()
                        try:
                            if stack.watch_row(app_id, repository_id).delivered_commit == commit:
                                break
                        except Exception:
                            pass
                        if time.monotonic() - up_at > 60:
                            raise AssertionError("no convergence after the database returned")
                        await asyncio.sleep(0.1)
                    took = time.monotonic() - up_at
                assert not violations, violations[:5]
                assert receiver.files() == expected
                assert stack.ledger(app_id, repository_id).keys() == expected.keys()
                attempts = stack.attempts(app_id)
                report(
                    "database outage (PostgreSQL stopped 4 s)",
                    files_before_outage=at_stop,
                    files_applied_while_down=during,
                    seconds_to_converge_after_return=round(took, 1),
                    outage_seconds=round(up_at - down_at, 1),
                    duplicates=duplicates(receiver),
                    logged_attempts=len(attempts),
                )
                # At most the one file whose acknowledgement could not be recorded.
                assert during <= 1
    finally:
        await asyncio.to_thread(postgres.remove)
