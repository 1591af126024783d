"""Treecast's worker: runs every workflow and activity on the task queue.

python worker.py                  connect to TEMPORAL_ADDRESS
python worker.py --dev            first start the Temporal dev server (Web UI on :8233)
python worker.py --processes 4    four worker processes sharing the task queue
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError
from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)
from temporalio.worker import PollerBehaviorAutoscaling, Worker

from treecast import logs, metrics
from treecast.config import ConfigError, Settings, load_settings
from treecast.db import SchemaBehind, connect_failure, prepare
from treecast.process_exit import run_and_exit
from treecast.workflow_runner import runner_for

log = logging.getLogger("treecast.worker")
HEARTBEAT_THROTTLE = timedelta(seconds=1)  # at most one heartbeat a second per activity
# Local activities (`list_watchers`) run in the activity executor too, but hold a workflow
# task open while they run: threads of their own, so they never queue behind git fetches.
LOCAL_ACTIVITY_SLOTS = 4


def workflows() -> list[type]:
    """Every workflow class the worker runs (imported here, never by `workflows/__init__`)."""
    from workflows.bulk_watches import BulkWatches
    from workflows.check_remotes import CheckRemotes
    from workflows.deliver_files import DeliverFiles
    from workflows.notify_breaker import NotifyBreaker
    from workflows.sync_repository import SyncRepository

    return [SyncRepository, DeliverFiles, NotifyBreaker, CheckRemotes, BulkWatches]


def compile_workflows() -> None:
    """Write the workflow modules' bytecode (where the folder is writable).

    The sandbox imports a workflow's module afresh for every workflow run, and without
    a `.pyc` (`PYTHONDONTWRITEBYTECODE`, a read-only tree) each import compiles its source
    again: the largest part of a first sync's worker CPU before this (docs/performance.md).
    """
    import compileall

    compileall.compile_dir(Path(__file__).resolve().parent / "workflows", quiet=2)


def build_activities(settings: Settings) -> list[Any]:
    """Every activity callable, bound to this process's settings."""
    from activities.bulk import BulkActivities
    from activities.delivery import DeliveryActivities
    from activities.git import GitActivities
    from activities.notices import NoticeActivities
    from activities.remote_checks import RemoteCheckActivities
    from activities.watches import WatchActivities

    git = GitActivities(settings)
    delivery = DeliveryActivities(settings)
    notices = NoticeActivities(settings)
    watches = WatchActivities(settings)
    return [
        git.snapshot_repository,
        delivery.deliver_changes,
        notices.send_notice,
        watches.list_watchers,
        watches.record_delivery_failure,
        RemoteCheckActivities(settings).check_remotes,
        *BulkActivities(settings).all(),
    ]


def make_runtime(settings: Settings) -> Runtime | None:
    """A runtime exporting Temporal's and Treecast's metrics for Prometheus when a port is
    set, and handing the SDK core's own log lines to Python's logging for JSON logs."""
    json_logs = settings.log_format == "json"
    if not settings.metrics_port and not json_logs:
        return None
    telemetry = TelemetryConfig(
        metrics=(
            PrometheusConfig(bind_address=f"0.0.0.0:{settings.metrics_port}")
            if settings.metrics_port
            else None
        ),
        logging=(
            LoggingConfig(
                filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
                forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
            )
            if json_logs
            else LoggingConfig.default
        ),
    )
    runtime = Runtime(telemetry=telemetry)
    if settings.metrics_port:
        metrics.install(runtime.metric_meter)
        log.info("Prometheus metrics on :%d/metrics", settings.metrics_port)
    return runtime


def executor_threads(settings: Settings) -> int:
    """Threads of the activity executor: one per activity slot and local activity slot."""
    return settings.activity_concurrency + LOCAL_ACTIVITY_SLOTS


def worker_options(
    settings: Settings, executor: ThreadPoolExecutor, data_converter: DataConverter
) -> dict[str, Any]:
    """A Treecast worker's options beyond its task queue, workflows and activities, for a
    client converting with `data_converter` (`bench.temporal_floor` runs Temporal alone
    with the same)."""
    return {
        # The sandbox, without a trip into it per payload for a context nothing uses.
        "workflow_runner": runner_for(data_converter),
        "activity_executor": executor,
        # A remote-check sweep holds one of these slots for its whole run (an async
        # activity on the event loop: it takes no thread of the executor).
        "max_concurrent_activities": settings.activity_concurrency,
        "max_concurrent_local_activities": LOCAL_ACTIVITY_SLOTS,
        # Every repository's SyncRepository runs forever; one evicted from the cache
        # replays its whole history at its next task (docs/performance.md, First wave).
        "max_cached_workflows": settings.workflow_cache_size,
        # Five pollers (one on the shared queue, where every new workflow's first task
        # waits) cap a worker at what five poll round trips a second allow; scale them.
        "workflow_task_poller_behavior": PollerBehaviorAutoscaling(),
        "activity_task_poller_behavior": PollerBehaviorAutoscaling(),
        # Heartbeats carry a delivery's "N of M files"; the default throttle (80% of
        # the 10 s heartbeat timeout) would leave `sync --wait` showing 8 s old counts.
        "max_heartbeat_throttle_interval": HEARTBEAT_THROTTLE,
        # On SIGTERM the worker polls no more and lets running activities finish this
        # long; then they are cancelled, and Temporal retries them elsewhere.
        "graceful_shutdown_timeout": timedelta(seconds=settings.worker_grace_seconds),
    }


