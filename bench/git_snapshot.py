"""Benchmark of git snapshots and change computation against bare git and a Docora-style scan.

Run: `python -m bench.git_snapshot` (10,000 and 100,000 files) or `--quick` (2,000 files).

For each size it builds a synthetic repository with `git fast-import`, syncs it,
gives one app a ledger of every file, then measures, side by side:

* a poll when nothing changed: our snapshot + load_changes, against
  `git fetch` + `git diff-tree` doing the same work with bare git;
* one changed file: the same pair, after a one-file commit;
* the one-file change found the Docora way: walk a checkout, read and SHA-256
  every file, compare with the ledger;
* the peak memory of a fresh process listing the whole tree.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import insert

GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "LC_ALL": "C",
}


def git(cwd: Path, *args: str, input: bytes | None = None) -> str:
    out = subprocess.run(
        ["git", *args], cwd=cwd, env=GIT_ENV, input=input, capture_output=True, check=True
    )
    return out.stdout.decode().strip()


def file_path(i: int) -> str:
    return f"src/d{i % 97:02d}/e{i % 13:02d}/file{i:06d}.txt"


def file_content(i: int, version: int, rng: random.Random) -> bytes:
    # Text files of 200 B to ~4 KB (about 2 KB on average), like a documentation tree.
    words = " ".join(f"w{rng.randrange(10_000)}" for _ in range(rng.randrange(30, 600)))
    return f"file {i} version {version}\n{words}\n".encode()


def build_remote(remote: Path, count: int) -> None:
    """A bare repository with `count` files in one commit, via fast-import."""
    git(remote.parent, "init", "--bare", "-q", "--initial-branch=main", str(remote))
    rng = random.Random(count)
    parts: list[bytes] = []
    for i in range(count):
        data = file_content(i, 0, rng)
        parts.append(b"blob\nmark :%d\ndata %d\n%s\n" % (i + 1, len(data), data))
    parts.append(
        b"commit refs/heads/main\ncommitter Bench <b@e> 1700000000 +0000\ndata 5\nbase\n\n"
    )
    for i in range(count):
        parts.append(b"M 100644 :%d %s\n" % (i + 1, file_path(i).encode()))
    git(remote, "fast-import", "--quiet", input=b"".join(parts))


def change_one_file(remote: Path, i: int, version: int) -> str:
    """Commit a new version of one file on the remote's main; returns the commit."""
    data = file_content(i, version, random.Random(version))
    stamp = 1700000000 + version
    stream = (
        b"commit refs/heads/main\ncommitter Bench <b@e> %d +0000\ndata 7\nchange\n"
        b"from refs/heads/main^0\nM 100644 inline %s\ndata %d\n%s\n"
        % (stamp, file_path(i).encode(), len(data), data)
    )
    git(remote, "fast-import", "--quiet", input=stream)
    return git(remote, "rev-parse", "refs/heads/main")


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def docora_scan(checkout: Path, ledger: dict[str, str]) -> list[str]:
    """Docora's change detection: walk the checkout, read + SHA-256 every file, compare."""
    seen: dict[str, str] = {}
    for root, dirs, files in os.walk(checkout):
        if ".git" in dirs:
            dirs.remove(".git")
        for name in files:
            full = os.path.join(root, name)
            with open(full, "rb") as handle:
                seen[os.path.relpath(full, checkout)] = hashlib.sha256(handle.read()).hexdigest()
    changed = [p for p, sha in seen.items() if ledger.get(p) != sha]
    changed += [p for p in ledger if p not in seen]
    return changed


def _peak_rss_kib() -> int:
    # VmHWM starts afresh at exec; ru_maxrss would carry over the forking parent's peak.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def memory_probe(cache: str, commit: str) -> None:
    """Child process: peak RSS before and after listing the whole tree (printed as KiB)."""
    from treecast.config import load_settings
    from treecast.gitcache.tree import list_tree

    settings = load_settings(
        {"TREECAST_DATA_DIR": str(Path(cache).parent.parent), "TREECAST_ALLOW_FILE_URLS": "1"}
    )
    before = _peak_rss_kib()
    listing = list_tree(settings, Path(cache), commit)
    after = _peak_rss_kib()
    print(before, after, listing.stats.file_count)


