"""Hostile URLs where they enter: registration refuses them, git connects only to the
addresses it vetted at every fetch, and the sender never raises on a stored bad URL."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from models.git import GitErrorType
from tests.support.cli import dump_db, run
from tests.support.githttp import git_http_server
from tests.support.gitrepos import WorkRepo
from treecast.config import Settings
from treecast.gitcache.cache import cache_lock
from treecast.gitcache.command import Credentials
from treecast.gitcache.errors import GitError
from treecast.gitcache.pinning import pinned_remote
from treecast.gitcache.remote import sync_ref
from treecast.webhooks.transport import make_client, post_webhook


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["repo", "add", "http://169.254.169.254/latest/meta-data"], "169.254.169.254"),
        (["repo", "add", "https://[fec0::1]/o/r"], "fec0::1"),
        (["repo", "add", "https://[2002:7f00:1::]/o/r"], "private or loopback"),
        (["repo", "add", "file:///etc"], "TREECAST_ALLOW_FILE_URLS"),
        (["repo", "add", "ssh://-oProxyCommand=touch%20x@example.com/x"], "-"),
        (["repo", "add", "-oProxyCommand@example.com:x"], "-"),
        (["repo", "add", "https://localhost/o/r"], "localhost"),
        (["app", "add", "--name", "n", "--url", "http://1.2.3.04/"], "1.2.3.04"),
        (["app", "add", "--name", "n", "--url", "http://010.8.8.8/"], "010.8.8.8"),
    ],
)
def test_registration_refuses_hostile_urls_in_one_line_and_changes_nothing(
    cli_env: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    words: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TREECAST_ALLOW_FILE_URLS", "0")  # the default
    code, out, err = run(capsys, *argv)
    assert code == 2 and out is None
    assert len(err.strip().splitlines()) == 1 and words in err, err
    assert not [row for row in dump_db(cli_env) if row[0] in ("apps", "repositories")]


def test_a_token_over_plain_http_is_refused(
    cli_env: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOK", "ghp_" + "x" * 36)
    monkeypatch.setenv("TREECAST_ALLOW_PRIVATE_URLS", "1")
    code, _, err = run(capsys, "repo", "add", "http://127.0.0.1:9/o/r", "--token-env", "TOK")
    assert code == 2 and "TREECAST_ALLOW_INSECURE_TRANSPORT" in err
    assert "ghp_" not in err


def fake_dns(monkeypatch: pytest.MonkeyPatch, names: dict[str, str]) -> None:
    """This process resolves `names` as given (git, a child process, cannot see this)."""
    real = socket.getaddrinfo

    def lookup(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in names:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (names[host], int(port or 0)))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", lookup)


def test_git_fetches_from_the_address_that_was_vetted(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # git.treecast.test resolves (for Treecast) to the local git server; git itself could
    # not resolve the name, so the sync works only because curl is pinned to that address.
    repo = WorkRepo(tmp_path / "repo")
    repo.write("a.txt", "a\n")
    repo.commit()
    fake_dns(monkeypatch, {"git.treecast.test": "127.0.0.1"})
    strict = type(settings)(**{**vars(settings), "allow_private_urls": False})
    import treecast.netpolicy

    monkeypatch.setattr(treecast.netpolicy, "is_blocked_address", lambda address: False)
    with git_http_server(repo.remote.parent, None) as server:
        url = server.url("remote.git").replace("127.0.0.1", "git.treecast.test")
        with cache_lock(strict, "repo_pin") as path:
            outcome = sync_ref(strict, path, url, "")
    assert outcome.commit is not None


def test_a_host_that_does_not_resolve_now_runs_no_git(settings: Settings) -> None:
    strict = type(settings)(**{**vars(settings), "allow_private_urls": False})
    with pytest.raises(GitError) as failed:
        pinned_remote(strict, "https://nowhere.treecast.invalid/o/r", token=False)
    assert failed.value.type == GitErrorType.NETWORK and not failed.value.non_retryable


def test_dns_that_moves_to_a_private_address_is_refused_at_fetch(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    strict = type(settings)(**{**vars(settings), "allow_private_urls": False})
    fake_dns(monkeypatch, {"rebind.treecast.test": "169.254.169.254"})
    with cache_lock(strict, "repo_rebind") as path, pytest.raises(GitError) as refused:
        sync_ref(strict, path, "https://rebind.treecast.test/o/r", "")
    assert refused.value.type == GitErrorType.URL_REFUSED and refused.value.non_retryable
    assert "169.254.169.254" in refused.value.message


def test_pins_for_each_transport(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    strict = type(settings)(
        **{**vars(settings), "allow_private_urls": False, "allow_insecure_transport": False}
    )
    fake_dns(monkeypatch, {"git.example.com": "93.184.216.34"})
    url, pins = pinned_remote(strict, "https://git.example.com/o/r", token=False)
    assert url == "https://git.example.com/o/r"
    assert pins == [("http.curloptResolve", "git.example.com:443:93.184.216.34")]
    url, pins = pinned_remote(strict, "ssh://git@git.example.com/o/r", token=False)
    assert url == "ssh://git@93.184.216.34/o/r"
    assert pins == [("core.sshCommand", "ssh -o BatchMode=yes -o HostKeyAlias=git.example.com")]
    with pytest.raises(GitError) as refused:
        pinned_remote(strict, "http://git.example.com/o/r", token=True)
    assert refused.value.type == GitErrorType.URL_REFUSED
    assert pinned_remote(settings, "file:///tmp/x", token=False) == ("file:///tmp/x", [])
    assert Credentials("t")  # a token is what makes plain http refused


def test_the_sender_never_raises_on_a_stored_bad_url(settings: Settings) -> None:
    with make_client(settings, timeout=2) as client:
        outcome = post_webhook(client, "http://1.2.3.04/create", b"{}", {}, timeout=2, what="x")
    assert not outcome.ok and outcome.error_type == "WebhookTransportError"
    assert "1.2.3.04" in (outcome.error or "")
