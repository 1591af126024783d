"""A batch-delivery app whose worker (`worker.py`, a child process) is SIGKILLed with a
batch on the wire: the ledger holds none of that batch, and after the restart the same
batch (same events, same webhook-id) comes again, and nothing else twice."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from examples.receiver import Received, Receiver
from models.tables import WatchStatus
from tests.support import registering
from tests.support.faults_helpers import (
    WorkerProcess,
    fault_stack,
    files_repo,
    until,
    until_delivered,
)
from treecast.crypto import generate_webhook_secret

pytestmark = pytest.mark.e2e

FILES = 400
PER_BATCH = 40
KILLED_BATCH = 4  # the 4th batch is on the wire (held by the receiver) when the worker dies


def batch_paths(record: Received) -> list[str]:
    return [e["file"]["path"] for e in record.payload.get("events", [])]


async def test_worker_killed_mid_batch_resends_exactly_that_batch(tmp_path: Path) -> None:
    repo, commit = files_repo(tmp_path / "git", FILES)
    expected = repo.files_at(commit)
    secret = generate_webhook_secret()
    async with fault_stack(tmp_path / "data", TREECAST_BATCH_MAX_FILES=str(PER_BATCH)) as stack:
        with Receiver([secret], tmp_path / "mirror") as receiver:
            app_id = registering.add_app(stack.settings, receiver.url, secret, batch=True)
            repository_id = stack.add_repository(repo.url)
            stack.watch(app_id, repository_id)
            on_the_wire = threading.Event()

            def hold(record: Received) -> bool:
                # The KILLED_BATCH-th batch request: hold it (unanswered, not applied)
                # until the worker that sent it is dead.
                if record.event != "batch":
                    return False
                if sum(1 for r in receiver.requests if r.event == "batch") != KILLED_BATCH:
                    return False
                on_the_wire.set()
                return True

            receiver.delay_next(8.0, where=hold)
            proc = WorkerProcess(stack.env, tmp_path / "worker.log")
            proc.start()
            try:
                await stack.start_sync(repository_id)
                await until(on_the_wire.is_set, 60, "the batch on the wire")
                time.sleep(0.2)
                proc.kill()
                ledger = stack.ledger(app_id, repository_id)
                held = receiver.requests[-1]
                assert held.event == "batch" and len(batch_paths(held)) == PER_BATCH
                assert len(ledger) == (KILLED_BATCH - 1) * PER_BATCH
                assert not set(batch_paths(held)) & ledger.keys()  # none of it recorded
                proc.start()
                await until_delivered(stack, app_id, repository_id, commit, 90)
            finally:
                proc.stop()
            assert receiver.files() == expected
            assert stack.ledger(app_id, repository_id).keys() == expected.keys()
            assert stack.watch_row(app_id, repository_id).status == WatchStatus.SYNCED
            sent = [r for r in receiver.requests if r.event == "batch"]
            ids = [r.webhook_id for r in sent]
            # The held batch came again, whole and with its id, right after the restart;
            # no other batch was sent twice.
            again = [r for r in sent[KILLED_BATCH:] if r.webhook_id == held.webhook_id]
            assert len(again) == 1 and batch_paths(again[0]) == batch_paths(held)
            assert sent[KILLED_BATCH].webhook_id == held.webhook_id
            assert len(ids) == len(set(ids)) + 1
            assert sum(len(batch_paths(r)) for r in sent) == FILES + PER_BATCH
