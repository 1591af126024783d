"""Idle cost in Temporal history: events per poll cycle of a repository where nothing changes.

    python -m bench.idle_history [--interval 2] [--seconds 40]

Records a real history: the Temporal dev server, the worker in this process, one
repository watched by one app (the example receiver), polled every `--interval`
seconds. After the first delivery nothing changes, so every later cycle is an idle
poll. The `SyncRepository` history is fetched and cut at each `TIMER_STARTED`; the
events of each whole idle cycle are counted by type, and scaled to a day at the
default 60 s interval (plus the repository's jitter, up to 10 %: 3 s on average).
The history is written to `--out` (JSON) for reading. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict

from bench.sync_latency import cpu_seconds


async def record(interval: int, seconds: float, out: Path | None) -> dict[str, Any]:
    from examples.receiver import Receiver
    from models.sync import sync_workflow_id
    from tests.support.faults_helpers import fault_stack, in_process_worker, until_delivered
    from tests.support.gitrepos import WorkRepo
    from treecast.crypto import generate_webhook_secret

    with tempfile.TemporaryDirectory(prefix="treecast-idle-") as tmp:
        root = Path(tmp)
        repo = WorkRepo(root / "git")
        repo.write("README.md", "# idle\n")
        commit = repo.commit("one file")
        secret = generate_webhook_secret()
        async with fault_stack(root / "data") as stack:
            assert stack.client is not None
            with Receiver([secret], root / "mirror") as receiver:
                app_id = stack.add_app(receiver, secret)
                repository_id = stack.add_repository(repo.url, interval)
                stack.watch(app_id, repository_id)
                async with in_process_worker(stack):
                    await stack.start_sync(repository_id, interval)
                    await until_delivered(stack, app_id, repository_id, commit, 60)
                    await asyncio.sleep(interval * 1.5)  # past the first idle poll
                    server_pid = stack.server._process.pid  # type: ignore[union-attr]
                    before, server_before = os.times(), cpu_seconds(server_pid)
                    await asyncio.sleep(seconds)
                    after, server_after = os.times(), cpu_seconds(server_pid)
                    handle = stack.client.get_workflow_handle(sync_workflow_id(repository_id))
                    history = await handle.fetch_history()
    events = [MessageToDict(e) for e in history.events]
    if out is not None:
        out.write_text(json.dumps({"events": events}, indent=1))
    names = [e["eventType"].removeprefix("EVENT_TYPE_") for e in events]
    starts = [i for i, name in enumerate(names) if name == "TIMER_STARTED"]
    cycles = []
    for a, b in itertools.pairwise(starts):
        cycle = names[a + 1 : b + 1]  # from the timer firing to the next timer started
        if "START_CHILD_WORKFLOW_EXECUTION_INITIATED" in cycle or "TIMER_FIRED" not in cycle:
            continue  # the first sync's delivery, or a cycle woken by a signal
        cycles.append(cycle)
    assert cycles, f"no idle cycle in {len(names)} events; run longer (--seconds)"
    per_cycle = [len(c) for c in cycles]
    kinds = Counter(cycles[-1])
    mean_interval = 60 + 3.0  # default poll interval plus the mean jitter
    cycles_per_day = 86_400 / mean_interval
    steady = statistics.median(per_cycle)  # the first idle cycle also carries leftovers
    events_per_day = steady * cycles_per_day
    polls = seconds / (interval + interval * 0.05)  # the interval plus the mean jitter
    worker = (after.user + after.system) - (before.user + before.system)
    git = (after.children_user + after.children_system) - (
        before.children_user + before.children_system
    )
    history_bytes = sum(e.ByteSize() for e in history.events[starts[-2] + 1 : starts[-1] + 1])
    return {
        "worker_cpu_ms_per_poll": round(worker / polls * 1000, 1),
        "git_cpu_ms_per_poll": round(git / polls * 1000, 1),
        "temporal_server_cpu_ms_per_poll": round((server_after - server_before) / polls * 1000, 1),
        "history_bytes_per_idle_cycle": history_bytes,
        "history_events": len(names),
        "idle_cycles": len(cycles),
        "events_per_idle_cycle": per_cycle,
        "events_per_steady_idle_cycle": steady,
        "one_cycle": dict(kinds),
        "activity_tasks_per_cycle": kinds.get("ACTIVITY_TASK_SCHEDULED", 0),
        "workflow_tasks_per_cycle": kinds.get("WORKFLOW_TASK_COMPLETED", 0),
        "timers_per_cycle": kinds.get("TIMER_STARTED", 0),
        "cycles_per_day_at_60s": round(cycles_per_day),
        "events_per_day_at_60s": round(events_per_day),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--interval", type=int, default=2, help="poll interval in seconds")
    parser.add_argument("--seconds", type=float, default=40, help="idle time recorded")
    parser.add_argument("--out", type=Path, help="write the history here (JSON)")
    args = parser.parse_args(argv)
    figures = asyncio.run(record(args.interval, args.seconds, args.out))
    print(
        f"idle: {figures['idle_cycles']} idle cycles, events per cycle "
        f"{figures['events_per_steady_idle_cycle']} (all: {sorted(set(figures['events_per_idle_cycle']))}): "
        f"{figures['one_cycle']}; at 60 s "
        f"{figures['cycles_per_day_at_60s']} cycles/day = {figures['events_per_day_at_60s']} "
        "history events per repository per day"
    )
    print(
        f"per idle poll: worker {figures['worker_cpu_ms_per_poll']} ms CPU, git "
        f"{figures['git_cpu_ms_per_poll']} ms, Temporal dev server "
        f"{figures['temporal_server_cpu_ms_per_poll']} ms; history "
        f"{figures['history_bytes_per_idle_cycle']} bytes per idle cycle"
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
