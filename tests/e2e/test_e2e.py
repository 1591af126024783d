"""End to end on the Temporal dev server: starter.py, the real worker, real git, the example receiver."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

import starter
import worker
from examples.receiver import Receiver
from tests.conftest import treecast_env, use_env
from tests.support.cli import invoke
from tests.support.gitrepos import WorkRepo
from tests.support.temporal_env import new_task_queue
from tests.support.waiting import until
from treecast.crypto import generate_webhook_secret
from treecast.devserver import temporal_cli
from treecast.service.workflows import ensure_remote_checks

pytestmark = pytest.mark.e2e


@dataclass
class Result:
    code: int
    out: Any
    err: str


@dataclass
class Stack:
    repo: WorkRepo
    receiver: Receiver
    secret: str
    address: str
    task_queue: str
    run: Callable[..., Any]


def _invoke(argv: list[str]) -> Result:
    return Result(*invoke(argv))


@pytest.fixture
async def stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dev_env: WorkflowEnvironment
) -> AsyncIterator[Stack]:
    address = dev_env.client.service_client.config.target_host
    settings = use_env(
        monkeypatch,
        treecast_env(
            tmp_path / "data",
            TEMPORAL_ADDRESS=address,
            TREECAST_TASK_QUEUE=new_task_queue(),
            TREECAST_BREAKER_THRESHOLD="2",
            TREECAST_GIT_TIMEOUT_SECONDS="20",
        ),
    )
    secret = generate_webhook_secret()
    repo = WorkRepo(tmp_path / "git")
    executor = ThreadPoolExecutor(max_workers=worker.executor_threads(settings))
    try:
        with Receiver([secret], tmp_path / "mirror") as receiver:
            async with worker.build_worker(dev_env.client, settings, executor):
                await ensure_remote_checks(dev_env.client, settings)  # as worker.py does

                async def run(*argv: str) -> Result:
                    # starter.main runs its own event loop, so it gets a thread.
                    return await asyncio.to_thread(_invoke, list(argv))

                yield Stack(repo, receiver, secret, address, settings.task_queue, run)
    finally:
        executor.shutdown(wait=False, cancel_futures=True)


def list_by_query(address: str, query: str) -> list[str]:
    """Workflow ids `temporal workflow list --query` finds (what the Web UI's filter shows)."""
    done = subprocess.run(
        [
            str(temporal_cli()),
            "workflow",
            "list",
            "--address",
            address,
            "--query",
            query,
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    rows = json.loads(done.stdout or "[]")
    return sorted(row["execution"]["workflowId"] for row in rows)


async def test_sync_deliver_break_and_recover(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    repo, receiver, run = stack.repo, stack.receiver, stack.run
    repo.write("README.md", "# hello\n")
    repo.write("docs/guide.md", "guide ✓\n")
    repo.write("img/logo.bin", bytes(range(256)) * 8)
    first = repo.commit("first")

    added = await run(
        "app", "add", "--name", "mirror", "--url", receiver.url, "--secret", stack.secret
    )
    assert added.code == 0, added.err
    app_id = added.out["app_id"]
    repo_added = await run("repo", "add", repo.url, "--interval", "3600")
    assert repo_added.code == 0, repo_added.err
    repo_id = repo_added.out["repository_id"]
    again = await run("repo", "add", repo.url + "/")
    assert again.out["repository_id"] == repo_id and again.out["created"] is False
    assert (await run("watch", app_id, repo_id)).code == 0

    synced = await run("sync", repo_id, "--wait", "--timeout", "60")
    assert synced.code == 0, (synced.out, synced.err)
    assert receiver.files() == repo.files_at(first)
    # One log line per delivery naming the repository, the app and the workflow.
    delivered = [r.getMessage() for r in caplog.records if r.getMessage().startswith("delivered ")]
    assert any(
        repo_id in line and app_id in line and f"deliver/{repo_id}" in line and "3 created" in line
        for line in delivered
    ), delivered

    # A change: update, create, delete; the mirror follows.
    repo.write("README.md", "# hello again\n")
    repo.write("docs/new.md", "new\n")
    repo.remove("docs/guide.md")
    second = repo.commit("second")
    synced = await run("sync", repo_id, "--wait", "--timeout", "60")
    assert synced.code == 0, (synced.out, synced.err)
    assert receiver.files() == repo.files_at(second)

    status = await run("status", repo_id)
    [row] = status.out["repositories"]
    assert row["sync"]["breaker_state"] == "closed"
    assert row["sync"]["last_commit"] == second
    assert [(a["app_id"], a["status"], a["delivered_commit"]) for a in row["apps"]] == [
        (app_id, "synced", second)
    ]

    # pause stops polling (and refuses sync --wait) until resume.
    assert (await run("pause", repo_id)).code == 0
    assert (await run("status", repo_id)).out["repositories"][0]["sync"]["paused"] is True
    refused = await run("sync", repo_id, "--wait", "--timeout", "30")
    assert refused.code == 1 and "paused" in json.dumps(refused.out)
    assert (await run("resume", repo_id)).code == 0
    assert (await run("status", repo_id)).out["repositories"][0]["sync"]["paused"] is False

    # The remote disappears: after `threshold` (2) failed syncs the breaker opens
    # and the receiver holds exactly one sync_failed.
    hidden = repo.remote.with_name("gone.git")
    repo.remote.rename(hidden)
    for _ in range(2):
        failed = await run("sync", repo_id, "--wait", "--timeout", "60")
        assert failed.code == 1
    await until(lambda: len(receiver.notices) >= 1)
    while_open = await run("sync", repo_id, "--wait", "--timeout", "30")
    assert while_open.code == 1
    assert "open" in json.dumps(while_open.out).lower()
    await asyncio.sleep(0.5)
    assert [n["event"] for n in receiver.notices] == ["sync_failed"]
    notice = receiver.notices[0]
    assert notice["circuit_breaker"]["status"] == "open"
    assert notice["error"]["type"] == "RepositoryNotFound"
    status = await run("status", repo_id)
    assert status.out["repositories"][0]["sync"]["breaker_state"] == "open"
    # What a person filters on in the Web UI, through the Temporal CLI (on this test's task
    # queue: the dev server is shared with other tests).
    mine = f'TaskQueue = "{stack.task_queue}"'
    await until(
        lambda: (
            list_by_query(stack.address, f'{mine} AND TreecastBreakerState = "open"')
            == [f"sync-repository/{repo_id}"]
        )
    )
    assert list_by_query(
        stack.address, f'TreecastRepositoryId = "{repo_id}" AND TreecastConsecutiveFailures >= 2'
    ) == [f"sync-repository/{repo_id}"]

    # The remote comes back with a new commit; reset closes the breaker.
    hidden.rename(repo.remote)
    repo.write("after.txt", "recovered\n")
    third = repo.commit("third")
    assert (await run("reset", repo_id)).code == 0
    await until(lambda: [n["event"] for n in receiver.notices] == ["sync_failed", "sync_recovered"])
    await until(lambda: receiver.files() == repo.files_at(third))
    recovered = receiver.notices[1]
    assert recovered["commit_sha"] == third
    assert recovered["circuit_breaker"]["status"] == "closed"

    # No secret in any log line, ever.
    assert not [r for r in caplog.records if stack.secret in r.getMessage()]

    # redeliver sends everything again; unwatch stops deliveries and forgets the ledger.
    before = len(receiver.file_requests())
    redelivered = await run("redeliver", app_id, repo_id, "--wait")
    assert redelivered.code == 0, redelivered.err
    assert redelivered.out["ledger_rows_removed"] == len(repo.files_at(third))
    assert len(receiver.file_requests()) - before == len(repo.files_at(third))
    assert receiver.files() == repo.files_at(third)
    unwatched = await run("unwatch", app_id, repo_id)
    assert unwatched.code == 0
    status = await run("status", repo_id)
    assert status.out["repositories"][0]["apps"] == []
    # Watching again sends everything under new webhook-ids: a receiver that
    # deduplicates by id applies them instead of dropping them as repeats.
    before = len(receiver.requests)
    assert (await run("watch", app_id, repo_id)).code == 0
    assert (await run("sync", repo_id, "--wait", "--timeout", "60")).code == 0
    again = [r for r in receiver.requests[before:] if r.path is not None]
    assert len(again) == len(repo.files_at(third))
    assert not any(r.duplicate for r in again)

    # Removing the repository stops its workflow and forgets it.
    removed = await run("repo", "remove", repo_id)
    assert removed.code == 0
    status = await run("status", repo_id)
    assert status.code == 2


async def test_sync_wait_shows_files_delivered_of_total(stack: Stack) -> None:
    repo, receiver, run = stack.repo, stack.receiver, stack.run
    repo.write("seed.txt", "seed\n")
    seeded = repo.commit("seed")
    app_id = (
        await run("app", "add", "--name", "m", "--url", receiver.url, "--secret", stack.secret)
    ).out["app_id"]
    repo_id = (await run("repo", "add", repo.url, "--interval", "3600")).out["repository_id"]
    assert (await run("watch", app_id, repo_id)).code == 0
    # The sync `watch` started is over before ours begins, so ours does the delivery.
    await until(lambda: receiver.files() == repo.files_at(seeded))
    for index in range(40):
        repo.write(f"f{index:02d}.txt", f"{index}\n")
    commit = repo.commit("forty files")

    held: list[str] = []

    def held_then_refused(record: Any) -> bool:
        # f20 is held 3 s the first time (mid-delivery, long enough for a heartbeat
        # to show it), then refused with HTTP 500.
        if record.path != "f20.txt":
            return False
        if not held:
            held.append(record.webhook_id)
            time.sleep(3)
        return True

    # Refused twice: the retries wait 1 s, then 2 s, long enough to be seen.
    receiver.fail_next(500, 2, where=held_then_refused)
    out, err = StringIO(), StringIO()

    def sync_with_progress() -> int:
        with redirect_stdout(out), redirect_stderr(err):
            return starter.main(["sync", repo_id, "--wait", "--timeout", "60"])

    assert await asyncio.to_thread(sync_with_progress) == 0, err.getvalue()
    assert receiver.files() == repo.files_at(commit)
    lines = err.getvalue().splitlines()
    # The count moves: while f20 is held, the first 20 files are shown as delivered.
    assert f"delivering {commit[:12]}: 20 of 40 files" in lines, lines
    waiting = rf"delivering \w+: app {app_id} failed \(.*HTTP 500\); try [23] of 5 at [\d:]+ UTC"
    assert any(re.fullmatch(waiting, line) for line in lines), lines
    # The outcome is printed once, on stdout, after the progress lines.
    assert out.getvalue().startswith(f"done: {commit[:12]}: 40 files"), out.getvalue()
    assert not any(line.startswith("done") for line in lines), lines

    # `status` without --json: a table a person reads at a glance.
    table = StringIO()

    def status_text() -> int:
        with redirect_stdout(table):
            return starter.main(["status"])

    assert await asyncio.to_thread(status_text) == 0
    lines = table.getvalue().splitlines()
    assert lines[0].split() == [
        "REPOSITORY",
        "BREAKER",
        "FAILURES",
        "COMMIT",
        "LAST",
        "SYNC",
        "NEXT",
        "SYNC",
        "URL",
    ]
    assert lines[1].split()[:4] == [repo_id, "closed", "0", commit[:12]]
    assert lines[2].split() == ["APP", "NAME", "STATUS", "ACCESS", "AT", "DELIVERED", "ERROR"]
    assert lines[3].split()[:6] == [app_id, "m", "synced", "granted", "(none)", commit[:12]]
