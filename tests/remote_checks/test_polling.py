"""Polling keeps its interval (issue 30): the remote-check sweep learns a registration, a
new interval, a pause or a synced commit at once, and wakes a repository only for a commit
it has not synced (or is not syncing). The loop's side (a wake for the commit it has, a
new watch served by the sync just made) is in test_sync_workflow.py.

The sweep runs as the activity runs it (`RemoteChecker`) against real git remotes and
SQLite; the repository's loop is played by the test: a wake runs the real
`snapshot_repository` activity, as the workflow would.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from temporalio.testing import ActivityEnvironment

from activities.git import GitActivities
from models.checks import CheckReason, RemoteMoved
from models.git import SnapshotInput, SnapshotStats
from tests.support import registering
from tests.support.gitrepos import WorkRepo
from tests.support.schemas import database_at
from tests.support.waiting import until
from treecast import remote_checks
from treecast.config import Settings, resolve_secret_key
from treecast.crypto import Cipher
from treecast.db import create_schema, make_engine, session_scope
from treecast.service import access, checks
from treecast.service import watches as service_watches
from treecast.service.credentials import CredentialSpec, plan
from treecast.store import access as access_store
from treecast.store import repositories as repository_rows
from treecast.store import stamps
from treecast.store import watches as watch_rows
from treecast.store.snapshots import latest, record_snapshot
from treecast.store.watches import finish_delivery

pytestmark = pytest.mark.timeout(90)


def _cipher(settings: Settings) -> Cipher:
    return Cipher(resolve_secret_key(settings))


def add_app(settings: Settings) -> str:
    return registering.add_app(settings, "http://127.0.0.1:9")


@pytest.fixture
def app_id(settings: Settings) -> str:
    """An app (`add_app`) in the test's database."""
    return add_app(settings)


def register(settings: Settings, url: str, interval: int) -> str:
    """`repo add URL --interval N` as the service layer does it (a new interval too)."""
    return registering.add_repository(settings, url, interval)


def watch(settings: Settings, app_id: str, repository_id: str) -> None:
    registering.watch(settings, app_id, repository_id)


def pause(settings: Settings, repository_id: str, paused: bool) -> None:
    """What `pause` records once the workflow took the signal."""
    with session_scope(settings.database_url) as session:
        row = repository_rows.get(session, repository_id)
        assert row is not None
        repository_rows.set_paused(session, row, paused)


def synced_commit(settings: Settings, repository_id: str) -> str | None:
    with session_scope(settings.database_url) as session:
        newest = latest(session, repository_id)
        return newest.commit if newest is not None else None


def is_synced(settings: Settings, repository_id: str, commit: str) -> bool:
    return synced_commit(settings, repository_id) == commit


async def sync(settings: Settings, repository_id: str, app_id: str | None = None) -> str | None:
    """What the repository's loop does when woken: the real snapshot activity, then (for
    `app_id`) the delivery's end, as an app that acknowledged everything."""

    def run() -> str | None:
        activities = GitActivities(settings)
        result = ActivityEnvironment().run(
            activities.snapshot_repository, SnapshotInput(repository_id)
        )
        if app_id is not None:
            with session_scope(settings.database_url) as session:
                finish_delivery(session, app_id, repository_id, result.commit)
        return result.commit

    return await asyncio.to_thread(run)


@dataclass
class Wake:
    repository_id: str
    moved: RemoteMoved
    at: float  # time.monotonic()
    synced: str | None  # the repository's synced commit when the wake came

    @property
    def for_synced_commit(self) -> bool:
        """A wake for a commit the repository already has: the defect this file counts."""
        names = set(self.moved.detail.split(","))
        return self.moved.reason == CheckReason.MOVED and self.synced in names


