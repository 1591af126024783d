"""Batch delivery benchmark: a first sync at internet round trips, one-at-a-time against batch.

    python -m bench.batch                 # everything below (about 10 minutes on 2 cores)
    python -m bench.batch --quick         # small counts, a 20 MB file (about 2 minutes)
    python -m bench.batch --only internet # or: loopback, memory

1. Internet: the example receiver, in its own process, adds a fixed delay to every
   answer (10, 50 and 100 ms) and so stands for an app that far away. One app, a first
   sync of small text files (~500 B), through `deliver_changes` (an ActivityEnvironment,
   SQLite ledger), once one request per file and once with batches on, side by side
   in one run. One-at-a-time runs a smaller count (`--single-files`, default 300: at
   50 ms it cannot go faster than 20 files/s) and its rate is reported; batch runs
   `--batch-files` (100,000 at 50 ms by default, 20,000 at the other delays).
   Targets at 50 ms: batch >= 20x one-at-a-time, 100,000 files in under 3 minutes.
2. Loopback: `bench.delivery.throughput`, one-at-a-time delivery against a bare httpx
   loop posting prebuilt bodies (target ratio >= 0.9).
3. Memory: peak resident memory of a worker process delivering a 200 MB binary (chunked,
   `bench.delivery.memory`) and one batch of the largest size (`TREECAST_BATCH_MAX_BYTES`
   of ~100 KB binary files), above the same process idle (target < 64 MB each).

Nothing here runs in `make test`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.delivery import ReceiverProcess, _settings, measured_child, run_child

SMALL_TEXT = "lorem ipsum " * 40
OVERRIDES: dict[str, int] = {}  # settings fields set from the command line


def build_remote(remote: Path, count: int, make: Any = None) -> str:
    """A bare repository with `count` files in one commit (fast-import); returns the commit."""
    env = {
        **os.environ,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "LC_ALL": "C",
    }

    def git(*args: str, input: bytes | None = None) -> str:
        out = subprocess.run(
            ["git", *args], cwd=remote, env=env, input=input, capture_output=True, check=True
        )
        return out.stdout.decode().strip()

    remote.mkdir(parents=True)
    git("init", "--bare", "-q", "--initial-branch=main", ".")
    parts: list[bytes] = []
    paths: list[bytes] = []
    for i in range(count):
        path, data = make(i) if make else (
            f"docs/{i % 100:02d}/page-{i:06d}.md", f"# Page {i}\n\n{SMALL_TEXT}".encode())  # fmt: skip
        parts.append(b"blob\nmark :%d\ndata %d\n%s\n" % (i + 1, len(data), data))
        paths.append(path.encode())
    parts.append(
        b"commit refs/heads/main\ncommitter Bench <b@e> 1700000000 +0000\ndata 5\nbase\n\n"
    )
    parts.extend(b"M 100644 :%d %s\n" % (i + 1, p) for i, p in enumerate(paths))
    git("fast-import", "--quiet", input=b"".join(parts))
    return git("rev-parse", "refs/heads/main")


class DelayedReceiver(ReceiverProcess):
    """The example receiver in its own process, answering every request `delay_ms` late."""

    PROBE_TIMEOUT = 5.0

    def __init__(self, secret: str, mirror: Path, delay_ms: float) -> None:
        self.delay_ms = delay_ms
        super().__init__(secret, mirror)

    def command(self, secret: str, mirror: Path) -> list[str]:
        return ["-m", "bench.batch", "--receiver-child", str(self.port), secret, str(mirror),
                str(self.delay_ms)]  # fmt: skip


def receiver_child(port: int, secret: str, mirror: Path, delay_ms: float) -> None:
    """(In a subprocess) serve the example receiver, every answer `delay_ms` late."""
    from examples.receiver import Receiver

    receiver = Receiver([secret], mirror, port=port)
    handle = receiver.handle
    extra = delay_ms / 1000.0

    def delayed(event: str, body: bytes, headers: dict[str, str], raw_path: str = "") -> Any:
        status, answer_headers, answer, delay = handle(event, body, headers, raw_path)
        return status, answer_headers, answer, delay + extra

    receiver.handle = delayed  # type: ignore[method-assign]
    receiver.serve_forever()


def _set_batch(settings: Any, app_id: str, on: bool) -> None:
    from tests.support.registering import blocking
    from treecast.service.core import TreecastService

    blocking(TreecastService(settings).apps.update(app_id, batch=on))


def _deliver(settings: Any, app_id: str, repository_id: str, commit: str) -> Any:
    from temporalio.testing import ActivityEnvironment

    from activities.delivery import DeliveryActivities
    from models.delivery import DeliverInput

    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: None
    return env.run(
        DeliveryActivities(settings).deliver_changes, DeliverInput(app_id, repository_id, commit)
    )


def first_sync(root: Path, files: int, delay_ms: float, batch: bool) -> dict[str, Any]:
    """One app's first sync of `files` small files to a receiver `delay_ms` away."""
    from tests.support.receiver_fixture import register
    from treecast.crypto import generate_webhook_secret
    from treecast.remote_access import ensure_commit

    root.mkdir(parents=True)
    started = time.perf_counter()
    commit = build_remote(root / "remote.git", files)
    built = time.perf_counter() - started
    secret = generate_webhook_secret()
    settings = _settings(root / "data").model_copy(update=OVERRIDES)
    mirror = root / "mirror"
    receiver = DelayedReceiver(secret, mirror, delay_ms)
    try:
        app_id, repository_id = register(
            settings, receiver.url, [secret], (root / "remote.git").as_uri()
        )
        _set_batch(settings, app_id, batch)
        ensure_commit(settings, repository_id, commit)  # what the snapshot does
        started = time.perf_counter()
        result = _deliver(settings, app_id, repository_id, commit)
        seconds = time.perf_counter() - started
    finally:
        receiver.stop()
    assert result.created == files, result
    mirrored = sum(1 for p in mirror.rglob("*") if p.is_file())
    assert mirrored == files, f"mirror has {mirrored} of {files} files"
    return {
        "mode": "batch" if batch else "one-at-a-time",
        "delay_ms": delay_ms,
        "files": files,
        "seconds": round(seconds, 2),
        "files_per_second": round(files / seconds, 1),
        "repo_built_seconds": round(built, 1),
        "batch_max_files": settings.batch_max_files,
        "batch_max_bytes": settings.batch_max_bytes,
    }


