"""Treecast's database tables (sqlmodel). Secrets are stored only encrypted.

Rows never travel through Temporal: workflows and activities pass ids, and
activities load rows themselves.
"""

from __future__ import annotations

import json
import logging
import secrets
from datetime import UTC, datetime

from sqlalchemy import Boolean, Column, Index, Text, false
from sqlmodel import Field, SQLModel

from models.sync import ACCESS_REFUSED

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    """Timezone-aware now, for row timestamps (never used in workflow code)."""
    return datetime.now(UTC)


def new_app_id() -> str:
    """`app_` + 24 hex characters."""
    return "app_" + secrets.token_hex(12)


def new_repository_id() -> str:
    """`repo_` + 24 hex characters."""
    return "repo_" + secrets.token_hex(12)


def new_generation() -> str:
    """A fresh `Watch.ledger_generation`."""
    return secrets.token_hex(8)


class WatchStatus:
    """Values of `Watch.status`."""

    PENDING = "pending"
    SYNCING = "syncing"
    SYNCED = "synced"
    FAILED = "failed"
    DISABLED = "disabled"  # the app answered 410 Gone; `watch` again to resume


class WatchAccess:
    """Values of `Watch.access`: whether the app's own access to the repository holds.

    An app is delivered to only while its access is granted (docs/security.md, "Tenants").
    NULL, in rows made before access was checked (upgraded or imported), counts as granted
    and is checked at the repository's next sync, before anything is delivered.
    """

    GRANTED = "granted"  # its credentials (or none, for a public repository) reached it
    PENDING = "pending"  # not proven yet (a generated key not on the host, dropped credentials)
    REFUSED = "refused"  # the host refused them: nothing is delivered to the app

    DELIVERABLE = (None, GRANTED)
    # `Watch.last_error_type` (and a notice's error type) when the host refused the app.
    ERROR_TYPE = ACCESS_REFUSED


class App(SQLModel, table=True):
    """A client application that receives webhooks."""

    __tablename__ = "apps"

    id: str = Field(primary_key=True, max_length=28)
    name: str = Field(max_length=200)
    base_url: str = Field(max_length=2048)
    # Fernet ciphertext of a JSON list of `whsec_` secrets; several while rotating.
    secrets_encrypted: str = Field(sa_column=Column(Text, nullable=False))
    # The API bearer token `tc_<token_id>_<secret>`: looked up by its id, checked
    # against the SHA-256 of its secret; the token itself is never stored.
    token_id: str | None = Field(default=None, max_length=32, unique=True, index=True)
    token_hash: str | None = Field(default=None, max_length=64)
    email: str | None = Field(default=None, max_length=255)
    website: str | None = Field(default=None, max_length=2048)
    description: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    # Opted in to batches: file events go several to a `POST {base_url}/batch`
    # (docs/webhooks.md); off, every file is its own request, as always.
    batch: bool = Field(
        default=False,
        sa_column=Column(Boolean, nullable=False, default=False, server_default=false()),
    )
    # Opted in to `sync_completed`: after every commit the app was brought to, one event
    # with that commit's tree digest (docs/webhooks.md, "Verifying a mirror").
    sync_completed: bool = Field(
        default=False,
        sa_column=Column(Boolean, nullable=False, default=False, server_default=false()),
    )
    # How webhooks are signed: None or "standard-webhooks" (the default), or "docora"
    # (Docora's X-Docora-* headers, HMAC keyed with `client_auth_key`, Docora's bodies).
    signing_scheme: str | None = Field(default=None, max_length=32)
    # Fernet ciphertext of the Docora `client_auth_key` (the docora scheme's HMAC key).
    client_auth_key_encrypted: str | None = Field(
        default=None, sa_column=Column(Text, nullable=True)
    )
    # A docora-scheme app also receives Treecast-only events (sync_recovered) when set.
    treecast_events: bool | None = Field(default=None)
    # An imported Docora bearer token: its bcrypt hash, kept so the app keeps its token,
    # and the SHA-256 of the token once it was verified once (the cheap lookup after that).
    docora_token_hash: str | None = Field(default=None, max_length=100)
    docora_token_sha256: str | None = Field(default=None, max_length=64, unique=True, index=True)


