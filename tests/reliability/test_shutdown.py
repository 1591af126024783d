"""SIGTERM: the worker lets the activity it runs finish (a delivery to a slow app) and exits 0,
writing JSON log lines; the API finishes a request in flight and takes no new one."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from examples.receiver import Received, Receiver
from tests.conftest import free_port
from tests.reliability.test_replicas import process
from tests.support.api_helpers import ADMIN_TOKEN
from tests.support.faults_helpers import (
    WorkerProcess,
    applied,
    duplicates,
    fault_stack,
    until,
    until_delivered,
)
from tests.support.gitrepos import WorkRepo
from treecast.crypto import generate_key, generate_webhook_secret
from treecast.logs import ID_FIELDS

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

SLOW = 3.0  # seconds the app takes to answer


async def test_a_stopping_worker_finishes_the_delivery_it_runs(tmp_path: Path) -> None:
    repo = WorkRepo(tmp_path / "git")
    repo.write("docs/a.md", "hello\n")
    commit = repo.commit()
    secret = generate_webhook_secret()
    overrides = {"TREECAST_LOG_FORMAT": "json", "TREECAST_WORKER_GRACE_SECONDS": "30"}
    async with fault_stack(tmp_path / "data", **overrides) as stack:
        with Receiver([secret], tmp_path / "mirror") as receiver:
            arrived = threading.Event()

            def slow(_record: Received) -> bool:
                arrived.set()
                time.sleep(SLOW)
                return False  # then answer as usual

            receiver.fail_next(500, 1_000_000, where=slow)
            app_id = stack.add_app(receiver, secret)
            repository_id = stack.add_repository(repo.url)
            stack.watch(app_id, repository_id)
            log = tmp_path / "worker.log"
            proc = WorkerProcess(stack.env, log)
            proc.start()
            try:
                await stack.start_sync(repository_id)
                await until(arrived.is_set, 90, "the delivery reached the app")
                assert proc.process is not None
                proc.process.send_signal(signal.SIGTERM)
                stopped = time.monotonic()
                code = proc.process.wait(60)
                waited = time.monotonic() - stopped
                assert code == 0, log.read_text()[-3000:]
                # It waited for the delivery, which the app acknowledged once.
                assert waited >= SLOW - 1, waited
                assert stack.ledger(app_id, repository_id).keys() == {"docs/a.md"}
                proc.start()  # the workflows' own last steps
                await until_delivered(stack, app_id, repository_id, commit, 60)
            finally:
                proc.stop()
            assert applied(receiver) == [("create", "docs/a.md")]
            assert duplicates(receiver) == 0

    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    messages = [line["message"] for line in lines]
    assert any(m.startswith("shutting down: running activities get up to 30 s") for m in messages)
    assert "worker stopped" in messages
    # Lines of the delivery carry its ids.
    known = [line for line in lines if line.get("repository_id") == repository_id]
    assert any(line.get("workflow_id", "").startswith("deliver/") for line in known), lines
    assert set(ID_FIELDS) & {key for line in lines for key in line}


def test_a_stopping_api_finishes_the_request_in_flight(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "TREECAST_DATA_DIR": str(tmp_path / "data"),
        "TREECAST_SECRET_KEY": generate_key(),
        "TREECAST_ADMIN_TOKEN": ADMIN_TOKEN,
        "TREECAST_API_LISTEN": f"127.0.0.1:{port}",
        "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "TREECAST_ALLOW_PRIVATE_URLS": "1",
    }
    with process([sys.executable, "-m", "treecast.api"], env, tmp_path / "api.log") as api:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.2)
        body = json.dumps({"app_name": "late", "base_url": "http://127.0.0.1:9/hooks"}).encode()
        head = (
            f"POST /admin/api/apps/onboard HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
            client.sendall(head + body[:10])  # in flight: half its body sent
            time.sleep(0.5)
            api.send_signal(signal.SIGTERM)
            time.sleep(1.0)
            with pytest.raises(OSError):  # no new connection is taken meanwhile
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
            client.sendall(body[10:])
            answer = b""
            while b"\r\n\r\n" not in answer:
                chunk = client.recv(65536)
                assert chunk, answer
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 201"), answer
        # uvicorn, once shut down, raises the signal again: the status says SIGTERM ended it.
        assert api.wait(20) in (0, -signal.SIGTERM)
    assert "Finished server process" in (tmp_path / "api.log").read_text()
