"""What the service layer answers: one dataclass per concept, the same for every door.

The CLI prints these (as text, or picks their fields for `--json`), the HTTP API's
response models are made from them (treecast/api/answers.py) and checked against them
(tests/api/test_api_results.py: every field an `*Out` model answers is a field here, or
one the route adds), and the admin templates render them. Nothing in them is a secret
except the fields documented as shown once. Times are ISO-8601 UTC text. Adding a field:
add it here, fill it where the row becomes the result (the `*_of` builders below), and
name it in the `fields=` of the `*Out` model that shows it (a model without `fields=`
shows every field but its `exclude=`, the new one too).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from models.contents import SubmoduleMode
from models.sync import BreakerStatus, SyncStatus
from models.tables import App as AppRow
from models.tables import DeliveryAttempt, WatchAccess
from models.tables import Repository as RepositoryRow
from models.tables import Watch as WatchRow
from treecast.db import SchemaStatus as SchemaStatus
from treecast.gitcache.ssh import parse_host_keys
from treecast.store.bulk import JobProgress as JobProgress
from treecast.store.credentials import StoredCredentials
from treecast.store.watches import WatchColumns
from treecast.urls import owner_and_name
from treecast.webhooks.signing import SigningScheme

if TYPE_CHECKING:
    from treecast.delivery.manifest import BuiltManifest
    from treecast.service.errors import Unreachable

T = TypeVar("T")

NONE = "none"
TOKEN = "token"
SSH_KEY = "ssh-key"
GITHUB_APP = "github-app"


def iso(value: datetime | None) -> str | None:
    """A stored time as ISO-8601 UTC (SQLite hands back naive datetimes)."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


@dataclass
class Page(Generic[T]):
    """One page of a list; `next_cursor` is None on the last page; `total` how many match
    (when counted)."""

    items: list[T]
    next_cursor: str | None = None
    total: int | None = None


# -- credentials ------------------------------------------------------------------------------


@dataclass
class HostKeyInfo:
    """One host key a server offered (or that is pinned): type and SHA256 fingerprint."""

    key_type: str
    fingerprint: str


@dataclass
class CredentialInfo:
    """Which credential a watch uses, as people may see it (never a secret)."""

    kind: str = NONE
    ssh_key_fingerprint: str | None = None
    ssh_public_key: str | None = None
    host_key_fingerprints: list[str] = field(default_factory=list)
    github_app_id: str | None = None
    github_installation_id: str | None = None
    token_expires_at: str | None = None  # the last minted GitHub App token's expiry

    def summary(self) -> str:
        """One line for `status`."""
        if self.kind == SSH_KEY:
            pinned = ", ".join(self.host_key_fingerprints) or "none"
            return f"ssh-key {self.ssh_key_fingerprint} (host keys {pinned})"
        if self.kind == GITHUB_APP:
            expiry = (
                f"token expires {self.token_expires_at}"
                if self.token_expires_at
                else "no token minted yet"
            )
            return (
                f"github-app {self.github_app_id} installation "
                f"{self.github_installation_id} ({expiry})"
            )
        return self.kind


def credential_kind(stored: StoredCredentials) -> str:
    """Which kind of credential these are (`none`, `token`, `ssh-key`, `github-app`)."""
    if stored.ssh_key_encrypted:
        return SSH_KEY
    if stored.github_app_key_encrypted:
        return GITHUB_APP
    if stored.token_encrypted:
        return TOKEN
    return NONE


def credential_info(holder: WatchRow | StoredCredentials) -> CredentialInfo:
    """What people may see of a watch's credentials (never a secret)."""
    stored = holder if isinstance(holder, StoredCredentials) else StoredCredentials.of(holder)
    kind = credential_kind(stored)
    info = CredentialInfo(kind=kind)
    if stored.ssh_host_keys:
        info.host_key_fingerprints = [k.fingerprint for k in parse_host_keys(stored.ssh_host_keys)]
    if kind == SSH_KEY:
        info.ssh_key_fingerprint = stored.ssh_key_fingerprint
        info.ssh_public_key = stored.ssh_public_key
    if kind == GITHUB_APP:
        info.github_app_id = stored.github_app_id
        info.github_installation_id = stored.github_installation_id
        info.token_expires_at = iso(stored.github_token_expires_at)
    return info


@dataclass
class CredentialsSet:
    """Credentials set on watches of a repository, and whether a sync was asked for."""

    repository_id: str
    url: str
    ref: str
    app_ids: list[str]  # the watches that now hold them
    credentials: CredentialInfo
    pending: bool = False  # a generated key: nothing is delivered until it is on the host
    sync_requested: bool = False
    # Why no sync could be asked for (the credentials are saved); never on the wire.
    unreachable: Unreachable | None = field(default=None, repr=False)


