"""bench.polling at a tiny size, so the benchmark cannot rot: every pushed commit is
found by the remote checks (no hook) and fetched once, over smart HTTP and file://."""

from __future__ import annotations

import argparse

import pytest

from bench import polling


@pytest.mark.e2e
@pytest.mark.timeout(300)
async def test_each_push_arrives_and_is_fetched_once() -> None:
    args = argparse.Namespace(interval=2, pushes=2, seed=30)
    figures = await polling.main_async(args)
    assert [row["remote"] for row in figures["remotes"]] == ["smart-http", "file"]
    for row in figures["remotes"]:
        assert row["pushes"] == 3 and row["distinct_commits"] == 4
        assert row["snapshots"] == 4, row  # `repo add` + `watch` fetch the first one once
        assert row["wakes_beyond_one_per_push"] == 0, row
        assert row["max_s"] < 4 * 2, row  # found by the next checks, not a full re-read
