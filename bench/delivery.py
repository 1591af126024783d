"""Delivery benchmark: files per second against a bare httpx loop, and memory on a huge file.

    python -m bench.delivery            # 10,000 files and a 200 MB binary
    python -m bench.delivery --quick    # 1,000 files and a 20 MB binary
    python -m bench.delivery --only throughput --files 3000 --rounds 7

1. Throughput: a repository of small files is delivered by `deliver_changes`
   (through an ActivityEnvironment, SQLite ledger, signing, logging) to the example
   receiver running in its own process. The baseline posts the same signed bodies,
   built beforehand, with one keep-alive `httpx.Client` to a fresh receiver. The two
   run interleaved over `--rounds` rounds; the median of the per-round ratios
   activity/baseline is the figure of merit (target >= 0.9).
2. Memory: a worker subprocess delivers one large binary file; its peak resident
   memory (VmHWM) is compared with the same process idle just before (target:
   under 64 MB above idle).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


def _vm_hwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ReceiverProcess:
    """The example receiver in its own process (so it does not share our GIL)."""

    PROBE_TIMEOUT = 1.0  # seconds an answer to the readiness probe may take

    def __init__(self, secret: str, mirror: Path) -> None:
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [sys.executable, *self.command(secret, mirror)], cwd=ROOT, stdout=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.post(f"{self.url}/create", content=b"{}", timeout=self.PROBE_TIMEOUT)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def command(self, secret: str, mirror: Path) -> list[str]:
        """The receiver's command line after the interpreter."""
        return ["-m", "examples.receiver", "--port", str(self.port), "--secret", secret,
                "--mirror", str(mirror)]  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        from treecast.devserver import end_process

        end_process(self.proc, 10)


def _settings(data_dir: Path) -> Any:
    from treecast.config import load_settings
    from treecast.crypto import generate_key

    return load_settings(
        {
            "TREECAST_DATA_DIR": str(data_dir),
            "TREECAST_SECRET_KEY": generate_key(),
            "TREECAST_ALLOW_PRIVATE_URLS": "1",
            "TREECAST_ALLOW_FILE_URLS": "1",
            "TREECAST_ALLOW_INSECURE_TRANSPORT": "1",
        }
    )


def _deliver(settings: Any, app_id: str, repository_id: str, commit: str) -> Any:
    from temporalio.testing import ActivityEnvironment

    from activities.delivery import DeliveryActivities
    from models.delivery import DeliverInput

    return ActivityEnvironment().run(
        DeliveryActivities(settings).deliver_changes, DeliverInput(app_id, repository_id, commit)
    )