class CredentialColumns(SQLModel):
    """One set of git credentials as stored: none (a public repository), an access token,
    a deploy key with the host keys pinned for the server (`type base64` lines, public)
    and its public half and SHA256 fingerprint (shown, to paste into the git host), or a
    GitHub App installation (ids, the app's private key, and when the installation token
    a worker last minted expires; the token itself is not stored). Secrets are Fernet
    ciphertext. `treecast.store.credentials.StoredCredentials` reads and writes them."""

    token_encrypted: str | None = Field(default=None, sa_type=Text)
    ssh_key_encrypted: str | None = Field(default=None, sa_type=Text)
    ssh_public_key: str | None = Field(default=None, sa_type=Text)
    ssh_key_fingerprint: str | None = Field(default=None, max_length=100)
    ssh_host_keys: str | None = Field(default=None, sa_type=Text)
    github_app_id: str | None = Field(default=None, max_length=64)
    github_installation_id: str | None = Field(default=None, max_length=20)
    github_app_key_encrypted: str | None = Field(default=None, sa_type=Text)
    github_token_expires_at: datetime | None = None


class Repository(CredentialColumns, table=True):
    """A git repository that at least one app may watch. Its credential columns are from
    before credentials belonged to watches: kept readable only so an upgrade can move
    them to every watch (treecast/upgrade_credentials.py), which clears them; nothing
    else reads or writes them."""

    __tablename__ = "repositories"

    id: str = Field(primary_key=True, max_length=29)
    # Normalised URL (see treecast.urls.normalise_git_url); unique with the ref.
    url: str = Field(max_length=2048, index=True)
    ref: str = Field(default="", max_length=255)
    poll_interval_seconds: int = Field(default=60)
    # Fernet ciphertext of the secret git hosts sign push hooks with (HMAC needs it in clear).
    push_secret_encrypted: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    # Whose credentials the last fetch used (an app id; None: none were needed). Shown
    # by `status`; the next fetch tries them first (treecast/store/credentials.py).
    fetched_with: str | None = Field(default=None, max_length=28)
    # When something the remote checks read last changed: registered, a new interval,
    # watched or unwatched, paused or resumed, a sync recorded (`treecast.store.stamps`).
    # Each sweep re-reads the rows changed since its last read every second.
    changed_at: datetime | None = Field(default_factory=utcnow, index=True)
    # Paused with `pause` (the loop's own flag lives in its workflow): not checked.
    paused: bool = Field(
        default=False,
        sa_column=Column(Boolean, nullable=False, default=False, server_default=false()),
    )

    __table_args__ = (Index("uq_repositories_url_ref", "url", "ref", unique=True),)


class Watch(CredentialColumns, table=True):
    """An app watching a repository, with the state of its deliveries, and the app's own
    credentials for the repository (another app's watch never reads them for itself)."""

    __tablename__ = "watches"

    app_id: str = Field(primary_key=True, foreign_key="apps.id", max_length=28)
    repository_id: str = Field(
        primary_key=True, foreign_key="repositories.id", max_length=29, index=True
    )
    # JSON list of glob patterns; empty list = the whole repository.
    path_globs: str = Field(default="[]", sa_column=Column(Text, nullable=False, default="[]"))
    status: str = Field(default=WatchStatus.PENDING, max_length=20)
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    last_error_type: str | None = Field(default=None, max_length=100)
    delivered_commit: str | None = Field(default=None, max_length=64)
    retry_count: int = Field(default=0)
    last_synced_at: datetime | None = None
    # Part of every webhook-id: retries of a message keep it, while a new watch, a
    # finished sync or `redeliver` start a new one, so a deliberate re-send is never
    # dropped by a receiver that deduplicates by webhook-id.
    ledger_generation: str = Field(default_factory=new_generation, max_length=32)
    created_at: datetime = Field(default_factory=utcnow)
    # Whether those credentials reach the repository now (a WatchAccess value), when the
    # host last said so, and why it refused.
    access: str | None = Field(default=None, max_length=20)
    access_checked_at: datetime | None = None
    access_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # What the app asked for beyond the plain tree (docs/repository-contents.md): gitlinks
    # expanded ("off" when None, a `models.contents.SubmoduleMode`), LFS pointers replaced
    # by their objects. Nullable, so the start-up upgrader adds them to old databases.
    submodules: str | None = Field(default=None, max_length=16)
    lfs: bool | None = Field(default=None)
    # JSON list of "path: reason" lines: what the last delivery held back (a submodule
    # that could not be fetched, an LFS object missing or refused); retried next sync.
    held_back: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


def parse_globs(raw: str | None) -> list[str]:
    """A watch's `path_globs` column (JSON list of patterns) as a list; bad JSON means none."""
    if not raw:
        return []
    try:
        value = json.loads(raw)
    except ValueError:
        log.warning("ignoring malformed path_globs %r", raw[:200])
        return []
    if not isinstance(value, list):
        return []
    return [str(item) for item in value if isinstance(item, str) and item.strip()]


