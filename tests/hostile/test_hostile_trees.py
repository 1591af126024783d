"""Hostile repository content: a tree bomb and objects git's fsck refuses are refused, fast."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlmodel import select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.delivery import DeliveryActivities
from activities.git import GitActivities
from examples.receiver import Receiver
from models.delivery import DeliverInput
from models.git import NON_RETRYABLE_GIT_ERRORS, GitErrorType, SnapshotInput
from models.tables import DeliveryAttempt, Repository
from tests.support.gitrepos import git
from tests.support.receiver_fixture import register
from treecast.config import Settings
from treecast.db import session_scope
from treecast.gitcache.cache import cache_lock
from treecast.gitcache.errors import GitError
from treecast.gitcache.remote import sync_ref
from treecast.gitcache.tree import TreeLimits, list_tree

ROOT = Path(__file__).resolve().parents[2]


def tree_bomb(root: Path, levels: int = 6, fanout: int = 10) -> str:
    """`fanout` ** `levels` paths from a few hundred bytes of trees (each level names the
    one below `fanout` times)."""
    remote = root / "bomb.git"
    git(root, "init", "--bare", "-q", str(remote))

    def mktree(lines: list[str]) -> str:
        return subprocess.run(
            ["git", "mktree"], cwd=remote, input="\n".join(lines) + "\n", text=True,
            capture_output=True, check=True,
        ).stdout.strip()  # fmt: skip

    blob = subprocess.run(
        ["git", "hash-object", "-w", "--stdin"], cwd=remote, input="x\n", text=True,
        capture_output=True, check=True,
    ).stdout.strip()  # fmt: skip
    tree = mktree([f"100644 blob {blob}\tf{i}" for i in range(fanout)])
    for _ in range(levels - 1):
        tree = mktree([f"040000 tree {tree}\td{i}" for i in range(fanout)])
    commit = git(remote, "commit-tree", tree, "-m", "bomb")
    git(remote, "update-ref", "refs/heads/main", commit)
    return f"file://{remote}"


def test_a_tree_bomb_is_refused_in_seconds_and_little_memory(
    settings: Settings, tmp_path: Path
) -> None:
    url = tree_bomb(tmp_path)
    with cache_lock(settings, "repo_bomb") as path:
        commit = sync_ref(settings, path, url, "main").commit
    assert commit is not None
    # In its own process, so the peak memory is this listing's alone.
    probe = f"""
import json, time
from pathlib import Path
from treecast.config import load_settings
from treecast.gitcache.tree import list_tree
def hwm():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
settings = load_settings({{"TREECAST_DATA_DIR": {str(settings.data_dir)!r}}})
idle, started = hwm(), time.monotonic()
try:
    list_tree(settings, Path({str(path)!r}), {commit!r}, keep_files=False)
    error = None
except Exception as exc:
    error = [getattr(exc, "type", type(exc).__name__), str(exc)]
