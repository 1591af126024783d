"""Nothing is left in the temp folder: a process that ran git, even killed; a receiver."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from examples.receiver import Receiver
from treecast.crypto import generate_webhook_secret

ROOT = Path(__file__).resolve().parents[2]

RUNS_GIT = """
from pathlib import Path
from treecast.config import load_settings
from treecast.gitcache.command import run_git
from treecast.gitcache.objects import batch_check
settings = load_settings()
run_git(["--version"], settings=settings)
run_git(["init", "-q", "--bare", str(Path("{repo}"))], settings=settings)
batch_check(Path("{repo}"), ["HEAD"])
"""


def test_a_process_that_ran_git_leaves_no_folder_in_the_temp_folder(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp), "TREECAST_DATA_DIR": str(tmp_path / "data")}
    before = sorted(temp.iterdir())
    for _ in range(2):
        code = RUNS_GIT.format(repo=tmp_path / "repo.git")
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True)
    assert sorted(temp.iterdir()) == before == []


def test_a_killed_process_that_ran_git_leaves_nothing_in_the_temp_folder(tmp_path: Path) -> None:
    # SIGKILL runs no exit handler: whatever a process made for git must not need one.
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp), "TREECAST_DATA_DIR": str(tmp_path / "data")}
    before = sorted(temp.iterdir())
    code = RUNS_GIT.format(repo=tmp_path / "repo.git") + "print('ran', flush=True)\ninput()\n"
    with subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None and process.stdout.readline() == "ran\n"
        finally:
            process.kill()
            process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert sorted(temp.iterdir()) == before == []


def test_a_stopped_receiver_leaves_no_staging_folder(tmp_path: Path, monkeypatch: object) -> None:
    import tempfile

    temp = tmp_path / "tmp"
    temp.mkdir()
    previous = tempfile.tempdir
    tempfile.tempdir = str(temp)
    try:
        receiver = Receiver([generate_webhook_secret()], tmp_path / "mirror").start()
        assert len(list(temp.iterdir())) == 1  # its staging folder, while it runs
        receiver.stop()
    finally:
        tempfile.tempdir = previous
    assert list(temp.iterdir()) == []
