"""Real git repositories for tests, made with the git CLI in a temp dir."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Treecast Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Treecast Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(cwd: Path, *args: str) -> str:
    """Run git in `cwd` and return its stdout (raises on failure)."""
    env = {**os.environ, **GIT_ENV}
    out = subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)
    return out.stdout.decode(errors="replace").strip()


class WorkRepo:
    """A working repository whose commits are pushed to a bare remote (`url` is its file:// URL)."""

    def __init__(self, root: Path, branch: str = "main") -> None:
        self.remote = root / "remote.git"
        self.work = root / "work"
        self.branch = branch
        self.remote.mkdir(parents=True)
        git(self.remote, "init", "--bare", "-q", f"--initial-branch={branch}")
        self.work.mkdir()
        git(self.work, "init", "-q", f"--initial-branch={branch}")
        git(self.work, "remote", "add", "origin", str(self.remote))

    @property
    def url(self) -> str:
        """file:// URL of the bare remote."""
        return f"file://{self.remote}"

    def write(self, path: str, content: bytes | str) -> None:
        """Write a file in the work tree (creating folders)."""
        target = self.work / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content.encode() if isinstance(content, str) else content)

    def remove(self, path: str) -> None:
        """Delete a file from the work tree."""
        (self.work / path).unlink()

    def commit_files(self, files: dict[str, str], message: str = "change") -> str:
        """Write `files` (path: text), commit and push them; returns the commit id."""
        for path, content in files.items():
            self.write(path, content)
        return self.commit(message)

    def commit(self, message: str = "change", *, push: bool = True, force: bool = False) -> str:
        """Commit everything, push to the remote, return the commit id."""
        git(self.work, "add", "-A")
        git(self.work, "commit", "-q", "--allow-empty", "-m", message)
        if push:
            args = ["push", "-q", "origin", f"HEAD:refs/heads/{self.branch}"]
            if force:
                args.insert(1, "--force")
            git(self.work, *args)
        return git(self.work, "rev-parse", "HEAD")

    def files_at(self, commit: str) -> dict[str, bytes]:
        """Every regular file of `git archive` of `commit`, with its bytes: what a mirror
        must equal (symlinks, which Treecast skips, are left out)."""
        archive = subprocess.run(
            ["git", "archive", "--format=tar", commit],
            cwd=self.work,
            check=True,
            capture_output=True,
        ).stdout
        files: dict[str, bytes] = {}
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            for member in tar:
                if member.isfile():
                    extracted = tar.extractfile(member)
                    assert extracted is not None
                    files[member.name] = extracted.read()
        return files