print(json.dumps({{"error": error, "seconds": time.monotonic() - started,
                   "mib": (hwm() - idle) / 1024}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout)
    assert measured["error"] is not None, measured
    error_type, message = measured["error"]
    assert error_type == GitErrorType.TREE_TOO_LARGE and "tree bomb" in message
    print("tree bomb:", measured)  # the figures docs/security.md quotes
    assert measured["seconds"] < 10 and measured["mib"] < 100, measured
    assert GitErrorType.TREE_TOO_LARGE in NON_RETRYABLE_GIT_ERRORS


def test_tree_limits_refuse_entries_paths_and_depth(settings: Settings, tmp_path: Path) -> None:
    blob = subprocess.run(
        ["git", "hash-object", "--stdin"], input="x\n", text=True, capture_output=True,
        check=True,
    ).stdout.strip()  # fmt: skip
    url = tree_bomb(tmp_path, levels=2, fanout=5)  # 25 files, no repeats past 5
    with cache_lock(settings, "repo_small") as path:
        commit = sync_ref(settings, path, url, "main").commit
        assert commit is not None and blob
        assert list_tree(settings, path, commit).stats.file_count == 25
        for limits, words in [
            (TreeLimits(max_entries=24), "more than 24 entries"),
            (TreeLimits(max_path_bytes=4), "longer than 4 bytes"),
            (TreeLimits(max_depth=1), "deeper than 1 levels"),
            (TreeLimits(max_total_bytes=10), "more than 10 bytes"),
            (TreeLimits(max_subtree_repeats=4), "appears more than 4 times"),
        ]:
            with pytest.raises(GitError) as refused:
                list_tree(settings, path, commit, limits=limits)
            assert refused.value.type == GitErrorType.TREE_TOO_LARGE and refused.value.non_retryable
            assert words in refused.value.message


def test_objects_git_fsck_refuses_never_reach_the_cache(settings: Settings, tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    git(work, "init", "-q")
    blob = git(work, "hash-object", "-w", "--stdin") if False else None
    remote = tmp_path / "evil.git"
    git(tmp_path, "init", "--bare", "-q", str(remote))
    blob = subprocess.run(
        ["git", "hash-object", "-w", "--stdin"], cwd=remote, input="[core]\n", text=True,
        capture_output=True, check=True,
    ).stdout.strip()  # fmt: skip
    inner = subprocess.run(
        ["git", "mktree"], cwd=remote, input=f"100644 blob {blob}\tconfig\n", text=True,
        capture_output=True, check=True,
    ).stdout.strip()  # fmt: skip
    root = subprocess.run(
        ["git", "mktree"], cwd=remote,
        input=f"040000 tree {inner}\t.git\n100644 blob {blob}\tok.txt\n", text=True,
        capture_output=True, check=True,
    ).stdout.strip()  # fmt: skip
    commit = git(remote, "commit-tree", root, "-m", "evil")
    git(remote, "update-ref", "refs/heads/main", commit)
    started = time.monotonic()
    with cache_lock(settings, "repo_evil") as path, pytest.raises(GitError) as refused:
        sync_ref(settings, path, f"file://{remote}", "main")
    assert refused.value.type == GitErrorType.UNSAFE_CONTENT and refused.value.non_retryable
    assert "hasDotgit" in refused.value.message and time.monotonic() - started < 30


def odd_commit(remote: Path, names: list[str]) -> str:
    """A bare repository at `remote` whose main is one commit of a tree `names`, each the
    same blob, made with git's plumbing (which checks no name); returns the commit."""
    git(remote.parent, "init", "--bare", "-q", str(remote))
    blob = subprocess.run(
        ["git", "hash-object", "-w", "--stdin"], cwd=remote, input="x\n", text=True,
        capture_output=True, check=True,
    ).stdout.strip()  # fmt: skip
    root = subprocess.run(
        ["git", "mktree"], cwd=remote, text=True, capture_output=True, check=True,
        input="".join(f"100644 blob {blob}\t{name}\n" for name in names),
    ).stdout.strip()  # fmt: skip
    commit = git(remote, "commit-tree", root, "-m", "odd")
    git(remote, "update-ref", "refs/heads/main", commit)
    return commit


def test_unsafe_paths_git_lets_through_are_skipped_counted_and_never_sent(
    settings: Settings, tmp_path: Path
) -> None:
    # git's fsck refuses `..` and `.git` itself; these pass it but must not reach a
    # receiver on Windows or one that joins paths naively.
    remote = tmp_path / "odd.git"
    commit = odd_commit(remote, ["..\\evil.txt", "C:evil.txt", "ok.txt", "with space.txt"])
    with cache_lock(settings, "repo_odd") as path:
        assert sync_ref(settings, path, f"file://{remote}", "main").commit == commit
        listing = list_tree(settings, path, commit)
    assert sorted(listing.files) == ["ok.txt", "with space.txt"]
    assert listing.stats.skipped_unsafe_paths == 2 and listing.stats.file_count == 2
    assert any("evil" in shown for shown in listing.stats.unsafe_paths)


def test_skipped_paths_are_reported_in_the_delivery_log_and_never_sent(
    settings: Settings, tmp_path: Path, receiver: Receiver, receiver_secret: str
) -> None:
    remote = tmp_path / "odd2.git"
    commit = odd_commit(remote, ["..\\\\evil.txt", "ok.txt"])
    app_id, repository_id = register(
        settings, receiver.url, [receiver_secret], f"file://{remote}", ref="main"
    )
    env = ActivityEnvironment()
    snap = env.run(GitActivities(settings).snapshot_repository, SnapshotInput(repository_id))
    assert (snap.file_count, snap.skipped_unsafe_paths) == (1, 1)
    env.run(
        DeliveryActivities(settings).deliver_changes, DeliverInput(app_id, repository_id, commit)
    )
    assert sorted(receiver.files()) == ["ok.txt"]
    with session_scope(settings.database_url) as session:
        rows = session.exec(select(DeliveryAttempt).where(DeliveryAttempt.event == "skipped")).all()
    assert len(rows) == 1 and "1 unsafe paths" in (rows[0].error or "")


def test_the_limit_a_tree_is_over_and_its_setting_are_named_and_the_setting_raises_it(
    settings: Settings, tmp_path: Path
) -> None:
    url = tree_bomb(tmp_path, levels=4, fanout=10)  # 10,000 files; the leaf tree 1,000 times
    with session_scope(settings.database_url) as session:
        session.add(Repository(id="repo_bomb", url=url, ref="main"))
    env = ActivityEnvironment()
    tight = settings.model_copy(update={"tree_max_subtree_repeats": 100})
    with pytest.raises(ApplicationError) as refused:
        env.run(GitActivities(tight).snapshot_repository, SnapshotInput("repo_bomb"))
    assert refused.value.type == GitErrorType.TREE_TOO_LARGE
    assert "more than 100 times" in refused.value.message
    assert "TREECAST_TREE_MAX_SUBTREE_REPEATS" in refused.value.message
    entries = settings.model_copy(
        update={"tree_max_entries": 5000, "data_dir": settings.data_dir / "w2"}
    )
    with pytest.raises(ApplicationError) as refused:
        env.run(GitActivities(entries).snapshot_repository, SnapshotInput("repo_bomb"))
    assert "more than 5000 entries" in refused.value.message
    assert "TREECAST_TREE_MAX_ENTRIES" in refused.value.message
    # The settings raise the limits (they were not read before: the defaults always held).
    roomy = settings.model_copy(
        update={"tree_max_subtree_repeats": 5000, "data_dir": settings.data_dir / "w3"}
    )
    done = env.run(GitActivities(roomy).snapshot_repository, SnapshotInput("repo_bomb"))
    assert done.file_count == 10_000


@pytest.mark.e2e
async def test_status_json_names_the_limit_a_tree_bomb_hit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`status REPO --json` after a tree bomb's failed sync, on the dev server."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import starter
    import worker
    from tests.support.temporal_env import new_task_queue, start_local
    from treecast.config import load_settings
    from treecast.crypto import generate_key

    url = tree_bomb(tmp_path)
    server = await start_local()
    env = {
        "TEMPORAL_ADDRESS": server.client.service_client.config.target_host,
        "TREECAST_DATA_DIR": str(tmp_path / "data"),
        "TREECAST_SECRET_KEY": generate_key(),
        "TREECAST_ALLOW_FILE_URLS": "1",
        "TREECAST_TASK_QUEUE": new_task_queue(),
        "TREECAST_FULL_SYNC_SECONDS": "0",
        "TREECAST_POLL_INTERVAL_SECONDS": "3600",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TREECAST_DATABASE_URL", raising=False)
    executor = ThreadPoolExecutor(max_workers=worker.executor_threads(load_settings(env)))
    try:
        async with worker.build_worker(server.client, load_settings(env), executor):
            assert (
                await asyncio.to_thread(
                    starter.main, ["--json", "repo", "add", url, "--ref", "main"]
                )
                == 0
            )
            rid = json.loads(capsys.readouterr().out)["repository_id"]
            sync: dict[str, object] = {}
            for _ in range(100):
                assert await asyncio.to_thread(starter.main, ["--json", "status", rid]) == 0
                [row] = json.loads(capsys.readouterr().out)["repositories"]
                sync = row["sync"] or {}
                if sync.get("last_error_type"):
                    break
                await asyncio.sleep(0.2)
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
        await server.shutdown()
    assert sync["last_error_type"] == GitErrorType.TREE_TOO_LARGE, sync
    error = str(sync["last_error"])
    assert "appears more than 10000 times" in error  # the limit hit
    assert "TREECAST_TREE_MAX_SUBTREE_REPEATS" in error  # the setting that raises it