def throughput(root: Path, files: int, rounds: int) -> dict[str, Any]:
    """Files/s of deliver_changes and of a bare httpx loop, to the same receiver program."""
    from tests.support.gitrepos import WorkRepo
    from tests.support.receiver_fixture import add_watch, register
    from treecast.crypto import generate_webhook_secret
    from treecast.remote_access import ensure_commit
    from treecast.webhooks import payloads
    from treecast.webhooks.signing import signed_headers

    repo = WorkRepo(root / "repo")
    repository_id = ""
    for i in range(files):
        repo.write(f"docs/{i % 100:02d}/page-{i:05d}.md", f"# Page {i}\n\n" + "lorem ipsum " * 40)
    commit = repo.commit("many files")
    secret = generate_webhook_secret()
    settings = _settings(root / "data")

    # Baseline: the same bodies, signed beforehand, posted by a bare keep-alive loop.
    ref = payloads.RepositoryRef("repo_x", repo.url, "bench", "repo", None)
    requests = []
    for path, data in sorted(repo.files_at(commit).items()):
        body = payloads.file_body(
            event="create", repo=ref, path=path, sha=hashlib.sha256(data).hexdigest(),
            size=len(data), content=data.decode(), base64=False, commit_sha=commit,
            timestamp=payloads.iso_utc(),
        )  # fmt: skip
        msg_id = "msg_" + hashlib.sha256(path.encode()).hexdigest()[:32]
        requests.append((body, signed_headers([secret], msg_id, "create", body)))
    bare_runs: list[float] = []
    activity_runs: list[float] = []
    # This process's CPU (all its threads; not the receiver's or git's): less noisy than
    # the wall-clock figures on a shared machine, and what the client side costs.
    bare_cpu: list[float] = []
    activity_cpu: list[float] = []

    def bare_round(round_number: int) -> None:
        receiver = ReceiverProcess(secret, root / f"mirror-bare-{round_number}")
        try:
            with httpx.Client(timeout=30) as client:
                started, cpu = time.perf_counter(), time.process_time()
                for body, headers in requests:
                    client.post(
                        f"{receiver.url}/create", content=body, headers=headers
                    ).raise_for_status()
                bare_runs.append(time.perf_counter() - started)
                bare_cpu.append(time.process_time() - cpu)
        finally:
            receiver.stop()

    def activity_round(round_number: int) -> None:
        nonlocal repository_id
        mirror = root / f"mirror-activity-{round_number}"
        receiver = ReceiverProcess(secret, mirror)
        try:
            if not repository_id:
                app_id, repository_id = register(settings, receiver.url, [secret], repo.url)
                ensure_commit(settings, repository_id, commit)  # the snapshot did this
            else:  # a new app (empty ledger) on the same repository
                app_id = add_watch(settings, receiver.url, [secret], repository_id)
            started, cpu = time.perf_counter(), time.process_time()
            result = _deliver(settings, app_id, repository_id, commit)
            activity_runs.append(time.perf_counter() - started)
            activity_cpu.append(time.process_time() - cpu)
        finally:
            receiver.stop()
        assert result.created == files, result
        mirrored = sum(1 for p in mirror.rglob("*") if p.is_file())
        assert mirrored == files, f"mirror has {mirrored} of {files} files"

    # Interleave the two loops (ours, bare, bare, ours, ours, bare, ...: the order flips
    # every round, so a load that rises or falls during the run favours neither) and take
    # the median of the per-round ratios: a shared machine's noise then hits both sides of
    # a round alike, and one noisy round does not decide the figure.
    for round_number in range(rounds):
        pair = (
            (activity_round, bare_round) if round_number % 2 == 0 else (bare_round, activity_round)
        )
        for run in pair:
            run(round_number)
    ratios = [b / a for b, a in zip(bare_runs, activity_runs, strict=True)]
    return {
        "files": files,
        "bare_files_per_second": round(files / statistics.median(bare_runs), 1),
        "activity_files_per_second": round(files / statistics.median(activity_runs), 1),
        "ratio": round(statistics.median(ratios), 3),
        "ratio_min": round(min(ratios), 3),
        "ratio_max": round(max(ratios), 3),
        "rounds": rounds,
        "ratios_per_round": [round(r, 3) for r in ratios],
        "bare_cpu_ms_per_file": round(statistics.median(bare_cpu) / files * 1000, 3),
        "activity_cpu_ms_per_file": round(statistics.median(activity_cpu) / files * 1000, 3),
    }


def measured_child(
    root: Path,
    prepare: Callable[[Any, str, str], object] = lambda *_: None,
    deliver: Callable[[Any, str, str, str], Any] = _deliver,
) -> tuple[Any, dict[str, Any]]:
    """(In a subprocess) register the app and repository of root/spec.json, `prepare` their
    watch, warm up, and `deliver` the spec's commit: its result, and the figures (idle and
    peak VmHWM, seconds)."""
    spec = json.loads((root / "spec.json").read_text())
    settings = _settings(root / "data")
    # Warm up everything an idle worker has loaded (modules, database, git cache).
    import activities.delivery  # noqa: F401
    from tests.support.receiver_fixture import register
    from treecast.db import engine_for
    from treecast.remote_access import ensure_commit

    engine_for(settings.database_url)
    app_id, repository_id = register(settings, spec["url"], [spec["secret"]], spec["repo_url"])
    prepare(settings, app_id, repository_id)
    ensure_commit(settings, repository_id, spec["commit"])
    idle = _vm_hwm_kib()
    started = time.perf_counter()
    result = deliver(settings, app_id, repository_id, spec["commit"])
    seconds = time.perf_counter() - started
    peak = _vm_hwm_kib()
    figures = {"status": result.status, "idle_kib": idle, "peak_kib": peak}
    return result, figures | {"seconds": round(seconds, 2)}