class DeliveredFile(SQLModel, table=True):
    """What one app acknowledged for one path: the ledger changes are computed against."""

    __tablename__ = "delivered_files"

    app_id: str = Field(primary_key=True, foreign_key="apps.id", max_length=28)
    repository_id: str = Field(primary_key=True, foreign_key="repositories.id", max_length=29)
    path: str = Field(primary_key=True, max_length=4096)
    blob_id: str = Field(max_length=64)
    sha256: str = Field(max_length=64)
    delivered_at: datetime = Field(default_factory=utcnow)


class DeliveryAttempt(SQLModel, table=True):
    """One HTTP attempt to an app; bounded to the newest N per app."""

    __tablename__ = "delivery_attempts"

    id: int | None = Field(default=None, primary_key=True)
    app_id: str = Field(max_length=28, index=True)
    repository_id: str = Field(max_length=29)
    event: str = Field(max_length=32)
    path: str | None = Field(default=None, max_length=4096)
    webhook_id: str = Field(max_length=100)
    http_status: int | None = None
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    response_excerpt: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    duration_ms: float = 0.0
    attempted_at: datetime = Field(default_factory=utcnow)


class Snapshot(SQLModel, table=True):
    """One successful sync of a repository: which commit, how many files."""

    __tablename__ = "snapshots"

    id: int | None = Field(default=None, primary_key=True)
    repository_id: str = Field(foreign_key="repositories.id", max_length=29, index=True)
    commit: str | None = Field(default=None, max_length=64)  # None: the remote is empty
    file_count: int = 0
    total_bytes: int = 0
    skipped_symlinks: int = 0
    skipped_submodules: int = 0
    skipped_invalid_paths: int = 0
    skipped_unsafe_paths: int = 0
    taken_at: datetime = Field(default_factory=utcnow)


class KeyFingerprint(SQLModel, table=True):
    """Which key encrypted this database's secrets: a fingerprint, never the key itself.

    One row. A process with another `TREECAST_SECRET_KEY` is refused before it writes a
    secret the others could not read (or reads one it cannot decrypt).
    """

    __tablename__ = "key_fingerprints"

    id: int = Field(default=1, primary_key=True)
    fingerprint: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class AdminSession(SQLModel, table=True):
    """One login to the admin page, shared by every API process (docs/admin.md).

    The cookie holds a random session id; only its SHA-256 is stored, so a copy of this
    table logs nobody in. Forms carry an HMAC of the session id keyed with `csrf_secret`.
    """

    __tablename__ = "admin_sessions"

    id_hash: str = Field(primary_key=True, max_length=64)
    csrf_secret: str = Field(max_length=64)
    expires_at: datetime = Field(index=True)
    last_seen_at: datetime = Field(default_factory=utcnow)
    created_at: datetime = Field(default_factory=utcnow)
    # JSON list of [kind, text] messages for the next page this session sees.
    flashes: str = Field(default="[]", sa_column=Column(Text, nullable=False, default="[]"))
    # Fernet ciphertext of what the next page shows once (a new token or secret).
    reveal_encrypted: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class PushDelivery(SQLModel, table=True):
    """A git host's push delivery already acted on (the replay guard): any API process that
    receives the same delivery again finds it here and starts no second sync."""

    __tablename__ = "push_deliveries"

    # SHA-256 of "{host}:{delivery id}": bounded, whatever the header held.
    key: str = Field(primary_key=True, max_length=64)
    received_at: datetime = Field(default_factory=utcnow, index=True)


class BulkJob(SQLModel, table=True):
    """A bulk retry or resync from the admin page, run by the `BulkWatches` workflow
    `bulk/{id}`; its progress is its `BulkStep` rows."""

    __tablename__ = "bulk_jobs"

    id: str = Field(primary_key=True, max_length=32)
    action: str = Field(max_length=16)
    label: str = Field(max_length=300)
    total: int = 0
    created_at: datetime = Field(default_factory=utcnow, index=True)


class BulkStep(SQLModel, table=True):
    """One watch of a bulk job (the job's list lives here, not in the workflow's input).
    `applied_at` is set in the transaction that changes the watch, so a retried step never
    changes it twice."""

    __tablename__ = "bulk_steps"

    job_id: str = Field(primary_key=True, foreign_key="bulk_jobs.id", max_length=32)
    position: int = Field(primary_key=True)
    app_id: str = Field(max_length=28)
    repository_id: str = Field(max_length=29)
    applied_at: datetime | None = None  # the watch was changed
    finished_at: datetime | None = None  # and its workflow asked (or the step failed)
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
