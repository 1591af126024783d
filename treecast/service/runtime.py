"""What every part of the service layer shares: the settings, the one way to the database,
the Temporal client, the cipher.

The rule for blocking work (docs/contracts.md, "The service layer"): a service method is
`async`; its database work runs in `await runtime.db(work)` (one transaction, on a worker
thread), other blocking work (a git host's answer, a host key scan, an import) in
`await runtime.off_loop(work, ...)`, and Temporal calls in `await runtime.temporal(...)`.
The event loop never waits for any of them, so the doors add no wrappers of their own.
The threads are anyio's (what the ASGI server runs synchronous code on, 40 at a time),
so a flood of requests leaves room for /ready.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from anyio import to_thread
from sqlmodel import Session
from temporalio.client import Client

from treecast.config import Settings
from treecast.crypto import Cipher
from treecast.db import session_scope
from treecast.service.errors import Unreachable, call_failure
from treecast.store import keys

T = TypeVar("T")


class Runtime:
    """One process's settings, its database helper and its Temporal client."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: Client | None = None

    def cipher(self) -> Cipher:
        return keys.cipher(self.settings)

    async def db(self, work: Callable[[Session], T]) -> T:
        """`work(session)` in one transaction (committed when it returns), off the loop."""

        def run() -> T:
            with session_scope(self.settings.database_url) as session:
                return work(session)

        return await to_thread.run_sync(run)

    async def off_loop(self, work: Callable[..., T], *args: Any) -> T:
        """Blocking work that is not the database's, on a worker thread."""
        return await to_thread.run_sync(work, *args)

    async def client(self) -> Client:
        """The Temporal client, connected on first use (`Unreachable` when it cannot be)."""
        if self._client is None:
            try:
                self._client = await connect(self.settings)
            except Exception as error:
                raise Unreachable(
                    f"cannot reach Temporal at {self.settings.temporal_address} "
                    f"({type(error).__name__}); start it with `make run` or set TEMPORAL_ADDRESS"
                ) from None
        return self._client

    def use_client(self, client: Client) -> None:
        """Use this client instead of connecting (tests hand in their server's)."""
        self._client = client

    async def temporal(self, call: Callable[[Client], Awaitable[T]], what: str) -> T:
        """Run a Temporal call, turning connection failures, queries no worker answers
        and refused calls into `Unreachable`; `what` names the call."""
        client = await self.client()
        try:
            return await call(client)
        except Exception as error:
            failure = call_failure(error, what, self.settings)
            if failure is None:
                raise
            raise failure from None


async def connect(settings: Settings) -> Client:
    """Connect to Temporal (a seam tests can replace)."""
    from treecast.temporal_client import connect as connecting

    return await connecting(settings)
