"""starter.py: every command's success and bad input, without Temporal (see test_e2e for the rest)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import starter
from tests.conftest import free_port
from tests.support.cli import dump_db, run
from treecast.crypto import generate_webhook_secret


def test_app_add_list_rotate_remove(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, added, _ = run(
        capsys, "app", "add", "--name", "docs site", "--url", "https://example.com/hooks/"
    )
    assert code == 0
    assert added["base_url"] == "https://example.com/hooks"
    assert added["secret"].startswith("whsec_")
    app_id = added["app_id"]

    code, listed, _ = run(capsys, "app", "list")
    assert [a["app_id"] for a in listed["apps"]] == [app_id]
    assert "secret" not in json.dumps(listed)
    assert listed["apps"][0]["batch"] is False
    assert listed["apps"][0]["scheme"] == "standard-webhooks"
    assert run(capsys, "app", "set-batch", app_id, "on")[0] == 0
    assert run(capsys, "app", "list")[1]["apps"][0]["batch"] is True
    assert starter.main(["app", "list"]) == 0
    assert "scheme=standard-webhooks  batch=on" in capsys.readouterr().out

    code, rotated, _ = run(capsys, "app", "rotate-secret", app_id)
    assert code == 0 and rotated["secret"] != added["secret"]
    code, _, _ = run(capsys, "app", "rotate-secret", app_id, "--finish")
    assert code == 0

    code, removed, _ = run(capsys, "app", "remove", app_id)
    assert code == 0 and removed["removed"] == app_id
    assert run(capsys, "app", "list")[1]["apps"] == []


def test_secrets_are_encrypted_at_rest(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    secret = generate_webhook_secret()
    code, added, _ = run(
        capsys, "app", "add", "--name", "a", "--url", "https://example.com", "--secret", secret
    )
    assert code == 0 and added["secret"] == secret
    raw = (cli_env / "treecast.db").read_bytes()
    wal = cli_env / "treecast.db-wal"
    raw += wal.read_bytes() if wal.exists() else b""
    assert secret.encode() not in raw
    assert secret[len("whsec_") :].encode() not in raw


def test_text_output_without_json(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert starter.main(["app", "list"]) == 0
    assert "no apps yet" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["app", "add", "--name", "a", "--url", "ftp://example.com"], "http:// or https://"),
        (["app", "add", "--name", "a", "--url", "javascript:alert(1)"], "http:// or https://"),
        (["app", "add", "--name", "a", "--url", "https://user:pw@example.com"], "credentials"),
        (["app", "add", "--name", "a", "--url", "http://127.0.0.1:9000"], "private or loopback"),
        (["app", "add", "--name", "a", "--url", "http://[::1]/x"], "private or loopback"),
        (["app", "add", "--name", "a", "--url", "http://10.1.2.3/"], "private or loopback"),
        (["app", "add", "--name", "a", "--url", "http://localhost:8000"], "localhost"),
        (
            ["app", "add", "--name", "a", "--url", "https://example.com", "--secret", "hunter2"],
            "whsec_",
        ),
        (
            ["app", "add", "--name", "a", "--url", "https://example.com", "--secret", "whsec_!!!"],
            "base64",
        ),
        (["app", "add", "--name", "", "--url", "https://example.com"], "--name"),
        (["app", "add", "--name", "x" * 300, "--url", "https://example.com"], "--name"),
        (["app", "add", "--name", "a", "--url", "https://example.com/" + "a" * 3000], "longer"),
        (["app", "add", "--name", "a"], "--url"),
        (["app", "remove", "app_nothex"], "not an app id"),
        (["app", "remove", "app_" + "0" * 24], "no app"),
        (["repo", "add", "not a url"], "spaces"),
        (["repo", "add", "ftp://example.com/x.git"], "unsupported"),
        (["repo", "add", "javascript:alert(1)"], "unsupported"),
        (["repo", "add", "https://user:pw@example.com/o/r"], "credentials"),
        (["repo", "add", "https://example.com/"], "no repository path"),
        (["repo", "add", "file://relative"], "file://"),
        (["repo", "add", ""], "empty"),
        (["repo", "add", "https://example.com/o/r", "--ref", "a b"], "--ref"),
        (["repo", "add", "https://example.com/o/r", "--interval", "0"], "--interval"),
        (["repo", "add", "https://example.com/o/r", "--interval", "x"], "invalid int"),
        (
            ["repo", "add", "https://example.com/o/r", "--token-env", "TREECAST_NO_SUCH_VAR"],
            "not set",
        ),
        (["repo", "remove", "repo_" + "0" * 24], "no repository"),
        (["watch", "app_" + "0" * 24, "repo_" + "0" * 24], "no app"),
        (["unwatch", "app_x", "repo_y"], "not an app id"),
        (["sync", "repo_" + "1" * 24], "no repository"),
        (["status", "repo_bad"], "not a repository id"),
        (["reset", "repo_" + "1" * 24], "no repository"),
        (["redeliver", "app_" + "0" * 24, "repo_" + "0" * 24], "no app"),
        (["frobnicate"], "invalid choice"),
        (["app"], "needs an action"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(
    cli_env: Path, capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    before = dump_db(cli_env)
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out is None
    message = json.loads(err)["error"]
    assert fragment in message
    assert "Traceback" not in err
    assert dump_db(cli_env) == before
    human = starter.main(list(argv))
    assert human == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_bad_configuration_is_reported_by_the_cli(
    cli_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TREECAST_BREAKER_THRESHOLD", "lots")
    code, _, err = run(capsys, "app", "list")
    assert code == 2 and "TREECAST_BREAKER_THRESHOLD" in err


def test_watch_of_unknown_repository_changes_nothing(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app_id = run(capsys, "app", "add", "--name", "a", "--url", "https://example.com")[1]["app_id"]
    before = dump_db(cli_env)
    code, _, err = run(capsys, "watch", app_id, "repo_" + "2" * 24)
    assert code == 2 and "no repository" in err
    assert dump_db(cli_env) == before


@pytest.mark.usefixtures("hosts_accept_everyone")  # example.com is not asked
def test_repo_add_without_temporal_registers_and_says_how_to_continue(
    cli_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_TOKEN", "ghp_supersecrettoken123")
    url = "https://example.com/Owner/Name.git"
    # A token is an app's: without --app it is refused, and nothing is stored.
    code, _, err = run(capsys, "repo", "add", url, "--token-env", "MY_TOKEN")
    assert code == 2 and "belong to an app's watch" in err
    assert run(capsys, "repo", "list")[1]["repositories"] == []
    app_id = run(capsys, "app", "add", "--name", "a", "--url", "https://example.com")[1]["app_id"]
    code, _, err = run(capsys, "repo", "add", url, "--app", app_id, "--token-env", "MY_TOKEN")
    assert code == 3
    assert "starter.py sync" in err
    assert "ghp_supersecrettoken123" not in err
    code, listed, _ = run(capsys, "repo", "list")
    [repo] = listed["repositories"]
    assert repo["url"] == "https://example.com/Owner/Name" and repo["has_token"] is True
    raw = (cli_env / "treecast.db").read_bytes() + (cli_env / "treecast.db-wal").read_bytes()
    assert b"ghp_supersecrettoken123" not in raw


@pytest.mark.parametrize("command", ["pause", "resume"])
def test_pause_and_resume_refuse_unknown_repositories(
    cli_env: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    code, _, err = run(capsys, command, "repo_" + "3" * 24)
    assert code == 2 and "no repository" in err


@pytest.mark.parametrize(
    "argv", [["app", "list"], ["status"], ["repo", "add", "https://e.com/o/r"]]
)
def test_an_unreachable_database_is_one_line_naming_the_variable(
    cli_env: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
) -> None:
    port = free_port()  # nothing listens there
    monkeypatch.setenv("TREECAST_DATABASE_URL", f"postgresql://nobody:hunter2@127.0.0.1:{port}/x")
    code, out, err = run(capsys, *argv)
    assert code == 2 and out is None
    message = json.loads(err)["error"]
    assert message.startswith("TREECAST_DATABASE_URL: cannot connect (")
    assert f"postgresql+psycopg://nobody:***@127.0.0.1:{port}/x" in message
    assert "Connection refused" in message
    assert "hunter2" not in err and "Traceback" not in err
    assert starter.main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: TREECAST_DATABASE_URL: cannot connect")


def test_an_sqlite_file_that_cannot_be_opened_is_one_line(
    cli_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = cli_env.parent / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("TREECAST_DATABASE_URL", f"sqlite:///{blocker}/treecast.db")
    code, _, err = run(capsys, "app", "list")
    assert code == 2
    assert json.loads(err)["error"] == (
        f"TREECAST_DATABASE_URL: cannot connect (sqlite:///{blocker}/treecast.db: "
        "unable to open database file)"
    )


@pytest.mark.usefixtures("hosts_accept_everyone")  # example.com is not asked
def test_status_without_temporal_prints_what_it_knows_and_exits_3(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app_id = run(capsys, "app", "add", "--name", "a", "--url", "https://example.com")[1]["app_id"]
    assert run(capsys, "repo", "add", "https://example.com/o/r")[0] == 3
    repository_id = run(capsys, "repo", "list")[1]["repositories"][0]["repository_id"]
    code, out, err = run(capsys, "watch", app_id, repository_id)
    assert code == 3 and out is None
    message = json.loads(err)["error"]
    assert message.startswith(f"{app_id} now watches {repository_id}, but no sync could be")
    assert "cannot reach Temporal" in message and "The watch is saved" in message
    assert f"starter.py sync {repository_id}" in message
    assert run(capsys, "app", "list")[1]["apps"][0]["watches"] == 1  # kept

    code, out, err = run(capsys, "status")
    assert code == 3
    [row] = out["repositories"]
    assert row["sync"] is None and [a["app_id"] for a in row["apps"]] == [app_id]
    assert "cannot reach Temporal" in out["temporal_error"]
    assert json.loads(err)["error"] == out["temporal_error"]

    assert starter.main(["status"]) == 3
    printed = capsys.readouterr()
    assert "unknown" in printed.out and repository_id in printed.out
    assert printed.err.startswith("error: cannot reach Temporal")

    code, _, err = run(capsys, "redeliver", app_id, repository_id)
    assert code == 3
    assert "forgot 0 files delivered" in err and "sent again when Temporal is back" in err
