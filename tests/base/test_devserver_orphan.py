"""The dev server dies with the process that started it, even when that one is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.test_worker_cli import start_dev_worker
from treecast.devserver import port_open

ROOT = Path(__file__).resolve().parents[2]

STARTER = """
import sys, time
from treecast.devserver import popen_tied
mode = sys.argv[1]
process, watchdog = popen_tied(["sleep", "120"], use_watchdog={"watchdog": True, "prctl": False}[mode])
print(process.pid, watchdog.pid if watchdog else 0, flush=True)
time.sleep(120)
"""


def alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def kill_if_alive(pid: int) -> None:
    if pid and alive(pid):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("mode", ["prctl", "watchdog"])
def test_a_tied_child_dies_when_its_starter_is_sigkilled(mode: str) -> None:
    if mode == "prctl" and not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux only")
    starter = subprocess.Popen(
        [sys.executable, "-c", STARTER, mode], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    child = watchdog = 0
    try:
        assert starter.stdout is not None
        child, watchdog = (int(x) for x in starter.stdout.readline().split())
        assert alive(child)
        assert (watchdog != 0) == (mode == "watchdog")
        starter.send_signal(signal.SIGKILL)
        starter.wait(timeout=10)
        assert wait_gone(child, 5), f"the child {child} outlived its starter ({mode})"
        if watchdog:
            assert wait_gone(watchdog, 5), "the watchdog did not exit after its work"
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait()
        kill_if_alive(child)
        kill_if_alive(watchdog)


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if text.encode() in cmdline:
                found.append(int(entry.name))
    return found


@pytest.mark.e2e
def test_the_dev_server_dies_with_a_sigkilled_worker(tmp_path: Path) -> None:
    port, worker, seen = start_dev_worker(tmp_path, "treecast-devserver-orphan")
    try:
        assert any("Treecast worker ready" in line for line in seen), seen
        assert port_open("127.0.0.1", port)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        deadline = time.monotonic() + 5
        while port_open("127.0.0.1", port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not port_open("127.0.0.1", port), "the dev server outlived its SIGKILLed worker"
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        # An orphaned server (the defect) is found by its data dir and stopped.
        if sys.platform.startswith("linux"):
            for pid in _processes_mentioning(str(tmp_path / "data")):
                kill_if_alive(pid)
