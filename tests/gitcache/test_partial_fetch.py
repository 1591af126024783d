"""Fetching by what is watched: when every watch has `paths`, the cache is a partial clone
and only the blobs the watches receive cross the wire (smart HTTP with
`uploadpack.allowFilter` on 127.0.0.1, the snapshot and delivery activities)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import ActivityEnvironment

from activities.delivery import DeliveryActivities
from activities.git import GitActivities
from examples.receiver import Receiver
from models.delivery import AppDelivery, DeliverInput
from models.git import SnapshotInput, SnapshotResult, SnapshotStats
from models.tables import Watch
from tests.support.githttp import GitHttpServer, git_http_server
from tests.support.gitrepos import WorkRepo, git
from tests.support.receiver_fixture import add_watch, register
from treecast.config import Settings
from treecast.db import session_scope
from treecast.gitcache.cache import cache_path
from treecast.gitcache.partial import missing_objects
from treecast.gitcache.tree import is_partial

SRC_FILES = 8
SRC_BYTES = 256 * 1024  # each, random: a full clone carries 2 MiB


class Monorepo:
    """A repository with a large `src/` and a small `docs/`, served over smart HTTP."""

    def __init__(self, root: Path, server: GitHttpServer, *, allow_filter: bool = True) -> None:
        self.repo = WorkRepo(root / "monorepo")
        git(self.repo.remote, "config", "uploadpack.allowFilter", str(allow_filter).lower())
        for index in range(SRC_FILES):
            self.repo.write(f"src/blob{index}.bin", os.urandom(SRC_BYTES))
        self.repo.write("docs/index.md", "# Docs\n")
        self.repo.write("docs/guide.md", "guide\n")
        self.repo.write(".treecastignore", "*.tmp\n")
        self.commit = self.repo.commit("monorepo")
        self.server = server
        self.url = server.url("monorepo/remote.git")


@pytest.fixture
def served(tmp_path: Path) -> Any:
    with git_http_server(tmp_path, None) as server:
        yield server


App = tuple[Receiver, str]


@pytest.fixture
def app(receiver: Receiver, receiver_secret: str) -> App:
    """The example receiver and the secret an app registered for it signs with."""
    return receiver, receiver_secret


def snapshot(settings: Settings, repository_id: str) -> SnapshotResult:
    result = ActivityEnvironment().run(
        GitActivities(settings).snapshot_repository, SnapshotInput(repository_id)
    )
    assert isinstance(result, SnapshotResult)
    return result


def deliver(settings: Settings, app_id: str, repository_id: str, commit: str) -> AppDelivery:
    result = ActivityEnvironment().run(
        DeliveryActivities(settings).deliver_changes, DeliverInput(app_id, repository_id, commit)
    )
    assert isinstance(result, AppDelivery) and result.status == "synced", result
    return result


def test_a_docs_watch_fetches_the_docs_blobs_only(
    settings: Settings, tmp_path: Path, served: GitHttpServer, app: App
) -> None:
    rcv, secret = app
    mono = Monorepo(tmp_path, served)
    app_id, repository_id = register(settings, rcv.url, [secret], mono.url, path_globs=["docs/**"])
    result = snapshot(settings, repository_id)
    assert result.commit == mono.commit and result.file_count == SRC_FILES + 3
    deliver(settings, app_id, repository_id, mono.commit)
    assert rcv.files() == {"docs/index.md": b"# Docs\n", "docs/guide.md": b"guide\n"}
    cache = cache_path(settings, repository_id)
    assert is_partial(cache)
    assert len(missing_objects(settings, cache, mono.commit)) == SRC_FILES
    assert served.bytes_sent < 0.05 * SRC_FILES * SRC_BYTES, served.bytes_sent

    # A docs change: only its blob comes.
    mono.repo.write("docs/guide.md", "guide, second edition\n")
    second = mono.repo.commit("docs")
    before = served.bytes_sent
    snapshot(settings, repository_id)
    deliver(settings, app_id, repository_id, second)
    assert rcv.files()["docs/guide.md"] == b"guide, second edition\n"
    assert served.bytes_sent - before < 20_000

    # A watch of everything: what it lacks is fetched for it (and later fetches are whole).
    other = add_watch(settings, rcv.url, [secret], repository_id)
    snapshot(settings, repository_id)
    deliver(settings, other, repository_id, second)
    assert len([p for p in rcv.files() if p.startswith("src/")]) == SRC_FILES
    assert missing_objects(settings, cache, second) == set()

    # A force-push to an unrelated history syncs as before.
    git(mono.repo.work, "checkout", "-q", "--orphan", "rewritten")
    git(mono.repo.work, "rm", "-rq", "--cached", "src")
    (mono.repo.work / "src").rename(tmp_path / "src-away")
    rewritten = mono.repo.commit("rewritten", force=True)
    assert snapshot(settings, repository_id).commit == rewritten
    deliver(settings, app_id, repository_id, rewritten)
    deliver(settings, other, repository_id, rewritten)
    assert not [p for p in rcv.files() if p.startswith("src/")]


def test_a_server_without_filter_support_is_fetched_whole(
    settings: Settings, tmp_path: Path, served: GitHttpServer, app: App
) -> None:
    rcv, secret = app
    mono = Monorepo(tmp_path, served, allow_filter=False)
    app_id, repository_id = register(settings, rcv.url, [secret], mono.url, path_globs=["docs/**"])
    snapshot(settings, repository_id)
    deliver(settings, app_id, repository_id, mono.commit)
    assert rcv.files() == {"docs/index.md": b"# Docs\n", "docs/guide.md": b"guide\n"}
    assert served.bytes_sent > SRC_FILES * SRC_BYTES  # everything came, as before


def test_a_new_commit_is_listed_once_for_its_support_blobs_and_its_counts(
    settings: Settings, tmp_path: Path, served: GitHttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partial cache lists each new commit for its support blobs; that listing gives the
    snapshot's counts too, and when a root `.treecastignore` changes them they are counted
    again from the same listing, remembered (git lists the commit once)."""
    import treecast.gitcache.partial as partial_module
    import treecast.gitcache.tree as tree_module
    from treecast.gitcache.command import stream_records as real

    listings: list[str] = []

    def recorded(args: list[str], **kwargs: Any) -> Any:
        if args[0] == "ls-tree":
            listings.append(args[-1])
        return real(args, **kwargs)

    for module in (tree_module, partial_module):
        monkeypatch.setattr(module, "stream_records", recorded)
    mono = Monorepo(tmp_path, served)
    mono.repo.write("build/out.tmp", "ignored\n")
    mono.repo.write("docs/.gitattributes", "*.md text\n")
    os.symlink("index.md", mono.repo.work / "docs" / "link.md")
    ignoring = mono.repo.commit("an ignored file, a link")
    _, repository_id = register(
        settings, "http://127.0.0.1:9/", ["s"], mono.url, path_globs=["docs/**"]
    )
    cache = cache_path(settings, repository_id)

    def counts(commit: str) -> dict[str, Any]:
        return tree_module.list_tree(settings, cache, commit, keep_files=False).stats.counts()

    result = snapshot(settings, repository_id)
    assert result.commit == ignoring and listings == [ignoring]
    assert SnapshotStats.of(result).counts() == counts(ignoring)
    assert result.file_count == SRC_FILES + 4 and result.skipped_symlinks == 1

    git(mono.repo.work, "rm", "-q", ".treecastignore")
    unignored = mono.repo.commit("nothing ignored")
    listings.clear()
    result = snapshot(settings, repository_id)
    assert result.commit == unignored and listings == [unignored]
    assert SnapshotStats.of(result).counts() == counts(unignored)
    assert result.file_count == SRC_FILES + 4 and result.skipped_symlinks == 1