# -- apps -------------------------------------------------------------------------------------


@dataclass
class App:
    """An app in a list (never its secrets)."""

    app_id: str
    name: str
    base_url: str
    watches: int
    created_at: str
    batch: bool = False  # file events go several to one `POST {base_url}/batch`
    scheme: str = SigningScheme.STANDARD  # how its webhooks are signed (or "docora")


@dataclass
class AppCreated:
    """A new app; `secret` and `token` are shown once."""

    app_id: str
    name: str
    base_url: str
    secret: str
    token: str
    created_at: str
    batch: bool = False


@dataclass
class AppDetail:
    """An app with its optional details and (for operators) its watches, never a secret."""

    app_id: str
    name: str
    base_url: str
    email: str | None
    website: str | None
    description: str | None
    active_secrets: int
    created_at: str
    updated_at: str
    watches: list[Watch] = field(default_factory=list)
    scheme: str = SigningScheme.STANDARD
    treecast_events: bool = False  # a docora app that also gets sync_recovered
    batch: bool = False
    sync_completed: bool = False  # after each commit delivered, its tree digest


def app_of(row: AppRow, watches: int) -> App:
    return App(
        app_id=row.id,
        name=row.name,
        base_url=row.base_url,
        watches=watches,
        created_at=iso(row.created_at) or "",
        batch=bool(row.batch),
        scheme=row.signing_scheme or SigningScheme.STANDARD,
    )


# -- the workflows' live state ----------------------------------------------------------------


@dataclass
class LiveState:
    """The repository workflow's own view, or why it is unknown."""

    known: bool
    running: bool = False
    breaker_state: str | None = None
    consecutive_failures: int | None = None
    last_commit: str | None = None
    last_sync_at: str | None = None
    next_sync_at: str | None = None
    checked_at: str | None = None  # with remote checks: the remote was checked since
    paused: bool | None = None
    syncing: bool | None = None
    message: str | None = None
    error: str | None = None  # why it is unknown

    @property
    def breaker_open(self) -> bool:
        return self.breaker_state in (BreakerStatus.OPEN, BreakerStatus.HALF_OPEN)


def live_of(status: SyncStatus | None) -> LiveState:
    """A workflow's status (None: it does not run) as people see it."""
    if status is None:
        return LiveState(known=True, running=False, message="its sync loop is not running")
    return LiveState(
        known=True,
        running=True,
        breaker_state=str(status.breaker_state),
        consecutive_failures=status.consecutive_failures,
        last_commit=status.last_commit,
        last_sync_at=iso(status.last_sync_at),
        next_sync_at=iso(status.next_sync_at),
        checked_at=iso(status.checked_at),
        paused=status.paused,
        syncing=status.syncing,
        message=status.message,
    )


# -- watches ----------------------------------------------------------------------------------


@dataclass
class AppRepository:
    """One app and one repository it watches: where the repository is, which paths."""

    app_id: str
    repository_id: str
    url: str
    owner: str
    name: str
    ref: str
    paths: list[str]


@dataclass
class Watch(AppRepository):
    """One app's watch of one repository: the database's view and, when asked, its
    workflow's (`live`)."""

    status: str
    delivered_commit: str | None
    last_error_type: str | None
    last_error: str | None
    retry_count: int
    last_synced_at: str | None
    created_at: str
    app_name: str = ""
    credentials: CredentialInfo | None = None  # the app's own: which kind, public parts
    # Whether the app's own access to the repository holds (granted, pending, refused),
    # when the git host last said so, and why it refused.
    access: str = WatchAccess.GRANTED
    access_checked_at: str | None = None
    access_error: str | None = None
    submodules: str = SubmoduleMode.OFF.value
    lfs: bool = False
    held_back: list[str] = field(default_factory=list)  # what the last delivery held back
    live: LiveState = field(default_factory=lambda: LiveState(known=False))
    cause: str = "delivery"  # why it needs an operator: its delivery, or its "breaker"


@dataclass
class Watched(AppRepository):
    """What watching a repository did: the repository (registered when new) and the app's
    watch of it, and whether a sync was asked for. `push_secret` only for a new
    repository, shown once."""

    created_at: str  # the repository's
    repository_created: bool
    watch_created: bool
    changed: bool  # new, or its paths, options or credentials changed
    credentials: CredentialInfo
    submodules: str = SubmoduleMode.OFF.value
    lfs: bool = False
    push_secret: str | None = None
    pending: bool = False  # a generated deploy key: no sync until it is on the git host
    sync_requested: bool = False
    # Why no sync could be asked for (the watch is saved); never on the wire.
    unreachable: Unreachable | None = field(default=None, repr=False)


