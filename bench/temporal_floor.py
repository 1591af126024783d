"""Benchmark: the first wave with nothing but Temporal in it, the floor under Treecast's.

    python -m bench.temporal_floor [--repos 1000]

Runs the Temporal dev server as `bench.first_wave` does, and a worker process with the
same options as Treecast's (`worker.worker_options`: pollers, workflow cache, activity
slots and threads) running `bench.floor_workflows`: a first sync's steps with
activities that do nothing. Starts `--repos` of them the way a registration does (one
signal-with-start each, 50 in flight) and measures until every child completed, with
the CPU of the dev server and the worker. `python -m bench.first_wave --floor` runs it
beside Treecast's wave and prints the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bench.first_wave import ROOT, bench_env, cpu_seconds, load, own_cpu_seconds, peak_rss_mb
from tests.conftest import free_port
from treecast.devserver import DevServer, end_process, popen_tied

TASK_QUEUE = "treecast-floor"


@dataclass
class Floor:
    """What one floor run measured."""

    repos: int
    total_seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    worker_peak_rss_mb: float = 0.0
    anatomy: list[dict[str, float]] = field(default_factory=list)  # bench.wave_anatomy.steps_of


async def serve(address: str) -> None:
    """The floor's worker: Treecast's worker options, the floor's workflows."""
    from temporalio.client import Client
    from temporalio.worker import Worker

    from bench.floor_activities import floor_deliver, floor_snapshot, floor_watchers
    from bench.floor_deliver import FloorDeliver
    from bench.floor_workflows import FloorSync
    from treecast.config import load_settings
    from worker import executor_threads, worker_options

    settings = load_settings()
    # As `build_worker` does for Treecast's workflows: the sandbox loads the module for
    # every run, from bytecode when there is some.
    for module in ("floor_workflows.py", "floor_deliver.py"):
        compileall.compile_file(str(ROOT / "bench" / module), quiet=2)
    client = await Client.connect(address)
    with ThreadPoolExecutor(max_workers=executor_threads(settings)) as executor:
        worker = Worker(
            client,
            task_queue=TASK_QUEUE,
            workflows=[FloorSync, FloorDeliver],
            activities=[floor_snapshot, floor_watchers, floor_deliver],
            **worker_options(settings, executor, client.data_converter),
        )
        async with worker:
            print("floor worker polling", flush=True)
            await asyncio.Event().wait()


async def run_floor(
    repos: int, tmp: Path, *, concurrency: int = 50, every: float = 10.0, anatomy: bool = False
) -> Floor:
    """Start the dev server and the floor's worker, start `repos` FloorSync workflows,
    and wait until every FloorDeliver child completed (`anatomy`: then read where each
    delivery waited, as `first_wave --anatomy` does)."""
    from temporalio.client import Client

    from bench.floor_workflows import FloorSync
    from models.search_attributes import dev_server_args
    from treecast.config import load_settings

    tmp.mkdir(parents=True, exist_ok=True)
    env = bench_env(tmp / "data", free_port())
    settings = load_settings(env)
    server = DevServer(settings, ui=False, search_attribute_args=dev_server_args())
    server.start()
    assert server.pid is not None
    log_path = tmp / "floor-worker.log"
    with log_path.open("wb") as log:
        worker, _ = popen_tied(
            [sys.executable, "-m", "bench.temporal_floor", "--serve", settings.temporal_address],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    floor = Floor(repos=repos)
    try:
        deadline = time.monotonic() + 60
        while b"floor worker polling" not in log_path.read_bytes():
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the floor worker did not start; see {log_path}")
            await asyncio.sleep(0.1)
        client = await Client.connect(settings.temporal_address)
        print(f"floor: starting {repos} workflows, {concurrency} at a time (load {load()})")
        started = time.monotonic()
        before = {
            "worker": cpu_seconds(worker.pid),
            "dev server": cpu_seconds(server.pid),
            "bench": own_cpu_seconds(),
        }
        queue = list(reversed(range(repos)))

        async def one_after_another() -> None:
            while queue:
                number = queue.pop()
                await client.start_workflow(
                    FloorSync.run,
                    f"floor-repo-{number:05d}",
                    id=f"floor-sync/floor-repo-{number:05d}",
                    task_queue=TASK_QUEUE,
                    start_signal="sync_now",
                )

        starting = asyncio.gather(*(one_after_another() for _ in range(concurrency)))
        done, last = 0, started
        while done < repos:
            await asyncio.sleep(1.0)
            query = "WorkflowType = 'FloorDeliver' AND ExecutionStatus = 'Completed'"
            done = (await client.count_workflows(query)).count
            if time.monotonic() - last >= every or done >= repos:
                last = time.monotonic()
                print(f"  {last - started:6.0f}s  children completed {done:>6}  load {load()}")
        await starting
        floor.total_seconds = time.monotonic() - started
        floor.cpu = {
            "worker": cpu_seconds(worker.pid) - before["worker"],
            "dev server": cpu_seconds(server.pid) - before["dev server"],
            "bench": own_cpu_seconds() - before["bench"],
        }
        floor.worker_peak_rss_mb = peak_rss_mb(worker.pid)
        if anatomy:
            from bench.wave_anatomy import anatomy as read_anatomy

            names = [f"floor-repo-{number:05d}" for number in range(repos)]
            pairs = [(f"floor-sync/{name}", f"floor-deliver/{name}") for name in names]
            floor.anatomy = await read_anatomy(client, pairs, ("floor_snapshot", "floor_deliver"))
    finally:
        end_process(worker, 30)
        server.stop()
    return floor


def report(floor: Floor) -> list[str]:
    """What the floor run measured, as lines to print."""
    per_repo = ", ".join(
        f"{name} {1000 * seconds / floor.repos:.0f} ms" for name, seconds in floor.cpu.items()
    )
    from bench.wave_anatomy import report as anatomy_report

    return [
        f"Temporal alone, {floor.repos} repositories: every child completed "
        f"{floor.total_seconds:.1f}s after the first start "
        f"({floor.repos / floor.total_seconds:.1f} repositories/s)",
        f"  CPU per repository: {per_repo}; worker peak RSS {floor.worker_peak_rss_mb:.0f} MiB",
        *(anatomy_report(floor.anatomy) if floor.anatomy else []),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.temporal_floor", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--repos", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--serve", metavar="ADDRESS", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(serve(args.serve))
        return 0
    with tempfile.TemporaryDirectory(prefix="treecast-floor-") as tmp:
        floor = asyncio.run(run_floor(args.repos, Path(tmp), concurrency=args.concurrency))
    print("\n".join(report(floor)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
