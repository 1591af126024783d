"""Issue 25's "done when", end to end: the example receiver holds a mirror of 2,000 files;
3 are deleted, 2 corrupted and 1 added on its side; its digest check after the commit
fails; it asks Treecast to reconcile by itself, which sends exactly 5 creates/updates and
1 delete, nothing else; its digest then matches. Then the same with the worker (a real
`worker.py`) SIGKILLed in the middle of the repair: the app ends identical, and no file
acknowledged before the kill is sent again."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from examples.receiver import FILE_EVENTS, Received, Receiver
from tests.conftest import free_port
from tests.support.api_helpers import ADMIN_TOKEN, bearer, post_onboard
from tests.support.api_stack import api_stack, wait_until_up
from tests.support.faults_helpers import WorkerProcess, fault_stack, until, write_files
from tests.support.gitrepos import WorkRepo
from treecast.crypto import generate_webhook_secret
from treecast.devserver import end_process

pytestmark = pytest.mark.e2e

FILES = 2000
GONE = ["dir00/f00000.txt", "dir07/f00507.txt", "dir19/f01999.txt"]
CORRUPT = ["dir03/f00003.txt", "dir11/f01011.txt"]
EXTRA = "dir05/notes-of-my-own.txt"
ROOT = Path(__file__).resolve().parents[2]


def drift(mirror: Path) -> None:
    """What the app's side did to its copy, unknown to Treecast."""
    for path in GONE:
        (mirror / path).unlink()
    for path in CORRUPT:
        (mirror / path).write_bytes(b"bit rot\n")
    (mirror / EXTRA).write_text("not from the repository\n")


def expected_repair() -> list[tuple[str, str]]:
    return sorted(
        [("create", p) for p in GONE] + [("update", p) for p in CORRUPT] + [("delete", EXTRA)]
    )


def file_events(requests: list[Received]) -> list[Received]:
    return [r for r in requests if r.event in FILE_EVENTS]


async def watch_and_sync(http: httpx.AsyncClient, receiver: Receiver, secret: str, url: str) -> str:
    """Onboard the receiver's app, opt in to sync_completed, watch `url`; the app token."""
    answer = await post_onboard(
        http, {"app_name": "mirror", "base_url": receiver.url, "secret": secret}
    )
    assert answer.status_code == 201, answer.text
    token = str(answer.json()["data"]["token"])
    opted = await http.put("/api/app/sync-completed", json={"enabled": True}, headers=bearer(token))
    assert opted.status_code == 200, opted.text
    watched = await http.post("/api/repositories", json={"url": url}, headers=bearer(token))
    assert watched.status_code == 201, watched.text
    return token


async def until_checked(receiver: Receiver, checks: int, timeout: float) -> tuple[Any, ...]:
    """Wait for the receiver's `checks`-th digest check; returns it."""
    await until(lambda: len(receiver.digest_checks) >= checks, timeout, f"digest check {checks}")
    return receiver.digest_checks[checks - 1]


async def test_a_drifted_mirror_is_repaired_with_exactly_the_difference(
    tmp_path: Path, dev_env: WorkflowEnvironment
) -> None:
    async with api_stack(tmp_path, dev_env) as stack:
        receiver = stack.receiver
        write_files(stack.repo.work, FILES)
        commit = stack.repo.commit("2,000 files")
        token = await watch_and_sync(stack.http, receiver, stack.secret, stack.repo.url)
        done, delivered, mine = await until_checked(receiver, 1, 180)
        assert done == commit and delivered == mine  # the first check holds
        assert len(file_events(receiver.requests)) == FILES
        receiver.api_url, receiver.api_token = stack.api_url, token

        drift(receiver.mirror)
        mark = len(receiver.requests)
        # (In a thread: this test's event loop runs the worker, which the reconcile needs.)
        assert await asyncio.to_thread(receiver.check_mirror) is False  # the check fails...
        answer = receiver.reconciles[-1]  # ...and the receiver reconciled by itself
        assert answer["status"] == "6 files differ" and answer["repair"], answer
        assert (answer["missing"], answer["changed"], answer["extra"]) == (3, 2, 1)

        _, delivered, mine = await until_checked(receiver, 3, 120)
        assert delivered == mine  # the digest matches after the repair
        sent = file_events(receiver.requests[mark:])
        assert sorted((r.event, r.path or "") for r in sent) == expected_repair()  # nothing else
        assert receiver.files() == stack.repo.files_at(commit)
        assert answer["status_url"], answer["sync_error"]
        outcome = await stack.http.get(answer["status_url"], headers=bearer(token))
        assert outcome.json()["final"] and outcome.json()["ok"], outcome.text