@dataclass
class Sweep:
    """The sweep and the loops it wakes: a MOVED wake syncs after `sync_delay` seconds."""

    settings: Settings
    app_id: str
    sync_delay: float = 0.0
    wakes: list[Wake] = field(default_factory=list)
    syncing: set[asyncio.Task[None]] = field(default_factory=set)

    async def signal(self, repository_id: str, moved: RemoteMoved) -> None:
        synced = await asyncio.to_thread(synced_commit, self.settings, repository_id)
        self.wakes.append(Wake(repository_id, moved, time.monotonic(), synced))
        if moved.reason == CheckReason.MOVED:
            task = asyncio.ensure_future(self._sync(repository_id))
            self.syncing.add(task)
            task.add_done_callback(self.syncing.discard)

    async def _sync(self, repository_id: str) -> None:
        await asyncio.sleep(self.sync_delay)  # the fetch takes this long
        await sync(self.settings, repository_id, self.app_id)

    def of(self, repository_id: str) -> list[Wake]:
        return [w for w in self.wakes if w.repository_id == repository_id]


@asynccontextmanager
async def sweeping(
    settings: Settings, app_id: str, seconds: float, sync_delay: float = 0.0
) -> AsyncIterator[Sweep]:
    """A running sweep of every repository (one shard), as the activity runs it."""
    sweep = Sweep(settings, app_id, sync_delay)
    checker = remote_checks.RemoteChecker(
        settings, 0, 1, signal=sweep.signal, heartbeat=lambda progress: None
    )
    task = asyncio.ensure_future(checker.run(seconds))
    try:
        yield sweep
    finally:
        task.cancel()
        for pending in (task, *sweep.syncing):
            with contextlib.suppress(asyncio.CancelledError):
                await pending


def synced_repository(
    settings: Settings, tmp_path: Path, app_id: str, interval: int
) -> tuple[WorkRepo, str]:
    """A registered, watched repository, synced and delivered at its first commit."""
    repo = WorkRepo(tmp_path / "git")
    repo.write("a.txt", "a")
    repo.commit("first")
    repository_id = register(settings, repo.url, interval)
    watch(settings, app_id, repository_id)
    return repo, repository_id


# --- what a sweep reads each second -------------------------------------------------------


def test_each_change_a_sweep_must_learn_stamps_the_repository(any_db_settings: Settings) -> None:
    settings = any_db_settings
    engine = make_engine(settings.database_url)
    database_at(engine, "0002_shared_state")  # a database from before the stamps
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO repositories (id, url, ref, poll_interval_seconds, created_at,"
                " updated_at) VALUES ('repo_old', 'file:///old', '', 60, CURRENT_TIMESTAMP,"
                " CURRENT_TIMESTAMP)"
            )
        )
    create_schema(engine)
    indexes = inspect(engine).get_indexes("repositories")
    assert any(i["column_names"] == ["changed_at"] for i in indexes)

    def changed_after(since: datetime) -> set[str]:
        with session_scope(settings.database_url) as session:
            return {rid for rid, _ in stamps.stamped_since(session, since)}

    app_id = add_app(settings)
    before = datetime.now(UTC)
    repository_id = register(settings, "file:///tmp/r1", 60)
    assert changed_after(before) == {repository_id}  # the old row has no stamp: not read
    dropped = access.Checked(
        plan(settings, _cipher(settings), "file:///tmp/r1",
             CredentialSpec(clear=True), None, comment="k"),
        None,
        access.CLEARED,
    )  # fmt: skip
    for change in (
        lambda session: watch_rows.watch(session, app_id, repository_id, []),
        # An app's credentials changed, or whose fetched: the sweep reads them again.
        lambda session: service_watches._save(session, app_id, repository_id, None, dropped),
        lambda session: access_store.record_verdicts(session, repository_id, [], [], app_id, {}),
        lambda session: repository_rows.set_paused(
            session, checks.repository(session, repository_id), True
        ),
        lambda session: record_snapshot(session, repository_id, "c" * 40, SnapshotStats(), None),
        lambda session: watch_rows.unwatch(session, app_id, repository_id),
    ):
        time.sleep(0.01)
        before = datetime.now(UTC)
        assert changed_after(before) == set()
        with session_scope(settings.database_url) as session:
            change(session)
        assert changed_after(before) == {repository_id}
    before = datetime.now(UTC)
    register(settings, "file:///tmp/r1", 60)  # the same interval again: nothing changed
    assert changed_after(before) == set()
    register(settings, "file:///tmp/r1", 30)
    assert changed_after(before) == {repository_id}


