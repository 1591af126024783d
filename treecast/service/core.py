"""`TreecastService`: what every front door (the CLI, the HTTP API, the admin page) calls.

It owns the database sessions and the Temporal client; callers pass plain values and
get typed results back, or a `UserError` / `Unreachable` with a one-line message.
Nothing above this layer touches tables or the Temporal client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from temporalio.client import Client

from models.sync import SyncOutcome, SyncStatus
from treecast.config import Settings, resolve_secret_key
from treecast.crypto import Cipher
from treecast.db import session_scope
from treecast.service import registry, workflows
from treecast.service.errors import Unreachable, call_failure
from treecast.store.ledger import forget_ledger

T = TypeVar("T")


@dataclass
class AppInfo:
    """An app as people see it (never its secrets)."""

    app_id: str
    name: str
    base_url: str
    watches: int
    created_at: str


@dataclass
class AppAdded:
    """A new app and its webhook secret (shown once)."""

    app_id: str
    name: str
    base_url: str
    secret: str


@dataclass
class RepositoryInfo:
    """A repository as people see it (never its token)."""

    repository_id: str
    url: str
    ref: str
    poll_interval_seconds: int
    has_token: bool = False
    watches: int = 0
    created_at: str = ""


@dataclass
class WatchInfo:
    """One app's watch of one repository."""

    app_id: str
    repository_id: str
    paths: list[str]
    created: bool


@dataclass
class RepositoryStatus:
    """What the database knows of a repository and its watches, and its workflow's status."""

    repository_id: str
    url: str
    ref: str
    apps: list[dict[str, Any]]
    sync: SyncStatus | None = None  # None: not running, or Temporal did not tell


@dataclass
class StatusReport:
    """`status` of some repositories; `temporal_error` when Temporal could not tell."""

    repositories: list[RepositoryStatus] = field(default_factory=list)
    unknown: set[str] = field(default_factory=set)  # ids whose workflow state is unknown
    temporal_error: str | None = None


