"""Bad input: the command line with huge, empty and wrong values, and hostile repository content.

Repository content goes end to end: a real bare remote built with `git fast-import`
(so names may hold newlines or invalid UTF-8, and a 200 MB file or 100,000 files
take seconds), the `snapshot_repository` and `deliver_changes` activities in an
ActivityEnvironment, and the example receiver's mirror compared with the commit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.delivery import DeliveryActivities
from activities.git import GitActivities
from examples.receiver import Receiver
from models.changes import ChangeKind
from models.delivery import AppDelivery, DeliverInput
from models.git import GitErrorType, SnapshotInput, SnapshotResult
from models.tables import Watch
from tests.support.cli import dump_db, run
from tests.support.gitrepos import GIT_ENV
from tests.support.receiver_fixture import add_watch, register
from treecast.config import Settings
from treecast.db import session_scope
from treecast.delivery.loading import load_changes
from treecast.gitcache.repository import RepositoryCache
from treecast.remote_access import load_access

ROOT = Path(__file__).resolve().parents[2]

# -- the command line: huge and empty values -------------------------------------------

HUGE = "a" * 100_000
APP = "app_" + "0" * 24
REPO = "repo_" + "0" * 24


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["app", "add", "--name", HUGE, "--url", "https://example.com"], "--name"),
        (["app", "add", "--name", "   ", "--url", "https://example.com"], "--name"),
        (["app", "add", "--name", "a", "--url", "https://example.com/" + HUGE], "longer"),
        (["app", "add", "--name", "a", "--url", ""], "empty"),
        (["app", "add", "--name", "a", "--url", "https://" + HUGE[:300] + ".com"], "host"),
        (["app", "add", "--name", "a", "--url", "https://example.com:99999"], "port"),
        (["app", "add", "--name", "a", "--url", "https://example.com/?q=1"], "query"),
        (["app", "add", "--name", "a", "--url", "http://0.0.0.0:80"], "private or loopback"),
        (["app", "add", "--name", "a", "--url", "http://[::ffff:127.0.0.1]/"], "private"),
        (["app", "add", "--name", "a", "--url", "http://169.254.169.254/"], "private"),
        (["app", "add", "--name", "a", "--url", "file:///etc/passwd"], "http://"),
        (["app", "add", "--name", "a", "--url", "https://example.com", "--secret", ""], "whsec_"),
        (
            ["app", "add", "--name", "a", "--url", "https://example.com", "--secret", "whsec_"],
            "24 to 64",
        ),
        (
            [
                "app",
                "add",
                "--name",
                "a",
                "--url",
                "https://example.com",
                "--secret",
                "whsec_" + HUGE,
            ],
            "24 to 64",
        ),
        (["app", "rotate-secret", APP, "--secret", "whsec_" + HUGE], "no app"),
        (["app", "remove", ""], "not an app id"),
        (["app", "remove", "app_" + HUGE], "not an app id"),
        (["repo", "add", "https://example.com/" + HUGE], "longer"),
        (["repo", "add", "ssh://git@example.com/o/r", "--ref", HUGE], "--ref"),
        (["repo", "add", "https://example.com/o/r", "--ref", "--upload-pack=evil"], "--ref"),
        (["repo", "add", "https://example.com/o/r", "--ref", "a..b"], "--ref"),
        (["repo", "add", "https://example.com/o/r", "--interval", "9" * 30], "--interval"),
        (["repo", "add", "https://example.com/o/r", "--interval", "9" * 5000], "invalid int"),
        (["repo", "add", "https://example.com/o/r", "--interval", "-1"], "--interval"),
        (["repo", "add", "https://example.com/o/r", "--token-env", HUGE], "not set"),
        (["repo", "add", "gopher://example.com/o/r"], "unsupported"),
        (["repo", "add", "ftp://example.com/o/r"], "unsupported"),
        (["repo", "add", "example.com/o/r"], "unsupported"),
        (["repo", "add", "file://"], "file://"),
        (["repo", "add", "file://otherhost/srv/repo"], "local path"),
        (["repo", "add", "https://github.com:notaport/o/r"], "port"),
        (["repo", "add", "https:///o/r"], "host"),
        (["repo", "remove", "repo_" + HUGE], "not a repository id"),
        (["watch", APP, REPO, "--path", HUGE], "no app"),
        (["unwatch", "app_" + HUGE, REPO], "not an app id"),
        (["redeliver", APP, "repo_" + HUGE], "no app"),
        (["sync", "repo_" + HUGE], "not a repository id"),
        (["sync", REPO, "--wait", "--timeout", "nan"], "--timeout"),
        (["sync", REPO, "--wait", "--timeout", "-5"], "--timeout"),
        (["sync", REPO, "--wait", "--timeout", "0"], "--timeout"),
        (["sync", REPO, "--wait", "--timeout", "1e308"], "--timeout"),
        (["sync", REPO, "--wait", "--timeout", HUGE], "--timeout"),
        (["status", "repo_" + HUGE], "not a repository id"),
        (["reset", ""], "not a repository id"),
    ],
    ids=lambda v: v[:40] + "…" if isinstance(v, str) else " ".join(a[:20] for a in v)[:70],
)
def test_huge_empty_and_wrong_values_are_one_short_line_and_change_nothing(
    cli_env: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    fragment: str,
) -> None:
    monkeypatch.setenv("TREECAST_HUGE_TOKEN", HUGE)
    before = dump_db(cli_env)
    code, out, err = run(capsys, *argv)
    assert code == 2 and out is None
    message = json.loads(err)["error"]
    assert fragment in message
    assert len(message) < 500 and "\n" not in message  # one short line, however big the input
    assert dump_db(cli_env) == before


def test_huge_values_for_a_known_app_and_repository(
    cli_env: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app_id = run(capsys, "app", "add", "--name", "a", "--url", "https://example.com")[1]["app_id"]
    monkeypatch.setenv("TREECAST_HUGE_TOKEN", "ghp_" + HUGE)
    code, _, err = run(
        capsys, "repo", "add", "https://example.com/o/r", "--app", app_id,
        "--token-env", "TREECAST_HUGE_TOKEN",
    )  # fmt: skip
    assert code == 2 and "too long" in err and HUGE[:100] not in err
    monkeypatch.setenv("TREECAST_SPLIT_TOKEN", "ghp_one\nghp_two")
    code, _, err = run(
        capsys, "repo", "add", "https://example.com/o/r", "--app", app_id,
        "--token-env", "TREECAST_SPLIT_TOKEN",
    )  # fmt: skip
    assert code == 2 and "several lines" in err and "ghp_one" not in err
    code, _, _ = run(capsys, "repo", "add", "https://example.com/o/r")
    repository_id = run(capsys, "repo", "list")[1]["repositories"][0]["repository_id"]
    before = dump_db(cli_env)
    for globs, fragment in (
        ([HUGE], "--path"),
        (["x" * 1025], "--path"),
        (["a"] * 101, "at most 100"),
        (["  "], "--path"),
        (["a\nb"], "--path"),
        (["!"], "--path"),  # fnmatch takes it; gitignore syntax (used to match) does not
    ):
        argv = ["watch", app_id, repository_id]
        for glob in globs:
            argv += ["--path", glob]
        code, _, err = run(capsys, *argv)
        message = json.loads(err)["error"]
        assert code == 2 and fragment in message and len(message) < 500, message
    code, _, err = run(capsys, "app", "rotate-secret", app_id, "--secret", "whsec_" + HUGE)
    assert code == 2 and "24 to 64" in err
    assert dump_db(cli_env) == before


# -- a non-git file:// path registers, and its sync fails with a typed error -------------


@pytest.mark.parametrize("kind", ["plain-directory", "missing", "regular-file", "empty-git-dir"])
def test_a_path_that_is_not_a_git_repository_fails_its_sync_clearly(
    cli_env: Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    kind: str,
) -> None:
    target = tmp_path / "not-a-repo"
    if kind == "plain-directory":
        target.mkdir()
        (target / "README.md").write_text("just files\n")
    elif kind == "regular-file":
        target.write_text("a file\n")
    elif kind == "empty-git-dir":
        (target / ".git").mkdir(parents=True)
    code, _, err = run(capsys, "repo", "add", f"file://{target}")
    assert code == 3 and "starter.py sync" in err  # registered; Temporal is unreachable here
    [row] = run(capsys, "repo", "list")[1]["repositories"]
    assert row["url"] == f"file://{target}"

    from treecast.config import load_settings

    settings = load_settings()
    with pytest.raises(ApplicationError) as failure:
        ActivityEnvironment().run(
            GitActivities(settings).snapshot_repository, SnapshotInput(row["repository_id"])
        )
    error = failure.value
    assert error.type == GitErrorType.REPOSITORY_NOT_FOUND
    assert error.non_retryable
    message = str(error)
    assert "the remote has no such repository; check its URL and credentials" in message
    assert "\n" not in message and len(message) < 1000


# -- repository content, end to end ----------------------------------------------------


@dataclass
class Entry:
    """One tree entry for `fast_import`: a blob (`data`), or a gitlink (`gitlink` commit id)."""

    path: bytes
    data: bytes = b""
    mode: str = "100644"
    gitlink: str | None = None


def _quote(path: bytes) -> bytes:
    """C-style quoting for fast-import paths (any byte, including LF and invalid UTF-8)."""
    out = bytearray(b'"')
    for byte in path:
        if byte in (0x22, 0x5C):
            out += b"\\" + bytes([byte])
        elif 0x20 <= byte < 0x7F:
            out.append(byte)
        else:
            out += b"\\%03o" % byte
    return bytes(out + b'"')


@dataclass
class Remote:
    """A bare repository on disk whose branch `main` is written with `git fast-import`."""

    root: Path
    commits: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True)
        self._git("init", "--bare", "-q", "--initial-branch=main")

    @property
    def url(self) -> str:
        return f"file://{self.root}"

    def _git(self, *args: str, input: bytes | None = None) -> bytes:
        env = {**os.environ, **GIT_ENV}
        return subprocess.run(
            ["git", *args], cwd=self.root, env=env, input=input, check=True, capture_output=True
        ).stdout

    def commit(
        self, entries: Iterable[Entry], *, big: tuple[bytes, int, bytes] | None = None
    ) -> str:
        """A commit holding exactly `entries` (and optionally one `big` file streamed from a
        repeated block: path, size, block), on top of the previous one."""
        proc = subprocess.Popen(
            ["git", "fast-import", "--quiet", "--done"],
            cwd=self.root,
            env={**os.environ, **GIT_ENV},
            stdin=subprocess.PIPE,
        )
        assert proc.stdin is not None
        write = proc.stdin.write
        lines: list[bytes] = []
        for mark, entry in enumerate(entries, start=1):
            if entry.gitlink is not None:
                lines.append(b"M 160000 %s %s\n" % (entry.gitlink.encode(), _quote(entry.path)))
                continue
            write(b"blob\nmark :%d\ndata %d\n%s\n" % (mark, len(entry.data), entry.data))
            lines.append(b"M %s :%d %s\n" % (entry.mode.encode(), mark, _quote(entry.path)))
        if big is not None:
            path, size, block = big
            write(b"blob\nmark :999999999\ndata %d\n" % size)
            left = size
            while left:
                piece = block[: min(left, len(block))]
                write(piece)
                left -= len(piece)
            write(b"\n")
            lines.append(b"M 100644 :999999999 %s\n" % _quote(path))
        message = b"commit %d" % len(self.commits)
        write(
            b"commit refs/heads/main\n"
            b"committer Treecast Test <test@example.invalid> 1700000000 +0000\n"
            b"data %d\n%s\n" % (len(message), message)
        )
        if self.commits:
            write(b"from %s\n" % self.commits[-1].encode())
        write(b"deleteall\n")
        for line in lines:
            write(line)
        write(b"\ndone\n")
        proc.stdin.close()
        assert proc.wait(timeout=120) == 0
        commit = self._git("rev-parse", "refs/heads/main").decode().strip()
        self.commits.append(commit)
        return commit


def expected_files(entries: Iterable[Entry], ignored: Iterable[str] = ()) -> dict[str, bytes]:
    """What a mirror must hold: regular files whose names are UTF-8, minus `ignored`."""
    skip = set(ignored)
    files: dict[str, bytes] = {}
    for entry in entries:
        if entry.gitlink is not None or entry.mode not in ("100644", "100755"):
            continue
        try:
            path = entry.path.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if path not in skip:
            files[path] = entry.data
    return files


class Pipeline:
    """One repository and one app: snapshot, then deliver, as a worker would."""

    def __init__(self, settings: Settings, remote: Remote, rcv: Receiver, secret: str) -> None:
        self.settings = settings
        self.receiver = rcv
        self.app_id, self.repository_id = register(settings, rcv.url, [secret], remote.url)

    def snapshot(self) -> SnapshotResult:
        result = ActivityEnvironment().run(
            GitActivities(self.settings).snapshot_repository, SnapshotInput(self.repository_id)
        )
        assert isinstance(result, SnapshotResult)
        return result

    def deliver(self, commit: str | None, app_id: str | None = None) -> AppDelivery:
        result = ActivityEnvironment().run(
            DeliveryActivities(self.settings).deliver_changes,
            DeliverInput(app_id or self.app_id, self.repository_id, commit),
        )
        assert isinstance(result, AppDelivery)
        return result

    def sync(self) -> tuple[SnapshotResult, AppDelivery]:
        snap = self.snapshot()
        return snap, self.deliver(snap.commit)


LFS_POINTER = (
    b"version https://git-lfs.github.com/spec/v1\n"
    b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
    b"size 12345\n"
)
DEPTH = 300  # folders deep (the receiver's Path.mkdir recurses once per level)
NAMES = [
    "with space.txt",
    " leading space.txt",
    "trailing space .txt",
    "new\nline.txt",
    "carriage\rreturn.txt",
    "tab\there.txt",
    'double"quote.txt',
    "single'quote.txt",
    "back`tick`.txt",
    "ctrl\x01char.txt",
    "-starts-with-dash.txt",
    "#hash%41;semi&amp.txt",
    "star*question?.txt",
    "<angle>|pipe.txt",
    "ü/naïve – ∑ 日本語.md",
    "emoji 🎉/🚀.txt",
    "e\u0301 decomposed.txt",  # NFD: distinct from the NFC name below
    "\u00e9 decomposed.txt",
    ".hidden",
    "trailing.dots...",
    "a" * 255,  # as long as a file name can be
    "back\\slash.txt",  # an ordinary character in a git path
]


def hostile_tree() -> list[Entry]:
    entries = [Entry(name.encode(), f"content of {name!r}\n".encode()) for name in NAMES]
    entries += [
        Entry(b"empty.txt", b""),
        Entry(b"binary.bin", bytes(range(256)) * 4),
        Entry(b"run.sh", b"#!/bin/sh\necho hi\n", mode="100755"),
        Entry(("d/" * DEPTH + "deep.txt").encode(), b"deep\n"),
        Entry(b"caf\xe9.txt", b"latin-1 name\n"),  # not UTF-8: skipped
        Entry(b"dir\xff/inner.txt", b"inside a latin-1 folder\n"),  # not UTF-8: skipped
        Entry(b"link-to-file", b"with space.txt", mode="120000"),
        Entry(b"dangling-link", b"nowhere", mode="120000"),
        Entry(b"escaping-link", b"../../../../etc/passwd", mode="120000"),
        Entry(b"vendor/lib", gitlink="1" * 40),  # a submodule
        Entry(b".gitattributes", b"*.psd filter=lfs diff=lfs merge=lfs -text\n"),
        Entry(b"design.psd", LFS_POINTER),  # an LFS pointer: its text is the file in git
    ]
    return entries


def test_hostile_names_links_submodules_and_lfs_pointers_end_to_end(
    any_db_settings: Settings,
    tmp_path: Path,
    receiver: Receiver,
    receiver_secret: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    remote = Remote(tmp_path / "remote.git")
    entries = hostile_tree()
    first = remote.commit(entries)
    pipeline = Pipeline(any_db_settings, remote, receiver, receiver_secret)
    expected = expected_files(entries)

    with caplog.at_level(logging.WARNING):
        snap, delivered = pipeline.sync()
    assert snap.commit == first
    assert (snap.skipped_symlinks, snap.skipped_submodules, snap.skipped_invalid_paths) == (3, 1, 2)
    assert snap.file_count == len(expected) and snap.total_bytes == sum(map(len, expected.values()))
    assert (delivered.status, delivered.created) == ("synced", len(expected))
    assert receiver.files() == expected
    assert "caf\\xe9.txt" in caplog.text  # the skipped name is reported, escaped
    assert receiver.rejected == []
    # Nothing outside the mirror was written through a link or a name.
    assert not (receiver.mirror / "link-to-file").exists()
    mode = (receiver.mirror / "run.sh").stat().st_mode
    assert mode & 0o777  # delivered as a plain file (modes are not part of the contract)

    # A second commit deletes, changes and adds hostile names; the mirror follows.
    changed = [e for e in entries if e.path not in (b"new\nline.txt", b"empty.txt")]
    changed = [
        Entry(e.path, e.data + b"changed\n", e.mode, e.gitlink)
        if e.path in (b'double"quote.txt', ("d/" * DEPTH + "deep.txt").encode())
        else e
        for e in changed
    ]
    changed.append(Entry(b"another\nnew line.txt", b"x"))
    changed.append(Entry(b"caf\xc3\xa9.txt", b"now valid UTF-8\n"))
    second = remote.commit(changed)
    receiver.requests.clear()
    snap, delivered = pipeline.sync()
    assert snap.commit == second
    assert (delivered.deleted, delivered.created, delivered.updated) == (2, 2, 2)
    assert receiver.files() == expected_files(changed)
    assert [(r.event, r.path) for r in receiver.file_requests()][:2] == [
        ("delete", "empty.txt"),
        ("delete", "new\nline.txt"),
    ]


def test_a_treecastignore_that_excludes_everything(
    settings: Settings,
    tmp_path: Path,
    receiver: Receiver,
    receiver_secret: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    remote = Remote(tmp_path / "remote.git")
    files = [Entry(b"README.md", b"r\n"), Entry(b"docs/a.md", b"a\n"), Entry(b"x/y/z.bin", b"\0")]
    pipeline = Pipeline(settings, remote, receiver, receiver_secret)
    remote.commit(files)
    snap, delivered = pipeline.sync()
    assert delivered.created == 3 and snap.file_count == 3

    # Everything ignored, the ignore file included: every delivered file is deleted.
    remote.commit([*files, Entry(b".treecastignore", b"*\n")])
    snap, delivered = pipeline.sync()
    assert (snap.file_count, snap.total_bytes) == (0, 0)
    assert (delivered.status, delivered.deleted, delivered.created) == ("synced", 3, 0)
    assert receiver.files() == {}

    # An ignore file that is huge (over 1 MiB) is itself ignored, with a warning.
    many = b"".join(b"pattern-%d\n" % i for i in range(120_000))
    remote.commit([*files, Entry(b".treecastignore", many)])
    snap, delivered = pipeline.sync()
    assert snap.file_count == 4 and delivered.created == 4
    assert receiver.files() == expected_files([*files, Entry(b".treecastignore", many)])

    # Ignore rules that are not valid UTF-8 or not valid patterns do not break a sync.
    remote.commit([*files, Entry(b".treecastignore", b"\xff\xfe[\n!\n\\\n*.bin\n")])
    snap, delivered = pipeline.sync()
    assert delivered.status == "synced"
    assert set(receiver.files()) == {"README.md", "docs/a.md", ".treecastignore"}
    assert "ignoring the invalid .treecastignore pattern '!'" in caplog.text

    # A watch glob stored before the CLI checked gitignore syntax does not break delivery.
    with session_scope(settings.database_url) as session:
        watch = session.get(Watch, (pipeline.app_id, pipeline.repository_id))
        assert watch is not None
        watch.path_globs = json.dumps(["!", "docs/**"])
        session.add(watch)
    remote.commit([*files, Entry(b"docs/b.md", b"b\n")])
    snap, delivered = pipeline.sync()
    assert (delivered.status, delivered.created) == ("synced", 1)
    assert "docs/b.md" in receiver.files()


# -- a 200 MB file: bounded time and memory ----------------------------------------------

BIG_SIZE = 200 * 1024 * 1024


def _vm_hwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def deliver_in_child(spec_file: str) -> None:
    """(In a subprocess) deliver one commit and print idle and peak VmHWM as JSON."""
    spec = json.loads(Path(spec_file).read_text())
    settings = Settings(**{**spec["settings"], "data_dir": Path(spec["settings"]["data_dir"])})
    from treecast.db import engine_for
    from treecast.remote_access import ensure_commit

    engine_for(settings.database_url)
    ensure_commit(settings, spec["repository_id"], spec["commit"])
    idle = _vm_hwm_kib()
    started = time.perf_counter()
    result = ActivityEnvironment().run(
        DeliveryActivities(settings).deliver_changes,
        DeliverInput(spec["app_id"], spec["repository_id"], spec["commit"]),
    )
    print(
        json.dumps(
            {
                "status": result.status,
                "created": result.created,
                "idle_kib": idle,
                "peak_kib": _vm_hwm_kib(),
                "seconds": time.perf_counter() - started,
            }
        )
    )


@pytest.mark.slow  # half a minute of CPU: in `make test`, not `make unit`
def test_a_200_mb_file_is_snapshotted_and_delivered_in_bounded_memory(
    settings: Settings, tmp_path: Path, receiver: Receiver, receiver_secret: str
) -> None:
    block = hashlib.sha256(b"seed").digest() * 512 + bytes(range(256)) * 32  # 24 KiB, has NULs
    remote = Remote(tmp_path / "remote.git")
    started = time.monotonic()
    commit = remote.commit([Entry(b"small.txt", b"s\n")], big=(b"huge.bin", BIG_SIZE, block))
    built = time.monotonic() - started
    pipeline = Pipeline(settings, remote, receiver, receiver_secret)
    started = time.monotonic()
    snap = pipeline.snapshot()
    snapshotted = time.monotonic() - started
    assert snap.commit == commit and snap.total_bytes == BIG_SIZE + 2

    spec = {
        "settings": {**settings.__dict__, "data_dir": str(settings.data_dir)},
        "app_id": pipeline.app_id,
        "repository_id": pipeline.repository_id,
        "commit": commit,
    }
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    code = f"from tests.hostile.test_reliability_input import deliver_in_child; deliver_in_child({str(spec_file)!r})"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    assert (figures["status"], figures["created"]) == ("synced", 2)
    above_idle_mb = (figures["peak_kib"] - figures["idle_kib"]) / 1024
    print(
        f"200 MB file: fast-import {built:.1f} s, snapshot {snapshotted:.1f} s, "
        f"delivery {figures['seconds']:.1f} s, peak {figures['peak_kib'] / 1024:.0f} MiB, "
        f"{above_idle_mb:.0f} MiB above idle"
    )
    assert above_idle_mb < 64

    digest = hashlib.sha256()
    left = BIG_SIZE
    while left:
        piece = block[: min(left, len(block))]
        digest.update(piece)
        left -= len(piece)
    mirrored = hashlib.sha256()
    with (receiver.mirror / "huge.bin").open("rb") as handle:
        for piece in iter(lambda: handle.read(1 << 20), b""):
            mirrored.update(piece)
    assert mirrored.hexdigest() == digest.hexdigest()
    chunks = [r for r in receiver.file_requests() if r.path == "huge.bin"]
    assert len(chunks) == chunks[0].payload["file"]["chunk"]["total"] > 500


# -- 100,000 files ----------------------------------------------------------------------


def many_files(count: int) -> Iterator[Entry]:
    for i in range(count):
        yield Entry(b"d%03d/f%05d.txt" % (i // 100, i), b"file %d\n" % i)


@pytest.mark.slow
def test_100000_files_snapshot_changes_and_a_delivered_subset(
    settings: Settings, tmp_path: Path, receiver: Receiver, receiver_secret: str
) -> None:
    count = 100_000
    remote = Remote(tmp_path / "remote.git")
    started = time.monotonic()
    commit = remote.commit(many_files(count))
    built = time.monotonic() - started
    # App one watches everything; app two (checked end to end) watches 1,000 of the files.
    pipeline = Pipeline(settings, remote, receiver, receiver_secret)
    subset_app = add_watch(settings, receiver.url, [receiver_secret], pipeline.repository_id)
    with session_scope(settings.database_url) as session:
        watch = session.get(Watch, (subset_app, pipeline.repository_id))
        assert watch is not None
        watch.path_globs = json.dumps(["d00[0-9]/**"])
        session.add(watch)

    started = time.monotonic()
    snap = pipeline.snapshot()
    snapshotted = time.monotonic() - started
    assert (snap.commit, snap.file_count) == (commit, count)

    started = time.monotonic()
    with session_scope(settings.database_url) as session:
        access = load_access(settings, session, pipeline.repository_id)
        cache = RepositoryCache(settings, pipeline.repository_id)
        changes = load_changes(session, cache, access, pipeline.app_id, commit).changes
    computed = time.monotonic() - started
    assert len(changes) == count and {c.kind for c in changes} == {ChangeKind.CREATE}
    assert [c.path for c in changes] == sorted(c.path for c in changes)

    started = time.monotonic()
    result = pipeline.deliver(commit, app_id=subset_app)
    delivered = time.monotonic() - started
    assert (result.status, result.created) == ("synced", 1000)
    expected = {e.path.decode(): e.data for e in many_files(count) if e.path[:4] < b"d010"}
    assert receiver.files() == expected
    print(
        f"100,000 files: fast-import {built:.1f} s, snapshot {snapshotted:.1f} s, "
        f"load_changes {computed:.1f} s, 1,000 delivered in {delivered:.1f} s"
    )
    assert snapshotted < 30 and computed < 15
