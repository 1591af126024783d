"""`TreecastService`: what every front door (the CLI, the HTTP API, the admin page) calls.

It owns the database sessions and the Temporal client; callers pass plain values and
get typed results back, or a `UserError` / `Unreachable` with a one-line message.
Nothing above this layer touches tables or the Temporal client.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from temporalio.client import Client

from models.bulk import BulkAction, BulkInput
from models.sync import BreakerStatus, SyncOutcome, SyncStatus
from models.tables import Repository, Watch, WatchAccess, WatchStatus, new_repository_id
from treecast.config import Settings
from treecast.crypto import Cipher
from treecast.db import (
    SchemaBehind,
    SchemaStatus,
    engine_for,
    ensure_schema,
    make_engine,
    prepare,
    schema_status,
    session_scope,
)
from treecast.service import (
    access,
    admin,
    docora_import,
    pushes,
    registry,
    replay_guard,
    tokens,
    workflows,
)
from treecast.service import credentials as creds
from treecast.service.admin_sessions import AdminSessions
from treecast.service.credentials import CredentialInfo, CredentialSpec, HostKeyInfo
from treecast.service.docora_import import DocoraImportReport
from treecast.service.errors import (
    NotConfigured,
    NotFound,
    Unauthorized,
    Unreachable,
    UserError,
    call_failure,
    shown,
)
from treecast.service.views import (
    AppDetail,
    AppOnboarded,
    DeliveryRow,
    LiveState,
    Page,
    PushResult,
    Readiness,
    SyncAccepted,
    WatchedRepository,
    WatchState,
)
from treecast.store import bulk, keys
from treecast.store import watches as store_watches
from treecast.store.credentials import StoredCredentials
from treecast.store.ledger import forget_ledger
from treecast.urls import owner_and_name
from treecast.webhooks.signing import SigningScheme

T = TypeVar("T")
log = logging.getLogger("treecast.api")

# Why a repository given a generated deploy key does not sync yet.
GENERATED_KEY_WAITS = (
    "not synced yet: add credentials.ssh_public_key to the git host as a read-only deploy "
    "key, then POST /api/repositories/{}/sync"
)

# How long /ready waits for the database and for Temporal.
READY_TIMEOUT = 2.0
# How long a workflow's live state, once asked, answers repository listings.
LIVE_CACHE_SECONDS = 1.0


@dataclass
class AppInfo:
    """An app as people see it (never its secrets)."""

    app_id: str
    name: str
    base_url: str
    watches: int
    created_at: str
    batch: bool = False  # file events go several to one `POST {base_url}/batch`
    scheme: str = SigningScheme.STANDARD  # how its webhooks are signed (or "docora")


@dataclass
class AppAdded:
    """A new app, its webhook secret and its API token (both shown once)."""

    app_id: str
    name: str
    base_url: str
    secret: str
    token: str = ""


@dataclass
class RepositoryInfo:
    """A repository as people see it (never its token or keys)."""

    repository_id: str
    url: str
    ref: str
    poll_interval_seconds: int
    has_token: bool = False
    watches: int = 0
    created_at: str = ""
    # The credentials its fetches use now (an app's; kind none: none needed) and their
    # public parts: the deploy key's fingerprint and public key, pinned host keys, the
    # GitHub App's ids. With `RepositoryAdded` for an app: that app's own.
    credentials: CredentialInfo = field(default_factory=CredentialInfo)
    fetched_with: str | None = None  # whose credentials those are (an app id)


@dataclass
class CredentialsSet:
    """Credentials an operator or an app set on watches of a repository."""

    repository_id: str
    url: str
    ref: str
    app_ids: list[str]  # the watches that now hold them
    credentials: CredentialInfo
    pending: bool = False  # a generated key: nothing is delivered until it is on the host


@dataclass
class RepositoryAdded(RepositoryInfo):
    """A registered repository; `push_secret` (shown once) only when it is new."""

    push_secret: str | None = None


@dataclass
class WatchInfo:
    """One app's watch of one repository."""

    app_id: str
    repository_id: str
    paths: list[str]
    created: bool
    credentials: CredentialInfo = field(default_factory=CredentialInfo)  # the app's own
    pending: bool = False  # a generated key: no sync until it is on the git host
    submodules: str = "off"
    lfs: bool = False


@dataclass
class RepositoryStatus:
    """What the database knows of a repository and its watches, and its workflow's status."""

    repository_id: str
    url: str
    ref: str
    apps: list[dict[str, Any]]
    sync: SyncStatus | None = None  # None: not running, or Temporal did not tell
    # Paths of the latest snapshot that are never delivered (`..`, `.git`, absolute...).
    skipped_unsafe_paths: int = 0
    credentials: CredentialInfo = field(default_factory=CredentialInfo)  # the fetch's
    fetched_with: str | None = None  # whose credentials fetch it (an app id; None: none)


@dataclass
class StatusReport:
    """`status` of some repositories; `temporal_error` when Temporal could not tell."""

    repositories: list[RepositoryStatus] = field(default_factory=list)
    unknown: set[str] = field(default_factory=set)  # ids whose workflow state is unknown
    temporal_error: str | None = None


@dataclass
class AdminOverview:
    """The admin overview: the database's counts and each repository's live state."""

    counts: admin.Counts
    live: dict[str, LiveState]
    watches_behind_open_breakers: int = 0  # the watches of those repositories

    @property
    def open_breakers(self) -> list[str]:
        """Repositories whose breaker is open or half-open."""
        return sorted(
            rid
            for rid, state in self.live.items()
            if state.breaker_state in (BreakerStatus.OPEN, BreakerStatus.HALF_OPEN)
        )

    @property
    def unknown(self) -> list[str]:
        """Repositories whose workflow did not tell (a slow or missing worker)."""
        return sorted(rid for rid, state in self.live.items() if not state.known)


