"""git runs with least privilege: no operator config, only Treecast's transports, no hooks."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.gitrepos import WorkRepo
from treecast.config import Settings
from treecast.gitcache.cache import cache_lock
from treecast.gitcache.command import run_git
from treecast.gitcache.errors import GitError
from treecast.gitcache.remote import sync_ref


@pytest.fixture
def repo(tmp_path: Path) -> WorkRepo:
    work = WorkRepo(tmp_path / "repo")
    work.commit_files({"a.txt": "a\n"})
    return work


def test_an_operators_global_config_is_not_read(
    settings: Settings, repo: WorkRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A ~/.gitconfig that rewrites the remote to somewhere else (or adds hooks, helpers):
    # Treecast's git never reads it.
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text(f'[url "file:///nonexistent/"]\n\tinsteadOf = {repo.url}\n')
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    with cache_lock(settings, "repo_p") as path:
        outcome = sync_ref(settings, path, repo.url, "")
    assert outcome.commit is not None


@pytest.mark.parametrize(
    "url",
    ["ext::sh -c touch% /tmp/treecast-pwned", "fd::7", "fd::7,8"],
    ids=["ext", "fd", "fd-pair"],
)
def test_transports_treecast_does_not_use_are_refused_at_once(settings: Settings, url: str) -> None:
    started = time.monotonic()
    with pytest.raises(GitError) as refused:
        run_git(["ls-remote", url], settings=settings, timeout=20)
    assert time.monotonic() - started < 5  # refused, not hanging until the git timeout
    assert "not allowed" in refused.value.message
    assert not Path("/tmp/treecast-pwned").exists()
