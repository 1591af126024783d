"""What the command line adds for the HTTP API: app tokens, push secrets, `api`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import starter
from tests.conftest import free_port
from treecast.config import load_settings
from treecast.crypto import generate_key
from treecast.service.core import TreecastService
from treecast.service.core import run as served


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "data"
    monkeypatch.setenv("TREECAST_DATA_DIR", str(data))
    monkeypatch.setenv("TREECAST_SECRET_KEY", generate_key())
    monkeypatch.setenv("TEMPORAL_ADDRESS", f"127.0.0.1:{free_port()}")
    monkeypatch.delenv("TREECAST_DATABASE_URL", raising=False)
    return data


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = starter.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_app_add_prints_the_api_token_once(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "app", "add", "--name", "a", "--url", "https://example.com")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("app app_") and lines[1].startswith("secret (shown once")
    token = lines[2].split(": ", 1)[1]
    assert lines[2].startswith("API token (shown once") and token.startswith("tc_")
    service = TreecastService(load_settings())
    assert served(service.apps.authenticate(token)) == lines[0].split()[1]
    code, out, _ = run(capsys, "--json", "app", "add", "--name", "b", "--url", "https://e.com")
    assert json.loads(out)["token"].startswith("tc_")
    code, out, _ = run(capsys, "--json", "app", "list")
    assert "tc_" not in out


def test_repo_add_prints_the_push_secret_and_it_rotates(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "--json", "repo", "add", "https://github.com/acme/handbook")
    assert code == 3  # no Temporal here; the repository is registered all the same
    code, out, err = run(capsys, "--json", "repo", "list")
    [repo] = json.loads(out)["repositories"]
    assert "push_secret" not in repo
    # Registering it again (now it exists) shows no secret; rotating makes a new one.
    code, out, _ = run(capsys, "--json", "repo", "rotate-push-secret", repo["repository_id"])
    assert code == 0
    first = json.loads(out)["push_secret"]
    code, out, _ = run(capsys, "repo", "rotate-push-secret", repo["repository_id"])
    assert code == 0 and "shown once" in out and first not in out
    code, _, err = run(capsys, "repo", "rotate-push-secret", "repo_" + "0" * 24)
    assert code == 2 and "no repository" in err


def test_repo_add_text_names_the_push_url(
    cli_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from treecast.service.syncs import Syncs

    async def no_temporal(*_args: Any, **_kwargs: Any) -> None:
        return None

    monkeypatch.setattr(Syncs, "start", no_temporal)
    code, out, _ = run(capsys, "repo", "add", "https://github.com/acme/handbook")
    assert code == 0, out
    assert "push hook (optional; shown once): URL http://127.0.0.1:8000/hooks/github" in out


def test_api_subcommand_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    # In this process: the exit status of the process itself is test_entry_points'.
    with pytest.raises(SystemExit) as done:
        starter.main(["api", "--help"])
    assert done.value.code == 0 and "--listen" in capsys.readouterr().out
