"""Each app's changes against its ledger, by full comparison and by tree diff (real repos and DBs)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from sqlmodel import col, delete, select

from models.changes import ChangeKind, FileChange
from models.tables import App, DeliveredFile, Repository, Watch, parse_globs
from tests.support.gitrepos import WorkRepo, git
from treecast.config import Settings
from treecast.db import session_scope
from treecast.delivery.changes import Candidates, compute_changes, listed
from treecast.delivery.loading import load_changes
from treecast.gitcache.cache import cache_lock, cache_path
from treecast.gitcache.objects import BlobReader
from treecast.gitcache.remote import sync_ref
from treecast.gitcache.repository import RepositoryCache
from treecast.remote_access import load_access
from treecast.store.ledger import LedgerEntry, load_ledger

REPO = "repo_c"


def sync(settings: Settings, repo: WorkRepo) -> str:
    with cache_lock(settings, REPO) as path:
        commit = sync_ref(settings, path, repo.url, "").commit
    assert commit is not None
    return commit


def push(settings: Settings, repo: WorkRepo) -> str:
    """Commit the work tree, push it and sync this worker's cache."""
    repo.commit()
    return sync(settings, repo)


def register(settings: Settings, repo: WorkRepo, apps: dict[str, list[str]]) -> None:
    with session_scope(settings.database_url) as session:
        session.add(Repository(id=REPO, url=repo.url, ref=""))
        for app_id in apps:
            session.add(App(id=app_id, name=app_id, base_url="http://x", secrets_encrypted="-"))
        session.flush()
        for app_id, globs in apps.items():
            session.add(Watch(app_id=app_id, repository_id=REPO, path_globs=json.dumps(globs)))


def changes(settings: Settings, app_id: str, commit: str | None) -> list[FileChange]:
    with session_scope(settings.database_url) as session:
        access = load_access(settings, session, REPO)
        cache = RepositoryCache(settings, REPO)
        return load_changes(session, cache, access, app_id, commit).changes


def deliver(settings: Settings, app_id: str, commit: str | None, todo: list[FileChange]) -> None:
    """What a delivery does on acknowledgement: update the ledger, then mark the commit."""
    with session_scope(settings.database_url) as session:
        with BlobReader(cache_path(settings, REPO)) as reader:
            for change in todo:
                row = session.get(DeliveredFile, (app_id, REPO, change.path))
                if change.kind == ChangeKind.DELETE:
                    assert row is not None
                    session.delete(row)
                    continue
                assert change.blob_id is not None
                digest = hashlib.sha256(reader.read(change.blob_id)).hexdigest()
                if row is None:
                    row = DeliveredFile(
                        app_id=app_id, repository_id=REPO, path=change.path, blob_id="", sha256=""
                    )
                row.blob_id, row.sha256 = change.blob_id, digest
                session.add(row)
        watch = session.get(Watch, (app_id, REPO))
        assert watch is not None
        watch.delivered_commit = commit
        session.add(watch)


def reference(settings: Settings, app_id: str, commit: str) -> list[FileChange]:
    """The full ledger comparison, whatever load_changes would pick."""
    with session_scope(settings.database_url) as session:
        watch = session.get(Watch, (app_id, REPO))
        assert watch is not None
        cache = RepositoryCache(settings, REPO)
        ff = cache.file_filter(cache.ignore_blob(commit), parse_globs(watch.path_globs))
        candidates = listed(cache.list_tree(commit, ff).files)
        return compute_changes(candidates, load_ledger(session, app_id, REPO)).changes


def ledger(settings: Settings, app_id: str) -> dict[str, str]:
    with session_scope(settings.database_url) as session:
        rows = session.exec(select(DeliveredFile).where(DeliveredFile.app_id == app_id)).all()
        return {row.path: row.sha256 for row in rows}


def deliver_the_first_commit(settings: Settings, repo: WorkRepo) -> None:
    """One app, app_1, watching the whole repository, its first commit synced and
    delivered to it."""
    register(settings, repo, {"app_1": []})
    first = sync(settings, repo)
    deliver(settings, "app_1", first, changes(settings, "app_1", first))


def kinds(todo: list[FileChange]) -> list[tuple[str, str]]:
    return [(c.kind, c.path) for c in todo]


@pytest.fixture
def repo(tmp_path: Path) -> WorkRepo:
    work = WorkRepo(tmp_path / "origin")
    work.write("README.md", "readme\n")
    work.write("docs/a.md", "a\n")
    work.write("docs/b.md", "b\n")
    work.write("src/main.py", "main\n")
    work.commit("first")
    return work