class GitRuns:
    """The git commands this process starts (their arguments after `git`)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import subprocess

        self.started: list[list[str]] = []
        real = subprocess.Popen

        def recording(args: Any, *rest: Any, **kwargs: Any) -> Any:
            if isinstance(args, list) and args[:1] == ["git"]:
                self.started.append([str(a) for a in args[1:]])
            return real(args, *rest, **kwargs)

        monkeypatch.setattr(subprocess, "Popen", recording)

    def named(self, command: str) -> list[list[str]]:
        """The runs of one git command (`fetch`, `rev-list`), `-c` options before it skipped."""
        return [
            a
            for a in self.started
            if [w for w in a if w[0] != "-" and "=" not in w][:1] == [command]
        ]

    def blob_fetches(self) -> int:
        return len([a for a in self.named("fetch") if "--stdin" in a])


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> GitRuns:
    return GitRuns(monkeypatch)


@pytest.fixture
def attributed(tmp_path: Path, served: GitHttpServer) -> Monorepo:
    """The monorepo with a `.gitattributes` instead of its `.treecastignore` (a support
    blob that does not change which files a watch receives)."""
    mono = Monorepo(tmp_path, served)
    git(mono.repo.work, "rm", "-q", ".treecastignore")
    mono.repo.write(".gitattributes", "*.md text\n")
    mono.commit = mono.repo.commit("attributes")
    return mono


def test_a_first_sync_fetches_blobs_in_the_snapshot_only(
    settings: Settings, attributed: Monorepo, app: App, runs: GitRuns
) -> None:
    """A first sync's blobs come with the snapshot, in the fetch of its support blobs (one
    fetch of blob ids, nothing for `src/`): the delivery neither looks for missing blobs
    nor fetches, and a second watch of other paths gets its own in the same fetch."""
    rcv, secret = app
    mono = attributed
    mono.repo.write("notes/todo.md", "todo\n")
    commit = mono.repo.commit("notes")
    app_id, repository_id = register(settings, rcv.url, [secret], mono.url, path_globs=["docs/**"])
    other = add_watch(settings, rcv.url, [secret], repository_id)
    with session_scope(settings.database_url) as session:
        watch = session.get(Watch, (other, repository_id))
        assert watch is not None
        watch.path_globs = json.dumps(["notes/*.md"])
        session.add(watch)
    runs.started.clear()
    snapshot(settings, repository_id)
    assert runs.blob_fetches() == 1, runs.started
    cache = cache_path(settings, repository_id)
    assert len(missing_objects(settings, cache, commit)) == SRC_FILES
    runs.started.clear()
    deliver(settings, app_id, repository_id, commit)
    deliver(settings, other, repository_id, commit)
    assert runs.named("fetch") == [] and runs.named("rev-list") == [], runs.started
    assert rcv.files() == {
        "docs/index.md": b"# Docs\n",
        "docs/guide.md": b"guide\n",
        "notes/todo.md": b"todo\n",
    }
    assert mono.server.bytes_sent < 0.05 * SRC_FILES * SRC_BYTES, mono.server.bytes_sent

    # A later commit: its changed file comes with the snapshot too.
    mono.repo.write("docs/guide.md", "guide, second edition\n")
    second = mono.repo.commit("docs")
    snapshot(settings, repository_id)
    runs.started.clear()
    deliver(settings, app_id, repository_id, second)
    assert runs.named("fetch") == [] and runs.named("rev-list") == [], runs.started
    assert rcv.files()["docs/guide.md"] == b"guide, second edition\n"


def test_the_ignore_file_comes_first_and_what_it_ignores_never(
    settings: Settings, tmp_path: Path, served: GitHttpServer, app: App, runs: GitRuns
) -> None:
    rcv, secret = app
    mono = Monorepo(tmp_path, served)
    mono.repo.write("docs/draft.tmp", os.urandom(SRC_BYTES))
    commit = mono.repo.commit("an ignored draft")
    app_id, repository_id = register(settings, rcv.url, [secret], mono.url, path_globs=["docs/**"])
    runs.started.clear()
    snapshot(settings, repository_id)
    assert runs.blob_fetches() == 2, runs.started  # the ignore file, then the watched files
    runs.started.clear()
    deliver(settings, app_id, repository_id, commit)
    assert runs.named("fetch") == [], runs.started
    assert rcv.files() == {"docs/index.md": b"# Docs\n", "docs/guide.md": b"guide\n"}
    draft = git(mono.repo.remote, "rev-parse", f"{commit}:docs/draft.tmp").strip()
    assert draft in missing_objects(settings, cache_path(settings, repository_id), commit)


def test_what_the_snapshot_could_not_fetch_the_delivery_fetches(
    settings: Settings, attributed: Monorepo, app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watches' part of the snapshot's fetch failing fails nothing (the support blobs
    are fetched alone, as before); and a note that claims blobs the cache lacks costs
    the delivery a fetch, not a failure."""
    import treecast.gitcache.partial as partial_module
    from models.git import GitErrorType
    from treecast.gitcache.errors import GitError

    rcv, secret = app
    mono, commit = attributed, attributed.commit
    app_id, repository_id = register(settings, rcv.url, [secret], mono.url, path_globs=["docs/**"])
    real = partial_module.fetch_blobs
    asked: list[int] = []

    def failing(*args: Any) -> int:
        asked.append(len(set(args[-1])))
        if len(asked) == 1:
            raise GitError(GitErrorType.NETWORK, "the connection broke")
        return real(*args)

    monkeypatch.setattr(partial_module, "fetch_blobs", failing)
    assert snapshot(settings, repository_id).commit == commit
    assert asked == [3, 1]  # the attributes and two pages, then the attributes alone
    cache = cache_path(settings, repository_id)
    assert not (cache / partial_module.FILLED_FILE).exists()
    monkeypatch.setattr(partial_module, "fetch_blobs", real)
    runs = GitRuns(monkeypatch)
    deliver(settings, app_id, repository_id, commit)
    assert runs.blob_fetches() == 1
    assert rcv.files() == {"docs/index.md": b"# Docs\n", "docs/guide.md": b"guide\n"}

    # A watch of everything, noted as fetched while `src/` is not here.
    everything = add_watch(settings, rcv.url, [secret], repository_id)
    partial_module.note_filled(cache, commit, [[], ["docs/**"]])
    runs.started.clear()
    deliver(settings, everything, repository_id, commit)
    assert runs.blob_fetches() == 1, runs.started
    assert len([p for p in rcv.files() if p.startswith("src/")]) == SRC_FILES