def run_size(count: int, rounds: int, workdir: Path) -> dict[str, float]:
    from sqlmodel import Session

    from activities.git import GitActivities
    from models.git import SnapshotInput
    from models.tables import App, DeliveredFile, Repository, Watch
    from treecast.config import load_settings
    from treecast.crypto import generate_key
    from treecast.db import engine_for
    from treecast.delivery.loading import load_changes
    from treecast.gitcache.objects import BlobReader
    from treecast.gitcache.repository import RepositoryCache
    from treecast.remote_access import load_access

    root = workdir / f"n{count}"
    root.mkdir()
    remote = root / "remote.git"
    t = timed(lambda: build_remote(remote, count))
    print(f"\n== {count:,} files (built with fast-import in {t:.1f} s)")
    url = f"file://{remote}"
    settings = load_settings(
        {
            "TREECAST_DATA_DIR": str(root / "data"),
            "TREECAST_SECRET_KEY": generate_key(),
            "TREECAST_ALLOW_FILE_URLS": "1",
        }
    )
    engine = engine_for(settings.database_url)
    with Session(engine) as session:
        session.add(Repository(id="repo_bench", url=url, ref=""))
        session.add(App(id="app_bench", name="b", base_url="http://x", secrets_encrypted="-"))
        session.commit()
        session.add(Watch(app_id="app_bench", repository_id="repo_bench"))
        session.commit()
    acts = GitActivities(settings)

    first_sync = timed(lambda: acts.snapshot_repository(SnapshotInput("repo_bench")))
    base = git(remote, "rev-parse", "main")
    cache = settings.git_cache_dir / "repo_bench.git"
    print(f"first sync (shallow clone + full listing): {first_sync * 1000:.0f} ms")

    # The app has everything at `base`: its ledger holds every file's blob and SHA-256.
    checkout = root / "checkout"
    git(root, "clone", "-q", url, str(checkout))
    listing = subprocess.run(
        ["git", "ls-tree", "-r", "-z", base], cwd=cache, capture_output=True, check=True
    ).stdout
    blobs = {}
    for rec in listing.split(b"\0"):
        if rec:
            meta, _, raw = rec.partition(b"\t")
            blobs[raw.decode()] = meta.split()[2].decode()
    ledger_rows = []
    ledger: dict[str, str] = {}
    for path, blob in blobs.items():
        sha = hashlib.sha256((checkout / path).read_bytes()).hexdigest()
        ledger[path] = sha
        ledger_rows.append(
            {
                "app_id": "app_bench",
                "repository_id": "repo_bench",
                "path": path,
                "blob_id": blob,
                "sha256": sha,
            }
        )
    with Session(engine) as session:
        session.execute(insert(DeliveredFile), ledger_rows)
        watch = session.get(Watch, ("app_bench", "repo_bench"))
        assert watch is not None
        watch.delivered_commit = base
        session.add(watch)
        session.commit()

    # Bare git baseline: its own shallow clone at the same commit, then plain fetches
    # (what Treecast does: only the first fetch into an empty cache is shallow).
    bare = root / "bare.git"
    git(root, "init", "--bare", "-q", str(bare))
    git(bare, "fetch", "-q", "--no-tags", "--depth=1", url, "+refs/heads/main:refs/heads/main")
    fetch = ["fetch", "-q", "--no-tags", url, "+refs/heads/main:refs/heads/main"]

    compute_only: list[float] = []
    repo_cache = RepositoryCache(settings, "repo_bench")
    with Session(engine) as session:
        access = load_access(settings, session, "repo_bench")

    def ours() -> int:
        result = acts.snapshot_repository(SnapshotInput("repo_bench"))
        started = time.perf_counter()
        with Session(engine) as session:
            n = len(load_changes(session, repo_cache, access, "app_bench", result.commit).changes)
        compute_only.append(time.perf_counter() - started)
        return n

    def bare_git(old: str) -> None:
        git(bare, *fetch)
        new = git(bare, "rev-parse", "main")
        git(bare, "diff-tree", "-r", "-z", "--no-renames", old, new)

    poll_ours, poll_bare = [], []
    for _ in range(rounds):
        poll_ours.append(timed(ours))
        poll_bare.append(timed(lambda: bare_git(base)))

    change_ours, change_bare, scan = [], [], []
    compute_only.clear()
    previous = base
    rng = random.Random(1)
    for version in range(1, rounds + 1):
        target = rng.randrange(count)
        head = change_one_file(remote, target, version)
        # Alternate who goes first so neither always meets a warmer page cache.
        if version % 2:
            change_ours.append(timed(ours))
            change_bare.append(timed(lambda prev=previous: bare_git(prev)))  # type: ignore[misc]
        else:
            change_bare.append(timed(lambda prev=previous: bare_git(prev)))  # type: ignore[misc]
            change_ours.append(timed(ours))
        with Session(engine) as session:
            todo = load_changes(session, repo_cache, access, "app_bench", head).changes
            assert [c.path for c in todo] == [file_path(target)], todo
            with BlobReader(cache) as reader:
                assert todo[0].blob_id is not None
                sha = hashlib.sha256(reader.read(todo[0].blob_id)).hexdigest()
            row = session.get(DeliveredFile, ("app_bench", "repo_bench", file_path(target)))
            assert row is not None
            row.blob_id, row.sha256 = todo[0].blob_id, sha
            session.add(row)
            watch = session.get(Watch, ("app_bench", "repo_bench"))
            assert watch is not None
            watch.delivered_commit = head
            session.add(watch)
            session.commit()
        # Docora: the checkout is updated (not timed), then every file is re-read and hashed.
        git(checkout, "pull", "-q", "--ff-only")
        found: list[str] = []
        scan.append(timed(lambda found=found: found.extend(docora_scan(checkout, ledger))))  # type: ignore[misc]
        assert found == [file_path(target)], found
        ledger[file_path(target)] = sha
        previous = head

    probe = subprocess.run(
        [sys.executable, "-m", "bench.git_snapshot", "--memory-probe", str(cache), previous],
        capture_output=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    ).stdout.split()
    rss_before, rss_after = int(probe[0]) / 1024, int(probe[1]) / 1024

    med = statistics.median
    figures = {
        "files": count,
        "first_sync_ms": first_sync * 1000,
        "poll_ours_ms": med(poll_ours) * 1000,
        "poll_bare_ms": med(poll_bare) * 1000,
        "change_ours_ms": med(change_ours) * 1000,
        "change_bare_ms": med(change_bare) * 1000,
        "docora_ms": med(scan) * 1000,
        "compute_ms": med(compute_only) * 1000,
        "rss_before_mib": rss_before,
        "rss_peak_mib": rss_after,
    }
    print(
        f"poll, nothing changed:  ours {figures['poll_ours_ms']:.0f} ms, "
        f"bare git {figures['poll_bare_ms']:.0f} ms, "
        f"ratio {figures['poll_ours_ms'] / figures['poll_bare_ms']:.2f}x"
    )
    print(
        f"one file changed:       ours {figures['change_ours_ms']:.0f} ms, "
        f"bare git {figures['change_bare_ms']:.0f} ms, "
        f"ratio {figures['change_ours_ms'] / figures['change_bare_ms']:.2f}x"
    )
    print(
        f"Docora-style re-hash:   {figures['docora_ms']:.0f} ms "
        f"({figures['docora_ms'] / figures['change_ours_ms']:.0f}x slower than ours)"
    )
    print(
        f"change computation alone: {figures['compute_ms']:.1f} ms "
        f"(Docora-style re-hash {figures['docora_ms'] / figures['compute_ms']:.0f}x slower)"
    )
    print(
        f"peak RSS listing all files: {rss_after:.0f} MiB "
        f"(process at start {rss_before:.0f} MiB, +{rss_after - rss_before:.0f} MiB)"
    )
    return figures


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="one small repository (2,000 files)")
    parser.add_argument("--rounds", type=int, default=7, help="measurements per figure")
    parser.add_argument("--sizes", default="", help="comma-separated file counts")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory")
    parser.add_argument(
        "--memory-probe", nargs=2, metavar=("CACHE", "COMMIT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.memory_probe:
        memory_probe(*args.memory_probe)
        return
    sizes = [2000] if args.quick else [10_000, 100_000]
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    rounds = 3 if args.quick else args.rounds
    workdir = Path(tempfile.mkdtemp(prefix="treecast-bench-"))
    print(
        f"git {git(workdir, '--version').split()[-1]}, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs, {rounds} rounds (medians)"
    )
    try:
        for count in sizes:
            run_size(count, rounds, workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