def test_compute_changes_is_a_pure_function_of_the_tree_and_the_ledger() -> None:
    ledger = {
        "same.md": LedgerEntry("b1", "s1"),
        "changed.md": LedgerEntry("b2", "s2"),
        "gone.md": LedgerEntry("b3", "s3"),
        "imported.md": LedgerEntry("", "s4"),  # from Docora: no blob id, only the SHA-256
        "imported-changed.md": LedgerEntry("", "s5"),
    }
    tree = {
        "same.md": ("b1", 1),
        "changed.md": ("b2x", 2),
        "new.md": ("b4", 3),
        "imported.md": ("b5", 4),
        "imported-changed.md": ("b6", 5),
    }
    hashed: list[str] = []

    def same_content(blob_id: str, sha256: str) -> bool:
        hashed.append(blob_id)
        return (blob_id, sha256) == ("b5", "s4")

    result = compute_changes(Candidates(tree, complete=True), ledger, same_content)
    assert [(c.kind, c.path, c.blob_id, c.previous_sha256) for c in result.changes] == [
        ("delete", "gone.md", None, "s3"),
        ("create", "new.md", "b4", None),
        ("update", "changed.md", "b2x", "s2"),
        ("update", "imported-changed.md", "b6", "s5"),
    ]
    assert result.upgraded == {"imported.md": "b5"} and sorted(hashed) == ["b5", "b6"]
    # A diff's candidates: only their paths can differ, the rest of the ledger stands.
    diffed = Candidates({"changed.md": ("b2x", 2), "gone.md": None}, complete=False)
    assert diffed.ledger_paths() == {"changed.md", "gone.md"}
    assert [(c.kind, c.path) for c in compute_changes(diffed, ledger).changes] == [
        ("delete", "gone.md"),
        ("update", "changed.md"),
    ]


def test_first_then_incremental_sync(any_db_settings: Settings, repo: WorkRepo) -> None:
    settings = any_db_settings
    register(settings, repo, {"app_1": []})
    first = sync(settings, repo)
    todo = changes(settings, "app_1", first)
    assert kinds(todo) == [
        ("create", "README.md"),
        ("create", "docs/a.md"),
        ("create", "docs/b.md"),
        ("create", "src/main.py"),
    ]
    assert todo[0].size == len("readme\n") and todo[0].previous_sha256 is None
    deliver(settings, "app_1", first, todo)
    assert changes(settings, "app_1", first) == []

    repo.write("docs/a.md", "a, edited\n")
    repo.remove("docs/b.md")
    repo.write("docs/c.md", "c\n")
    repo.write("0-first.txt", "sorted first\n")
    second = push(settings, repo)
    before = ledger(settings, "app_1")
    todo = changes(settings, "app_1", second)
    assert kinds(todo) == [
        ("delete", "docs/b.md"),
        ("create", "0-first.txt"),
        ("create", "docs/c.md"),
        ("update", "docs/a.md"),
    ]
    assert todo[0].previous_sha256 == before["docs/b.md"] and todo[0].blob_id is None
    assert todo[3].previous_sha256 == before["docs/a.md"]
    assert todo[3].size == len("a, edited\n")
    assert todo == reference(settings, "app_1", second)
    deliver(settings, "app_1", second, todo)
    assert reference(settings, "app_1", second) == []


def test_incremental_path_only_looks_at_the_diff(settings: Settings, repo: WorkRepo) -> None:
    deliver_the_first_commit(settings, repo)
    # Tamper with the ledger outside the diff: the diff path cannot see it (proving it is
    # used), while a full comparison would re-create the file.
    with session_scope(settings.database_url) as session:
        session.exec(delete(DeliveredFile).where(col(DeliveredFile.path) == "README.md"))
    repo.write("docs/a.md", "new a\n")
    second = push(settings, repo)
    assert kinds(changes(settings, "app_1", second)) == [("update", "docs/a.md")]
    assert ("create", "README.md") in kinds(reference(settings, "app_1", second))


def test_diffed_paths_still_consult_the_ledger(settings: Settings, repo: WorkRepo) -> None:
    deliver_the_first_commit(settings, repo)
    # The app lost docs/a.md and src/main.py from its ledger (e.g. rows removed by a reset).
    with session_scope(settings.database_url) as session:
        for path in ("docs/a.md", "src/main.py"):
            session.exec(delete(DeliveredFile).where(col(DeliveredFile.path) == path))
    repo.write("docs/a.md", "changed\n")
    repo.remove("src/main.py")
    second = push(settings, repo)
    # Not "update" (the app has no previous version) and no delete (it has nothing to delete).
    assert kinds(changes(settings, "app_1", second)) == [("create", "docs/a.md")]