# --- the sweep ----------------------------------------------------------------------------


@pytest.mark.slow  # real time: it waits out sweep intervals
async def test_a_repository_registered_and_watched_is_checked_within_one_interval(
    settings: Settings, tmp_path: Path, app_id: str
) -> None:
    interval = 3
    async with sweeping(settings, app_id, 30) as sweep:
        await asyncio.sleep(1.5)  # the sweep has read its repositories: not this one
        repo, repository_id = synced_repository(settings, tmp_path, app_id, interval)
        await sync(settings, repository_id, app_id)  # its first sync, at registration
        pushed = time.monotonic()
        repo.write("b.txt", "b")
        second = repo.commit("second")
        await until(lambda: bool(sweep.of(repository_id)), timeout=20)
        wake = sweep.of(repository_id)[0]
        assert wake.moved.reason == CheckReason.MOVED and second in wake.moved.detail
        # Checked by the first interval after it was registered, not at the next full
        # read of every repository (RELOAD_SECONDS, 30 s).
        assert wake.at - pushed <= interval + 1.0, wake.at - pushed


@pytest.mark.slow  # real time: it waits out sweep intervals
async def test_after_a_sync_the_next_checks_do_not_wake_it(
    settings: Settings, tmp_path: Path, app_id: str
) -> None:
    interval = 1
    repo, repository_id = synced_repository(settings, tmp_path, app_id, interval)
    await sync(settings, repository_id, app_id)
    # Each woken sync takes 2.5 intervals: checks meanwhile see the remote ahead of the
    # synced commit, and must not wake the loop for the commit it is syncing.
    async with sweeping(settings, app_id, 40, sync_delay=2.5) as sweep:
        for n in range(2):
            repo.write("b.txt", f"change {n}")
            pushed = repo.commit(f"change {n}")
            await until(partial(is_synced, settings, repository_id, pushed), 15)
            await asyncio.sleep(4 * interval)  # checks after the sync
            wakes = sweep.of(repository_id)
            assert [w for w in wakes if w.for_synced_commit] == []
            assert len(wakes) == n + 1, [(w.moved.detail[:12], w.synced) for w in wakes]


@pytest.mark.slow  # real time: it waits out sweep intervals
async def test_a_new_interval_a_pause_and_a_resume_reach_the_sweep_at_once(
    settings: Settings, tmp_path: Path, app_id: str
) -> None:
    repo, repository_id = synced_repository(settings, tmp_path, app_id, 600)
    await sync(settings, repository_id, app_id)
    async with sweeping(settings, app_id, 40) as sweep:
        await asyncio.sleep(1.5)  # read, with its ten-minute interval
        repo.write("b.txt", "b")
        repo.commit("second")
        register(settings, repo.url, 1)  # `repo add` again with a new interval
        changed = time.monotonic()
        await until(lambda: len(sweep.of(repository_id)) == 1, 10)
        assert sweep.of(repository_id)[0].at - changed <= 2.5

        await until(lambda: not sweep.syncing, 10)
        pause(settings, repository_id, True)
        await asyncio.sleep(1.5)
        repo.write("c.txt", "c")
        third = repo.commit("third")
        await asyncio.sleep(3)  # three intervals: a paused repository is not woken
        assert len(sweep.of(repository_id)) == 1
        pause(settings, repository_id, False)
        resumed = time.monotonic()
        await until(lambda: len(sweep.of(repository_id)) == 2, 10)
        wake = sweep.of(repository_id)[1]
        assert third in wake.moved.detail and wake.at - resumed <= 2.0