def run_child(root: Path, spec: dict[str, str], *argv: str) -> dict[str, Any]:
    """Write root/spec.json, run `python ARGV` and return the figures it printed last."""
    (root / "spec.json").write_text(json.dumps(spec))
    out = subprocess.run(
        [sys.executable, *argv], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    figures: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return figures


def memory_child(root: Path) -> dict[str, Any]:
    """(In a subprocess) deliver the prepared big file; report idle and peak VmHWM."""
    return measured_child(root)[1]


def memory(root: Path, size_mb: int) -> dict[str, Any]:
    """Peak memory of a worker process delivering one `size_mb` MB binary file."""
    from tests.support.gitrepos import WorkRepo
    from treecast.crypto import generate_webhook_secret

    repo = WorkRepo(root / "repo")
    target = repo.work / "huge.bin"
    with target.open("wb") as handle:
        for _ in range(size_mb):
            handle.write(os.urandom(1 << 20))
    commit = repo.commit("one huge file")
    secret = generate_webhook_secret()
    receiver = ReceiverProcess(secret, root / "mirror")
    try:
        spec = {"url": receiver.url, "secret": secret, "repo_url": repo.url, "commit": commit}
        figures = run_child(root, spec, "-m", "bench.delivery", "--memory-child", str(root))
    finally:
        receiver.stop()
    mirrored = (root / "mirror" / "huge.bin").read_bytes()
    assert hashlib.sha256(mirrored).digest() == hashlib.sha256(target.read_bytes()).digest()
    figures["file_mb"] = size_mb
    figures["above_idle_mb"] = round((figures["peak_kib"] - figures["idle_kib"]) / 1024, 1)
    figures["mb_per_second"] = round(size_mb / figures["seconds"], 1)
    return figures


def main(argv: list[str] | None = None) -> int:
    """Run both measurements and print them (and a JSON line)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1,000 files and a 20 MB file")
    parser.add_argument("--files", type=int, default=None)
    parser.add_argument("--size-mb", type=int, default=None)
    parser.add_argument(
        "--rounds", type=int, default=5, help="interleaved rounds (median of their ratios)"
    )
    parser.add_argument("--only", choices=["throughput", "memory"], action="append")
    parser.add_argument("--memory-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child)))
        return 0
    files = args.files or (1_000 if args.quick else 10_000)
    size_mb = args.size_mb or (20 if args.quick else 200)
    parts = args.only or ["throughput", "memory"]
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="treecast-bench-") as tmp:
        if "throughput" in parts:
            speed = report["throughput"] = throughput(Path(tmp) / "speed", files, args.rounds)
            print(
                f"throughput: {speed['files']} files, "
                f"activity {speed['activity_files_per_second']}/s, "
                f"bare httpx loop {speed['bare_files_per_second']}/s, "
                f"median ratio {speed['ratio']} (per round {speed['ratios_per_round']}) "
                "(target >= 0.9); CPU of this process per file: activity "
                f"{speed['activity_cpu_ms_per_file']} ms, bare {speed['bare_cpu_ms_per_file']} ms",
                flush=True,
            )
        if "memory" in parts:
            mem = report["memory"] = memory(Path(tmp) / "memory", size_mb)
            print(
                f"memory: {size_mb} MB file in {mem['seconds']} s ({mem['mb_per_second']} MB/s), "
                f"peak {mem['peak_kib'] // 1024} MB, {mem['above_idle_mb']} MB above idle "
                "(target < 64 MB)",
                flush=True,
            )
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
