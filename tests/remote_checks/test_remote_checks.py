"""Remote checks: the ls-remote sweep that wakes a repository's workflow only when a sync
has work, so an idle repository costs no history between its full syncs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

import worker
from examples.receiver import Receiver
from models.checks import CheckReason, CheckRemotesInput, shard_of
from models.sync import sync_workflow_id
from models.tables import App, Repository, Snapshot, Watch, WatchStatus
from tests.conftest import treecast_env, use_env
from tests.support.cli import invoke
from tests.support.githttp import git_http_server
from tests.support.gitrepos import WorkRepo, git
from tests.support.idle_rows import add_idle_repositories
from tests.support.temporal_env import new_task_queue, save_history
from tests.support.waiting import until
from treecast import remote_checks
from treecast.config import Settings
from treecast.crypto import generate_webhook_secret
from treecast.db import session_scope
from treecast.gitcache.command import Credentials
from treecast.gitcache.errors import GitError
from treecast.gitcache.refcheck import (
    ASK_GIT,
    check_patterns,
    has_moved,
    remote_names,
    remote_names_over,
)
from treecast.gitcache.repository import RemoteAccess
from treecast.gitcache.smarthttp import RefClient, ls_refs_request, parse_ls_refs, pkt_line
from treecast.remote_checks import Target, check_one, load_targets, next_due, phase
from treecast.service.workflows import ensure_remote_checks
from treecast.webhooks.transport import shared_ssl_context
from workflows.check_remotes import CheckRemotes

# --- what the remote says -----------------------------------------------------------------


def test_patterns_find_the_ref_as_a_sync_resolves_it() -> None:
    assert check_patterns("") == ["HEAD"]
    assert check_patterns(" main ") == ["refs/heads/main", "refs/tags/main", "refs/tags/main^{}"]
    assert check_patterns("refs/tags/v1") == ["refs/tags/v1", "refs/tags/v1^{}"]
    assert check_patterns("a" * 40) is None  # a commit id never moves


def test_remote_names_of_branches_tags_and_the_default_branch(
    tmp_path: Path, settings: Settings
) -> None:
    repo = WorkRepo(tmp_path / "r")
    first = repo.commit_files({"a.txt": "a"}, "first")
    git(repo.work, "tag", "-a", "v1", "-m", "v1")
    git(repo.work, "push", "-q", "origin", "v1")
    tag_object = git(repo.remote, "rev-parse", "refs/tags/v1")

    def names(ref: str) -> frozenset[str] | None:
        return remote_names(settings, RemoteAccess("r1", repo.url, ref, None))

    assert names("") == {first}
    assert names("main") == {first}
    assert names("v1") == {tag_object, first}  # an annotated tag and the commit it names
    assert names("nope") == frozenset()
    assert names(first) is None
    assert not has_moved(first, names("v1"))
    repo.write("b.txt", "b")
    second = repo.commit("second")
    assert names("main") == {second}
    assert has_moved(first, names("main"))
    assert not has_moved(first, None)
    assert has_moved(None, frozenset({first})) and not has_moved(None, frozenset())


def test_each_repository_is_checked_once_per_interval_at_its_own_phase() -> None:
    for repository_id in ("r1", "r2", "r-three"):
        offset = phase(repository_id, 60)
        assert 0 <= offset < 60
        at = 1_000_000.0
        due = next_due(repository_id, 60, at)
        assert at < due <= at + 60
        assert (due - offset) % 60 == pytest.approx(0, abs=1e-6)
        assert next_due(repository_id, 60, due) == pytest.approx(due + 60)
    assert {shard_of(f"r{n}", 4) for n in range(50)} == {0, 1, 2, 3}


def _target(**kwargs: Any) -> Target:
    values: dict[str, Any] = {
        "repository_id": "r1",
        "interval": 60.0,
        "known_commit": None,
        "has_snapshot": True,
        "quiet_since": 0.0,
        "behind": False,
    }
    return Target(**{**values, **kwargs})


def test_a_check_wakes_the_workflow_only_when_a_sync_has_work(
    tmp_path: Path, settings: Settings
) -> None:
    repo = WorkRepo(tmp_path / "r")
    head = repo.commit_files({"a.txt": "a"}, "first")
    access = RemoteAccess("r1", repo.url, "", None)
    assert check_one(settings, _target(known_commit=head), access) is None  # idle
    moved = check_one(settings, _target(known_commit="b" * 40), access)
    assert moved is not None and moved.reason == CheckReason.MOVED and head in moved.detail
    behind = check_one(settings, _target(known_commit=head, behind=True), access)
    assert behind is not None and behind.reason == CheckReason.BEHIND
    # Just synced (or never yet): an app behind is its workflow's business for now.
    just = _target(known_commit=head, behind=True, quiet_since=time.time())
    assert check_one(settings, just, access) is None
    first = _target(has_snapshot=False, quiet_since=time.time())
    assert check_one(settings, first, access) is None
    gone = RemoteAccess("r1", f"file://{tmp_path}/missing.git", "", None)
    failed = check_one(settings, _target(known_commit=head), gone)
    assert failed is not None and failed.reason == CheckReason.FAILED
    assert failed.detail.startswith("RepositoryNotFound")


def test_targets_come_from_watched_repositories_with_their_newest_snapshot(
    settings: Settings,
) -> None:
    old = datetime.now(UTC) - timedelta(hours=1)
    with session_scope(settings.database_url) as session:
        session.add(App(id="app1", name="a", base_url="http://127.0.0.1:1", secrets_encrypted="x"))
        for rid in ("r-idle", "r-behind", "r-new", "r-unwatched", "r-disabled", "r-delivering"):
            session.add(Repository(id=rid, url=f"file:///tmp/{rid}", poll_interval_seconds=30))
        session.flush()
        session.add(Snapshot(repository_id="r-idle", commit="1" * 40, taken_at=old))
        session.add(Snapshot(repository_id="r-idle", commit="2" * 40))  # the newest
        session.add(Snapshot(repository_id="r-behind", commit="3" * 40, taken_at=old))
        for rid, delivered in (("r-idle", "2"), ("r-behind", "1")):
            session.add(
                Watch(
                    app_id="app1",
                    repository_id=rid,
                    delivered_commit=delivered * 40,
                    status=WatchStatus.SYNCED,
                )
            )
        session.add(Watch(app_id="app1", repository_id="r-new"))
        session.add(Snapshot(repository_id="r-delivering", commit="4" * 40, taken_at=old))
        session.add(Watch(app_id="app1", repository_id="r-delivering", status=WatchStatus.SYNCING))
        session.add(Watch(app_id="app1", repository_id="r-disabled", status=WatchStatus.DISABLED))
    targets = load_targets(settings, 0, 1)
    assert sorted(targets) == ["r-behind", "r-delivering", "r-disabled", "r-idle", "r-new"]
    assert not targets["r-delivering"].behind  # its DeliverFiles is at it
    idle, behind, new = targets["r-idle"], targets["r-behind"], targets["r-new"]
    assert (idle.known_commit, idle.behind, idle.interval) == ("2" * 40, False, 30.0)
    assert (behind.known_commit, behind.behind) == ("3" * 40, True)
    assert (new.has_snapshot, new.known_commit, new.behind) == (False, None, True)
    assert not targets["r-disabled"].behind
    halves = [set(load_targets(settings, shard, 2)) for shard in (0, 1)]
    assert halves[0] | halves[1] == set(targets) and not halves[0] & halves[1]


# --- end to end on the dev server -------------------------------------------------------


@dataclass
class Stack:
    repo: WorkRepo
    receiver: Receiver
    secret: str
    settings: Settings
    client: Any
    run: Callable[..., Any]


@pytest.fixture
async def stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dev_env: WorkflowEnvironment
) -> AsyncIterator[Stack]:
    settings = use_env(
        monkeypatch,
        treecast_env(
            tmp_path / "data",
            TEMPORAL_ADDRESS=dev_env.client.service_client.config.target_host,
            TREECAST_TASK_QUEUE=new_task_queue(),
            TREECAST_BREAKER_THRESHOLD="2",
            TREECAST_FULL_SYNC_SECONDS="3600",
        ),
    )
    monkeypatch.setattr(remote_checks, "HEARTBEAT_SECONDS", 0.5)  # status sees passes soon
    secret = generate_webhook_secret()
    executor = ThreadPoolExecutor(max_workers=worker.executor_threads(settings))
    try:
        with Receiver([secret], tmp_path / "mirror") as receiver:
            async with worker.build_worker(dev_env.client, settings, executor):
                assert await ensure_remote_checks(dev_env.client, settings) == [
                    "treecast-check-remotes-0-of-1"
                ]

                async def run(*argv: str) -> tuple[int, Any, str]:
                    return await asyncio.to_thread(invoke, list(argv))

                yield Stack(
                    WorkRepo(tmp_path / "git"), receiver, secret, settings, dev_env.client, run
                )
    finally:
        executor.shutdown(wait=False, cancel_futures=True)


async def _history_length(stack: Stack, repository_id: str) -> int:
    history = await stack.client.get_workflow_handle(
        sync_workflow_id(repository_id)
    ).fetch_history()
    return len(history.events)


async def _sync_status(stack: Stack, repository_id: str) -> dict[str, Any]:
    code, out, err = await stack.run("status", repository_id)
    assert code == 0, err
    return dict(out["repositories"][0]["sync"])


@pytest.mark.e2e
async def test_checks_deliver_a_push_and_cost_no_history_while_idle(stack: Stack) -> None:
    repo, receiver, run = stack.repo, stack.receiver, stack.run
    repo.write("a.txt", "one")
    first = repo.commit("first")
    code, app, err = await run(
        "app", "add", "--name", "m", "--url", receiver.url, "--secret", stack.secret
    )
    assert code == 0, err
    code, added, err = await run("repo", "add", repo.url, "--interval", "1")
    assert code == 0, err
    repository_id = added["repository_id"]
    assert (await run("watch", app["app_id"], repository_id))[0] == 0
    await until(lambda: receiver.files() == repo.files_at(first))
    status = await _sync_status(stack, repository_id)
    assert status["full_sync_interval_seconds"] == 3600
    assert "remote checked every 1 s" in status["message"]

    # Idle: checked every second, yet no sync and not one history event.
    await asyncio.sleep(2.5)  # the first delivery's reports settle
    syncs, events = status["syncs"], await _history_length(stack, repository_id)
    await asyncio.sleep(4)
    assert (await _sync_status(stack, repository_id))["syncs"] == syncs
    assert await _history_length(stack, repository_id) == events

    # status says when the remote was last checked: the sweep's last whole pass.
    deadline = time.monotonic() + 20
    while (checked := (await _sync_status(stack, repository_id))["checked_at"]) is None:
        assert time.monotonic() < deadline, "status never showed a remote check"
        await asyncio.sleep(0.5)
    assert datetime.fromisoformat(checked) > datetime.now(UTC) - timedelta(seconds=30)

    # A push is found by the next check and delivered without any sync request.
    repo.write("b.txt", "two")
    second = repo.commit("second")
    await until(lambda: receiver.files() == repo.files_at(second), timeout=20)
    status = await _sync_status(stack, repository_id)
    assert status["remote_wakes"] >= 1 and status["last_wake"].startswith("moved at ")

    # The remote disappears: checks fail, the loop polls on its own at the poll interval,
    # and after the threshold (2) the breaker opens with one sync_failed, as without checks.
    hidden = repo.remote.with_name("gone.git")
    repo.remote.rename(hidden)
    await until(lambda: [n["event"] for n in receiver.notices] == ["sync_failed"], 60)
    status = await _sync_status(stack, repository_id)
    assert status["breaker_state"] == "open"
    assert status["last_error_type"] == "RepositoryNotFound"
    await asyncio.sleep(3)
    assert [n["event"] for n in receiver.notices] == ["sync_failed"]
    sync_handle = stack.client.get_workflow_handle(sync_workflow_id(repository_id))
    await save_history(sync_handle, "sync_remote_checks")


@pytest.mark.e2e
async def test_repo_add_then_watch_fetches_once_and_a_push_arrives_within_an_interval(
    stack: Stack,
) -> None:
    repo, receiver, run = stack.repo, stack.receiver, stack.run
    interval = 2
    repo.write("a.txt", "one")
    first = repo.commit("first")
    code, app, err = await run(
        "app", "add", "--name", "m", "--url", receiver.url, "--secret", stack.secret
    )
    assert code == 0, err
    code, added, err = await run("repo", "add", repo.url, "--interval", str(interval))
    assert code == 0, err
    repository_id = added["repository_id"]
    assert (await run("watch", app["app_id"], repository_id))[0] == 0
    await until(lambda: receiver.files() == repo.files_at(first))
    await asyncio.sleep(2 * interval)
    status = await _sync_status(stack, repository_id)
    assert status["syncs"] == 1, status  # the first commit, fetched once for both

    # A push right after: found by the first checks of the new repository (the sweep
    # learnt of it at once), fetched once, and the checks after it find nothing to do.
    repo.write("b.txt", "two")
    second = repo.commit("second")
    pushed = time.monotonic()
    await until(lambda: receiver.files() == repo.files_at(second), timeout=40)
    assert time.monotonic() - pushed <= interval + 2.0, time.monotonic() - pushed
    await asyncio.sleep(3 * interval)
    status = await _sync_status(stack, repository_id)
    assert (status["syncs"], status["remote_wakes"]) == (2, 1), status


@pytest.mark.e2e
async def test_a_sweep_run_ends_and_continues_as_new(stack: Stack) -> None:
    handle = await stack.client.start_workflow(
        CheckRemotes.run,
        CheckRemotesInput(shard=0, shards=1, run_seconds=1.0),
        id="test-sweep",
        task_queue=stack.settings.task_queue,
    )
    first_run = handle.first_execution_run_id
    assert first_run is not None
    run = stack.client.get_workflow_handle("test-sweep", run_id=first_run)

    async def ended() -> bool:
        return (await run.describe()).status == WorkflowExecutionStatus.CONTINUED_AS_NEW

    deadline = time.monotonic() + 30
    while not await ended():
        assert time.monotonic() < deadline, "the sweep's first run did not end"
        await asyncio.sleep(0.2)
    events = [e.event_type for e in (await run.fetch_history()).events]
    # One activity and the continue-as-new: a dozen events per run, whatever the shard holds.
    assert events.count(EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED) == 1
    assert events[-1] == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
    assert len(events) <= 12
    await save_history(run, "check_remotes")
    await handle.terminate()


# --- smart HTTP: the same answer without starting git -----------------------------------


async def test_smart_http_ls_refs_answers_as_git_does(tmp_path: Path, settings: Settings) -> None:
    repo = WorkRepo(tmp_path / "r")
    head = repo.commit_files({"a.txt": "a"}, "first")
    git(repo.work, "tag", "-a", "v1", "-m", "v1")
    git(repo.work, "push", "-q", "origin", "v1")
    client = RefClient(allow_private=True, ssl_context=shared_ssl_context())
    with git_http_server(tmp_path / "r", "s3cret", keep_alive=True) as server:
        url = server.url("remote.git")
        token = Credentials("s3cret")

        async def native(access: RemoteAccess, over: Settings = settings) -> object:
            return await remote_names_over(over, access, client)

        for ref in ("", "main", "v1", "refs/tags/v1", "missing", head):
            access = RemoteAccess("r1", url, ref, token)
            by_git = await asyncio.to_thread(remote_names, settings, access)
            assert await native(access) == by_git, ref
        # One request per check, on one kept-alive connection: no info/refs round trip.
        before = len(server.requests)
        assert await native(RemoteAccess("r1", url, "main", token)) == {head}
        assert await native(RemoteAccess("r1", url, "main", token)) == {head}
        assert (
            server.requests[before:] == [("POST", "/remote.git/git-upload-pack", "version=2")] * 2
        )
        with pytest.raises(GitError) as refused:
            await native(RemoteAccess("r1", url, "main", Credentials("wrong")))
        assert refused.value.type == "AuthenticationFailed"
        with pytest.raises(GitError) as missing:
            await native(RemoteAccess("r1", server.url("nope.git"), "", token))
        assert missing.value.type == "RepositoryNotFound"
        # A token over plain http is still refused unless allowed, before any request.
        strict = settings.model_copy(update={"allow_insecure_transport": False})
        before = len(server.requests)
        with pytest.raises(GitError) as insecure:
            await native(RemoteAccess("r1", url, "main", token), strict)
        assert insecure.value.type == "GitUrlRefused" and len(server.requests) == before
        # Loopback is refused unless private addresses are allowed, before connecting.
        guarded = RefClient(allow_private=False, ssl_context=shared_ssl_context())
        with pytest.raises(GitError) as private:
            await remote_names_over(settings, RemoteAccess("r1", url, "main", token), guarded)
        assert private.value.type == "GitUrlRefused" and len(server.requests) == before
        # ssh, file:// and deploy keys are git's to ask.
        assert await native(RemoteAccess("r1", repo.url, "main", None)) is ASK_GIT
    client.close()


async def test_a_server_without_protocol_2_is_left_to_git(
    tmp_path: Path, settings: Settings
) -> None:
    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi",
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-git-upload-pack-result\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n4\r\n001e\r\n0\r\n\r\n",  # a v0 start
        b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n",
        # a chunk-size line longer than any answer's headers may be
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-git-upload-pack-result\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + b"1" * 40_000,
    ]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"0000")
        writer.write(answers.pop(0))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = RefClient(allow_private=True, ssl_context=shared_ssl_context())
    access = RemoteAccess("r1", f"http://127.0.0.1:{port}/r.git", "main", None)
    async with server:
        for _ in range(5):
            assert await remote_names_over(settings, access, client) is ASK_GIT
    client.close()


def test_ls_refs_answers_are_parsed_strictly() -> None:
    oid, peeled = "a" * 40, "b" * 40
    answer = (
        pkt_line(f"{oid} HEAD symref-target:refs/heads/main\n")
        + pkt_line(f"{oid} refs/tags/v1 peeled:{peeled}\n")
        + b"0000"
    )
    assert parse_ls_refs(answer) == [
        (oid, "HEAD"),
        (oid, "refs/tags/v1"),
        (peeled, "refs/tags/v1^{}"),
    ]
    for broken in (b"", b"00", answer[:-4], b"0003", b"zzzz", b"0009abcde0000", b"0005 0000"):
        with pytest.raises(ValueError):
            parse_ls_refs(broken)
    body = ls_refs_request(["refs/heads/main"])
    assert body.startswith(b"0014command=ls-refs\n") and body.endswith(
        b"001fref-prefix refs/heads/main\n0000"
    )


@pytest.mark.slow  # real time: it waits out sweep intervals
async def test_the_sweep_checks_each_repository_once_per_interval(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = WorkRepo(tmp_path / "r")
    head = repo.commit_files({"a.txt": "a"}, "first")
    monkeypatch.setattr(remote_checks, "RELOAD_SECONDS", 0.3)  # re-reads must not add checks
    links = [tmp_path / f"r{n}.git" for n in range(5)]
    for link in links:
        link.symlink_to(repo.remote)
    add_idle_repositories(settings, [f"file://{link}" for link in links], head, interval=1)
    woken: list[str] = []

    async def signal(repository_id: str, moved: object) -> None:
        woken.append(repository_id)

    checker = remote_checks.RemoteChecker(
        settings, 0, 1, signal=signal, heartbeat=lambda progress: None
    )
    progress = await checker.run(4.0)
    assert woken == [] and progress.failed == 0
    assert 15 <= progress.checks <= 25, progress  # 5 repositories, 4 s, one check a second
    assert progress.swept_at is not None