def internet(
    root: Path, delays: list[float], single_files: int, batch_files: dict[float, int]
) -> list[dict[str, Any]]:
    rows = []
    for delay in delays:
        single = first_sync(root / f"single-{delay:g}", single_files, delay, batch=False)
        batched = first_sync(root / f"batch-{delay:g}", batch_files[delay], delay, batch=True)
        speedup = batched["files_per_second"] / single["files_per_second"]
        print(
            f"internet {delay:g} ms: one-at-a-time {single['files_per_second']} files/s "
            f"({single['files']} files in {single['seconds']} s); batch "
            f"{batched['files_per_second']} files/s ({batched['files']} files in "
            f"{batched['seconds']} s); batch/one-at-a-time {speedup:.1f}x",
            flush=True,
        )
        rows.append({"single": single, "batch": batched, "speedup": round(speedup, 1)})
    return rows


def memory_batch_child(root: Path) -> dict[str, Any]:
    """(In a subprocess) deliver the prepared repository with batches on; idle and peak VmHWM."""
    result, figures = measured_child(
        root,
        prepare=lambda settings, app_id, _: _set_batch(settings, app_id, True),
        deliver=_deliver,
    )
    return figures | {"created": result.created}


def memory_batch(root: Path) -> dict[str, Any]:
    """Peak memory of a worker delivering full batches of ~100 KB binary files."""
    from treecast.crypto import generate_webhook_secret

    max_bytes = _settings(root.parent / "probe").batch_max_bytes
    file_bytes = 100_000
    count = 3 * (max_bytes // (4 * file_bytes // 3)) + 1  # three full batches and a bit

    def make(i: int) -> tuple[str, bytes]:
        return f"bin/{i:05d}.bin", os.urandom(file_bytes)

    root.mkdir(parents=True)
    commit = build_remote(root / "remote.git", count, make)
    secret = generate_webhook_secret()
    receiver = ReceiverProcess(secret, root / "mirror")
    try:
        spec = {
            "url": receiver.url,
            "secret": secret,
            "repo_url": (root / "remote.git").as_uri(),
            "commit": commit,
        }
        figures = run_child(root, spec, "-m", "bench.batch", "--memory-child", str(root))
    finally:
        receiver.stop()
    assert figures["created"] == count, figures
    figures["files"] = count
    figures["batch_max_bytes"] = max_bytes
    figures["above_idle_mb"] = round((figures["peak_kib"] - figures["idle_kib"]) / 1024, 1)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small counts, a 20 MB file")
    parser.add_argument("--only", choices=["internet", "loopback", "memory"], action="append")
    parser.add_argument("--delays", default="10,50,100", help="receiver delays in ms")
    parser.add_argument("--single-files", type=int, default=None)
    parser.add_argument("--batch-files", type=int, default=None, help="at every delay")
    parser.add_argument("--loopback-files", type=int, default=None)
    parser.add_argument(
        "--rounds", type=int, default=5, help="interleaved loopback rounds (median ratio)"
    )
    parser.add_argument("--size-mb", type=int, default=None)
    parser.add_argument("--batch-max-files", type=int, help="TREECAST_BATCH_MAX_FILES to use")
    parser.add_argument("--batch-max-bytes", type=int, help="TREECAST_BATCH_MAX_BYTES to use")
    parser.add_argument("--receiver-child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--memory-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.receiver_child:
        port, secret, mirror, delay = args.receiver_child
        receiver_child(int(port), secret, Path(mirror), float(delay))
        return 0
    if args.memory_child:
        print(json.dumps(memory_batch_child(args.memory_child)))
        return 0
    if args.batch_max_files:
        OVERRIDES["batch_max_files"] = args.batch_max_files
    if args.batch_max_bytes:
        OVERRIDES["batch_max_bytes"] = args.batch_max_bytes
    parts = args.only or ["internet", "loopback", "memory"]
    delays = [float(d) for d in args.delays.split(",")]
    single_files = args.single_files or (100 if args.quick else 300)
    batch_files = {
        d: args.batch_files or (5_000 if args.quick else (100_000 if d == 50 else 20_000))
        for d in delays
    }
    report: dict[str, Any] = {}
    from bench import delivery

    with tempfile.TemporaryDirectory(prefix="treecast-bench-batch-") as tmp:
        if "internet" in parts:
            report["internet"] = internet(Path(tmp) / "internet", delays, single_files, batch_files)
        if "loopback" in parts:
            files = args.loopback_files or (1_000 if args.quick else 10_000)
            speed = delivery.throughput(Path(tmp) / "loopback", files, args.rounds)
            print(
                f"loopback: {files} files one-at-a-time {speed['activity_files_per_second']}/s, "
                f"bare httpx loop {speed['bare_files_per_second']}/s, median ratio {speed['ratio']} "
                f"(per round {speed['ratios_per_round']}; target >= 0.9)",
                flush=True,
            )
            report["loopback"] = speed
        if "memory" in parts:
            size_mb = args.size_mb or (20 if args.quick else 200)
            big = delivery.memory(Path(tmp) / "memory-big", size_mb)
            print(
                f"memory: {size_mb} MB binary in {big['seconds']} s, "
                f"{big['above_idle_mb']} MB above idle (target < 64 MB)",
                flush=True,
            )
            full = memory_batch(Path(tmp) / "memory-batch")
            print(
                f"memory: {full['files']} files of 100 KB in batches of "
                f"{full['batch_max_bytes']} bytes in {full['seconds']} s, "
                f"{full['above_idle_mb']} MB above idle (target < 64 MB)",
                flush=True,
            )
            report["memory"] = {"big_file": big, "full_batches": full}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
