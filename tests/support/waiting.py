"""Waiting on the wall clock for what other processes and threads do (a Temporal test
server's clock: `tests.support.temporal_env.eventually`)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


async def until(
    check: Callable[[], Any], timeout: float = 30.0, step: float = 0.1, what: str = "condition"
) -> Any:
    """Call `check` (plain or async) every `step` seconds until it answers something true,
    and return that; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:g} s")
        await asyncio.sleep(step)