@asynccontextmanager
async def api_process(env: dict[str, str], root: Path) -> AsyncIterator[httpx.AsyncClient]:
    """`python -m treecast.api` on the fault stack's settings."""
    port = free_port()
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TREECAST_")},
        **env,
        "TREECAST_ADMIN_TOKEN": ADMIN_TOKEN,
        "TREECAST_API_LISTEN": f"127.0.0.1:{port}",
        "TREECAST_API_RATE_PER_SECOND": "100000",
        "TREECAST_API_RATE_BURST": "100000",
    }
    with (root / "api.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "treecast.api"], cwd=ROOT, env=environment, stdout=log,
            stderr=log,
        )  # fmt: skip
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
                await wait_until_up(http, process)
                yield http
        finally:
            end_process(process, 15)


async def test_a_repair_survives_the_worker_killed_mid_way(tmp_path: Path) -> None:
    repo = WorkRepo(tmp_path / "git")
    write_files(repo.work, FILES)
    commit = repo.commit("2,000 files")
    secret = generate_webhook_secret()
    async with (
        fault_stack(tmp_path / "data") as stack,
        api_process(stack.env, tmp_path) as http,
    ):
        with Receiver([secret], tmp_path / "mirror") as receiver:
            proc = WorkerProcess(stack.env, tmp_path / "worker.log")
            proc.start()
            try:
                token = await watch_and_sync(http, receiver, secret, repo.url)
                _, delivered, mine = await until_checked(receiver, 1, 240)
                assert delivered == mine
                receiver.api_url, receiver.api_token = str(http.base_url).rstrip("/"), token

                drift(receiver.mirror)
                mark = len(receiver.requests)
                on_the_wire = threading.Event()

                def hold(record: Received) -> bool:
                    # The repair's third file: held unanswered (not applied) until the
                    # worker that sent it is dead.
                    if record.event not in FILE_EVENTS:
                        return False
                    if len(file_events(receiver.requests[mark:])) != 3:
                        return False
                    on_the_wire.set()
                    return True

                receiver.delay_next(8.0, where=hold)
                assert await asyncio.to_thread(receiver.check_mirror) is False
                assert receiver.reconciles[-1]["status"] == "6 files differ"
                await until(on_the_wire.is_set, 60, "the repair's third file on the wire")
                time.sleep(0.2)
                proc.kill()
                acknowledged = [
                    r
                    for r in file_events(receiver.requests[mark:])
                    if r is not receiver.requests[-1]
                ]
                assert len(acknowledged) == 2
                held = receiver.requests[-1]
                proc.start()
                _, delivered, mine = await until_checked(receiver, 3, 180)
            finally:
                proc.stop()
            assert delivered == mine
            assert receiver.files() == repo.files_at(commit)  # identical again
            sent = file_events(receiver.requests[mark:])
            # The one on the wire came again, with its webhook-id; nothing else twice, and
            # nothing acknowledged before the kill again.
            assert [r.webhook_id for r in sent].count(held.webhook_id) == 2
            assert len(sent) == 7 and len({r.webhook_id for r in sent}) == 6
            assert sorted({(r.event, r.path or "") for r in sent}) == expected_repair()
            for before in acknowledged:
                assert [r.path for r in sent].count(before.path) == 1
