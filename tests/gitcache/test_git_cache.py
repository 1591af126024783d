"""The git cache against real remotes: file://, smart HTTP with Basic auth, and dead servers."""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from pathlib import Path

import pytest

from models.git import GitErrorType
from models.tables import Repository
from tests.conftest import free_port
from tests.support.concurrency import at_once
from tests.support.githttp import git_http_server, silent_server
from tests.support.gitrepos import WorkRepo, git
from tests.support.receiver_fixture import add_watch
from treecast.config import Settings
from treecast.crypto import generate_webhook_secret
from treecast.db import session_scope
from treecast.gitcache import objects
from treecast.gitcache.cache import (
    _CACHE_CONFIG,
    KEEP_PREFIX,
    cache_lock,
    cache_path,
    has_object,
    rebuild_cache,
)
from treecast.gitcache.command import Credentials, classify_git_error, run_git
from treecast.gitcache.errors import GitError
from treecast.gitcache.objects import (
    COMMANDS,
    IDLE,
    BlobNotFound,
    BlobReader,
    IdleProcesses,
    ObjectChecker,
    blob_sizes,
)
from treecast.gitcache.remote import MEMO_FILE, MEMO_SECONDS, sync_ref
from treecast.gitcache.repository import RepositoryCache
from treecast.remote_access import ensure_commit

TOKEN = "ghp_" + "S3cr3tT0ken" * 3


def sync(
    settings: Settings, url: str, ref: str = "", credentials: Credentials | None = None
) -> tuple[str | None, str, bool]:
    with cache_lock(settings, "repo_t") as path:
        out = sync_ref(settings, path, url, ref, credentials)
    return out.commit, out.ref, out.fetched


def git_failure(settings: Settings, url: str, **kwargs: object) -> GitError:
    with pytest.raises(GitError) as info:
        sync(settings, url, **kwargs)  # type: ignore[arg-type]
    return info.value


@pytest.fixture
def repo(tmp_path: Path) -> WorkRepo:
    work = WorkRepo(tmp_path / "origin")
    work.write("README.md", "# hello\n")
    work.write("docs/a.md", "a\n")
    work.commit("first")
    return work


def test_first_sync_clones_then_polls_without_fetching(settings: Settings, repo: WorkRepo) -> None:
    head = git(repo.work, "rev-parse", "HEAD")
    commit, ref, fetched = sync(settings, repo.url)
    assert (commit, ref, fetched) == (head, "main", True)
    assert has_object(settings, cache_path(settings, "repo_t"), head)
    # Nothing changed: the cache already has the commit, so nothing is fetched.
    assert sync(settings, repo.url) == (head, "main", False)


def test_a_new_cache_has_its_config_as_git_reads_it(settings: Settings, repo: WorkRepo) -> None:
    """The cache's settings are written into its config file directly (no `git config`
    per key); git must read every one back."""
    sync(settings, repo.url)
    path = cache_path(settings, "repo_t")
    for key, value in _CACHE_CONFIG:
        assert git(path, "config", "--get", key) == value
    assert git(path, "config", "--get", "core.bare") == "true"


def test_incremental_sync_fetches_the_new_commit(settings: Settings, repo: WorkRepo) -> None:
    first, _, _ = sync(settings, repo.url)
    repo.write("docs/a.md", "changed\n")
    second = repo.commit("second")
    commit, _, fetched = sync(settings, repo.url)
    assert commit == second != first and fetched
    path = cache_path(settings, "repo_t")
    assert first is not None and has_object(settings, path, first)  # kept for diffs
    # The cache is shallow: history is never needed, only trees.
    assert (path / "shallow").exists()


def test_default_branch_comes_from_the_remote(settings: Settings, tmp_path: Path) -> None:
    trunk = WorkRepo(tmp_path / "t", branch="trunk")
    trunk.write("x", "1")
    head = trunk.commit()
    assert sync(settings, trunk.url)[:2] == (head, "trunk")