def test_ignore_file_change_falls_back_to_full_comparison(
    settings: Settings, repo: WorkRepo
) -> None:
    deliver_the_first_commit(settings, repo)
    repo.write(".treecastignore", "docs/\n")
    second = push(settings, repo)
    todo = changes(settings, "app_1", second)
    # docs/ did not change in git, yet it is now excluded: its files are deleted.
    assert kinds(todo) == [
        ("delete", "docs/a.md"),
        ("delete", "docs/b.md"),
        ("create", ".treecastignore"),
    ]
    deliver(settings, "app_1", second, todo)
    repo.write(".treecastignore", "")
    third = push(settings, repo)
    assert kinds(changes(settings, "app_1", third)) == [
        ("create", "docs/a.md"),
        ("create", "docs/b.md"),
        ("update", ".treecastignore"),
    ]


def test_force_push_with_and_without_the_old_commit(settings: Settings, repo: WorkRepo) -> None:
    register(settings, repo, {"app_1": []})
    repo.write("docs/a.md", "to be rewritten\n")
    repo.write("doomed.txt", "x\n")
    before = push(settings, repo)
    deliver(settings, "app_1", before, changes(settings, "app_1", before))
    git(repo.work, "reset", "-q", "--hard", "HEAD~1")
    repo.write("other.txt", "o\n")
    after = repo.commit("rewritten", force=True)
    assert sync(settings, repo) == after
    expected = [("delete", "doomed.txt"), ("create", "other.txt"), ("update", "docs/a.md")]
    assert kinds(changes(settings, "app_1", after)) == expected  # old commit still cached
    # Another worker's cache never saw the old commit (now gone from the remote): full comparison.
    elsewhere = settings.model_copy(update={"data_dir": settings.data_dir / "worker-2"})
    assert kinds(changes(elsewhere, "app_1", after)) == expected
    shutil.rmtree(cache_path(settings, REPO))
    assert kinds(changes(settings, "app_1", after)) == expected


def test_empty_repository_deletes_everything(settings: Settings, repo: WorkRepo) -> None:
    deliver_the_first_commit(settings, repo)
    todo = changes(settings, "app_1", None)
    assert [c.kind for c in todo] == ["delete"] * 4
    assert [c.path for c in todo] == sorted(c.path for c in todo)
    assert all(c.previous_sha256 for c in todo)


def test_globs_per_app_and_skipped_entries(settings: Settings, repo: WorkRepo) -> None:
    os.symlink("README.md", repo.work / "docs" / "link.md")
    repo.write(os.fsdecode(b"docs/bad-\xff.md"), "x")
    register(settings, repo, {"app_docs": ["docs/**"], "app_md": ["*.md"], "app_all": []})
    commit = push(settings, repo)
    assert [c.path for c in changes(settings, "app_docs", commit)] == ["docs/a.md", "docs/b.md"]
    assert [c.path for c in changes(settings, "app_md", commit)] == [
        "README.md",
        "docs/a.md",
        "docs/b.md",
    ]
    assert len(changes(settings, "app_all", commit)) == 4
    with pytest.raises(LookupError):
        changes(settings, "app_nobody", commit)


def test_random_histories_match_the_full_comparison(settings: Settings, repo: WorkRepo) -> None:
    import random

    rng = random.Random(7)
    register(settings, repo, {"app_1": ["docs/**", "*.py"], "app_2": []})
    names = [f"docs/f{i}.md" for i in range(12)] + [f"src/m{i}.py" for i in range(6)]
    commit = sync(settings, repo)
    for step in range(8):
        for _ in range(5):
            name = rng.choice(names)
            if (repo.work / name).exists() and rng.random() < 0.3:
                repo.remove(name)
            else:
                repo.write(name, f"{name} at {step} {rng.random()}\n")
        if step == 4:
            repo.write(".treecastignore", "docs/f1*.md\n")
        commit = push(settings, repo)
        for app_id in ("app_1", "app_2"):
            todo = changes(settings, app_id, commit)
            assert todo == reference(settings, app_id, commit), (step, app_id)
            deliver(settings, app_id, commit, todo)
            assert reference(settings, app_id, commit) == []
