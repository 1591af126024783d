"""Repository contents benchmark: fetching by what is watched, an LFS object's memory, a
submodule bump's cost.

    python -m bench.repository_contents           # 200 MB src/, a 100 MB LFS object
    python -m bench.repository_contents --quick   # 20 MB src/, a 10 MB LFS object

1. Partial clone: a repository with `--src-mb` MB of incompressible files in `src/` and a
   small `docs/`, served by `git http-backend` (uploadpack.allowFilter) on 127.0.0.1. Side
   by side, `--rounds` times: a full clone (`git clone --bare --depth=1`, what a cache
   without filter fetches), `git clone --filter=blob:none --sparse` + `git sparse-checkout
   set docs`, and Treecast's first sync of a `docs/**` watch (the snapshot activity, then
   the delivery activity to the example receiver in its own process; then the same to an
   app with batch delivery, the 20 files in one request), each after a small repository's
   first sync in the same database (a worker's engine is warm). Bytes are the
   server's answers; targets: Treecast's bytes <= 5 % of the full clone's, its time <=
   1.2x the sparse clone's.
2. LFS memory: a worker subprocess delivers one `--lfs-mb` MB LFS object (fetched through
   the Batch API, verified, chunked to the receiver); its peak resident memory (VmHWM)
   against the same process idle just before (target: under 64 MB above idle).
3. Submodule bump: a repository with a submodule of `--sub-files` files; the first
   delivery, then bumps changing 1 and 10 files inside it: requests and time follow the
   change.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.delivery import ReceiverProcess, _deliver, _settings, measured_child, run_child


def _snapshot(settings: Any, repository_id: str) -> Any:
    from temporalio.testing import ActivityEnvironment

    from activities.git import GitActivities
    from models.git import SnapshotInput

    return ActivityEnvironment().run(
        GitActivities(settings).snapshot_repository, SnapshotInput(repository_id)
    )


def _git(cwd: Path, *args: str) -> str:
    from tests.support.gitrepos import git

    return git(cwd, *args)


# -- 1. fetching by what is watched ------------------------------------------------------


def partial(root: Path, src_mb: int, rounds: int) -> dict[str, Any]:
    """Full clone, sparse clone and Treecast's docs/** first sync, side by side."""
    from tests.support.githttp import git_http_server
    from tests.support.gitrepos import WorkRepo
    from tests.support.receiver_fixture import register
    from treecast.crypto import generate_webhook_secret

    repo = WorkRepo(root / "srv" / "monorepo")
    _git(repo.remote, "config", "uploadpack.allowFilter", "true")
    for index in range(src_mb // 4):
        repo.write(f"src/part{index:03}.bin", os.urandom(4 << 20))
    for index in range(20):
        repo.write(f"docs/page{index:02}.md", f"# Page {index}\n\n" + "text " * 200)
    commit = repo.commit("monorepo")
    # A worker's database engine is warm (SQLAlchemy compiled its statements at its first
    # sync); each round's new database is not: a small repository's first sync warms it.
    warm = WorkRepo(root / "srv" / "warmup")
    _git(warm.remote, "config", "uploadpack.allowFilter", "true")
    warm.write("notes/warm.md", "warm\n")
    warm_commit = warm.commit("warm-up")
    secret = generate_webhook_secret()
    rows: dict[str, list[tuple[int, float]]] = {
        "full": [],
        "sparse": [],
        "treecast": [],
        "treecast_batch": [],
    }
    with git_http_server(root / "srv", None) as server:
        url = server.url("monorepo/remote.git")
        warm_url = server.url("warmup/remote.git")

        def measured(step: Any, *args: Any) -> tuple[int, float]:
            before, started = server.bytes_sent, time.perf_counter()
            step(*args)
            return server.bytes_sent - before, time.perf_counter() - started

        def full(base: Path) -> None:
            _git(base, "clone", "-q", "--bare", "--depth=1", url, "full.git")

        def sparse(base: Path) -> None:
            _git(base, "clone", "-q", "--filter=blob:none", "--sparse", url, "sparse")
            _git(base / "sparse", "sparse-checkout", "set", "docs")

        for round_number in range(rounds):
            base = root / f"round{round_number}"
            base.mkdir()
            rows["full"].append(measured(full, base))
            rows["sparse"].append(measured(sparse, base))
            # The same first sync to an app with one acknowledged request per file (the
            # default), then to an app with batch delivery on (the files in one request).
            for row, batch in (("treecast", False), ("treecast_batch", True)):
                mirror = base / f"mirror-{row}"
                receiver = ReceiverProcess(secret, mirror)
                try:
                    settings = _settings(base / f"data-{row}")
                    warm_app, warm_id = register(
                        settings, receiver.url, [secret], warm_url, path_globs=["notes/**"]
                    )
                    app_id, repository_id = register(
                        settings, receiver.url, [secret], url, path_globs=["docs/**"]
                    )
                    if batch:
                        _batch_on(settings, warm_app)
                        _batch_on(settings, app_id)
                    _first_sync(settings, warm_app, warm_id, warm_commit, [])
                    phases = _PHASES if not batch else _BATCH_PHASES
                    rows[row].append(
                        measured(_first_sync, settings, app_id, repository_id, commit, phases)
                    )
                finally:
                    receiver.stop()
                mirrored = sorted(p.name for p in (mirror / "docs").iterdir())
                assert len(mirrored) == 20 and not (mirror / "src").exists()
                assert (mirror / "notes" / "warm.md").exists()
    figures: dict[str, Any] = {"src_mb": src_mb, "rounds": rounds}
    for name, values in rows.items():
        figures[name] = {
            "bytes": int(statistics.median(b for b, _ in values)),
            "seconds": round(statistics.median(s for _, s in values), 3),
        }
    figures["treecast"]["snapshot_seconds"] = round(statistics.median(p[0] for p in _PHASES), 3)
    figures["treecast"]["delivery_seconds"] = round(statistics.median(p[1] for p in _PHASES), 3)
    figures["bytes_ratio"] = round(figures["treecast"]["bytes"] / figures["full"]["bytes"], 4)
    figures["treecast_batch"]["delivery_seconds"] = round(
        statistics.median(p[1] for p in _BATCH_PHASES), 3
    )
    figures["time_vs_sparse"] = round(
        figures["treecast"]["seconds"] / figures["sparse"]["seconds"], 2
    )
    figures["batch_time_vs_sparse"] = round(
        figures["treecast_batch"]["seconds"] / figures["sparse"]["seconds"], 2
    )
    return figures


_PHASES: list[tuple[float, float]] = []  # (snapshot, delivery) seconds of each first sync
_BATCH_PHASES: list[tuple[float, float]] = []  # the same for the app with batch delivery


def _batch_on(settings: Any, app_id: str) -> None:
    from models.tables import App
    from treecast.db import session_scope

    with session_scope(settings.database_url) as session:
        app = session.get(App, app_id)
        assert app is not None
        app.batch = True
        session.add(app)


def _first_sync(
    settings: Any,
    app_id: str,
    repository_id: str,
    commit: str,
    phases: list[tuple[float, float]],
) -> None:
    started = time.perf_counter()
    _snapshot(settings, repository_id)
    fetched = time.perf_counter()
    result = _deliver(settings, app_id, repository_id, commit)
    assert result.status == "synced", result
    phases.append((fetched - started, time.perf_counter() - fetched))


# -- 2. an LFS object's memory -------------------------------------------------------------


def lfs_memory_child(root: Path) -> dict[str, Any]:
    """(In a subprocess) deliver the prepared LFS file; report idle and peak VmHWM."""
    from models.tables import Watch
    from treecast.db import session_scope

    def lfs_on(settings: Any, app_id: str, repository_id: str) -> None:
        with session_scope(settings.database_url) as session:
            watch = session.get(Watch, (app_id, repository_id))
            assert watch is not None
            watch.lfs = True
            session.add(watch)

    return measured_child(root, prepare=lfs_on)[1]


def lfs_memory(root: Path, size_mb: int) -> dict[str, Any]:
    """Peak memory of a worker process delivering one `size_mb` MB LFS object."""
    from tests.support.githttp import git_http_server
    from tests.support.gitrepos import WorkRepo
    from tests.support.lfsserver import LfsStore
    from treecast.crypto import generate_webhook_secret

    store = LfsStore(root / "objects")
    store.root.mkdir(parents=True)
    digest = hashlib.sha256()
    staging = root / "object.tmp"
    with staging.open("wb") as handle:
        for _ in range(size_mb):
            piece = os.urandom(1 << 20)
            digest.update(piece)
            handle.write(piece)
    oid = digest.hexdigest()
    staging.rename(store.path(oid))
    repo = WorkRepo(root / "srv" / "assets")
    repo.write(".gitattributes", "*.bin filter=lfs diff=lfs merge=lfs -text\n")
    repo.write(
        "video.bin",
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size_mb << 20}\n",
    )
    commit = repo.commit("an LFS object")
    secret = generate_webhook_secret()
    with git_http_server(root / "srv", None, lfs=store) as server:
        receiver = ReceiverProcess(secret, root / "mirror")
        try:
            spec = {
                "url": receiver.url,
                "secret": secret,
                "repo_url": server.url("assets/remote.git"),
                "commit": commit,
            }
            argv = ("-m", "bench.repository_contents", "--lfs-child", str(root))
            figures = run_child(root, spec, *argv)
        finally:
            receiver.stop()
    mirrored = hashlib.sha256((root / "mirror" / "video.bin").read_bytes()).hexdigest()
    assert mirrored == oid, "the mirrored file is not the LFS object"
    figures["file_mb"] = size_mb
    figures["above_idle_mb"] = round((figures["peak_kib"] - figures["idle_kib"]) / 1024, 1)
    return figures


