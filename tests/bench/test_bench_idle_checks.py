"""bench.idle_checks at a tiny size, so the benchmark cannot rot."""

from __future__ import annotations

import asyncio

import pytest

from bench import idle_checks


@pytest.mark.e2e
def test_the_sweep_part_runs_and_finds_every_idle_repository_unchanged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    figures = asyncio.run(idle_checks.sweep_cpu(repos=20, seconds=2, interval=2.0))
    native = figures["smart HTTP"]
    assert native["repositories"] == 20 and native["checks"] >= 10
    assert native["signalled"] == 0 and native["failed"] == 0
    assert figures["git ls-remote"]["checks"] >= 1
    assert figures["signals"] == 0
