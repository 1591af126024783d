"""The snapshot_repository activity in Temporal's ActivityEnvironment, against real remotes."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest
from sqlmodel import col, select
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory
from temporalio.testing import ActivityEnvironment

import treecast.gitcache.command as git_command
from activities.git import GitActivities
from models.git import GitErrorType, SnapshotInput, SnapshotResult
from models.tables import Repository, Snapshot, Watch
from tests.hostile.test_reliability_input import Remote, many_files
from tests.support.concurrency import at_once
from tests.support.githttp import git_http_server, silent_server
from tests.support.gitrepos import WorkRepo, git
from tests.support.receiver_fixture import add_watch
from treecast.config import Settings, resolve_secret_key
from treecast.crypto import Cipher, generate_webhook_secret
from treecast.db import session_scope
from treecast.gitcache.cache import cache_path
from treecast.gitcache.command import run_git
from treecast.gitcache.errors import heartbeats
from treecast.gitcache.tree import list_tree
from treecast.store.snapshots import KEEP_SNAPSHOTS, PRUNE_EVERY

TOKEN = "glpat-" + "Zq9" * 8 + "_tok"


def register(settings: Settings, url: str, ref: str = "", token: str | None = None) -> str:
    """The repository `repo_s`; with `token`, an app watching it with that token."""
    with session_scope(settings.database_url) as session:
        session.add(Repository(id="repo_s", url=url, ref=ref))
    if token is not None:
        add_watch(
            settings,
            "https://example.com/hooks",
            [generate_webhook_secret()],
            "repo_s",
            token=token,
        )
    return "repo_s"


def snapshot(settings: Settings, repository_id: str = "repo_s") -> SnapshotResult:
    env = ActivityEnvironment()
    result = env.run(GitActivities(settings).snapshot_repository, SnapshotInput(repository_id))
    assert isinstance(result, SnapshotResult)
    return result


def failure(settings: Settings, repository_id: str = "repo_s") -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        snapshot(settings, repository_id)
    return info.value


def rows(settings: Settings) -> list[Snapshot]:
    with session_scope(settings.database_url) as session:
        query = select(Snapshot).order_by(col(Snapshot.id))
        return list(session.exec(query).all())


@pytest.fixture
def repo(tmp_path: Path) -> WorkRepo:
    work = WorkRepo(tmp_path / "origin")
    work.write("README.md", "readme\n")
    work.write("docs/a.md", "aaaa\n")
    os.symlink("README.md", work.work / "link")
    work.write(os.fsdecode(b"caf\xe9.txt"), "latin-1 name\n")
    work.commit()
    return work


def test_snapshot_records_small_metadata(any_db_settings: Settings, repo: WorkRepo) -> None:
    settings = any_db_settings
    register(settings, repo.url)
    head = git(repo.work, "rev-parse", "HEAD")
    first = snapshot(settings)
    assert first == SnapshotResult(
        repository_id="repo_s",
        commit=head,
        ref="main",
        file_count=2,
        total_bytes=len("readme\n") + len("aaaa\n"),
        skipped_symlinks=1,
        skipped_submodules=0,
        skipped_invalid_paths=1,
    )
    # A poll with nothing new refreshes the newest row instead of adding one.
    assert snapshot(settings) == first
    assert [r.commit for r in rows(settings)] == [head]

    repo.write("docs/a.md", "longer content now\n")
    repo.write(".treecastignore", "README.md\n")
    repo.commit()
    second = snapshot(settings)
    assert second.file_count == 2  # README ignored, .treecastignore added
    repo.write("docs/b.md", "b\n")
    repo.remove("docs/a.md")
    head = repo.commit()
    third = snapshot(settings)  # counted from the diff with the previous snapshot
    listing = list_tree(settings, cache_path(settings, "repo_s"), head)
    assert (third.file_count, third.total_bytes) == (
        listing.stats.file_count,
        listing.stats.total_bytes,
    )
    assert third.skipped_invalid_paths == 1 and third.skipped_symlinks == 1
    assert [r.commit for r in rows(settings)][-1] == head and len(rows(settings)) == 3


def test_default_branch_and_empty_repository(settings: Settings, tmp_path: Path) -> None:
    trunk = WorkRepo(tmp_path / "t", branch="trunk")
    register(settings, trunk.url)
    empty = snapshot(settings)
    assert (empty.commit, empty.file_count) == (None, 0)
    assert [r.commit for r in rows(settings)] == [None]
    trunk.write("x.txt", "x")
    head = trunk.commit()
    result = snapshot(settings)
    assert (result.commit, result.ref, result.file_count) == (head, "trunk", 1)


def test_unknown_repository_and_deleted_remote(settings: Settings, repo: WorkRepo) -> None:
    err = failure(settings, "repo_missing")
    assert err.type == GitErrorType.REPOSITORY_NOT_FOUND and err.non_retryable
    register(settings, repo.url)
    snapshot(settings)
    import shutil

    shutil.rmtree(repo.remote)
    err = failure(settings)
    assert err.type == GitErrorType.REPOSITORY_NOT_FOUND and err.non_retryable


def test_ref_not_found_is_not_retryable(settings: Settings, repo: WorkRepo) -> None:
    register(settings, repo.url, ref="release")
    err = failure(settings)
    assert err.type == GitErrorType.REF_NOT_FOUND and err.non_retryable


def test_a_failed_sync_is_one_warning_line_without_a_traceback(
    settings: Settings, repo: WorkRepo, caplog: pytest.LogCaptureFixture
) -> None:
    register(settings, repo.url, ref="no-such-branch")
    caplog.set_level(logging.INFO)
    err = failure(settings)
    assert err.category == ApplicationErrorCategory.BENIGN  # the SDK logs it at DEBUG only
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, caplog.text
    line = warnings[0].getMessage()
    assert "repo_s" in line and GitErrorType.REF_NOT_FOUND in line and "\n" not in line
    assert warnings[0].exc_info is None


def test_tokens_stay_secret(
    settings: Settings, repo: WorkRepo, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with git_http_server(repo.remote.parent, TOKEN) as server:
        register(settings, server.url("remote.git"), token=TOKEN)
        assert snapshot(settings).file_count == 2
        with session_scope(settings.database_url) as session:
            [row] = session.exec(select(Watch).where(Watch.repository_id == "repo_s")).all()
            row.token_encrypted = Cipher(resolve_secret_key(settings)).encrypt(TOKEN + "-old")
        repo.write("new.md", "n")
        repo.commit()
        err = failure(settings)
    assert err.type == GitErrorType.AUTHENTICATION_FAILED and err.non_retryable
    seen = str(err) + caplog.text
    assert TOKEN not in seen
    for root, _dirs, files in os.walk(settings.data_dir):
        for name in files:
            if name.endswith((".db", ".db-wal", ".db-shm")):
                continue  # the database holds the token only encrypted
            assert TOKEN.encode() not in (Path(root) / name).read_bytes(), name


def test_timeouts_heartbeat_and_retry(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(git_command, "HEARTBEAT_SECONDS", 0.2)
    quick = settings.model_copy(update={"git_timeout_seconds": 1.5})
    beats: list[object] = []
    with silent_server() as port:
        register(quick, f"http://127.0.0.1:{port}/r.git")
        env = ActivityEnvironment()
        env.on_heartbeat = lambda *details: beats.append(details)
        with pytest.raises(ApplicationError) as info:
            env.run(GitActivities(quick).snapshot_repository, SnapshotInput("repo_s"))
    assert info.value.type == GitErrorType.TIMEOUT and not info.value.non_retryable
    assert len(beats) >= 3


def test_a_long_listing_heartbeats_while_its_output_flows(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # git's output never pauses (the reader is the slow side): the caller's heartbeat must
    # still be called, or an activity's heartbeat timeout takes a big listing for a lost task.
    monkeypatch.setattr(git_command, "HEARTBEAT_SECONDS", 0.05)
    remote = Remote(tmp_path / "remote.git")
    remote.commit(many_files(3000))  # ~200 KB of listing: several pipe reads
    beats: list[str] = []

    def read_slowly() -> int:
        count = 0
        records = ["ls-tree", "-r", "-z", "main"]
        for count, _ in enumerate(
            git_command.stream_records(records, settings=settings, cwd=remote.root), 1
        ):
            if count % 500 == 0:
                time.sleep(0.1)
        return count

    with heartbeats(beats.append):
        assert read_slowly() == 3000
    assert len(beats) >= 3, beats
    assert all(beat.startswith("git ls-tree running for") for beat in beats)


def test_concurrent_snapshots_of_one_repository(settings: Settings, repo: WorkRepo) -> None:
    register(settings, repo.url)
    results = at_once(lambda: snapshot(settings).commit, 3)
    assert results == [git(repo.work, "rev-parse", "HEAD")] * 3


def test_newest_snapshots_and_pins_are_kept(settings: Settings, repo: WorkRepo) -> None:
    register(settings, repo.url)
    commits = []
    for i in range(KEEP_SNAPSHOTS + 3):
        repo.write("counter.txt", str(i))
        commits.append(repo.commit())
        snapshot(settings)
    kept = rows(settings)
    assert len(kept) == KEEP_SNAPSHOTS
    assert {r.commit for r in kept} == set(commits[-KEEP_SNAPSHOTS:])
    refs = run_git(
        ["for-each-ref", "--format=%(refname)", "refs/treecast/keep/"],
        settings=settings,
        cwd=cache_path(settings, "repo_s"),
    ).stdout.decode()
    pinned = {line.rsplit("/", 1)[1] for line in refs.split()}
    # Stale pins are dropped every PRUNE_EVERY snapshots, never the newest ones.
    assert set(commits[-KEEP_SNAPSHOTS:]) <= pinned
    assert len(pinned) < KEEP_SNAPSHOTS + PRUNE_EVERY