# -- 3. a submodule bump ------------------------------------------------------------------------


def submodule_bump(root: Path, files: int) -> dict[str, Any]:
    """Requests and time of the first delivery and of bumps changing 1 and 10 files."""
    from models.tables import Watch
    from tests.support.gitrepos import WorkRepo
    from tests.support.receiver_fixture import register
    from treecast.crypto import generate_webhook_secret
    from treecast.db import session_scope

    sub = WorkRepo(root / "lib")
    for index in range(files):
        sub.write(f"src/file{index:05}.txt", f"file {index}\n")
    sub.commit("library")
    parent = WorkRepo(root / "app")
    parent.write("README.md", "app\n")
    file_ok = ("-c", "protocol.file.allow=always")
    _git(parent.work, *file_ok, "submodule", "add", "-q", "../../lib/remote.git", "lib")
    commits = [parent.commit("with lib")]
    for changed in (1, 10):
        for index in range(changed):
            sub.write(f"src/file{index:05}.txt", f"file {index}, changed {changed}\n")
        sub.commit(f"{changed} changed")
        _git(parent.work, *file_ok, "submodule", "update", "-q", "--remote", "lib")
        commits.append(parent.commit(f"bump: {changed} changed"))
    secret = generate_webhook_secret()
    receiver = ReceiverProcess(secret, root / "mirror")
    figures: dict[str, Any] = {"files": files}
    try:
        settings = _settings(root / "data")
        app_id, repository_id = register(settings, receiver.url, [secret], parent.url)
        with session_scope(settings.database_url) as session:
            watch = session.get(Watch, (app_id, repository_id))
            assert watch is not None
            watch.submodules = "recursive"
            session.add(watch)
        for name, commit in zip(("first", "bump_1", "bump_10"), commits, strict=True):
            started = time.perf_counter()
            result = _deliver(settings, app_id, repository_id, commit)
            figures[name] = {
                "requests": result.created + result.updated + result.deleted,
                "seconds": round(time.perf_counter() - started, 3),
            }
    finally:
        receiver.stop()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--src-mb", type=int)
    parser.add_argument("--lfs-mb", type=int)
    parser.add_argument("--sub-files", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=["partial", "lfs", "submodules"], action="append")
    parser.add_argument("--lfs-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.lfs_child:
        print(json.dumps(lfs_memory_child(args.lfs_child)))
        return 0
    src_mb = args.src_mb or (20 if args.quick else 200)
    lfs_mb = args.lfs_mb or (10 if args.quick else 100)
    parts = args.only or ["partial", "lfs", "submodules"]
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="treecast-bench-contents-") as tmp:
        if "partial" in parts:
            fig = report["partial"] = partial(Path(tmp) / "partial", src_mb, args.rounds)
            print(
                f"partial clone, {src_mb} MB src/, docs/** watch (median of {args.rounds}): "
                f"full clone {fig['full']['bytes']:,} B in {fig['full']['seconds']} s; "
                f"sparse clone {fig['sparse']['bytes']:,} B in {fig['sparse']['seconds']} s; "
                f"Treecast first sync {fig['treecast']['bytes']:,} B in "
                f"{fig['treecast']['seconds']} s (snapshot {fig['treecast']['snapshot_seconds']}"
                f" s, delivery {fig['treecast']['delivery_seconds']} s; "
                f"{fig['bytes_ratio']:.2%} of the full "
                f"clone's bytes, {fig['time_vs_sparse']}x the sparse clone's time); "
                f"to an app with batch delivery {fig['treecast_batch']['seconds']} s (delivery "
                f"{fig['treecast_batch']['delivery_seconds']} s; "
                f"{fig['batch_time_vs_sparse']}x)"
            )
        if "lfs" in parts:
            fig = report["lfs"] = lfs_memory(Path(tmp) / "lfs", lfs_mb)
            print(
                f"LFS object of {lfs_mb} MB delivered in {fig['seconds']} s, peak memory "
                f"{fig['above_idle_mb']} MB above idle"
            )
        if "submodules" in parts:
            fig = report["submodules"] = submodule_bump(Path(tmp) / "sub", args.sub_files)
            print(
                f"submodule of {fig['files']} files: first delivery "
                f"{fig['first']['requests']} files in {fig['first']['seconds']} s; bump of 1: "
                f"{fig['bump_1']['requests']} in {fig['bump_1']['seconds']} s; bump of 10: "
                f"{fig['bump_10']['requests']} in {fig['bump_10']['seconds']} s"
            )
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
