"""`worker.py --processes N`: N workers share the task queue and the git cache; one stops,
all stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from examples.receiver import Receiver
from tests.support.faults_helpers import ROOT, fault_stack, until_delivered
from tests.support.gitrepos import WorkRepo
from tests.support.waiting import until
from treecast import devserver, supervisor
from treecast.crypto import generate_webhook_secret
from treecast.supervisor import child_environments, supervise

# A child that lives until stopped, or exits at once with $EXIT_WITH.
CHILD = [
    sys.executable,
    "-c",
    "import os, sys, time\n"
    "code = os.environ.get('EXIT_WITH')\n"
    "sys.exit(int(code)) if code else time.sleep(120)\n",
]


def test_each_child_gets_a_metrics_port_of_its_own() -> None:
    envs = child_environments({"A": "1"}, 3, 9100)
    assert [e["TREECAST_METRICS_PORT"] for e in envs] == ["9100", "9101", "9102"]
    assert all(e["A"] == "1" for e in envs)
    assert "TREECAST_METRICS_PORT" not in child_environments({}, 2, 0)[0]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.timeout(60)
def test_one_child_exiting_stops_the_others_with_its_status(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: list[int] = []
    real_tied = devserver.popen_tied

    def recording(command: list[str], **kwargs: Any) -> Any:
        child, watchdog = real_tied(command, **kwargs)
        started.append(child.pid)
        return child, watchdog

    monkeypatch.setattr(supervisor, "popen_tied", recording)
    began = time.monotonic()
    status = supervise(CHILD, [{}, {"EXIT_WITH": "3"}, {}], grace_seconds=5)
    assert status == 3
    assert time.monotonic() - began < 20
    assert len(started) == 3 and not any(_alive(pid) for pid in started)


@pytest.mark.timeout(60)
def test_a_signal_stops_every_child_and_exits_cleanly() -> None:
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
    assert supervise(CHILD, [{}, {}], grace_seconds=5) == 0


@pytest.mark.e2e
@pytest.mark.timeout(240)
async def test_two_worker_processes_share_the_queue_and_stop_together(tmp_path: Path) -> None:
    secret = generate_webhook_secret()
    async with fault_stack(tmp_path / "data") as stack:
        with Receiver([secret], tmp_path / "mirror") as receiver:
            app_id = stack.add_app(receiver, secret)
            watched = []
            for number in range(4):
                repo = WorkRepo(tmp_path / f"git{number}")
                repo.write("a.md", f"repository {number}\n")
                commit = repo.commit()
                repository_id = stack.add_repository(repo.url)
                stack.watch(app_id, repository_id)
                watched.append((repository_id, commit))
            log = tmp_path / "worker.log"
            inherited = {k: v for k, v in os.environ.items() if not k.startswith("TREECAST_")}
            with log.open("ab") as out:
                proc = subprocess.Popen(
                    [sys.executable, str(ROOT / "worker.py"), "--processes", "2"],
                    cwd=ROOT,
                    env={**inherited, **stack.env},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            try:
                await until(
                    lambda: log.read_text().count("worker polling task queue") == 2,
                    90,
                    what="both worker processes polled",
                )
                for repository_id, _commit in watched:
                    await stack.start_sync(repository_id)
                for repository_id, commit in watched:
                    await until_delivered(stack, app_id, repository_id, commit, 90)
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(60) == 0, log.read_text()[-3000:]
                assert log.read_text().count("worker stopped") == 2
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
