"""Benchmark: the worker's CPU per first sync, in-process, without a wave.

    python -m bench.worker_cpu [--runs 300] [--rounds 5] [--activities 100]

A first wave takes minutes of both cores; this takes seconds and measures the two
parts of the worker's CPU that Temporal alone does not have (docs/performance.md,
"Sixth round"):

- what the workflow sandbox costs to start one run of each workflow
  (`create_instance`: the run's module loaded afresh, `workflow.defn` on its class),
  Treecast's and the floor's (`bench.floor_workflows`), with the worker's own runner;
- with `--activities N`, a first sync's activities (`snapshot_repository`,
  `list_watchers`, `deliver_changes`) called in this process for N new repositories of
  3 files, as `bench.first_wave` makes and registers them (the dev server only takes
  the registrations; the example receiver runs as its own process): this process's
  CPU per first sync, and its git processes'; then, counted on a few more (not timed),
  the git processes it starts and the SQL statements and transactions it runs.

The best of `--rounds` is printed: the machine is shared, and the least disturbed
round is the closest to the cost.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FLOOR_MODULES = ("floor_workflows.py", "floor_deliver.py")
WARM_UP = 5  # first syncs before the rounds (the receiver warms up), and counted after


@dataclass(frozen=True)
class ActivityCosts:
    """A first sync's activities, in-process: CPU (best round) and what they start and run."""

    worker_ms: float
    git_ms: float
    processes: float  # git processes started
    statements: float  # SQL statements, transactions' BEGIN and COMMIT left out
    transactions: float  # COMMITs (SQLite begins none for a read)


