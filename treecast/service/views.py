"""Typed results of the service calls the HTTP API makes (the CLI's are in core.py).

Plain dataclasses: the API turns them into its response models, and nothing in them is
a secret except the fields documented as shown once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from treecast.service.credentials import CredentialInfo

T = TypeVar("T")


@dataclass
class Page(Generic[T]):
    """One page of a list; `next_cursor` is None on the last page."""

    items: list[T]
    next_cursor: str | None = None


@dataclass
class AppOnboarded:
    """A new app; `token` and `secret` are shown once."""

    app_id: str
    name: str
    base_url: str
    token: str
    secret: str
    created_at: str


@dataclass
class AppDetail:
    """An app with its optional details and its watches (never its secrets)."""

    app_id: str
    name: str
    base_url: str
    email: str | None
    website: str | None
    description: str | None
    active_secrets: int
    created_at: str
    updated_at: str
    watches: list[dict[str, Any]] = field(default_factory=list)
    scheme: str = "standard-webhooks"  # how its webhooks are signed (or "docora")
    treecast_events: bool = False  # a docora app that also gets sync_recovered


@dataclass
class WatchedRepository:
    """What `POST /api/repositories` answers; `push_secret` only for a new repository."""

    repository_id: str
    url: str
    owner: str
    name: str
    ref: str
    paths: list[str]
    created_at: str
    repository_created: bool
    watch_created: bool
    sync_requested: bool
    sync_error: str | None = None
    push_secret: str | None = None
    credentials: CredentialInfo | None = None  # which kind, and its public parts
    submodules: str = "off"  # off, shallow or recursive
    lfs: bool = False


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


@dataclass
class WatchState:
    """One of the calling app's watches: the database's view and the workflow's."""

    repository_id: str
    url: str
    owner: str
    name: str
    ref: str
    paths: list[str]
    status: str
    delivered_commit: str | None
    last_error_type: str | None
    last_error: str | None
    retry_count: int
    last_synced_at: str | None
    created_at: str
    live: LiveState
    credentials: CredentialInfo | None = None  # the app's own: which kind, public parts
    # Whether the app's own access to the repository holds (granted, pending, refused),
    # when the git host last said so, and why it refused.
    access: str = "granted"
    access_checked_at: str | None = None
    access_error: str | None = None
    submodules: str = "off"
    lfs: bool = False
    held_back: list[str] = field(default_factory=list)  # what the last delivery held back


@dataclass
class SyncAccepted:
    """A sync request the workflow accepted; follow it with `sync_id`."""

    sync_id: str
    repository_id: str
    request_id: str


@dataclass
class DeliveryRow:
    """One webhook attempt to the app."""

    id: int
    repository_id: str
    event: str
    path: str | None
    webhook_id: str
    http_status: int | None
    error: str | None
    duration_ms: float
    attempted_at: str


@dataclass
class Readiness:
    """Whether the database and Temporal answer and the schema is this release's; `ok`
    only when all three hold (each is "ok" or says what is wrong)."""

    ok: bool
    database: str
    temporal: str
    migrations: str


@dataclass
class PushResult:
    """What a push hook did: the repositories it made sync, or why none."""

    event: str
    repository_ids: list[str] = field(default_factory=list)
    duplicate: bool = False
    ignored: str | None = None  # why nothing was synced (an event that moves no ref)
    ping: bool = False
