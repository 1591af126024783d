"""starter.py and worker.py run as processes: the exit status and the output survive exit.

After a Temporal client was used, Python's own shutdown could abort the process with
"Fatal Python error: PyGILState_Release" (exit 134, temporalio/sdk-python#300), in about
one run in six of `starter.py status` here. The entry points now flush and `os._exit`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from tests.support import registering
from tests.support.gitrepos import WorkRepo
from tests.support.temporal_env import new_task_queue
from treecast.config import load_settings
from treecast.crypto import generate_key

ROOT = Path(__file__).resolve().parents[2]
RUNS = 12  # unfixed, ~1 run in 6 aborted: 12 runs caught it 9 times in 10 (~1.3 s each)


def python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_run_and_exit_flushes_buffered_output_before_the_hard_exit() -> None:
    # stdout is a pipe, so fully buffered: os._exit alone would drop these 200 KB.
    done = python(
        "import sys\n"
        "from treecast.process_exit import run_and_exit\n"
        "def main():\n"
        "    print('x' * 200_000)\n"
        "    print('said', file=sys.stderr)\n"
        "    return 3\n"
        "run_and_exit(main)\n"
    )
    assert done.returncode == 3
    assert done.stdout == "x" * 200_000 + "\n"
    assert done.stderr == "said\n"


@pytest.mark.parametrize(
    ("body", "code", "stderr"),
    [
        ("raise SystemExit(None)", 0, ""),
        ("raise SystemExit(4)", 4, ""),
        ("raise SystemExit('bye')", 1, "bye\n"),
        ("raise KeyboardInterrupt", 130, ""),
        ("raise LookupError('boom')", 1, "LookupError: boom\n"),
    ],
)
def test_run_and_exit_keeps_what_sys_exit_would_do(body: str, code: int, stderr: str) -> None:
    done = python(
        f"from treecast.process_exit import run_and_exit\ndef main():\n    {body}\nrun_and_exit(main)\n"
    )
    assert done.returncode == code
    assert done.stderr.endswith(stderr)
    if "LookupError" in body:
        assert done.stderr.startswith("Traceback")


@pytest.mark.slow  # Treecast's own processes (a second or more each)
def test_starter_help_and_usage_errors_keep_their_exit_status() -> None:
    helped = subprocess.run(
        [sys.executable, "starter.py", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert helped.returncode == 0 and helped.stdout.startswith("usage: starter.py")
    wrong = subprocess.run(
        [sys.executable, "starter.py", "--json", "frobnicate"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert wrong.returncode == 2 and "invalid choice" in json.loads(wrong.stderr)["error"]


@pytest.mark.slow  # Treecast's own processes (a second or more each)
def test_the_treecast_command_is_starter_py(tmp_path: Path) -> None:
    # `make install` installs the project into the venv; its console script runs
    # starter.cli from any directory, and says what `python starter.py` says.
    [entry] = entry_points(group="console_scripts", name="treecast")
    assert entry.value == "starter:cli"
    command = Path(sys.executable).parent / "treecast"
    assert command.exists(), f"{command} is missing; run `make install`"
    installed = subprocess.run(
        [str(command), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    script = subprocess.run(
        [sys.executable, "starter.py", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (installed.returncode, installed.stderr) == (0, ""), installed.stderr
    assert installed.stdout == script.stdout
    assert installed.stdout.startswith("usage: starter.py")


@pytest.mark.e2e
async def test_starter_exit_status_and_json_survive_commands_that_used_temporal(
    tmp_path: Path,
    dev_env: WorkflowEnvironment,
) -> None:
    repo_url = WorkRepo(tmp_path / "git").url
    environ = {
        **os.environ,
        "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "TREECAST_DATA_DIR": str(tmp_path / "data"),
        "TREECAST_SECRET_KEY": generate_key(),
        "TREECAST_TASK_QUEUE": new_task_queue(),  # no worker: the workflow just waits
        "TREECAST_ALLOW_FILE_URLS": "1",
    }
    environ.pop("TREECAST_DATABASE_URL", None)

    def starter(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "starter.py", "--json", *argv],
            cwd=ROOT,
            env=environ,
            capture_output=True,
            text=True,
            timeout=60,
        )

    # Registered without starting its workflow: with no worker a status query would
    # wait; this way `status` connects, asks Temporal, and finds no running sync.
    settings = load_settings(environ)
    repository_id = registering.add_repository(settings, repo_url)
    for _ in range(RUNS):
        done = starter("status")
        assert "Fatal Python error" not in done.stderr
        assert done.returncode == 0, done.stderr
        [row] = json.loads(done.stdout)["repositories"]
        assert row["repository_id"] == repository_id and row["sync"] is None
