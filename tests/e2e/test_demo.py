"""`make demo DEMO_ONCE=1` does what it says, on its own ports and data dir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port
from treecast.devserver import port_open

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def _free_port_pair() -> int:
    for _ in range(50):
        port = free_port()
        if port + 1000 < 65536 and not port_open("127.0.0.1", port + 1000):
            return port
    raise RuntimeError("no free port pair")


def test_demo_once_runs_the_whole_tour(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": f"127.0.0.1:{_free_port_pair()}",
        "TREECAST_DATA_DIR": str(tmp_path / "data"),
        "TREECAST_TASK_QUEUE": "treecast-demo-test",
        "TREECAST_DEV": "1",
        "TREECAST_ALLOW_PRIVATE_URLS": "1",
        "TREECAST_ALLOW_FILE_URLS": "1",
        "TREECAST_ALLOW_INSECURE_TRANSPORT": "1",
    }
    env.pop("TREECAST_SECRET_KEY", None)
    env.pop("TREECAST_DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "examples.demo", "--once"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "FAILED" not in out
    for step in (
        "the receiver's mirror holds all",
        "arrived (hello.md updated, news.md created)",
        "the receiver logged exactly one sync_failed",
        "the receiver logged sync_recovered",
        "breaker is closed",
    ):
        assert step in out
    assert "Web UI: http://" in out