def watch_of(
    watch: WatchRow | WatchColumns,
    repository: RepositoryRow | WatchColumns,
    *,
    app_name: str = "",
    credentials: CredentialInfo | None = None,
) -> Watch:
    """A watch row and its repository's (or one row of both: `WatchColumns`)."""
    owner, name = owner_and_name(repository.url)
    return Watch(
        app_id=watch.app_id,
        repository_id=watch.repository_id,
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
        last_synced_at=iso(watch.last_synced_at),
        created_at=iso(watch.created_at) or "",
        app_name=app_name,
        credentials=credentials,
        access=watch.access or WatchAccess.GRANTED,
        access_checked_at=iso(watch.access_checked_at),
        access_error=watch.access_error,
        submodules=watch.submodules or SubmoduleMode.OFF.value,
        lfs=bool(watch.lfs),
        held_back=json.loads(watch.held_back) if watch.held_back else [],
    )


# -- repositories -----------------------------------------------------------------------------


@dataclass
class Repository:
    """A repository (never its push secret or any credential): what the database knows,
    and, when asked, its watches (`apps`), its workflow's status (`sync`, raw, for
    `status`) or live state (`live`, for the pages)."""

    repository_id: str
    url: str
    ref: str
    poll_interval_seconds: int
    watches: int = 0
    created_at: str = ""
    # The credentials its fetches use now (an app's; kind none: none needed) and whose.
    credentials: CredentialInfo = field(default_factory=CredentialInfo)
    fetched_with: str | None = None
    last_snapshot_commit: str | None = None
    last_snapshot_at: str | None = None
    # Paths of the latest snapshot that are never delivered (`..`, `.git`, absolute...).
    skipped_unsafe_paths: int = 0
    apps: list[Watch] = field(default_factory=list)
    sync: SyncStatus | None = None  # None: not running, or Temporal did not tell
    live: LiveState | None = None

    @property
    def has_token(self) -> bool:
        return self.credentials.kind == TOKEN


@dataclass
class RepositoryAdded(Repository):
    """A registered repository (without an app), and whether its sync started;
    `push_secret` (shown once) only when it is new."""

    created: bool = False
    push_secret: str | None = None
    sync_requested: bool = False
    unreachable: Unreachable | None = field(default=None, repr=False)


@dataclass
class StatusReport:
    """`status` of some repositories; `temporal_error` when Temporal could not tell."""

    repositories: list[Repository] = field(default_factory=list)
    unknown: set[str] = field(default_factory=set)  # ids whose workflow state is unknown
    temporal_error: str | None = None


# -- syncs and deliveries ---------------------------------------------------------------------


@dataclass
class SyncAccepted:
    """A sync request the workflow accepted; follow it with `sync_id`."""

    sync_id: str
    repository_id: str
    request_id: str


@dataclass
class Delivery:
    """One webhook attempt."""

    id: int
    app_id: str
    repository_id: str
    event: str
    path: str | None
    webhook_id: str
    http_status: int | None
    error: str | None
    duration_ms: float
    attempted_at: str

    @property
    def ok(self) -> bool:
        """The app acknowledged it (a 2xx answer)."""
        return self.error is None and self.http_status is not None and self.http_status < 300


def delivery_of(row: DeliveryAttempt) -> Delivery:
    return Delivery(
        id=int(row.id or 0),
        app_id=row.app_id,
        repository_id=row.repository_id,
        event=row.event,
        path=row.path,
        webhook_id=row.webhook_id,
        http_status=row.http_status,
        error=row.error,
        duration_ms=row.duration_ms,
        attempted_at=iso(row.attempted_at) or "",
    )


@dataclass
class Redelivered:
    """An app's ledger for a repository forgotten: every file goes again."""

    app_id: str
    repository_id: str
    ledger_rows_removed: int
    sync_requested: bool = False
    unreachable: Unreachable | None = field(default=None, repr=False)


@dataclass
class PushResult:
    """What a push hook did: the repositories it made sync, or why none."""

    event: str
    repository_ids: list[str] = field(default_factory=list)
    duplicate: bool = False
    ignored: str | None = None  # why nothing was synced (an event that moves no ref)
    ping: bool = False


# -- verifiable mirrors -----------------------------------------------------------------------


