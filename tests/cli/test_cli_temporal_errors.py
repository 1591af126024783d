"""starter.py against a Temporal server that cannot do what is asked: one line, exit 3.

A real dev server started without Treecast's search attributes and without a worker:
`repo add` is refused until the attributes are registered (with the command the error
gives), then `status` and `sync --wait` find no worker to answer their queries. A wrong
namespace stands for any other refused call. Nothing here prints a traceback.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import starter
from models.search_attributes import operator_create_command
from tests.conftest import free_port
from treecast.config import load_settings
from treecast.crypto import generate_key
from treecast.devserver import DevServer, temporal_cli
from treecast.service import workflows as temporal_ops

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bare_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A dev server with no search attributes registered and no worker; its address."""
    address = f"127.0.0.1:{free_port()}"
    data = tmp_path_factory.mktemp("bare-temporal")
    settings = load_settings(
        {
            "TEMPORAL_ADDRESS": address,
            "TREECAST_DATA_DIR": str(data),
            "TREECAST_SECRET_KEY": generate_key(),
        }
    )
    server = DevServer(settings, ui=False)  # no search_attribute_args
    server.start()
    try:
        yield address
    finally:
        server.stop()


@pytest.fixture
def cli_env(bare_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {
        "TEMPORAL_ADDRESS": bare_server,
        "TEMPORAL_NAMESPACE": "default",
        "TREECAST_DATA_DIR": str(tmp_path / "data"),
        "TREECAST_SECRET_KEY": generate_key(),
        "TREECAST_ALLOW_PRIVATE_URLS": "0",
        "TREECAST_ALLOW_FILE_URLS": "1",
        "TREECAST_TASK_QUEUE": f"treecast-test-{tmp_path.name[-20:]}",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TREECAST_DATABASE_URL", raising=False)
    # No worker will ever answer: do not wait the full 5 s for each query.
    monkeypatch.setattr(temporal_ops, "QUERY_TIMEOUT", timedelta(seconds=1))
    return env


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str | None]:
    """`starter.py --json ARGV`: exit status, the JSON on stdout, the one error message."""
    code = starter.main(["--json", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) <= 1, err
    message = json.loads(lines[0])["error"] if lines else None
    return code, json.loads(out) if out.strip() else None, message


def run_human(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`starter.py ARGV` without --json: exit status, stdout and the single stderr line."""
    code = starter.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    [line] = err.splitlines()
    assert line.startswith("error: ")
    return code, out, line.removeprefix("error: ")


def test_missing_search_attributes_then_no_worker(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    address = cli_env["TEMPORAL_ADDRESS"]
    queue = cli_env["TREECAST_TASK_QUEUE"]

    # As a process: exit status 3 and one line, no traceback.
    done = subprocess.run(
        [sys.executable, "starter.py", "repo", "add", "https://example.com/o/first"],
        cwd=ROOT,
        env=dict(os.environ),  # cli_env, set by monkeypatch
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3, done.stderr
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("error: repository repo_") and "is registered" in line
    assert "does not know Treecast's search attributes" in line

    code, out, message = run(capsys, "repo", "add", "https://example.com/o/r")
    assert code == 3 and out is None
    assert message is not None
    [repo] = [
        r for r in run(capsys, "repo", "list")[1]["repositories"] if r["url"].endswith("/o/r")
    ]
    repository_id = repo["repository_id"]  # kept, as when Temporal is down
    assert message.startswith(f"repository {repository_id} is registered, but its sync could")
    assert f"the Temporal server at {address} does not know Treecast's search attributes" in message
    assert "no mapping defined for search attribute TreecastRepositoryId" in message
    assert f"run `starter.py sync {repository_id}` once they are registered" in message
    command = re.search(r"register them with `([^`]+)`", message)
    assert command is not None
    argv = shlex.split(command.group(1))
    assert argv[:-4] == ["temporal", *operator_create_command()]
    assert argv[-4:] == ["--address", address, "--namespace", "default"]

    # sync is refused the same way, and says so in one line
    code, _, message = run(capsys, "sync", repository_id)
    assert code == 3
    assert message is not None and "does not know Treecast's search attributes" in message

    # The command the error gives registers them; then the sync starts.
    subprocess.run([str(temporal_cli()), *argv[1:]], check=True, capture_output=True, timeout=60)
    code, out, message = run(capsys, "sync", repository_id)
    assert (code, message) == (0, None) and out["requested"] is True

    # Its workflow runs, but no worker polls the task queue: the status query is unanswered.
    no_worker = (
        f"no worker answered the status query of {repository_id} within 1 s; "
        f"is worker.py running on task queue {queue}?"
    )
    code, out, message = run(capsys, "status", repository_id)
    assert code == 3
    assert message == no_worker
    [row] = out["repositories"]
    assert row["repository_id"] == repository_id and row["sync"] is None
    assert out["temporal_error"] == no_worker

    code, printed, line = run_human(capsys, "status")
    assert code == 3 and line.startswith("no worker answered the status query of repo_")
    assert f"task queue {queue}?" in line
    [shown] = [row for row in printed.splitlines() if row.startswith(repository_id)]
    assert shown.split()[1] == "unknown"  # not "stopped": its workflow runs

    code, out, message = run(capsys, "sync", repository_id, "--wait", "--timeout", "30")
    assert code == 3 and out is None
    assert message == (
        f"the sync of {repository_id} was requested, but no worker answered the sync_and_wait "
        f"update of {repository_id} within 1 s; is worker.py running on task queue {queue}? "
        "It starts once a worker runs"
    )


def test_other_refusals_are_one_line_exit_3(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "no-such-namespace")
    refused = "NOT_FOUND: Namespace no-such-namespace is not found."

    code, _, message = run(capsys, "repo", "add", "https://example.com/o/r")
    assert code == 3 and message is not None
    repository_id = run(capsys, "repo", "list")[1]["repositories"][0]["repository_id"]
    assert message == (
        f"repository {repository_id} is registered, but its sync could not start: "
        f"Temporal refused the start of {repository_id}'s sync: {refused}; "
        f"run `starter.py sync {repository_id}` once Temporal accepts it"
    )

    # A missing namespace is not "no workflow runs": status does not say "stopped"...
    code, out, message = run(capsys, "status")
    assert code == 3
    assert message == f"Temporal refused the status query of {repository_id}: {refused}"
    assert out["repositories"][0]["sync"] is None and out["temporal_error"] == message
    code, printed, _ = run_human(capsys, "status")
    assert code == 3 and "unknown" in printed

    # ...pause does not say "no running sync", and remove keeps the repository.
    for argv, what in [
        (["pause", repository_id], f"pausing {repository_id}"),
        (["resume", repository_id], f"resuming {repository_id}"),
        (["reset", repository_id], f"the reset of {repository_id}"),
        (["sync", repository_id], f"the sync request for {repository_id}"),
        (["repo", "remove", repository_id], f"stopping {repository_id}'s sync"),
    ]:
        code, out, message = run(capsys, *argv)
        assert (code, out, message) == (3, None, f"Temporal refused {what}: {refused}")
    assert len(run(capsys, "repo", "list")[1]["repositories"]) == 1

    code, _, line = run_human(capsys, "sync", repository_id, "--wait")
    assert code == 3 and line == f"Temporal refused the sync request for {repository_id}: {refused}"


def test_unexpected_errors_keep_their_traceback(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # 3 while the module's server lacks the search attributes, 0 once registered
    assert run(capsys, "repo", "add", "https://example.com/o/r")[0] in (0, 3)
    repository_id = run(capsys, "repo", "list")[1]["repositories"][0]["repository_id"]

    async def broken(*_: Any) -> None:
        raise ValueError("a bug, not Temporal")

    monkeypatch.setattr(temporal_ops, "get_status", broken)
    monkeypatch.setattr(temporal_ops, "pause", broken)
    with pytest.raises(ValueError, match="a bug"):
        starter.main(["status", repository_id])
    with pytest.raises(ValueError, match="a bug"):
        starter.main(["pause", repository_id])


def test_an_rpc_error_escaping_a_command_is_one_line(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from temporalio.service import RPCError, RPCStatusCode

    def refused(*_: Any) -> Any:
        raise RPCError("not allowed\nsecond line", RPCStatusCode.PERMISSION_DENIED, b"")

    from treecast.cli import watches

    monkeypatch.setattr(watches, "unwatch_repository", refused)
    code, out, message = run(capsys, "unwatch", "app_" + "0" * 24, "repo_" + "0" * 24)
    assert (code, out) == (3, None)
    assert message == "Temporal refused a request: PERMISSION_DENIED: not allowed"