def test_a_first_partial_sync_starts_one_git_process_per_step(
    settings: Settings, attributed: Monorepo, runs: GitRuns
) -> None:
    """A first sync asks the remote what its ref is by one smart-HTTP request beside its
    fetch (no `ls-remote`); into an empty partial cache every blob is missing: no walk of
    the trees looks for them (`rev-list --missing`), the listing's own ids are fetched."""
    mono = attributed
    _, repository_id = register(
        settings, "http://127.0.0.1:9/", ["s"], mono.url, path_globs=["docs/**"]
    )
    runs.started.clear()
    assert snapshot(settings, repository_id).commit == mono.commit
    commands = sorted(next(w for w in a if w[0] != "-" and "=" not in w) for a in runs.started)
    assert commands == ["fetch", "fetch", "ls-tree"], runs.started
    assert runs.blob_fetches() == 1
    cache = cache_path(settings, repository_id)
    assert len(missing_objects(settings, cache, mono.commit)) == SRC_FILES  # only src/
    # A later commit into the same cache walks the trees for what it lacks, as before.
    mono.repo.write("docs/guide.md", "guide, second edition\n")
    second = mono.repo.commit("docs")
    runs.started.clear()
    assert snapshot(settings, repository_id).commit == second
    assert len(runs.named("rev-list")) == 1 and runs.blob_fetches() == 1, runs.started
    assert len(missing_objects(settings, cache, second)) == SRC_FILES


