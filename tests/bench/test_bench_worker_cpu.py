"""The worker-CPU benchmark (`python -m bench.worker_cpu`) at a tiny size, so it cannot rot."""

from __future__ import annotations

import asyncio

import pytest

from bench import worker_cpu


def test_every_workflow_and_the_floors_are_started_in_the_sandbox() -> None:
    args = worker_cpu.build_parser().parse_args(["--runs", "2", "--rounds", "1"])
    costs = asyncio.run(worker_cpu.instance_costs(args.runs, args.rounds))
    assert {"SyncRepository", "DeliverFiles", "FloorSync", "FloorDeliver"} <= set(costs)
    assert all(ms > 0 for ms in costs.values())


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_a_first_syncs_activities_run_in_process() -> None:
    args = worker_cpu.build_parser().parse_args(
        ["--runs", "1", "--rounds", "1", "--activities", "2"]
    )
    lines = asyncio.run(worker_cpu.run(args))
    assert lines[-1].startswith("a first sync's activities, in-process:"), lines