class _Counter:
    """Counts the processes this process starts and the SQL its SQLite connections run."""

    def __init__(self) -> None:
        self.processes = self.statements = self.transactions = 0

    def __enter__(self) -> _Counter:
        import subprocess

        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        self._popen = subprocess.Popen.__init__
        counter, real = self, self._popen

        def counted(popen: Any, *args: Any, **kwargs: Any) -> None:
            counter.processes += 1
            real(popen, *args, **kwargs)

        subprocess.Popen.__init__ = counted  # type: ignore[method-assign, assignment]
        event.listen(Engine, "connect", self._connected)
        return self

    def __exit__(self, *exc: object) -> None:
        import subprocess

        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        subprocess.Popen.__init__ = self._popen  # type: ignore[method-assign]
        event.remove(Engine, "connect", self._connected)

    def _connected(self, dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.set_trace_callback(self._statement)

    def _statement(self, sql: str) -> None:
        word = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
        if word == "COMMIT":
            self.transactions += 1
        elif word not in ("BEGIN", "ROLLBACK", "PRAGMA"):
            self.statements += 1


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def workflow_classes() -> dict[str, type]:
    """Every workflow the worker runs, and the floor's two, by name."""
    from bench.floor_deliver import FloorDeliver
    from bench.floor_workflows import FloorSync
    from worker import compile_workflows, workflows

    compile_workflows()  # as the worker and the floor's worker do at start
    for module in FLOOR_MODULES:
        compileall.compile_file(str(ROOT / "bench" / module), quiet=2)
    return {cls.__name__: cls for cls in [*workflows(), FloorSync, FloorDeliver]}


def details_for(cls: type) -> Any:
    """What the worker hands the runner for a new run (the SDK's own validation info)."""
    import temporalio.converter
    import temporalio.workflow
    from temporalio.api.common.v1 import Payloads
    from temporalio.api.failure.v1 import Failure
    from temporalio.worker import WorkflowInstanceDetails
    from temporalio.worker.workflow_sandbox import _runner

    converter = temporalio.converter.DataConverter.default
    return WorkflowInstanceDetails(
        payload_converter_factory=converter._new_payload_converter,
        failure_converter_class=converter.failure_converter_class,
        interceptor_classes=[],
        defn=temporalio.workflow._Definition.must_from_class(cls),
        info=_runner._fake_info,
        randomness_seed=-1,
        extern_functions={},
        disable_eager_activity_execution=False,
        worker_level_failure_exception_types=[],
        patch_activation_callback=None,
        last_completion_result=Payloads(),
        last_failure=Failure(),
    )


async def instance_costs(runs: int, rounds: int) -> dict[str, float]:
    """Milliseconds of CPU per `create_instance`, per workflow (best of `rounds`)."""
    import temporalio.converter

    from treecast.workflow_runner import runner_for

    runner = runner_for(temporalio.converter.DataConverter.default)
    costs: dict[str, float] = {}
    for name, cls in workflow_classes().items():
        details = details_for(cls)
        runner.create_instance(details)  # its imports done once
        best = float("inf")
        for _ in range(rounds):
            started = time.process_time()
            for _ in range(runs):
                runner.create_instance(details)
            best = min(best, 1000 * (time.process_time() - started) / runs)
        costs[name] = best
    return costs


async def activity_costs(count: int, rounds: int) -> ActivityCosts:
    """Milliseconds of CPU per first sync's activities, this process's and its git
    processes' (best of `rounds`, `count` new repositories each), and what they start and
    run (counted on `WARM_UP` more)."""
    from temporalio.testing import ActivityEnvironment

    from activities.delivery import DeliveryActivities
    from activities.git import GitActivities
    from activities.watches import WatchActivities
    from bench.delivery import ReceiverProcess
    from bench.first_wave import bench_env, make_repositories
    from models.delivery import DeliverInput, DeliveryStatus, WatchersInput
    from models.git import SnapshotInput
    from models.search_attributes import dev_server_args
    from tests.conftest import free_port
    from treecast.config import load_settings
    from treecast.crypto import generate_webhook_secret
    from treecast.db import engine_for
    from treecast.devserver import DevServer
    from treecast.service.core import TreecastService

    tmp = Path(tempfile.mkdtemp(prefix="treecast-worker-cpu-"))
    repositories = make_repositories(tmp / "repos", count * rounds + 2 * WARM_UP, 3)
    env = bench_env(tmp / "data", free_port())
    settings = load_settings(env)
    server = DevServer(settings, ui=False, search_attribute_args=dev_server_args())
    server.start()
    secret = generate_webhook_secret()
    receiver = ReceiverProcess(secret, tmp / "mirror")
    try:
        service = TreecastService(settings)
        app_id = (await service.apps.add("worker-cpu", f"{receiver.url}/", secret)).app_id
        ids = [
            (await service.watches.watch(app_id, url=f"file://{path}")).repository_id
            for path in repositories
        ]
        git, watches = GitActivities(settings), WatchActivities(settings)
        delivery, run = DeliveryActivities(settings), ActivityEnvironment().run

        def first_syncs(repository_ids: list[str]) -> tuple[float, float]:
            mine, theirs = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
            for repository_id in repository_ids:
                snapshot = run(git.snapshot_repository, SnapshotInput(repository_id))
                behind = run(
                    watches.list_watchers, WatchersInput(repository_id, snapshot.commit)
                ).behind_app_ids
                for app in behind:
                    done = run(
                        delivery.deliver_changes,
                        DeliverInput(app, repository_id, snapshot.commit, resume=None),
                    )
                    assert done.status == DeliveryStatus.SYNCED, done
            return (
                1000 * (_cpu(resource.RUSAGE_SELF) - mine) / len(repository_ids),
                1000 * (_cpu(resource.RUSAGE_CHILDREN) - theirs) / len(repository_ids),
            )

        warm, counted, ids = ids[:WARM_UP], ids[WARM_UP : 2 * WARM_UP], ids[2 * WARM_UP :]
        await asyncio.to_thread(first_syncs, warm)  # the receiver warms up
        results = [
            await asyncio.to_thread(first_syncs, ids[n * count : (n + 1) * count])
            for n in range(rounds)
        ]
        engine_for(settings.database_url).dispose()  # new connections, traced
        with _Counter() as seen:
            await asyncio.to_thread(first_syncs, counted)
        mine, git_ms = min(results)
        return ActivityCosts(
            mine,
            git_ms,
            seen.processes / WARM_UP,
            seen.statements / WARM_UP,
            seen.transactions / WARM_UP,
        )
    finally:
        receiver.stop()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's arguments (tests run it at a tiny size through these)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.worker_cpu", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--runs", type=int, default=300, help="create_instance calls a round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--activities",
        type=int,
        default=0,
        metavar="N",
        help="also call a first sync's activities for N new repositories a round",
    )
    return parser


async def run(args: argparse.Namespace) -> list[str]:
    """Measure; the lines to print."""
    costs = await instance_costs(args.runs, args.rounds)
    lines = ["create_instance, ms of CPU per run (best of rounds):"]
    lines += [f"  {name:16s} {ms:6.2f}" for name, ms in costs.items()]
    treecast = costs["SyncRepository"] + costs["DeliverFiles"]
    floor = costs["FloorSync"] + costs["FloorDeliver"]
    lines.append(f"  a first sync: Treecast {treecast:.2f} ms, Temporal alone {floor:.2f} ms")
    if args.activities:
        done = await activity_costs(args.activities, args.rounds)
        lines.append(
            f"a first sync's activities, in-process: {done.worker_ms:.1f} ms of CPU, "
            f"its git processes {done.git_ms:.1f} ms; {done.processes:g} processes, "
            f"{done.statements:g} SQL statements, {done.transactions:g} write transactions"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    from bench.first_wave import load

    args = build_parser().parse_args(argv)
    print(f"load {load()}", flush=True)
    lines = asyncio.run(run(args))
    print("\n".join([*lines, f"load {load()}"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
