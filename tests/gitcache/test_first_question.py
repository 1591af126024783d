"""A first sync asks the remote what its ref is by one smart-HTTP request (`remote.ask_remote`)
instead of starting `git ls-remote`: the same answer as git's, and git's own errors
whenever the request does not settle it."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from models.git import GitErrorType
from tests.support.githttp import git_http_server
from tests.support.gitrepos import WorkRepo, git
from treecast.config import Settings
from treecast.gitcache.command import Credentials
from treecast.gitcache.errors import GitError
from treecast.gitcache.remote import ask_remote, resolve_remote_ref

TOKEN = "s3cret"


@pytest.fixture
def served(tmp_path: Path) -> Any:
    repo = WorkRepo(tmp_path / "repo")
    repo.write("a.txt", "a\n")
    repo.commit("first")
    git(repo.work, "tag", "-a", "-m", "annotated", "v1")
    git(repo.work, "branch", "twin")
    git(repo.work, "tag", "twin")  # a branch and a tag of one name: the branch wins
    git(repo.work, "push", "-q", "origin", "refs/heads/twin", "refs/tags/twin", "refs/tags/v1")
    with git_http_server(tmp_path, TOKEN) as server:
        yield server, server.url("repo/remote.git")


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    seen: list[list[str]] = []
    real = subprocess.Popen

    def recording(args: Any, *rest: Any, **kwargs: Any) -> Any:
        if isinstance(args, list) and args[:1] == ["git"]:
            seen.append([str(a) for a in args[1:]])
        return real(args, *rest, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", recording)
    return seen


@pytest.mark.parametrize("ref", ["", "main", "refs/heads/main", "v1", "refs/tags/v1", "twin"])
def test_the_answer_is_gits_without_git(
    settings: Settings, served: Any, started: list[list[str]], ref: str
) -> None:
    _, url = served
    token = Credentials(TOKEN)
    by_git = resolve_remote_ref(settings, url, ref, token)
    started.clear()
    assert ask_remote(settings, url, ref, token) == by_git
    assert started == []
    assert by_git.name == (ref.rpartition("/")[2] or "main")


@pytest.mark.parametrize(
    ("ref", "token", "error"),
    [
        ("nope", TOKEN, GitErrorType.REF_NOT_FOUND),  # the request lists no such ref
        ("main", "wrong", GitErrorType.AUTHENTICATION_FAILED),  # refused: 401
    ],
)
def test_what_the_request_does_not_settle_git_answers(
    settings: Settings,
    served: Any,
    started: list[list[str]],
    ref: str,
    token: str,
    error: GitErrorType,
) -> None:
    _, url = served
    with pytest.raises(GitError) as by_git:
        resolve_remote_ref(settings, url, ref, Credentials(token))
    started.clear()
    with pytest.raises(GitError) as asked:
        ask_remote(settings, url, ref, Credentials(token))
    assert asked.value.type == by_git.value.type == error
    assert asked.value.message == by_git.value.message
    assert [a[0] for a in started if a[0] == "ls-remote"], started  # git asked


def test_a_file_url_or_a_git_config_is_gits_to_ask(
    settings: Settings, tmp_path: Path, served: Any, started: list[list[str]]
) -> None:
    _, url = served
    remote = WorkRepo(tmp_path / "local")
    remote.write("b.txt", "b\n")
    remote.commit("b")
    started.clear()
    assert ask_remote(settings, remote.url, "").name == "main"
    assert [a for a in started if "ls-remote" in a], started
    configured = settings.model_copy(update={"git_config": "http.lowSpeedTime=60"})
    started.clear()
    assert ask_remote(configured, url, "", Credentials(TOKEN)).name == "main"
    assert [a for a in started if "ls-remote" in a], started