def build_worker(client: Client, settings: Settings, executor: ThreadPoolExecutor) -> Worker:
    """The worker for Treecast's task queue (tests build theirs with this too); `executor`
    should have `executor_threads(settings)` threads."""
    compile_workflows()
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=workflows(),
        activities=build_activities(settings),
        **worker_options(settings, executor, client.data_converter),
    )


async def run(settings: Settings, *, dev: bool) -> None:
    """Prepare the database, optionally start the dev server, and run until SIGINT/SIGTERM."""
    from treecast.temporal_client import connect

    # Refuses a schema that is behind (SchemaBehind), unless told to upgrade it.
    prepare(settings.database_url, upgrade=settings.auto_migrate or settings.dev)
    from treecast.store.keys import cipher

    cipher(settings)  # fail now (a missing or wrong key), not at the first activity
    server = None
    if dev:
        from models.search_attributes import dev_server_args
        from treecast.devserver import DevServer

        server = DevServer(settings, search_attribute_args=dev_server_args())
        server.start()
        log.info(
            "Temporal dev server on %s, Web UI at %s", settings.temporal_address, server.ui_url
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        client = await connect(settings, runtime=make_runtime(settings))
        with ThreadPoolExecutor(max_workers=executor_threads(settings)) as executor:
            worker = build_worker(client, settings, executor)
            async with worker:
                from treecast.service.workflows import ensure_remote_checks

                shards = await ensure_remote_checks(client, settings)
                log.info(
                    "worker polling task queue %r (activities: %d at once; remote checks: %s)",
                    settings.task_queue,
                    settings.activity_concurrency,
                    f"{len(shards)} sweeps" if shards else "off, every poll fetches",
                )
                if server is not None:
                    print(f"Treecast worker ready. Temporal Web UI: {server.ui_url}", flush=True)
                await stop.wait()
                log.info(
                    "shutting down: running activities get up to %g s to finish",
                    settings.worker_grace_seconds,
                )
        log.info("worker stopped")
    finally:
        if server is not None:
            server.stop()


def run_processes(settings: Settings, count: int, *, dev: bool) -> int:
    """`count` worker processes under one supervisor (`treecast.supervisor`); the database
    is prepared and the dev server started once, here."""
    from treecast.store.keys import cipher
    from treecast.supervisor import child_environments, supervise

    prepare(settings.database_url, upgrade=settings.auto_migrate or settings.dev)
    cipher(settings)  # fail now, once, rather than in every child
    environ = dict(os.environ)
    server = None
    if dev:
        from models.search_attributes import dev_server_args
        from treecast.devserver import DevServer

        server = DevServer(settings, search_attribute_args=dev_server_args())
        server.start()
        environ["TREECAST_DEV"] = "1"  # the children read the key dev mode generated
        print(f"Temporal Web UI: {server.ui_url}", flush=True)
    try:
        return supervise(
            [sys.executable, str(Path(__file__).resolve())],
            child_environments(environ, count, settings.metrics_port),
            grace_seconds=settings.worker_grace_seconds + 10,
        )
    finally:
        if server is not None:
            server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="worker.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dev", action="store_true", help="start the Temporal dev server first and stop it on exit"
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="run N worker processes sharing the task queue and this host's git cache "
        "(one Python process uses one core at most; docs/scaling.md)",
    )
    args = parser.parse_args(argv)
    if args.processes < 1:
        parser.error("--processes must be at least 1")
    settings: Settings | None = None
    try:
        settings = load_settings()
        logs.configure(settings.log_format)
        if args.dev:
            settings = settings.model_copy(update={"dev": True})
        if args.processes > 1:
            return run_processes(settings, args.processes, dev=args.dev)
        asyncio.run(run(settings, dev=args.dev))
    except (ConfigError, SchemaBehind) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except DBAPIError as error:
        # run() opens the database before anything else, so this is the start-up check.
        line = connect_failure(settings.database_url, error) if settings else None
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    # Not sys.exit: Python's shutdown can abort after Temporal was used (see process_exit).
    run_and_exit(main)