def test_branch_tag_and_commit_refs(settings: Settings, repo: WorkRepo) -> None:
    v1 = git(repo.work, "rev-parse", "HEAD")
    git(repo.work, "tag", "-a", "v1", "-m", "release one")
    git(repo.work, "tag", "light", v1)
    git(repo.work, "push", "-q", "origin", "v1", "light")
    git(repo.work, "checkout", "-q", "-b", "feature")
    repo.write("feature.txt", "f")
    git(repo.work, "add", "-A")
    git(repo.work, "commit", "-q", "-m", "feature")
    git(repo.work, "push", "-q", "origin", "feature")
    feature = git(repo.work, "rev-parse", "HEAD")

    assert sync(settings, repo.url, "feature")[:2] == (feature, "feature")
    assert sync(settings, repo.url, "v1")[:2] == (v1, "v1")  # annotated: peeled to the commit
    assert sync(settings, repo.url, "light")[:2] == (v1, "light")
    assert sync(settings, repo.url, "refs/heads/feature")[:2] == (feature, "feature")
    # A commit id already in the cache needs no network at all.
    assert sync(settings, repo.url, v1) == (v1, v1, False)

    other = settings.model_copy(update={"data_dir": settings.data_dir / "other"})
    assert sync(other, repo.url, feature) == (feature, feature, True)

    err = git_failure(settings, repo.url, ref="no-such-branch")
    assert err.type == GitErrorType.REF_NOT_FOUND and err.non_retryable


def test_empty_remote_is_a_successful_sync(settings: Settings, tmp_path: Path) -> None:
    empty = WorkRepo(tmp_path / "e")
    assert sync(settings, empty.url)[0] is None
    assert sync(settings, empty.url, "main")[0] is None
    empty.write("first", "1")
    head = empty.commit()
    assert sync(settings, empty.url, "main")[0] == head


def test_force_push_is_followed(settings: Settings, repo: WorkRepo) -> None:
    repo.write("b", "b")
    before = repo.commit("to be rewritten")
    assert sync(settings, repo.url)[0] == before
    git(repo.work, "reset", "-q", "--hard", "HEAD~1")
    repo.write("c", "c")
    after = repo.commit("rewritten", force=True)
    assert sync(settings, repo.url)[0] == after


def test_deleted_remote_is_not_retryable(settings: Settings, repo: WorkRepo) -> None:
    sync(settings, repo.url)
    import shutil

    shutil.rmtree(repo.remote)
    err = git_failure(settings, repo.url)
    assert err.type == GitErrorType.REPOSITORY_NOT_FOUND and err.non_retryable


def _assert_token_absent(settings: Settings, text: str) -> None:
    secrets = Credentials(TOKEN).secrets()
    for secret in secrets:
        assert secret not in text
    for root, _dirs, files in os.walk(settings.data_dir):
        for name in files:
            data = (Path(root) / name).read_bytes()
            for secret in secrets:
                assert secret.encode() not in data, f"token found in {name}"