class TreecastService:
    """Apps, repositories, watches, syncs and status, for one process's settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: Client | None = None
        # Push hooks' outcomes in this process, for /health (delivery ids: replay_guard).
        self.push_counts: dict[str, int] = {}
        self.admin_sessions = AdminSessions(
            settings.database_url, settings.admin_session_seconds, self._cipher
        )
        self._live_cache: dict[str, tuple[float, LiveState]] = {}

    # -- plumbing ---------------------------------------------------------------------------

    def _cipher(self) -> Cipher:
        return keys.cipher(self.settings)

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

    def add_app(
        self,
        name: str,
        url: str,
        secret: str | None,
        *,
        scheme: str | None = None,
        client_auth_key: str | None = None,
        treecast_events: bool | None = None,
    ) -> AppAdded:
        """Register an app; a `whsec_` secret is generated when none is given. `scheme`
        "docora" signs as Docora did, with `client_auth_key`."""
        with session_scope(self.settings.database_url) as session:
            created = registry.add_app(
                session,
                self.settings,
                self._cipher(),
                name,
                url,
                secret,
                scheme=scheme,
                client_auth_key=client_auth_key,
                treecast_events=treecast_events,
            )
            app = created.app
            return AppAdded(app.id, app.name, app.base_url, created.secret, created.token)

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

    def set_app_scheme(
        self,
        app_id: str,
        scheme: str | None,
        client_auth_key: str | None = None,
        treecast_events: bool | None = None,
    ) -> str:
        """Change how an app's webhooks are signed (for the CLI, the API and the admin page);
        returns the scheme now in force. None leaves a value unchanged."""
        with session_scope(self.settings.database_url) as session:
            app = registry.set_app_scheme(
                session, self._cipher(), app_id, scheme, client_auth_key, treecast_events
            )
            return app.signing_scheme or SigningScheme.STANDARD

    def import_docora(
        self, database_url: str, encryption_key: str, *, dry_run: bool = False
    ) -> DocoraImportReport:
        """Import a Docora database's apps, tokens, repositories, watches and ledgers (one
        transaction; idempotent; `dry_run` only reports). See docs/migrating-from-docora.md."""
        return docora_import.import_docora(
            self.settings, self._cipher(), database_url, encryption_key, dry_run=dry_run
        )

    def rotate_app_secret(self, app_id: str, secret: str | None, finish: bool) -> str | None:
        """Add a secret (both sign until finished), or with `finish` keep only the newest."""
        with session_scope(self.settings.database_url) as session:
            return registry.rotate_app_secret(session, self._cipher(), app_id, secret, finish)

    # -- repositories -----------------------------------------------------------------------

    def add_repository(
        self,
        url: str,
        ref: str,
        interval: int | None,
        token: str | None,
        credentials: CredentialSpec | None = None,
        *,
        app_id: str | None = None,
        paths: list[str] | None = None,
    ) -> tuple[RepositoryAdded, bool]:
        """Register a repository (or find the one with the same URL and ref); True when new.

        With `app_id`, that app watches it too (`paths`: its globs), with its own
        credentials (`token`, or a deploy key and host keys, or a GitHub App: see
        `CredentialSpec`), checked against the git host first (`AccessRefused`, nothing
        saved). Credentials without an app are refused. The push-hook secret is shown
        once, when the repository is new.
        """
        spec = _spec(token, credentials)
        if app_id is not None:
            saved, _ = self._save_watch(app_id, url, ref, None, paths, spec, interval=interval)
            with session_scope(self.settings.database_url) as session:
                repo = registry.get_repository(session, saved.repository_id)
                info = self._repository_info(session, repo)
            info.credentials = saved.credentials or CredentialInfo()
            added = RepositoryAdded(**vars(info), push_secret=saved.push_secret)
            return added, saved.repository_created
        cipher = self._cipher()
        with session_scope(self.settings.database_url) as session:
            repo, created = registry.add_repository(
                session, self.settings, cipher, url, ref, interval, None, spec
            )
            info = RepositoryAdded(
                **vars(self._repository_info(session, repo)),
                push_secret=(
                    cipher.decrypt(repo.push_secret_encrypted)
                    if created and repo.push_secret_encrypted
                    else None
                ),
            )
        return info, created

    def rotate_push_secret(self, repository_id: str) -> str:
        """A new push-hook secret for the repository (shown once); the old one stops verifying."""
        with session_scope(self.settings.database_url) as session:
            return registry.rotate_push_secret(session, self._cipher(), repository_id)

    def push_url(self, host: str = "github", base: str | None = None) -> str:
        """Where a git host sends the repository's push hooks (`base`: the API's own URL)."""
        root = self.settings.api_public_url or base or f"http://{self.settings.api_listen}"
        return f"{root.rstrip('/')}/hooks/{host}"

    def set_credentials(
        self, repository_id: str, spec: CredentialSpec, *, app_id: str | None = None
    ) -> CredentialsSet:
        """Rotate, replace or (`CredentialSpec(clear=True)`) drop credentials of watches of
        a repository: `app_id`'s watch, or (for operators) every watch of it. Each is
        checked against the git host first; `AccessRefused` when any is refused, and then
        none changed. The next sync uses them."""
        if spec.empty():
            raise UserError(
                "nothing to change: give a token, a deploy key, host keys, a GitHub App or --clear"
            )
        cipher = self._cipher()
        with session_scope(self.settings.database_url) as session:
            repo = registry.get_repository(session, repository_id)
            if app_id is not None:
                targets = [registry.get_watch(session, app_id, repository_id)]
            else:
                targets = registry.watches_of_repository(session, repository_id)
            if not targets:
                raise UserError(f"no app watches {repository_id}: {registry.NO_APP}")
            url, ref = repo.url, repo.ref or ""
            currents = [(w.app_id, StoredCredentials.of(w)) for w in targets]
        registry.check_token_transport(self.settings, url, spec)
        comment = f"treecast-{repository_id}"
        spec, generated = access.one_key_for_all(spec, comment)
        checked = {
            app: access.check(
                self.settings,
                cipher,
                url,
                ref,
                spec,
                current,
                comment=comment,
                generated=generated,
            )
            for app, current in currents
        }
        with session_scope(self.settings.database_url) as session:
            for app, done in checked.items():
                registry.watch_with(session, app, repository_id, None, done)
            keys.remember(session, cipher)
        first = next(iter(checked.values()))
        return CredentialsSet(
            repository_id,
            url,
            ref,
            sorted(checked),
            creds.credential_info(first.planned.stored),
            pending=first.planned.generated,
        )

    def scan_host_keys(self, url: str) -> list[HostKeyInfo]:
        """The host keys the ssh server of `url` offers now, for a person to confirm before
        they are pinned (`CredentialSpec(scan_host_keys=True, accept_host_keys=[...])`).
        Nothing is stored."""
        return creds.scan(self.settings, url)

    def list_repositories(self) -> list[RepositoryInfo]:
        """Every repository, oldest first."""
        with session_scope(self.settings.database_url) as session:
            return [RepositoryInfo(**row) for row in registry.list_repositories(session)]

    def repository(self, repository_id: str) -> RepositoryInfo:
        """One repository (a `UserError` for an unknown id)."""
        with session_scope(self.settings.database_url) as session:
            return self._repository_info(session, registry.get_repository(session, repository_id))

    def _repository_info(self, session: Any, repo: Repository) -> RepositoryInfo:
        fetcher, info = registry.fetch_credentials(session, repo)
        return RepositoryInfo(
            repository_id=repo.id,
            url=repo.url,
            ref=repo.ref,
            poll_interval_seconds=repo.poll_interval_seconds,
            has_token=info.kind == creds.TOKEN,
            created_at=repo.created_at.isoformat(),
            credentials=info,
            fetched_with=fetcher,
        )

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

    def watch(
        self,
        app_id: str,
        repository_id: str,
        globs: list[str],
        credentials: CredentialSpec | None = None,
        submodules: str | None = None,
        lfs: bool | None = None,
    ) -> WatchInfo:
        """Make an app watch a repository (or change its path globs, its credentials, and
        its submodule and LFS choices when given): a new watch, or new credentials, only
        once the git host accepts the app's own credentials (none, for a public
        repository); `AccessRefused` otherwise, and nothing is saved."""
        with session_scope(self.settings.database_url) as session:
            registry.get_app(session, app_id)
            repo = registry.get_repository(session, repository_id)
        saved, _ = self._save_watch(
            app_id, repo.url, repo.ref, None, globs, credentials, submodules, lfs
        )
        return WatchInfo(
            app_id,
            repository_id,
            saved.paths,
            saved.watch_created,
            saved.credentials or CredentialInfo(),
            saved.sync_error is not None,
            submodules=saved.submodules,
            lfs=saved.lfs,
        )

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
        self,
        repository_id: str,
        *,
        sync_now: bool = True,
        what: str | None = None,
        reuse_recent: bool = False,
    ) -> None:
        """Make sure the repository's loop runs; with `sync_now`, sync right away.

        `reuse_recent` (a new or changed watch): the running sync, or one within a
        minute, serves the request: its commit goes to the apps behind, no fetch.
        `what` names the call in a refusal ("Temporal refused {what}").
        """
        interval = self.poll_interval(repository_id)
        await self._temporal(
            lambda client: workflows.start_sync(
                client,
                self.settings,
                repository_id,
                interval,
                sync_now=sync_now,
                reuse_recent=reuse_recent,
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
        running: bool = await self._temporal(
            lambda client: toggle(client, repository_id), f"{doing} {repository_id}"
        )
        if running or not paused:  # a loop that does not run is not paused: no check skipped
            with session_scope(self.settings.database_url) as session:
                registry.set_paused(session, repository_id, paused)
        return running

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
                    RepositoryStatus(
                        r.id,
                        r.url,
                        r.ref,
                        registry.watches_of(session, r.id),
                        skipped_unsafe_paths=_unsafe_in_latest(session, r.id),
                    )
                    for r in repos
                ]
            )
            for row, r in zip(report.repositories, repos, strict=True):
                row.fetched_with, row.credentials = registry.fetch_credentials(session, r)
        asked: set[str] = set()
        try:
            for row in report.repositories:
                rid = row.repository_id
                row.sync = await self._temporal(
                    lambda client, rid=rid: workflows.get_status(  # type: ignore[misc]
                        client, rid, self.settings.check_shards
                    ),
                    f"the status query of {rid}",
                )
                asked.add(rid)
        except Unreachable as error:
            # The others would wait for the same missing worker: they stay unknown.
            report.temporal_error = str(error)
        report.unknown = {r.repository_id for r in report.repositories} - asked
        return report

    # -- the HTTP API: credentials ----------------------------------------------------------

    def check_admin(self, token: str | None) -> None:
        """Accept the operator's bearer token (constant-time), or raise."""
        expected = self.settings.admin_token
        if not expected:
            raise NotConfigured(
                "the admin API is off: set TREECAST_ADMIN_TOKEN on the API server to use it"
            )
        if not token or not tokens.same_secret(token, expected):
            raise Unauthorized("missing or invalid admin token")

    def authenticate_app(self, token: str | None) -> str:
        """The id of the app a bearer token belongs to, or `Unauthorized`."""
        with session_scope(self.settings.database_url) as session:
            app_id = registry.app_for_token(session, token or "")
        if app_id is None:
            raise Unauthorized("missing or invalid app token")
        return app_id

    # -- the HTTP API: apps -----------------------------------------------------------------

    def onboard_app(
        self,
        name: str,
        base_url: str,
        secret: str | None,
        *,
        email: str | None = None,
        website: str | None = None,
        description: str | None = None,
        scheme: str | None = None,
        client_auth_key: str | None = None,
        treecast_events: bool | None = None,
    ) -> AppOnboarded:
        """Register an app with Docora's onboarding details; token and secret shown once."""
        with session_scope(self.settings.database_url) as session:
            created = registry.add_app(
                session,
                self.settings,
                self._cipher(),
                name,
                base_url,
                secret,
                email=email,
                website=website,
                description=description,
                scheme=scheme,
                client_auth_key=client_auth_key,
                treecast_events=treecast_events,
            )
            app = created.app
            return AppOnboarded(
                app.id, app.name, app.base_url, created.token, created.secret, _iso(app.created_at)
            )

    def apps_page(self, cursor: str | None, limit: int) -> Page[AppInfo]:
        """Apps by id, `limit` per page; `cursor` is the last page's `next_cursor`."""
        if cursor is not None:
            registry.check_app_id(cursor)
        with session_scope(self.settings.database_url) as session:
            rows = registry.apps_page(session, cursor, limit + 1)
        items = [AppInfo(**row) for row in rows[:limit]]
        return Page(items, items[-1].app_id if len(rows) > limit else None)

    def app_detail(self, app_id: str, *, with_watches: bool = True) -> AppDetail:
        """An app with its details and (for operators) its watches and their state."""
        with session_scope(self.settings.database_url) as session:
            app = registry.get_app(session, app_id)
            secrets = self._cipher().decrypt_list(app.secrets_encrypted)
            watches = registry.watches_of_app(session, app_id) if with_watches else []
            return AppDetail(
                app.id,
                app.name,
                app.base_url,
                app.email,
                app.website,
                app.description,
                len(secrets),
                _iso(app.created_at),
                _iso(app.updated_at),
                watches,
                app.signing_scheme or SigningScheme.STANDARD,
                bool(app.treecast_events),
            )

    def update_app(self, app_id: str, name: str | None, base_url: str | None) -> AppDetail:
        """Rename an app or move its base URL (checked as at registration)."""
        with session_scope(self.settings.database_url) as session:
            registry.update_app(session, self.settings, app_id, name, base_url)
        return self.app_detail(app_id, with_watches=False)

    def rotate_app_token(self, app_id: str, *, drop_docora_token: bool = False) -> str:
        """A new API token for the app (shown once); the old one stops working at once. An
        imported `docora_` token keeps working beside it unless `drop_docora_token`."""
        with session_scope(self.settings.database_url) as session:
            return registry.rotate_app_token(session, app_id, drop_docora_token=drop_docora_token)

    # -- the HTTP API: one app's repositories -----------------------------------------------

    async def watch_repository(
        self,
        app_id: str,
        url: str,
        ref: str,
        token: str | None,
        paths: list[str] | None,
        credentials: CredentialSpec | None = None,
        submodules: str | None = None,
        lfs: bool | None = None,
    ) -> WatchedRepository:
        """Register the repository if new and make the app watch it, then request a sync.

        The same call again changes nothing and sends nothing; other `paths` update the
        watch (and sync), and so do `credentials` (a deploy key, host keys or a GitHub App).
        Without Temporal the watch is still saved (`sync_requested` False): the
        repository's next poll delivers.
        """
        # The database work and the access check run on a thread, so the event loop keeps
        # answering (/health).
        result, changed = await asyncio.to_thread(
            self._save_watch, app_id, url, ref, token, paths, credentials, submodules, lfs
        )
        if result.sync_error is not None:
            return result  # a generated key: no sync fails while it is not on the host
        if changed:
            try:
                await self.start_sync(result.repository_id, reuse_recent=True)
                result.sync_requested = True
            except Unreachable as error:
                result.sync_error = f"the watch is saved; {error}"
        return result

    def _save_watch(
        self,
        app_id: str,
        url: str,
        ref: str,
        token: str | None,
        paths: list[str] | None,
        credentials: CredentialSpec | None = None,
        submodules: str | None = None,
        lfs: bool | None = None,
        *,
        interval: int | None = None,
    ) -> tuple[WatchedRepository, bool]:
        """Register the repository if new and make the app watch it; a new watch, or new
        credentials, only once the git host accepted the app's own (`access.check`, run
        between two transactions: no database lock is held while the host answers).
        Returns what `watch_repository` answers and whether anything changed."""
        spec = _spec(token, credentials)
        cipher = self._cipher()
        with session_scope(self.settings.database_url) as session:
            registry.get_app(session, app_id)
            url, ref = registry.vet_repository(self.settings, url, ref, interval, spec)
            if paths is not None:  # bad input is refused before the host is asked
                registry.check_globs(paths)
            registry.check_submodules(submodules)
            known = registry.find_repository(session, url, ref)
            repository_id = known.id if known is not None else new_repository_id()
            watched = session.get(Watch, (app_id, repository_id))
            current = StoredCredentials.of(watched) if watched is not None else None
        checked = None
        if watched is None or not spec.empty():
            checked = access.check(
                self.settings,
                cipher,
                url,
                ref,
                spec,
                current,
                comment=f"treecast-{repository_id}",
            )
        with session_scope(self.settings.database_url) as session:
            repo, repo_created = registry.add_repository(
                session, self.settings, cipher, url, ref, interval, repository_id=repository_id
            )
            watch, watch_created, changed = registry.watch_with(
                session, app_id, repo.id, paths, checked, submodules, lfs
            )
            if checked is not None:
                keys.remember(session, cipher)
            options = registry.watch_options(watch)
            owner, name = owner_and_name(repo.url)
            result = WatchedRepository(
                repository_id=repo.id,
                url=repo.url,
                owner=owner,
                name=name,
                ref=repo.ref,
                paths=json.loads(watch.path_globs),
                submodules=options["submodules"],
                lfs=options["lfs"],
                created_at=_iso(repo.created_at),
                repository_created=repo_created,
                watch_created=watch_created,
                sync_requested=False,
                push_secret=(
                    cipher.decrypt(repo.push_secret_encrypted)
                    if repo_created and repo.push_secret_encrypted
                    else None
                ),
                credentials=creds.credential_info(watch),
            )
        if checked is not None and checked.planned.generated:
            result.sync_error = GENERATED_KEY_WAITS.format(result.repository_id)
        return result, changed

    async def watches(
        self, app_id: str, cursor: str | None, limit: int, *, live: bool = True
    ) -> Page[WatchState]:
        """The app's watches by repository id, each with its workflow's live state."""
        if cursor is not None:
            registry.check_repository_id(cursor)
        rows = await asyncio.to_thread(self._watch_rows, app_id, cursor, limit + 1)
        states = [_watch_state_of_row(row) for row in rows[:limit]]
        if states:
            known = await asyncio.to_thread(
                self._credentials_of, app_id, [state.repository_id for state in states]
            )
            for state in states:
                state.credentials = known.get(state.repository_id)
        if live:
            await self._fill_live(states)
        else:
            for state in states:
                state.live.error = "not asked (live=false)"
        return Page(states, states[-1].repository_id if len(rows) > limit else None)

    def _watch_rows(self, app_id: str, after: str | None, limit: int) -> list[tuple[Any, ...]]:
        with session_scope(self.settings.database_url) as session:
            return registry.app_watch_rows(session, app_id, after, limit)

    def _credentials_of(self, app_id: str, repository_ids: list[str]) -> dict[str, CredentialInfo]:
        with session_scope(self.settings.database_url) as session:
            return registry.credentials_of(session, app_id, repository_ids)

    def _one_watch(self, app_id: str, repository_id: str) -> WatchState:
        with session_scope(self.settings.database_url) as session:
            return _watch_state(*registry.app_watch(session, app_id, repository_id))

    async def watch_state(self, app_id: str, repository_id: str) -> WatchState:
        """One of the app's watches with its workflow's live state (NotFound otherwise)."""
        state = await asyncio.to_thread(self._one_watch, app_id, repository_id)
        await self._fill_live([state])
        return state

    async def _fill_live(self, states: list[WatchState]) -> None:
        """Ask every repository's workflow at once, within the API's status timeout; what
        does not answer in time keeps `known=False` with the reason."""
        hidden = [s for s in states if s.access != WatchAccess.GRANTED]
        for state in hidden:
            # What the repository's workflow knows (its commit, its errors) is shown only
            # to apps whose own access holds.
            state.live.error = f"not shown: this app's access to the repository is {state.access}"
        states = [s for s in states if s.access == WatchAccess.GRANTED]
        if not states:
            return
        try:
            client = await self.client()
        except Unreachable as error:
            for state in states:
                state.live.error = str(error)
            return

        loop = asyncio.get_running_loop()

        async def ask(state: WatchState) -> None:
            try:
                status = await workflows.get_status(
                    client, state.repository_id, self.settings.check_shards
                )
            except Exception as error:
                failure = call_failure(error, "the status query", self.settings)
                state.live.error = str(failure) if failure else type(error).__name__
                return
            state.live = _live(status)
            self._live_cache[state.repository_id] = (loop.time(), state.live)

        # A client polling its list costs the workflows one question per LIVE_CACHE_SECONDS.
        asking: list[WatchState] = []
        for state in states:
            cached = self._live_cache.get(state.repository_id)
            if cached is not None and loop.time() - cached[0] < LIVE_CACHE_SECONDS:
                state.live = cached[1]
            else:
                asking.append(state)
        if len(self._live_cache) > 10_000:
            self._live_cache.clear()
        if not asking:
            return
        tasks = [asyncio.ensure_future(ask(state)) for state in asking]
        _, pending = await asyncio.wait(tasks, timeout=self.settings.api_status_timeout_seconds)
        for task in pending:
            task.cancel()
        for state in states:
            if not state.live.known and state.live.error is None:
                state.live.error = (
                    f"Temporal did not answer within {self.settings.api_status_timeout_seconds:g} s"
                )

    def unwatch_repository(self, app_id: str, repository_id: str) -> int:
        """Stop the app's watch and forget what it received (NotFound for another app's)."""
        with session_scope(self.settings.database_url) as session:
            registry.app_watch(session, app_id, repository_id)
            return registry.unwatch(session, app_id, repository_id)

    async def rotate_git_token(self, app_id: str, repository_id: str, token: str) -> bool:
        """Store a new git token on the app's own watch once the host accepts it, clear the
        watch's failure, close the breaker and sync (the ledger stays). False when
        Temporal could not be asked (the token is saved)."""
        await self.rotate_credentials(repository_id, CredentialSpec(token=token), app_id=app_id)
        try:
            await self.reset(repository_id)
        except Unreachable:
            return False
        return True

    async def rotate_credentials(
        self,
        repository_id: str,
        spec: CredentialSpec,
        *,
        app_id: str | None = None,
        owner: str | None = None,
    ) -> tuple[CredentialsSet, bool]:
        """Rotate, replace or (`spec.clear`) drop the credentials of watches of a
        repository (see `set_credentials`) and reset its breaker so the next sync uses
        them. `owner`: the calling app, which changes only its own watch (NotFound for a
        repository it does not watch); else `app_id`'s watch, or every watch (operators).
        Returns what was set and whether Temporal was asked."""
        if owner is not None:

            def mine() -> None:
                with session_scope(self.settings.database_url) as session:
                    registry.app_watch(session, owner, repository_id)

            await asyncio.to_thread(mine)
            app_id = owner
        done = await asyncio.to_thread(
            lambda: self.set_credentials(repository_id, spec, app_id=app_id)
        )
        if done.pending:
            return done, False  # the new key is not on the git host yet
        try:
            await self.reset(repository_id)
        except Unreachable:
            return done, False
        return done, True

    async def redeliver(self, app_id: str, repository_id: str) -> tuple[int, bool]:
        """Forget the app's ledger for the repository and sync: it gets every file again.
        Returns the rows forgotten and whether a sync was requested."""
        with session_scope(self.settings.database_url) as session:
            registry.app_watch(session, app_id, repository_id)
        forgotten = forget_ledger(self.settings, app_id, repository_id)
        try:
            await self.start_sync(repository_id)
        except Unreachable:
            return forgotten, False
        return forgotten, True

    async def request_sync(
        self, app_id: str, repository_id: str, idempotency_key: str | None
    ) -> SyncAccepted:
        """Sync now without waiting; the same idempotency key never starts a second sync."""
        with session_scope(self.settings.database_url) as session:
            watch, repository = registry.app_watch(session, app_id, repository_id)
            interval = repository.poll_interval_seconds
            store_watches.check_access_soon(watch)  # an app whose access is back is found so now
            session.add(watch)
        if idempotency_key:
            seed = f"{app_id}\0{repository_id}\0{idempotency_key}".encode()
            request_id = hashlib.sha256(seed).hexdigest()[:32]
        else:
            request_id = uuid.uuid4().hex
        await self._temporal(
            lambda client: workflows.request_sync(
                client, self.settings, repository_id, interval, request_id
            ),
            f"the sync request for {repository_id}",
        )
        return SyncAccepted(sync_id_of(repository_id, request_id), repository_id, request_id)

    async def sync_outcome(self, app_id: str, sync_id: str) -> SyncOutcome:
        """What became of a sync the app requested (NotFound when unknown or not its own)."""
        parsed = parse_sync_id(sync_id)
        if parsed is None:
            raise NotFound(f"no sync {shown(sync_id)}")
        repository_id, request_id = parsed
        with session_scope(self.settings.database_url) as session:
            watch, _ = registry.app_watch(session, app_id, repository_id)
            granted = watch.access in WatchAccess.DELIVERABLE
        outcome = await self._temporal(
            lambda client: workflows.sync_request(client, repository_id, request_id),
            f"the request query of {repository_id}",
        )
        if outcome is None:
            raise NotFound(f"no sync {shown(sync_id)} (unknown, or finished too long ago)")
        if not granted:
            # Only how it ended: the commit and the errors are for apps whose access holds.
            outcome = replace(outcome, commit=None, message=None, apps=[], summary=outcome.state)
        return outcome

    def deliveries(
        self, app_id: str, repository_id: str | None, cursor: str | None, limit: int
    ) -> Page[DeliveryRow]:
        """The app's delivery attempts, newest first."""
        before: int | None = None
        if cursor is not None:
            if not cursor.isdigit() or len(cursor) > 18:
                raise UserError(f"cursor {shown(cursor)} is not one this API gave out")
            before = int(cursor)
        with session_scope(self.settings.database_url) as session:
            if repository_id:
                registry.app_watch(session, app_id, repository_id)
            rows = registry.delivery_attempts(session, app_id, repository_id, before, limit + 1)
            items = [
                DeliveryRow(
                    id=int(row.id or 0),
                    repository_id=row.repository_id,
                    event=row.event,
                    path=row.path,
                    webhook_id=row.webhook_id,
                    http_status=row.http_status,
                    error=row.error,
                    duration_ms=row.duration_ms,
                    attempted_at=_iso(row.attempted_at),
                )
                for row in rows[:limit]
            ]
        return Page(items, str(items[-1].id) if len(rows) > limit else None)

    # -- the database schema ----------------------------------------------------------------

    def schema_status(self) -> SchemaStatus:
        """The database's revision against this release's (`treecast db current`)."""
        engine = make_engine(self.settings.database_url)
        try:
            return schema_status(engine)
        finally:
            engine.dispose()

    def prepare_database(self) -> SchemaStatus:
        """At the API's start: the schema up to date, upgraded by itself only with
        TREECAST_AUTO_MIGRATE or in dev mode; otherwise `SchemaBehind` says what to run."""
        upgrade = self.settings.auto_migrate or self.settings.dev
        return prepare(self.settings.database_url, upgrade=upgrade)

    def upgrade_schema(self) -> tuple[SchemaStatus, SchemaStatus]:
        """Migrate the database to this release's revision (`treecast db upgrade`); the
        status before and after. A database made before migrations is stamped first."""
        engine = make_engine(self.settings.database_url)
        try:
            before = schema_status(engine)
            return before, ensure_schema(engine, upgrade=True)
        finally:
            engine.dispose()

    # -- the HTTP API: health and push hooks ------------------------------------------------

    async def readiness(self) -> Readiness:
        """Whether this process can serve: the database answers and its schema is this
        release's, Temporal answers (each within a few seconds)."""

        def database() -> tuple[str, str]:
            try:
                status = schema_status(engine_for(self.settings.database_url))
            except SchemaBehind as error:
                return "ok", f"behind: {error}"
            except Exception as error:
                return f"unavailable ({type(error).__name__})", "unknown"
            return "ok", "ok" if status.up_to_date else f"behind: {status.problem()}"

        async def database_in_time() -> tuple[str, str]:
            try:
                return await asyncio.wait_for(asyncio.to_thread(database), READY_TIMEOUT)
            except TimeoutError:
                return f"unavailable (no answer within {READY_TIMEOUT:g} s)", "unknown"

        async def temporal() -> str:
            try:
                client = await asyncio.wait_for(self.client(), READY_TIMEOUT)
                healthy = await client.service_client.check_health(
                    timeout=timedelta(seconds=READY_TIMEOUT)
                )
            except (Exception, TimeoutError) as error:
                return f"unavailable ({type(error).__name__})"
            return "ok" if healthy else "unavailable (not serving)"

        (db_state, schema), temporal_state = await asyncio.gather(database_in_time(), temporal())
        return Readiness(
            db_state == schema == temporal_state == "ok", db_state, temporal_state, schema
        )

    async def receive_push(
        self, host: pushes.GitHost, headers: Mapping[str, str], body: bytes
    ) -> PushResult:
        """A git host's push hook: verify its signature against the secrets of the
        repositories it names (or TREECAST_PUSH_SECRET), then sync the registered
        repositories whose URL and ref it moved. `Unauthorized` when nothing verifies."""
        hook = pushes.read_headers(host, headers)
        urls = pushes.candidate_urls(body)
        secrets, rows = await asyncio.to_thread(self._push_candidates, urls)
        trusted = {url for url, secret in secrets.items() if pushes.verify(hook, body, secret)}
        everything = bool(self.settings.push_secret) and pushes.verify(
            hook, body, self.settings.push_secret or ""
        )
        if not trusted and not everything:
            self._count("rejected")
            log.warning(
                "refused a %s push hook (delivery %s): its signature matches none of the "
                "%d registered repositories it names",
                host,
                shown(hook.delivery_id or "none", 80),
                len(rows),
            )
            raise Unauthorized(
                f"the {host} hook's signature matches no registered repository's push secret"
            )
        if pushes.is_ping(hook):
            return PushResult(hook.event, ping=True)
        if not pushes.is_push(hook):
            self._count("ignored")
            return PushResult(hook.event, ignored=f"the {hook.event!r} event moves no ref")
        try:
            push = pushes.parse_push(body)
        except ValueError as error:
            raise UserError(str(error)) from None
        moved = [
            rid
            for rid, url, ref in rows
            if (everything or url in trusted)
            and url in push.urls
            and pushes.ref_matches(ref, push.ref, push.default_branch)
        ]
        delivery = hook.delivery_id
        url = self.settings.database_url
        if delivery and not await asyncio.to_thread(replay_guard.claim, url, host, delivery):
            self._count("duplicate")
            return PushResult(hook.event, duplicate=True)
        try:
            for rid in moved:
                await self.start_sync(rid, what=f"the push-triggered sync of {rid}")
                log.info("a %s push made %s sync", host, rid, extra={"repository_id": rid})
        except BaseException:
            if delivery:  # a retry of this delivery may try again
                await asyncio.to_thread(replay_guard.release, url, host, delivery)
            raise
        self._count("synced" if moved else "unmatched")
        return PushResult(hook.event, moved)

    def _push_candidates(
        self, urls: list[str]
    ) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
        """The push secrets of the registered repositories at `urls` (by URL), and their
        `(id, url, ref)`."""
        cipher = self._cipher()
        with session_scope(self.settings.database_url) as session:
            candidates = registry.repositories_at(session, urls)
            secrets = {
                r.url: cipher.decrypt(r.push_secret_encrypted)
                for r in candidates
                if r.push_secret_encrypted
            }
            return secrets, [(r.id, r.url, r.ref) for r in candidates]

    def _count(self, outcome: str) -> None:
        self.push_counts[outcome] = self.push_counts.get(outcome, 0) + 1

    # -- the admin page ---------------------------------------------------------------------

    async def live_states(self, repository_ids: list[str]) -> dict[str, LiveState]:
        """Each repository workflow's live state, asked at once within the API's status
        timeout; what does not answer keeps `known=False` with the reason."""
        states = [
            WatchState(rid, "", "", "", "", [], "", None, None, None, 0, None, "", LiveState(False))
            for rid in repository_ids
        ]
        # Connecting is bounded too: a Temporal that does not answer never hangs a page.
        wait = self.settings.api_status_timeout_seconds + 2.0
        try:
            await asyncio.wait_for(self._fill_live(states), wait)
        except TimeoutError:
            for state in states:
                if not state.live.known:
                    state.live.error = f"Temporal did not answer within {wait:g} s"
        return {state.repository_id: state.live for state in states}

    async def admin_overview(self) -> AdminOverview:
        """The overview's counts, and each repository's live breaker state."""

        def read() -> tuple[admin.Counts, list[str]]:
            with session_scope(self.settings.database_url) as session:
                ids = [r["repository_id"] for r in registry.list_repositories(session)]
                return admin.counts(session), ids

        counts, ids = await asyncio.to_thread(read)
        live = await self.live_states(ids)
        overview = AdminOverview(counts, live)
        if overview.open_breakers:

            def held_back() -> int:
                with session_scope(self.settings.database_url) as session:
                    held = admin.watches(session, repository_ids=set(overview.open_breakers))
                    return len(held)

            overview.watches_behind_open_breakers = await asyncio.to_thread(held_back)
        return overview

    def search_apps(self, query: str, offset: int, limit: int) -> tuple[list[AppInfo], int]:
        """Apps whose name, id or base URL contains `query`, by name; and how many match."""
        with session_scope(self.settings.database_url) as session:
            rows, total = admin.search_apps(session, query, max(0, offset), limit)
        return [AppInfo(**row) for row in rows], total

    async def admin_repositories(self) -> tuple[list[admin.RepositoryRow], dict[str, LiveState]]:
        """Every repository with its latest snapshot, and each workflow's live state."""

        def read() -> list[admin.RepositoryRow]:
            with session_scope(self.settings.database_url) as session:
                return admin.repositories(session)

        rows = await asyncio.to_thread(read)
        return rows, await self.live_states([r.repository_id for r in rows])

    async def admin_repository(self, repository_id: str) -> tuple[admin.RepositoryRow, LiveState]:
        """One repository with its watches, and its workflow's live state."""

        def read() -> admin.RepositoryRow:
            with session_scope(self.settings.database_url) as session:
                return admin.repository(session, repository_id)

        row = await asyncio.to_thread(read)
        live = await self.live_states([repository_id])
        return row, live[repository_id]

    async def failed_watches(
        self, app_id: str | None = None
    ) -> tuple[list[admin.FailedWatch], str | None]:
        """Watches whose delivery failed, then those whose repository's breaker is open
        (`cause` "breaker"); and why the breakers are unknown, when Temporal did not tell."""

        def failed() -> tuple[list[admin.FailedWatch], list[str]]:
            with session_scope(self.settings.database_url) as session:
                if app_id:
                    registry.get_app(session, app_id)
                rows = admin.watches(session, status=WatchStatus.FAILED, app_id=app_id)
                ids = [r["repository_id"] for r in registry.list_repositories(session)]
                return rows, ids

        rows, ids = await asyncio.to_thread(failed)
        live = await self.live_states(ids)
        unknown = [state.error for state in live.values() if not state.known and state.error]
        open_ids = {
            rid
            for rid, state in live.items()
            if state.breaker_state in (BreakerStatus.OPEN, BreakerStatus.HALF_OPEN)
        }
        if open_ids:

            def broken() -> list[admin.FailedWatch]:
                with session_scope(self.settings.database_url) as session:
                    return admin.watches(session, app_id=app_id, repository_ids=open_ids)

            seen = {(r.app_id, r.repository_id) for r in rows}
            for row in await asyncio.to_thread(broken):
                if (row.app_id, row.repository_id) not in seen:
                    state = live[row.repository_id]
                    row.cause, row.error_type = "breaker", "GitFailing"
                    row.error = state.message
                    rows.append(row)
        return rows, (unknown[0] if unknown else None)

    async def retry_watch(self, app_id: str, repository_id: str) -> bool:
        """Make a watch pending again (its ledger kept), close its repository's breaker and
        sync now; False when Temporal could not be asked (the next poll retries)."""

        def save() -> None:
            with session_scope(self.settings.database_url) as session:
                admin.reset_watch(session, app_id, repository_id)

        await asyncio.to_thread(save)
        try:
            await self.reset(repository_id)
        except Unreachable:
            return False
        return True

    async def resync_watch(self, app_id: str, repository_id: str) -> bool:
        """Forget what the app received from the repository and sync: it gets every file
        again. False when Temporal could not be asked (the next poll resends)."""
        _, requested = await self.redeliver(app_id, repository_id)
        return requested

    async def start_bulk(self, action: BulkAction, app_id: str | None) -> bulk.JobProgress:
        """Retry (the failed watches, and those whose repository's breaker is open) or
        resync (every watch of one app) as a `BulkWatches` workflow; `bulk_jobs` reads its
        progress. `Unreachable` when Temporal could not start it (nothing is changed)."""
        if action == BulkAction.RESYNC and not app_id:
            raise UserError("resync all needs an app: it resends every file of its watches")
        items = await asyncio.to_thread(
            self.watches_to_retry, app_id, failed_only=action == BulkAction.RETRY
        )
        if action == BulkAction.RETRY:
            # A watch whose repository's breaker is open is not `failed`: retry those too.
            rows, _ = await self.failed_watches(app_id)
            items += [
                (r.app_id, r.repository_id)
                for r in rows
                if (r.app_id, r.repository_id) not in items
            ]
        scope = f"app {app_id}" if app_id else "every app"
        label = (
            f"Retry the failed watches of {scope}"
            if action == BulkAction.RETRY
            else f"Resync the watches of {scope}"
        )
        job = BulkInput(uuid.uuid4().hex[:16], action, label, len(items))

        def create() -> None:
            with session_scope(self.settings.database_url) as session:
                bulk.create_job(session, job.job_id, action, label, items)

        def drop() -> None:
            with session_scope(self.settings.database_url) as session:
                bulk.drop_job(session, job.job_id)

        await asyncio.to_thread(create)
        try:
            await self._temporal(
                lambda client: workflows.start_bulk(client, self.settings, job),
                f"the start of the job {label!r}",
            )
        except BaseException:
            await asyncio.to_thread(drop)
            raise
        log.info("started %s (%d watches)", label, job.total, extra={"job_id": job.job_id})
        return bulk.JobProgress(job.job_id, label, job.total, 0, 0, datetime.now(UTC))

    def bulk_jobs(self, limit: int = 20) -> list[bulk.JobProgress]:
        """The newest bulk jobs with their progress (from the database: any API process
        shows any job, also once its workflow is done)."""
        with session_scope(self.settings.database_url) as session:
            return bulk.recent_jobs(session, limit)

    def watches_to_retry(
        self, app_id: str | None, *, failed_only: bool = True
    ) -> list[tuple[str, str]]:
        """`(app_id, repository_id)` of the failed watches (of one app), or all its watches."""
        with session_scope(self.settings.database_url) as session:
            if app_id:
                registry.get_app(session, app_id)
            status = WatchStatus.FAILED if failed_only else None
            rows = admin.watches(session, status=status, app_id=app_id)
        return [(r.app_id, r.repository_id) for r in rows]

    def delivery_log(
        self,
        *,
        app_id: str | None = None,
        repository_id: str | None = None,
        event: str | None = None,
        outcome: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> tuple[Page[admin.AdminDelivery], list[str]]:
        """Delivery attempts of every app, newest first, filtered; and the events logged."""
        before: int | None = None
        if cursor:
            if not cursor.isdigit() or len(cursor) > 18:
                raise UserError(f"cursor {shown(cursor)} is not one this page gave out")
            before = int(cursor)
        with session_scope(self.settings.database_url) as session:
            rows = admin.delivery_log(
                session,
                app_id=app_id or None,
                repository_id=repository_id or None,
                event=event or None,
                outcome=outcome or None,
                before=before,
                limit=limit + 1,
            )
            events = admin.delivery_events(session)
        items = rows[:limit]
        return Page(items, str(items[-1].id) if len(rows) > limit else None), events


def _spec(token: str | None, credentials: CredentialSpec | None) -> CredentialSpec:
    """One spec from a token given on its own and the other credentials."""
    spec = replace(credentials) if credentials is not None else CredentialSpec()
    if token is not None:
        if spec.token is not None:
            raise UserError("the access token was given twice")
        spec.token = token
    return spec


def _unsafe_in_latest(session: Any, repository_id: str) -> int:
    from treecast.store.snapshots import latest

    row = latest(session, repository_id)
    return row.skipped_unsafe_paths if row is not None else 0


async def workflows_connect(settings: Settings) -> Client:
    """Connect to Temporal (a seam tests can replace)."""
    from treecast.temporal_client import connect

    return await connect(settings)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run one service call to the end from synchronous code (the CLI)."""
    return asyncio.run(coroutine)


def sync_id_of(repository_id: str, request_id: str) -> str:
    """The public id of a sync request: it names its repository, so no table is needed."""
    return f"sync_{repository_id.removeprefix('repo_')}_{request_id}"


_SYNC_ID = re.compile(r"^sync_([0-9a-f]{24})_([0-9a-f]{32})$")


def parse_sync_id(sync_id: str) -> tuple[str, str] | None:
    """`(repository_id, request_id)` of a sync id, or None."""
    match = _SYNC_ID.match(sync_id or "")
    return (f"repo_{match.group(1)}", match.group(2)) if match else None


def _iso(value: datetime | None) -> str:
    """A stored time as ISO-8601 UTC (SQLite hands back naive datetimes)."""
    if value is None:
        return ""
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def _watch_state_of_row(row: tuple[Any, ...]) -> WatchState:
    """A `registry.WATCH_COLUMNS` row as a `WatchState`."""
    (
        rid, url, ref, globs, status, commit, error_type, error, retries, synced, created,
        access_state, checked_at, access_error, submodules, lfs, held,
    ) = row  # fmt: skip
    owner, name = owner_and_name(url)
    return WatchState(
        repository_id=rid,
        url=url,
        owner=owner,
        name=name,
        ref=ref,
        paths=json.loads(globs),
        status=status,
        delivered_commit=commit,
        last_error_type=error_type,
        last_error=error,
        retry_count=retries,
        last_synced_at=_iso(synced) or None,
        created_at=_iso(created),
        live=LiveState(known=False),
        access=access_state or WatchAccess.GRANTED,
        access_checked_at=_iso(checked_at) or None,
        access_error=access_error,
        submodules=submodules or "off",
        lfs=bool(lfs),
        held_back=json.loads(held) if held else [],
    )


def _watch_state(watch: Watch, repository: Repository) -> WatchState:
    owner, name = owner_and_name(repository.url)
    return WatchState(
        repository_id=repository.id,
        url=repository.url,
        owner=owner,
        name=name,
        ref=repository.ref,
        paths=json.loads(watch.path_globs),
        status=watch.status,
        delivered_commit=watch.delivered_commit,
        last_error_type=watch.last_error_type,
        last_error=watch.last_error,
        retry_count=watch.retry_count,
        last_synced_at=_iso(watch.last_synced_at) or None,
        created_at=_iso(watch.created_at),
        live=LiveState(known=False),
        credentials=creds.credential_info(watch),
        access=watch.access or WatchAccess.GRANTED,
        access_checked_at=_iso(watch.access_checked_at) or None,
        access_error=watch.access_error,
        **registry.watch_options(watch),
    )


def _live(status: SyncStatus | None) -> LiveState:
    if status is None:
        return LiveState(known=True, running=False, message="its sync loop is not running")
    return LiveState(
        known=True,
        running=True,
        breaker_state=str(status.breaker_state),
        consecutive_failures=status.consecutive_failures,
        last_commit=status.last_commit,
        last_sync_at=_iso(status.last_sync_at) or None,
        next_sync_at=_iso(status.next_sync_at) or None,
        checked_at=_iso(status.checked_at) or None,
        paused=status.paused,
        syncing=status.syncing,
        message=status.message,
    )