class LateAnswer:
    """The remote's answer to a first sync held back until the support step has run for
    the commit that landed (`_Sync.ahead`), then replaced by `answer`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, answer: Any) -> None:
        import threading

        import treecast.gitcache.remote as remote_module

        self.ran_ahead = threading.Event()
        real_ahead = remote_module._Sync.ahead

        def ahead(sync: Any, commit: str) -> None:
            real_ahead(sync, commit)
            self.ran_ahead.set()

        def late(*args: Any) -> Any:
            assert self.ran_ahead.wait(30)
            return answer(remote_module.RemoteRef)

        monkeypatch.setattr(remote_module._Sync, "ahead", ahead)
        monkeypatch.setattr(remote_module, "resolve_remote_ref", late)


def test_a_first_sync_fetches_blobs_before_the_answer_and_the_answer_decides(
    settings: Settings,
    attributed: Monorepo,
    app: App,
    runs: GitRuns,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The commit that landed is listed and its blobs fetched while the remote's answer is
    awaited; an answer naming an earlier commit is the one synced, counted and noted as
    fetched, and an answer that fails fails the sync."""
    import treecast.gitcache.partial as partial_module
    from models.git import GitErrorType
    from treecast.gitcache.errors import GitError

    rcv, secret = app
    mono = attributed
    answered = mono.commit
    mono.repo.write("docs/guide.md", "moved\n")
    moved = mono.repo.commit("pushed between the answer and the fetch")
    app_id, repository_id = register(settings, rcv.url, [secret], mono.url, path_globs=["docs/**"])
    late = LateAnswer(monkeypatch, lambda ref: ref("main", "refs/heads/main", answered))
    runs.started.clear()
    result = snapshot(settings, repository_id)
    assert late.ran_ahead.is_set() and (result.commit, result.ref) == (answered, "main")
    assert result.file_count == SRC_FILES + 3  # the answered commit's counts
    assert runs.blob_fetches() == 2, runs.started  # the landed commit's, then the answer's
    cache = cache_path(settings, repository_id)
    assert partial_module.is_filled(cache, answered, ["docs/**"])
    runs.started.clear()
    deliver(settings, app_id, repository_id, answered)
    assert runs.named("fetch") == [] and runs.named("rev-list") == [], runs.started
    assert rcv.files()["docs/guide.md"] == b"guide\n"
    assert moved != answered

    def refused(ref: Any) -> Any:
        raise GitError(GitErrorType.AUTHENTICATION_FAILED, "the remote refused")

    _, fresh_id = register(
        settings, rcv.url, [secret], mono.url, ref="main", path_globs=["docs/**"]
    )
    late = LateAnswer(monkeypatch, refused)
    with pytest.raises(Exception, match="the remote refused"):
        snapshot(settings, fresh_id)
    assert late.ran_ahead.is_set()
