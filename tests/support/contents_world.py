"""Repositories as content teams keep them, for the submodule and LFS tests: a handbook
with a style guide as a submodule (at a relative URL) that has a submodule of its own,
images in Git LFS, served over smart HTTP with an LFS server on the same port.

Made with the real tools: git pushes over HTTP, `git-lfs` (Debian's) pushes the objects,
and `reference()` is what `git clone --recurse-submodules` + `git lfs pull` check out.
Made once per test process (~1 s of git), then copied for each test and served anew.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.githttp import GitHttpServer, git_http_server
from tests.support.gitrepos import GIT_ENV
from tests.support.lfsserver import LfsStore

GIT_LFS = shutil.which("git-lfs")
needs_git_lfs = pytest.mark.skipif(
    GIT_LFS is None,
    reason="git-lfs is not installed (`make test` installs Debian's git-lfs as root)",
)

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64  # 16 KiB, binary
ICON = b"\x89PNG\r\n\x1a\n" + b"icon" * 1000


class World:
    """The served repositories and the work trees they are pushed from."""

    def __init__(
        self, root: Path, server: GitHttpServer, store: LfsStore, *, made_at: str | None = None
    ) -> None:
        """`made_at`: the server URL a copied world was pushed to (its work trees' remotes)."""
        self.root = root
        self.server = server
        self.store = store
        self.home = root / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            **GIT_ENV,
            "HOME": str(self.home),
            "XDG_CONFIG_HOME": str(self.home),
            "GIT_CONFIG_GLOBAL": str(self.home / ".gitconfig"),
            "GIT_TERMINAL_PROMPT": "0",
        }
        self.env.pop("GIT_CONFIG_NOSYSTEM", None)
        moved = f'[url "{server.url("")}"]\n\tinsteadOf = {made_at}\n' if made_at else ""
        (self.home / ".gitconfig").write_text(
            "[protocol]\n\tallow = always\n[lfs]\n\tlocksverify = false\n"
            "[init]\n\tdefaultBranch = main\n" + moved
        )
        if GIT_LFS is not None:
            self.git(self.home, "lfs", "install", "--skip-repo")

    def git(self, cwd: Path, *args: str) -> str:
        out = subprocess.run(["git", *args], cwd=cwd, env=self.env, check=True, capture_output=True)
        return out.stdout.decode(errors="replace").strip()

    def url(self, name: str) -> str:
        return self.server.url(f"{name}.git")

    def bare(self, name: str) -> Path:
        path = self.root / "srv" / f"{name}.git"
        path.mkdir(parents=True)
        self.git(path, "init", "--bare", "-q", "--initial-branch=main")
        self.git(path, "config", "uploadpack.allowFilter", "true")
        self.git(path, "config", "http.receivepack", "true")
        return path

    def work(self, name: str) -> Path:
        self.bare(name)
        path = self.root / "work" / name
        path.mkdir(parents=True)
        self.git(path, "init", "-q", "--initial-branch=main")
        self.git(path, "remote", "add", "origin", self.url(name))
        return path

    def write(self, repo: Path, path: str, content: bytes | str) -> None:
        target = repo / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content.encode() if isinstance(content, str) else content)

    def commit(self, repo: Path, message: str = "change") -> str:
        self.git(repo, "add", "-A")
        self.git(repo, "commit", "-q", "--allow-empty", "-m", message)
        self.git(repo, "push", "-q", "origin", "HEAD:refs/heads/main")
        return self.git(repo, "rev-parse", "HEAD")

    def reference(self, into: Path) -> dict[str, bytes]:
        """The files of `git clone --recurse-submodules` + `git lfs pull` (symlinks and
        git's own files left out), by path."""
        self.git(self.root, "clone", "-q", "--recurse-submodules", self.url("handbook"), str(into))
        self.git(into, "lfs", "pull")
        self.git(into, "submodule", "foreach", "--recursive", "git lfs pull")
        return tree_files(into)


def tree_files(root: Path) -> dict[str, bytes]:
    """Every regular file under `root` by relative path, without `.git` entries."""
    files: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if ".git" in relative.parts or path.is_symlink() or not path.is_file():
            continue
        files[relative.as_posix()] = path.read_bytes()
    return files


_made: tuple[Path, str] | None = None  # this process's world and the URL it was served at


def _made_world() -> tuple[Path, str]:
    global _made
    if _made is None:
        folder = Path(tempfile.mkdtemp(prefix="treecast-world-"))
        atexit.register(shutil.rmtree, folder, True)
        store = LfsStore(folder / "world" / "lfs-objects")
        with git_http_server(folder / "world" / "srv", None, lfs=store) as server:
            _fill(World(folder / "world", server, store))
            _made = folder / "world", server.url("")
    return _made


@contextmanager
def content_world(tmp: Path) -> Iterator[World]:
    """A running server with the handbook, its style guide and the guide's fonts: a copy
    of the process's world, which the test may change."""
    made, made_at = _made_world()
    shutil.copytree(made, tmp, symlinks=True)
    store = LfsStore(tmp / "lfs-objects")
    with git_http_server(tmp / "srv", None, lfs=store) as server:
        yield World(tmp, server, store, made_at=made_at)


def _fill(world: World) -> None:
    fonts = world.work("fonts")
    world.write(fonts, "LICENSE.txt", "OFL\n")
    world.write(fonts, "fonts.css", "@font-face {}\n")
    world.commit(fonts, "fonts")

    style = world.work("style")
    world.write(style, ".gitattributes", "*.png filter=lfs diff=lfs merge=lfs -text\n")
    world.write(style, "style.css", "body { color: black }\n")
    world.write(style, "img/icon.png", ICON)
    world.git(style, "-c", "protocol.file.allow=always", "submodule", "add", "-q",
              "../fonts.git", "deps/fonts")  # fmt: skip
    world.commit(style, "style")

    handbook = world.work("handbook")
    world.write(handbook, ".gitattributes", "images/** filter=lfs diff=lfs merge=lfs -text\n")
    world.write(handbook, "docs/index.md", "# Handbook\n")
    world.write(handbook, "images/logo.png", PNG)
    world.write(handbook, "notes.txt", "plain\n")
    os.symlink("docs/index.md", handbook / "index-link.md")
    world.git(handbook, "submodule", "add", "-q", "../style.git", "vendor/style")
    world.commit(handbook, "handbook")
