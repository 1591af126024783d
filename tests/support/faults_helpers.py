"""Shared pieces of the fault tests (tests/reliability/test_reliability_faults.py).

A `FaultStack` is one isolated Treecast: its own data dir and SQLite database (or
a PostgreSQL URL), a Temporal dev server on a free port whose SQLite file lives
in the data dir (so it can be stopped and started again), and a client. Workers
run in-process (`in_process_worker`) or as a real `worker.py` subprocess
(`WorkerProcess`) that a test can SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlmodel import col, select
from temporalio.client import Client

import worker
from examples.receiver import Received, Receiver
from models.search_attributes import dev_server_args
from models.tables import DeliveredFile, DeliveryAttempt, Watch
from tests.conftest import free_port, treecast_env
from tests.support import registering, waiting
from tests.support.gitrepos import WorkRepo
from tests.support.temporal_env import new_task_queue
from treecast.config import Settings, load_settings, resolve_secret_key
from treecast.crypto import Cipher
from treecast.db import session_scope
from treecast.devserver import DevServer, end_process
from treecast.service import workflows as temporal_ops
from treecast.temporal_client import connect

ROOT = Path(__file__).resolve().parents[2]


def fault_env(data_dir: Path, **overrides: str) -> dict[str, str]:
    """Treecast settings for a fault test: a fresh port, task queue and key; fast breaker."""
    env = treecast_env(data_dir) | {
        "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "TREECAST_TASK_QUEUE": new_task_queue(),
        "TREECAST_BREAKER_THRESHOLD": "2",
        "TREECAST_BREAKER_COOLDOWN_SECONDS": "3",
        "TREECAST_POLL_INTERVAL_SECONDS": "3600",
        "TREECAST_GIT_TIMEOUT_SECONDS": "10",
        "TREECAST_FILE_TIMEOUT_SECONDS": "5",
        "TREECAST_NOTICE_TIMEOUT_SECONDS": "2",
        # The fault tests drive the poll loop itself; remote checks have their own tests.
        "TREECAST_FULL_SYNC_SECONDS": "0",
    }
    env.update(overrides)
    return env


@dataclass
class FaultStack:
    """One isolated Treecast with its dev server; see the module docstring."""

    env: dict[str, str]
    settings: Settings
    server: DevServer
    client: Client | None = None
    cipher: Cipher = field(init=False)

    def __post_init__(self) -> None:
        self.cipher = Cipher(resolve_secret_key(self.settings))

    async def start_server(self) -> None:
        """Start (or start again) the dev server on the same port and database file."""
        # The UI port is the frontend's + 1000 and might be taken: run headless.
        await asyncio.to_thread(self.server.start)

    async def stop_server(self) -> None:
        """Stop the dev server; its SQLite file stays."""
        await asyncio.to_thread(self.server.stop)

    async def connect(self) -> Client:
        """A client for the stack's server (kept for the test)."""
        self.client = await connect(self.settings)
        return self.client

    def add_app(self, receiver: Receiver | str, secret: str, name: str = "app") -> str:
        """Register an app posting to `receiver` (or a base URL); returns its id."""
        url = receiver if isinstance(receiver, str) else receiver.url
        return registering.add_app(self.settings, url, secret, name)

    def add_repository(self, url: str, interval: int | None = None) -> str:
        """Register a repository; returns its id."""
        return registering.add_repository(self.settings, url, interval)

    def watch(self, app_id: str, repository_id: str) -> None:
        """Make an app watch a repository."""
        registering.watch(self.settings, app_id, repository_id)

    async def start_sync(self, repository_id: str, interval: int | None = None) -> None:
        """Start (or poke) the repository's sync loop, as `starter.py sync` does."""
        assert self.client is not None
        await temporal_ops.start_sync(
            self.client, self.settings, repository_id, interval, sync_now=True
        )

    def watch_row(self, app_id: str, repository_id: str) -> Watch:
        """The watch as the database holds it now."""
        with session_scope(self.settings.database_url) as session:
            row = session.get(Watch, (app_id, repository_id))
            assert row is not None
            session.expunge(row)
            return row

    def attempts(self, app_id: str) -> list[DeliveryAttempt]:
        """The delivery log of one app, oldest first."""
        with session_scope(self.settings.database_url) as session:
            rows = list(
                session.exec(
                    select(DeliveryAttempt)
                    .where(DeliveryAttempt.app_id == app_id)
                    .order_by(col(DeliveryAttempt.id))
                )
            )
            for row in rows:
                session.expunge(row)
            return rows

    def ledger(self, app_id: str, repository_id: str) -> dict[str, str]:
        """path -> sha256 of what the app acknowledged, per the ledger."""
        with session_scope(self.settings.database_url) as session:
            rows = session.exec(
                select(DeliveredFile).where(
                    DeliveredFile.app_id == app_id, DeliveredFile.repository_id == repository_id
                )
            )
            return {row.path: row.sha256 for row in rows}


@asynccontextmanager
async def fault_stack(data_dir: Path, **overrides: str) -> AsyncIterator[FaultStack]:
    """A started FaultStack, its server stopped at the end."""
    env = fault_env(data_dir, **overrides)
    settings = load_settings(env)
    server = DevServer(settings, ui=False, search_attribute_args=dev_server_args())
    stack = FaultStack(env=env, settings=settings, server=server)
    await stack.start_server()
    try:
        await stack.connect()
        yield stack
    finally:
        await stack.stop_server()