class TreecastService:
    """Apps, repositories, watches, syncs and status, for one process's settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: Client | None = None

    # -- plumbing ---------------------------------------------------------------------------

    def _cipher(self) -> Cipher:
        return Cipher(resolve_secret_key(self.settings))

    async def client(self) -> Client:
        """The Temporal client, connected on first use (`Unreachable` when it cannot be)."""
        if self._client is None:
            try:
                self._client = await workflows_connect(self.settings)
            except Exception as error:
                raise Unreachable(
                    f"cannot reach Temporal at {self.settings.temporal_address} "
                    f"({type(error).__name__}); start it with `make run` or set TEMPORAL_ADDRESS"
                ) from None
        return self._client

    async def _temporal(self, call: Callable[[Client], Awaitable[T]], what: str) -> T:
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

    # -- apps -------------------------------------------------------------------------------

    def add_app(self, name: str, url: str, secret: str | None) -> AppAdded:
        """Register an app; a `whsec_` secret is generated when none is given."""
        with session_scope(self.settings.database_url) as session:
            created = registry.add_app(session, self.settings, self._cipher(), name, url, secret)
            app = created.app
            return AppAdded(app.id, app.name, app.base_url, created.secret)

    def set_app_batch(self, app_id: str, on: bool) -> None:
        """Turn batch delivery (several file events per `/batch` request) on or off."""
        with session_scope(self.settings.database_url) as session:
            registry.set_app_batch(session, app_id, on)

    def list_apps(self) -> list[AppInfo]:
        """Every app, oldest first."""
        with session_scope(self.settings.database_url) as session:
            return [AppInfo(**row) for row in registry.list_apps(session)]

    def remove_app(self, app_id: str) -> list[str]:
        """Delete an app with its watches, ledgers and log; the repositories it watched."""
        with session_scope(self.settings.database_url) as session:
            return registry.remove_app(session, app_id)

    def rotate_app_secret(self, app_id: str, secret: str | None, finish: bool) -> str | None:
        """Add a secret (both sign until finished), or with `finish` keep only the newest."""
        with session_scope(self.settings.database_url) as session:
            return registry.rotate_app_secret(session, self._cipher(), app_id, secret, finish)

    # -- repositories -----------------------------------------------------------------------

    def add_repository(
        self, url: str, ref: str, interval: int | None, token: str | None
    ) -> tuple[RepositoryInfo, bool]:
        """Register a repository (or find the one with the same URL and ref); True when new."""
        with session_scope(self.settings.database_url) as session:
            repo, created = registry.add_repository(
                session, self.settings, self._cipher(), url, ref, interval, token
            )
            info = RepositoryInfo(
                repository_id=repo.id,
                url=repo.url,
                ref=repo.ref,
                poll_interval_seconds=repo.poll_interval_seconds,
                has_token=repo.token_encrypted is not None,
            )
        return info, created

    def list_repositories(self) -> list[RepositoryInfo]:
        """Every repository, oldest first."""
        with session_scope(self.settings.database_url) as session:
            return [RepositoryInfo(**row) for row in registry.list_repositories(session)]

    def poll_interval(self, repository_id: str) -> int:
        """The repository's poll interval (a `UserError` for an unknown id)."""
        with session_scope(self.settings.database_url) as session:
            return registry.get_repository(session, repository_id).poll_interval_seconds

    async def remove_repository(self, repository_id: str) -> None:
        """Stop the repository's sync, then forget it with its watches, ledgers and log."""
        self.poll_interval(repository_id)  # an unknown id is a UserError
        await self._temporal(
            lambda client: workflows.stop(client, repository_id),
            f"stopping {repository_id}'s sync",
        )
        with session_scope(self.settings.database_url) as session:
            registry.remove_repository(session, repository_id)

    # -- watches ----------------------------------------------------------------------------

    def watch(self, app_id: str, repository_id: str, globs: list[str]) -> WatchInfo:
        """Make an app watch a repository (or change its path globs)."""
        import json

        with session_scope(self.settings.database_url) as session:
            watch, created = registry.watch(session, app_id, repository_id, globs)
            return WatchInfo(app_id, repository_id, json.loads(watch.path_globs), created)

    def unwatch(self, app_id: str, repository_id: str) -> int:
        """Stop a watch and forget what the app received; the ledger rows removed."""
        with session_scope(self.settings.database_url) as session:
            return registry.unwatch(session, app_id, repository_id)

    def forget_ledger(self, app_id: str, repository_id: str) -> int:
        """Forget what an app received from a repository (the next sync sends it all again)."""
        with session_scope(self.settings.database_url) as session:
            registry.get_watch(session, app_id, repository_id)
        return forget_ledger(self.settings, app_id, repository_id)

    # -- syncs ------------------------------------------------------------------------------

    async def start_sync(
        self, repository_id: str, *, sync_now: bool = True, what: str | None = None
    ) -> None:
        """Make sure the repository's loop runs; with `sync_now`, sync right away.

        `what` names the call in a refusal ("Temporal refused {what}").
        """
        interval = self.poll_interval(repository_id)
        await self._temporal(
            lambda client: workflows.start_sync(
                client, self.settings, repository_id, interval, sync_now=sync_now
            ),
            what or f"the sync request for {repository_id}",
        )

    async def sync_and_wait(
        self,
        repository_id: str,
        *,
        timeout: float,
        on_progress: Callable[[str], None] | None = None,
        request_id: str | None = None,
    ) -> SyncOutcome:
        """Sync now and return once that sync's deliveries are done (or it was refused).

        Raises TimeoutError when it is not done within `timeout` (it goes on).
        """
        interval = self.poll_interval(repository_id)
        return await self._temporal(
            lambda client: workflows.sync_and_wait(
                client,
                self.settings,
                repository_id,
                interval,
                on_progress=on_progress,
                timeout=timeout,
                request_id=request_id,
            ),
            f"the sync request for {repository_id}",
        )

    async def reset(self, repository_id: str) -> None:
        """Close the repository's breaker and sync now."""
        interval = self.poll_interval(repository_id)
        await self._temporal(
            lambda client: workflows.reset(client, self.settings, repository_id, interval),
            f"the reset of {repository_id}",
        )

    async def set_paused(self, repository_id: str, paused: bool) -> bool:
        """Pause or resume polling; False when the repository's loop does not run."""
        self.poll_interval(repository_id)  # an unknown id is a UserError
        toggle = workflows.pause if paused else workflows.resume
        doing = "pausing" if paused else "resuming"
        return await self._temporal(
            lambda client: toggle(client, repository_id), f"{doing} {repository_id}"
        )

    # -- status -----------------------------------------------------------------------------

    async def status(self, repository_id: str | None = None) -> StatusReport:
        """The database's view of one or every repository, with each workflow's status.

        When Temporal cannot tell, what the database knows is still returned, with
        `temporal_error` set and the repositories not yet asked marked unknown.
        """
        with session_scope(self.settings.database_url) as session:
            if repository_id:
                repos = [registry.get_repository(session, repository_id)]
            else:
                ids = [r["repository_id"] for r in registry.list_repositories(session)]
                repos = [registry.get_repository(session, i) for i in ids]
            report = StatusReport(
                [
                    RepositoryStatus(r.id, r.url, r.ref, registry.watches_of(session, r.id))
                    for r in repos
                ]
            )
        asked: set[str] = set()
        try:
            for row in report.repositories:
                rid = row.repository_id
                row.sync = await self._temporal(
                    lambda client, rid=rid: workflows.get_status(client, rid),  # type: ignore[misc]
                    f"the status query of {rid}",
                )
                asked.add(rid)
        except Unreachable as error:
            # The others would wait for the same missing worker: they stay unknown.
            report.temporal_error = str(error)
        report.unknown = {r.repository_id for r in report.repositories} - asked
        return report


async def workflows_connect(settings: Settings) -> Client:
    """Connect to Temporal (a seam tests can replace)."""
    from treecast.temporal_client import connect

    return await connect(settings)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run one service call to the end from synchronous code (the CLI)."""
    return asyncio.run(coroutine)