def test_token_over_http(
    settings: Settings, repo: WorkRepo, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    head = git(repo.work, "rev-parse", "HEAD")
    with git_http_server(repo.remote.parent, TOKEN) as server:
        url = server.url("remote.git")
        assert sync(settings, url, credentials=Credentials(TOKEN))[0] == head
        assert server.auth_headers  # git really sent the token
        assert sync(settings, url, credentials=Credentials(TOKEN))[2] is False

        wrong = git_failure(settings, url, credentials=Credentials("ghp_wrongtoken123"))
        assert wrong.type == GitErrorType.AUTHENTICATION_FAILED and wrong.non_retryable
        assert "wrongtoken" not in str(wrong)

        missing = git_failure(settings, url)
        assert missing.type == GitErrorType.AUTHENTICATION_FAILED

        gone = git_failure(settings, server.url("nothing.git"), credentials=Credentials(TOKEN))
        assert gone.type == GitErrorType.REPOSITORY_NOT_FOUND
    config = (cache_path(settings, "repo_t") / "config").read_text()
    assert "extraheader" not in config.lower() and "http://" not in config
    _assert_token_absent(settings, str(wrong) + str(missing) + str(gone) + caplog.text)


def test_bad_token_error_never_carries_the_token(
    settings: Settings, repo: WorkRepo, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with git_http_server(repo.remote.parent, "the-right-one") as server:
        err = git_failure(settings, server.url("remote.git"), credentials=Credentials(TOKEN))
    assert err.type == GitErrorType.AUTHENTICATION_FAILED and err.non_retryable
    _assert_token_absent(settings, str(err) + repr(err) + caplog.text)


def test_a_redirect_never_takes_the_token_to_another_host(
    settings: Settings, repo: WorkRepo
) -> None:
    head = git(repo.work, "rev-parse", "HEAD")
    with git_http_server(repo.remote.parent, None) as elsewhere:
        moved_to = f"http://localhost:{elsewhere.port}"
        with git_http_server(repo.remote.parent, None, redirect_to=moved_to) as front:
            url = front.url("remote.git")
            err = git_failure(settings, url, credentials=Credentials(TOKEN))
            assert err.type == GitErrorType.REPOSITORY_NOT_FOUND and err.non_retryable
            assert "301" in err.message and TOKEN not in str(err)
            assert elsewhere.auth_headers == []  # the token never left for the other host
            # Without a token there is nothing to leak: a moved public repository is followed.
            assert sync(settings, url)[0] == head


def test_a_connection_cut_mid_fetch_is_retryable_and_keeps_the_cache(
    settings: Settings, repo: WorkRepo
) -> None:
    with git_http_server(repo.remote.parent, None) as server:
        first, _, _ = sync(settings, server.url("remote.git"))
    # Big enough that git's index-pack is reading the pack when it is cut, and says so
    # ("invalid index-pack output"), which reads like a damaged cache.
    repo.write("docs/big.txt", random.Random(3).randbytes(100_000).hex())
    repo.commit("second")
    # Where git notices the cut is a race between fetch-pack and index-pack (on a busy
    # machine fetch-pack may stop first, "bad pack header"); the case that reads like a
    # damaged cache is index-pack's, so cut until it shows up (each cut must keep the cache).
    path = cache_path(settings, "repo_t")
    seen: list[str] = []
    for _ in range(6):
        with git_http_server(repo.remote.parent, None, truncate_packs=True) as cutting:
            err = git_failure(settings, cutting.url("remote.git"))
        assert err.type == GitErrorType.NETWORK and not err.non_retryable
        # Not mistaken for a damaged cache: nothing was thrown away (pins, remembered ref).
        assert first is not None and has_object(settings, path, first)
        assert (path / MEMO_FILE).exists()
        seen.append(err.message)
        if "index-pack" in err.message:
            break
    assert any("index-pack" in message for message in seen), seen


def test_silent_server_times_out_and_is_retryable(settings: Settings) -> None:
    quick = settings.model_copy(update={"git_timeout_seconds": 1.0})
    with silent_server() as port:
        started = time.monotonic()
        err = git_failure(quick, f"http://127.0.0.1:{port}/r.git", credentials=Credentials(TOKEN))
    assert time.monotonic() - started < 10
    assert err.type == GitErrorType.TIMEOUT and not err.non_retryable
    _assert_token_absent(settings, str(err))


def test_refused_connection_is_a_retryable_network_error(settings: Settings) -> None:
    err = git_failure(settings, f"http://127.0.0.1:{free_port()}/r.git")
    assert err.type == GitErrorType.NETWORK and not err.non_retryable


def test_concurrent_syncs_are_serialised(settings: Settings, repo: WorkRepo) -> None:
    inside = 0
    most_inside = 0
    guard = threading.Lock()
    original = sync_ref

    def one() -> str | None:
        nonlocal inside, most_inside
        with cache_lock(settings, "repo_t") as path:
            with guard:
                inside += 1
                most_inside = max(most_inside, inside)
            out = original(settings, path, repo.url, "")
            time.sleep(0.05)
            with guard:
                inside -= 1
        return out.commit

    results = at_once(one, 4)
    head = git(repo.work, "rev-parse", "HEAD")
    assert results == [head] * 4
    assert most_inside == 1


def test_lock_blocks_a_second_holder(settings: Settings) -> None:
    acquired = threading.Event()
    with cache_lock(settings, "repo_t"):

        def other() -> None:
            with cache_lock(settings, "repo_t"):
                acquired.set()

        thread = threading.Thread(target=other)
        thread.start()
        assert not acquired.wait(0.3)
    assert acquired.wait(5)
    thread.join()
    with (
        pytest.raises(GitError) as info,
        cache_lock(settings, "repo_t"),
        cache_lock(settings, "repo_t", timeout=0.2),
    ):
        pass
    assert info.value.type == GitErrorType.TIMEOUT


def test_a_fetch_killed_half_way_leaves_a_usable_cache(settings: Settings, repo: WorkRepo) -> None:
    sync(settings, repo.url)
    path = cache_path(settings, "repo_t")
    # What a killed `git fetch` leaves: lock files and an unfinished pack.
    (path / "shallow.lock").write_text("x")
    (path / "refs" / "treecast" / "head.lock").write_text("x")
    (path / "objects" / "pack" / "tmp_pack_abc").write_bytes(b"PACK\0\0garbage")
    repo.write("new.txt", "n")
    head = repo.commit()
    assert sync(settings, repo.url)[0] == head
    assert not (path / "shallow.lock").exists()

    # A cache damaged beyond that is rebuilt.
    (path / "HEAD").write_text("garbage\n")
    repo.write("newer.txt", "n")
    head = repo.commit()
    assert sync(settings, repo.url)[0] == head
    (path / "objects").rename(path / "gone")
    assert sync(settings, repo.url)[0] == head


def test_ensure_commit_fetches_on_another_worker(settings: Settings, repo: WorkRepo) -> None:
    with session_scope(settings.database_url) as session:
        session.add(Repository(id="repo_t", url=repo.url, ref=""))
    add_watch(settings, "https://example.com/h", [generate_webhook_secret()], "repo_t", token="x")
    head = git(repo.work, "rev-parse", "HEAD")
    path = ensure_commit(settings, "repo_t", head).path  # nothing synced on this worker yet
    assert has_object(settings, path, head)
    kept = run_git(["for-each-ref", "--format=%(refname)"], settings=settings, cwd=path)
    assert f"refs/treecast/keep/{head}" in kept.stdout.decode()
    assert ensure_commit(settings, "repo_t", head).path == path
    with pytest.raises(GitError) as info:
        ensure_commit(settings, "repo_t", "0" * 40)
    assert info.value.type == GitErrorType.REF_NOT_FOUND


def test_a_fetch_pins_its_commit(settings: Settings, repo: WorkRepo) -> None:
    commit, _, _ = sync(settings, repo.url)
    path = cache_path(settings, "repo_t")
    out = run_git(["rev-parse", f"{KEEP_PREFIX}{commit}"], settings=settings, cwd=path)
    assert out.stdout.decode().strip() == commit
    # gc keeps pinned commits even when nothing else refers to them.
    run_git(["gc", "-q", "--prune=now"], settings=settings, cwd=path)
    assert has_object(settings, path, str(commit))


@pytest.mark.parametrize(
    ("stderr", "expected"),
    [
        (
            "remote: Repository not found.\nfatal: repository 'https://x/y/' not found",
            "RepositoryNotFound",
        ),
        ("fatal: Authentication failed for 'https://github.com/a/b/'", "AuthenticationFailed"),
        (
            "fatal: could not read Username for 'https://x': terminal prompts disabled",
            "AuthenticationFailed",
        ),
        (
            "fatal: unable to access 'https://x/': The requested URL returned error: 403",
            "AuthenticationFailed",
        ),
        ("fatal: couldn't find remote ref refs/heads/nope", "RefNotFound"),
        ("fatal: unable to access 'https://x/': Could not resolve host: x", "GitNetworkError"),
        ("fatal: the remote end hung up unexpectedly", "GitNetworkError"),
        ("fatal: something nobody expected", "GitError"),
    ],
)
def test_error_classification(stderr: str, expected: str) -> None:
    assert classify_git_error(stderr) == expected


# -- BlobReader ----------------------------------------------------------------------------


@pytest.fixture(params=["commands", "two processes"])
def cat_file_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of reading: one `--batch-command` (git 2.36) and, for an older git, a
    `--batch` and a `--batch-check`."""
    if request.param == "two processes":
        monkeypatch.setattr(objects, "commands_supported", lambda: False)
    else:
        assert objects.commands_supported()  # this machine's git (docs/performance.md)
    return str(request.param)


def test_blob_reader_streams_and_stays_in_sync(
    settings: Settings, repo: WorkRepo, cat_file_mode: str
) -> None:
    big = os.urandom(3 * 1024 * 1024 + 17)
    repo.write("big.bin", big)
    repo.write("small.txt", "small\n")
    repo.write("empty", b"")
    repo.commit()
    commit, _, _ = sync(settings, repo.url)
    path = cache_path(settings, "repo_t")
    listing = run_git(["ls-tree", "-r", str(commit)], settings=settings, cwd=path).stdout.decode()
    blobs = {line.split("\t")[1]: line.split()[2] for line in listing.splitlines()}
    tree_out = run_git(["rev-parse", f"{commit}^{{tree}}"], settings=settings, cwd=path)
    tree = tree_out.stdout.decode().strip()
    with BlobReader(path) as reader:
        chunks = list(reader.iter_bytes(blobs["big.bin"], chunk_size=1 << 20))
        assert [len(c) for c in chunks] == [1 << 20] * 3 + [17]
        assert b"".join(chunks) == big
        # Stop after one chunk: the reader must drain the rest before the next request.
        partial = reader.iter_bytes(blobs["big.bin"], chunk_size=1000)
        assert next(partial) == big[:1000]
        assert reader.read(blobs["small.txt"]) == b"small\n"
        with pytest.raises(RuntimeError):
            next(partial)
        assert reader.read(blobs["empty"]) == b""
        assert list(reader.iter_bytes(blobs["empty"])) == []
        assert reader.size(blobs["big.bin"]) == len(big)
        with pytest.raises(BlobNotFound):
            reader.read("1" * 40)
        with pytest.raises(BlobNotFound):
            reader.read(tree)  # a tree, not a blob
        with pytest.raises(ValueError):
            reader.read("HEAD\nsmall")
        assert reader.read(blobs["small.txt"]) == b"small\n"
        never_started = reader.iter_bytes(blobs["big.bin"])
        del never_started
        assert reader.read(blobs["docs/a.md"]) == b"a\n"
    assert blob_sizes(path, [blobs["big.bin"], "2" * 40]) == {blobs["big.bin"]: len(big)}


def cat_files(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The modes of the `git cat-file` processes started from here on."""
    import subprocess

    started: list[str] = []
    real = subprocess.Popen

    def recording(args: list[str], *rest: object, **kwargs: object) -> object:
        if args[-2:-1] == ["cat-file"]:
            started.append(args[-1])
        return real(args, *rest, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(subprocess, "Popen", recording)
    return started


def test_a_finished_reader_leaves_its_process_to_the_next(
    settings: Settings, repo: WorkRepo, cat_file_mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checker's or reader's `cat-file` is left open for the next one of the same cache (a
    first sync's delivery asks the process its snapshot started), never one stopped half
    way through a blob, and never across a rebuilt cache."""
    big = os.urandom(256 * 1024)
    repo.write("big.bin", big)
    repo.commit()
    commit, _, _ = sync(settings, repo.url)
    assert commit is not None
    path = cache_path(settings, "repo_t")
    started = cat_files(monkeypatch)
    with ObjectChecker(path) as checker:
        blob = checker.check([f"{commit}:big.bin"])[0]
    assert blob is not None
    with ObjectChecker(path) as checker:
        assert checker.check([f"{commit}^{{commit}}", f"{commit}:nope"])[1] is None
        with BlobReader(path) as reader:  # while the first is taken: a process of its own
            assert reader.read(blob.oid) == big
    with BlobReader(path) as reader:
        assert reader.size(blob.oid) == len(big) and reader.read(blob.oid) == big
        assert next(reader.iter_bytes(blob.oid, 1000)) == big[:1000]  # left half way
    with BlobReader(path) as reader:
        assert reader.read(blob.oid) == big
    reused = len(started)
    # The first checker's process served the second and the reader after it; a reader
    # inside the second needed its own, and the one stopped half way a new one after it.
    assert reused == 3, started
    rebuild_cache(settings, path)
    sync(settings, repo.url)
    with ObjectChecker(path) as checker:
        assert checker.check([f"{commit}^{{commit}}"])[0] is not None
    assert len(started) == reused + 1
    IDLE.forget(path)


def test_idle_processes_are_bounded_and_expire(tmp_path: Path) -> None:
    import subprocess

    def cat() -> subprocess.Popen[bytes]:
        return subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    idle = IdleProcesses(size=2, idle_seconds=60)
    first, second, third = cat(), cat(), cat()
    for name, proc in (("a", first), ("b", second), ("c", third)):
        (tmp_path / name).mkdir()
        idle.give(tmp_path / name, COMMANDS, proc)
    assert first.wait(5) is not None  # the least recently left is stopped
    assert idle.take(tmp_path / "a", COMMANDS) is None
    assert idle.take(tmp_path / "b", COMMANDS) is second
    idle.give(tmp_path / "b", COMMANDS, second)
    (tmp_path / "c").rename(tmp_path / "old")
    (tmp_path / "c").mkdir()  # another cache at the same path
    assert idle.take(tmp_path / "c", COMMANDS) is None and third.wait(5) is not None
    idle.idle_seconds = 0
    assert idle.take(tmp_path / "a", COMMANDS) is None and second.wait(5) is not None


def git_commands(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The git subcommands `sync_ref` runs from here on (recorded, then run for real)."""
    import treecast.gitcache.cache as git_cache
    import treecast.gitcache.command as git_command
    import treecast.gitcache.remote as git_fetch

    seen: list[str] = []
    real = git_command.run_git

    def recording(args: list[str], **kwargs: object) -> object:
        seen.append(args[0])
        return real(args, **kwargs)  # type: ignore[arg-type]

    for module in (git_cache, git_fetch):  # each calls the name it imported
        monkeypatch.setattr(module, "run_git", recording)
    return seen


def expire_memo(settings: Settings) -> None:
    """Age the remembered resolution past MEMO_SECONDS."""
    memo_file = cache_path(settings, "repo_t") / MEMO_FILE
    memo = json.loads(memo_file.read_text())
    memo["resolved_at"] -= MEMO_SECONDS + 1
    memo_file.write_text(json.dumps(memo))


def test_later_syncs_fetch_the_remembered_ref_by_name(
    settings: Settings, repo: WorkRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, _, _ = sync(settings, repo.url)
    commands = git_commands(monkeypatch)
    assert sync(settings, repo.url) == (first, "main", False)
    assert commands == ["fetch"]  # no ls-remote: one round trip, as bare git polls
    repo.write("docs/a.md", "changed\n")
    second = repo.commit("second")
    commands.clear()
    assert sync(settings, repo.url) == (second, "main", True)
    assert commands == ["fetch"]
    # Both commits are pinned (git itself reads the pins) for later diffs.
    path = cache_path(settings, "repo_t")
    pins = git(path, "for-each-ref", "--format=%(refname) %(objectname)", KEEP_PREFIX)
    assert f"{KEEP_PREFIX}{second} {second}" in pins.splitlines()
    assert f"{KEEP_PREFIX}{first} {first}" in pins.splitlines()
    # After MEMO_SECONDS the remote is asked again what the ref is.
    expire_memo(settings)
    commands.clear()
    assert sync(settings, repo.url) == (second, "main", False)
    assert commands[0] == "ls-remote"


def test_a_new_default_branch_is_followed_at_once_and_named_later(
    settings: Settings, repo: WorkRepo
) -> None:
    main_head, _, _ = sync(settings, repo.url)
    git(repo.work, "checkout", "-q", "-b", "trunk")
    repo.branch = "trunk"
    repo.write("trunk.txt", "t")
    trunk_head = repo.commit("trunk")
    git(repo.remote, "symbolic-ref", "HEAD", "refs/heads/trunk")
    # The commit follows the remote's HEAD at the next sync...
    assert sync(settings, repo.url)[:2] == (trunk_head, "main")
    # ...and the name once the remembered resolution expires.
    expire_memo(settings)
    assert sync(settings, repo.url)[:2] == (trunk_head, "trunk")
    assert main_head != trunk_head


def test_a_branch_replaced_by_a_tag_is_resolved_again(settings: Settings, repo: WorkRepo) -> None:
    git(repo.work, "checkout", "-q", "-b", "x")
    repo.branch = "x"
    repo.write("x.txt", "x")
    on_branch = repo.commit("on x")
    assert sync(settings, repo.url, "x")[:2] == (on_branch, "x")
    git(repo.remote, "update-ref", "-d", "refs/heads/x")
    git(repo.remote, "tag", "x", "main")
    main_head = git(repo.remote, "rev-parse", "main")
    assert sync(settings, repo.url, "x")[:2] == (main_head, "x")
    git(repo.remote, "tag", "-d", "x")
    err = git_failure(settings, repo.url, ref="x")
    assert err.type == GitErrorType.REF_NOT_FOUND and err.non_retryable


def test_a_first_sync_takes_the_commit_the_remote_named(
    settings: Settings, repo: WorkRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Into an empty cache the ref is fetched by name while the remote is asked what it is:
    when the two differ (the ref moved in between), the answer's commit is the one synced."""
    import treecast.gitcache.remote as git_remote

    answered = git(repo.work, "rev-parse", "HEAD")
    repo.write("docs/a.md", "moved\n")
    moved = repo.commit("pushed between the answer and the fetch")
    real = git_remote.resolve_remote_ref

    def earlier(*args: object) -> git_remote.RemoteRef:
        found = real(*args)  # type: ignore[arg-type]
        assert found.oid == moved
        return git_remote.RemoteRef(found.name, found.full_name, answered)

    monkeypatch.setattr(git_remote, "resolve_remote_ref", earlier)
    assert sync(settings, repo.url) == (answered, "main", True)
    assert has_object(settings, cache_path(settings, "repo_t"), answered)
    monkeypatch.setattr(git_remote, "resolve_remote_ref", real)
    assert sync(settings, repo.url)[:2] == (moved, "main")


def test_a_default_branch_that_does_not_exist_is_refused_not_emptied(
    settings: Settings, repo: WorkRepo
) -> None:
    head, _, _ = sync(settings, repo.url)
    # The remote's HEAD now names a branch nobody pushed, while `main` still exists:
    # syncing it as an empty repository would delete every file at every app.
    git(repo.remote, "symbolic-ref", "HEAD", "refs/heads/master")
    err = git_failure(settings, repo.url)
    assert err.type == GitErrorType.REF_NOT_FOUND and "no existing branch" in err.message
    fresh = settings.model_copy(update={"data_dir": settings.data_dir / "fresh"})
    assert git_failure(fresh, repo.url).type == GitErrorType.REF_NOT_FOUND
    git(repo.remote, "symbolic-ref", "HEAD", "refs/heads/main")
    assert sync(settings, repo.url)[0] == head


def test_a_delivery_read_asks_one_checker(
    settings: Settings, repo: WorkRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delivery's lookups (is the commit here, the ignore file, the listing's ignore
    file, the base) share one `cat-file --batch-check`: each git process started costs
    milliseconds of a first sync (docs/performance.md, First wave)."""
    import subprocess

    commit, _, _ = sync(settings, repo.url)
    assert commit is not None
    objects.commands_supported()  # asked once a process (`git version`)
    started: list[list[str]] = []
    real = subprocess.Popen

    def recording(args: list[str], *rest: object, **kwargs: object) -> object:
        started.append(list(args))
        return real(args, *rest, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(subprocess, "Popen", recording)
    cache = RepositoryCache(settings, "repo_t")
    with cache.reading():
        assert cache.check([f"{commit}^{{commit}}"])[0] is not None
        assert cache.has_commit(commit)
        assert cache.ignore_blob(commit) is None
        assert set(cache.list_tree(commit).files) == {"README.md", "docs/a.md"}
    checkers = [a for a in started if a[-2] == "cat-file"]
    assert len(checkers) == 1 and checkers[0][-1] in (COMMANDS, "--batch-check"), started
    assert [a[1] for a in started if a[-2] != "cat-file"] == ["ls-tree"]