@asynccontextmanager
async def in_process_worker(stack: FaultStack) -> AsyncIterator[None]:
    """The real worker (`worker.build_worker`) in this process."""
    assert stack.client is not None
    executor = ThreadPoolExecutor(max_workers=worker.executor_threads(stack.settings))
    try:
        async with worker.build_worker(stack.client, stack.settings, executor):
            yield
    finally:
        executor.shutdown(wait=False, cancel_futures=True)


class WorkerProcess:
    """`python worker.py` as a child process with the stack's settings."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("TREECAST_")}
        self._env = {**inherited, **env}
        self._log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        """Start a fresh worker process."""
        with self._log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(ROOT / "worker.py")],
                cwd=ROOT,
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye to Temporal."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.kills += 1

    def stop(self) -> None:
        """SIGTERM and wait (the normal stop)."""
        if self.process is not None:
            end_process(self.process, 20)


async def until(check: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> float:
    """Wait until `check()` holds; returns the seconds it took (fails after `timeout`)."""
    started = time.monotonic()
    await waiting.until(check, timeout, step, what)
    return time.monotonic() - started


def duplicates(receiver: Receiver) -> int:
    """File messages acknowledged more than once (same path and webhook-id)."""
    counts = Counter((r.path, r.webhook_id) for r in receiver.file_requests())
    return sum(n - 1 for n in counts.values())


def applied(receiver: Receiver) -> list[tuple[str, str | None]]:
    """(event, path) of the file messages the mirror applied, in arrival order."""
    return [
        (r.event, r.path)
        for r in receiver.file_requests()
        if not r.duplicate and r.chunk_index in (None, 0)
    ]


def write_files(root: Path, count: int, prefix: str = "f") -> None:
    """`count` small distinct text files under `root`, spread over a few folders."""
    for number in range(count):
        target = root / f"dir{number % 20:02d}" / f"{prefix}{number:05d}.txt"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f"file {number}\n" * 3)


def files_repo(root: Path, count: int) -> tuple[WorkRepo, str]:
    """A WorkRepo at `root` with `count` small files (`write_files`) in one pushed
    commit: the repository and the commit."""
    repo = WorkRepo(root)
    write_files(repo.work, count)
    return repo, repo.commit(f"{count:,} files")


async def until_delivered(
    stack: FaultStack, app_id: str, repository_id: str, commit: str | None, timeout: float
) -> float:
    """Wait until the app's watch says `commit` was delivered; returns the seconds it took."""

    def done() -> bool:
        return stack.watch_row(app_id, repository_id).delivered_commit == commit

    return await until(done, timeout, f"app {app_id} at {commit}", step=0.1)


async def until_applied(receiver: Receiver, count: int, timeout: float = 60) -> float:
    """Wait until the receiver applied at least `count` file messages."""
    return await until(lambda: len(applied(receiver)) >= count, timeout, f"{count} files")


def slow_down(receiver: Receiver, seconds: float) -> None:
    """Make every request take `seconds` longer (a predicate that never matches a fault)."""

    def pause(_record: Received) -> bool:
        time.sleep(seconds)
        return False

    receiver.fail_next(500, 1_000_000, where=pause)


class StoppablePostgres:
    """A private PostgreSQL in a temp dir that a test may stop and start again (same port).

    The session-wide `postgres_url` fixture cannot be stopped without hurting other
    tests, hence this one. Run as the `postgres` user when we are root, like conftest.
    """

    def __init__(self) -> None:
        from tests.conftest import _runnable_by_postgres, pg_bindir, require_marker

        require_marker("postgres", "a PostgreSQL server of its own")
        # Not under pytest's tmp_path: /tmp/pytest-of-root is private to root.
        root = Path(tempfile.mkdtemp(prefix="treecast-faults-pg-"))
        # The same server programs as the session's PostgreSQL (Debian's or the wheel's).
        self._bin = _runnable_by_postgres(pg_bindir(), root)
        self._root = root
        self._data = root / "pgdata"
        self.port = free_port()
        self._as_root = os.geteuid() == 0
        if self._as_root:
            shutil.chown(root, "postgres", "postgres")

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the `treecast` database."""
        return f"postgresql+psycopg://treecast@127.0.0.1:{self.port}/treecast"

    def _run(self, *args: str) -> None:
        cmd = list(args)
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True)

    def create(self) -> None:
        """initdb, start, createdb."""
        self._run(
            str(self._bin / "initdb"), "-D", str(self._data), "-U", "treecast", "--auth=trust"
        )
        self.start()
        self._run(
            str(self._bin / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "treecast",
            "treecast",
        )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self._root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(self._bin / "pg_ctl"),
            "-D",
            str(self._data),
            "-l",
            str(self._root / "log"),
            "-o",
            options,
            "-w",
            "start",
        )

    def stop(self) -> None:
        """Stop at once (connections are cut, like a crashed database host)."""
        self._run(str(self._bin / "pg_ctl"), "-D", str(self._data), "-m", "immediate", "stop")

    def remove(self) -> None:
        """Stop if running and delete the data dir."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self._root, ignore_errors=True)