@dataclass
class Manifest:
    """What an app should hold at a commit, ready to stream: its header line's fields,
    the headers signing the body as the app's webhooks are (none for the command line,
    which is not the app), and the body, spooled. Read it once: `pieces()` (the body) or
    `entries()` (the file lines parsed); either drops the spooled file when done, and so
    does `close()`."""

    header: dict[str, Any]
    headers: dict[str, str]
    body: BuiltManifest = field(repr=False)

    def pieces(self) -> Iterator[bytes]:
        """The body: the header line, then a line per file (also when the reader stops early)."""
        try:
            yield from self.body.pieces()
        finally:
            self.body.close()

    def entries(self) -> Iterator[dict[str, Any]]:
        """The file lines, parsed."""
        try:
            yield from self.body.entries()
        finally:
            self.body.close()

    def close(self) -> None:
        self.body.close()


@dataclass
class Reconciled:
    """What a reconcile found, and whether the difference is on its way."""

    repository_id: str
    commit: str | None  # the commit the app last fully acknowledged (None: none yet)
    tree_digest: str  # of what Treecast recorded the app holds, before any repair
    files: int  # in that record
    in_sync: bool
    held: int | None = None  # files the app listed (None: it sent its digest only)
    missing: int = 0
    changed: int = 0
    extra: int = 0
    repair: bool = False  # the difference is being sent
    sync_requested: bool = False
    sync_id: str | None = None
    sync_error: str | None = None

    @property
    def differ(self) -> int:
        """Files that differ (0 with a digest only: it says whether, not how many)."""
        return self.missing + self.changed + self.extra

    @property
    def summary(self) -> str:
        """One line for a person: "in sync", "not in sync" or "N files differ"."""
        if self.in_sync:
            return "in sync"
        if self.held is None:
            return "not in sync"
        return f"{self.differ} file{'s' if self.differ != 1 else ''} differ"


# -- operators --------------------------------------------------------------------------------


@dataclass
class AdminOverview:
    """The admin overview: the database's counts and each repository's live state."""

    apps: int
    repositories: int
    watches_by_status: dict[str, int]
    deliveries_last_hour: int
    failed_deliveries_last_hour: int
    live: dict[str, LiveState] = field(default_factory=dict)
    watches_behind_open_breakers: int = 0  # the watches of those repositories

    @property
    def open_breakers(self) -> list[str]:
        """Repositories whose breaker is open or half-open."""
        return sorted(rid for rid, state in self.live.items() if state.breaker_open)

    @property
    def unknown(self) -> list[str]:
        """Repositories whose workflow did not tell (a slow or missing worker)."""
        return sorted(rid for rid, state in self.live.items() if not state.known)


@dataclass
class Readiness:
    """Whether the database and Temporal answer and the schema is this release's; `ok`
    only when all three hold (each is "ok" or says what is wrong)."""

    ok: bool
    database: str
    temporal: str
    migrations: str


@dataclass
class DocoraImportReport:
    """What an import did (or, with `dry_run`, would do), and what it could not import."""

    dry_run: bool
    apps: list[str] = field(default_factory=list)
    repositories: list[str] = field(default_factory=list)
    watches: list[str] = field(default_factory=list)  # "app_id repository_id"
    ledger_rows: int = 0
    already_present: int = 0  # rows Treecast already had, left alone
    skipped: list[str] = field(default_factory=list)  # "what: why"
    # Why the imported repositories' syncs could not all be started; never on the wire.
    unreachable: Unreachable | None = field(default=None, repr=False)

    @property
    def changed(self) -> bool:
        """Whether anything was (or would be) written."""
        return bool(self.apps or self.repositories or self.watches or self.ledger_rows)

    def lines(self) -> list[str]:
        """The report for people, one line each."""
        verb = "would import" if self.dry_run else "imported"
        out = [
            f"{verb} {len(self.apps)} apps, {len(self.repositories)} repositories, "
            f"{len(self.watches)} watches, {self.ledger_rows} delivered files"
            f" ({self.already_present} rows already in Treecast, left as they are)"
        ]
        out += [f"  app {a}" for a in self.apps]
        out += [f"  repository {r}" for r in self.repositories]
        out += [f"  watch {w}" for w in self.watches]
        out += [f"cannot import {s}" for s in self.skipped]
        return out


def watched_of(watch: WatchRow, repository: RepositoryRow, **done: Any) -> Watched:
    """What watching did (`done`: whether new, changed...) to a watch row and its
    repository's."""
    shown = watch_of(watch, repository)
    return Watched(
        **{f.name: getattr(shown, f.name) for f in fields(AppRepository)},
        created_at=iso(repository.created_at) or "",
        credentials=credential_info(watch),
        submodules=shown.submodules,
        lfs=shown.lfs,
        **done,
    )
