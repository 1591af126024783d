"""`TreecastService`: what every front door (the CLI, the HTTP API, the admin page) calls.

A thin facade over one module per concept, one method per act whichever door calls it:
`apps`, `repositories`, `watches`, `syncs`, `deliveries`, `mirrors`, `admin`. Callers pass
plain values and get the dataclasses of `treecast.service.results` back, or a `UserError` /
`Unreachable` with a one-line message. Every method that touches the database or
Temporal is `async` and never blocks the event loop (`treecast.service.runtime`).
Nothing above this layer touches tables or the Temporal client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from temporalio.client import Client

from treecast.config import Settings
from treecast.service.admin import Admin
from treecast.service.apps import Apps
from treecast.service.deliveries import Deliveries
from treecast.service.mirrors import Mirrors
from treecast.service.repositories import Repositories
from treecast.service.runtime import Runtime
from treecast.service.syncs import Syncs
from treecast.service.watches import Watches

T = TypeVar("T")


class TreecastService:
    """The service layer for one process's settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runtime = Runtime(settings)
        self.syncs = Syncs(self.runtime)
        self.apps = Apps(self.runtime, self.syncs)
        self.repositories = Repositories(self.runtime, self.syncs)
        self.watches = Watches(self.runtime, self.syncs)
        self.deliveries = Deliveries(self.runtime, self.syncs)
        self.mirrors = Mirrors(self.runtime, self.syncs)
        self.admin = Admin(self.runtime, self.syncs)

    async def client(self) -> Client:
        """The Temporal client, connected on first use (`Unreachable` when it cannot be)."""
        return await self.runtime.client()


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run one service call to the end from synchronous code (scripts, tests)."""
    return asyncio.run(coroutine)
