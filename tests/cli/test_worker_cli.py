"""worker.py: --dev starts the dev server with the search attributes and stops it on exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_port
from treecast.crypto import generate_key
from treecast.devserver import port_open, temporal_cli

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def start_dev_worker(
    tmp_path: Path, task_queue: str
) -> tuple[int, subprocess.Popen[str], list[str]]:
    """`worker.py --dev` on a free port in its own data dir, read until it is ready (or 90 s):
    its port, the process, and the lines it printed."""
    port = free_port()
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
        "TREECAST_DATA_DIR": str(tmp_path / "data"),
        "TREECAST_TASK_QUEUE": task_queue,
    }
    env.pop("TREECAST_SECRET_KEY", None)
    env.pop("TREECAST_DATABASE_URL", None)
    worker = subprocess.Popen(
        [sys.executable, "worker.py", "--dev"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert worker.stdout is not None
    deadline = time.monotonic() + 90
    seen: list[str] = []
    for line in worker.stdout:
        seen.append(line)
        if "Treecast worker ready" in line or time.monotonic() > deadline:
            break
    return port, worker, seen


# SIGTERM is what `docker compose stop` sends; SIGINT is Ctrl-C.
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_worker_dev_registers_search_attributes_and_cleans_up(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    port, worker, seen = start_dev_worker(tmp_path, "treecast-worker-cli")
    try:
        assert any("Temporal Web UI: http://localhost:" in line for line in seen), seen
        listed = subprocess.run(
            [
                str(temporal_cli()),
                "operator",
                "search-attribute",
                "list",
                "--address",
                f"127.0.0.1:{port}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        for name in (
            "TreecastRepositoryId",
            "TreecastBreakerState",
            "TreecastLastCommit",
            "TreecastConsecutiveFailures",
        ):
            assert name in listed
        # dev mode generated the key and created the database in the data dir
        assert (tmp_path / "data" / "secret.key").exists()
        assert (tmp_path / "data" / "treecast.db").exists()
        assert (tmp_path / "data" / "temporal-dev.db").exists()
        worker.send_signal(stop_signal)
        assert worker.wait(timeout=60) == 0
        assert worker.stdout is not None
        rest = worker.stdout.read()
        assert "shutting down" in rest and "Fatal Python error" not in rest, rest
        assert not port_open("127.0.0.1", port)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def test_worker_refuses_a_bad_setting_in_one_line(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "TREECAST_DATA_DIR": str(tmp_path),
        "TREECAST_BREAKER_COOLDOWN_SECONDS": "soon",
    }
    done = subprocess.run(
        [sys.executable, "worker.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: TREECAST_BREAKER_COOLDOWN_SECONDS='soon' is not seconds between 1 and 604800"
    ]


def test_worker_outside_dev_mode_needs_the_key(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "TREECAST_DATA_DIR": str(tmp_path),
        "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
    }
    env.pop("TREECAST_SECRET_KEY", None)
    env.pop("TREECAST_DEV", None)
    done = subprocess.run(
        [sys.executable, "worker.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "TREECAST_SECRET_KEY" in done.stderr and "Traceback" not in done.stderr


def test_worker_with_an_unreachable_database_says_so_in_one_line(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    env = {
        **os.environ,
        "TREECAST_DATA_DIR": str(tmp_path),
        "TREECAST_SECRET_KEY": generate_key(),
        "TREECAST_DATABASE_URL": f"postgresql://nobody:hunter2@127.0.0.1:{port}/x",
        "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
    }
    done = subprocess.run(
        [sys.executable, "worker.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(
        f"error: TREECAST_DATABASE_URL: cannot connect (postgresql+psycopg://nobody:***@127.0.0.1:{port}/x: "
    )
    assert "hunter2" not in done.stderr
