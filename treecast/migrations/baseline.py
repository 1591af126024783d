"""The schema as the releases before migrations left it: revision 0001 creates it, and
`treecast.db` brings a database made by one of those releases up to it before stamping.

Frozen: never edit this to follow models/tables.py; add a revision instead
(docs/operations.md, "Adding a revision"). The scalar defaults are the ones the old
start-up upgrader filled old rows with when it added a NOT NULL column.
"""

from __future__ import annotations

import sqlalchemy as sa

REVISION = "0001_baseline"

metadata = sa.MetaData()


def _when(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


sa.Table(
    "apps",
    metadata,
    sa.Column("id", sa.String(28), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("base_url", sa.String(2048), nullable=False),
    sa.Column("secrets_encrypted", sa.Text(), nullable=False),
    sa.Column("token_id", sa.String(32), nullable=True),
    sa.Column("token_hash", sa.String(64), nullable=True),
    sa.Column("email", sa.String(255), nullable=True),
    sa.Column("website", sa.String(2048), nullable=True),
    sa.Column("description", sa.String(500), nullable=True),
    _when("created_at"),
    _when("updated_at"),
    sa.Column("batch", sa.Boolean(), nullable=False, default=False, server_default=sa.false()),
    sa.Column("signing_scheme", sa.String(32), nullable=True),
    sa.Column("client_auth_key_encrypted", sa.Text(), nullable=True),
    sa.Column("treecast_events", sa.Boolean(), nullable=True),
    sa.Column("docora_token_hash", sa.String(100), nullable=True),
    sa.Column("docora_token_sha256", sa.String(64), nullable=True),
    sa.Index("ix_apps_token_id", "token_id", unique=True),
    sa.Index("ix_apps_docora_token_sha256", "docora_token_sha256", unique=True),
)

sa.Table(
    "repositories",
    metadata,
    sa.Column("id", sa.String(29), primary_key=True),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("ref", sa.String(255), nullable=False, default=""),
    sa.Column("poll_interval_seconds", sa.Integer(), nullable=False, default=60),
    sa.Column("token_encrypted", sa.Text(), nullable=True),
    sa.Column("push_secret_encrypted", sa.Text(), nullable=True),
    _when("created_at"),
    _when("updated_at"),
    sa.Column("ssh_key_encrypted", sa.Text(), nullable=True),
    sa.Column("ssh_public_key", sa.Text(), nullable=True),
    sa.Column("ssh_key_fingerprint", sa.String(100), nullable=True),
    sa.Column("ssh_host_keys", sa.Text(), nullable=True),
    sa.Column("github_app_id", sa.String(64), nullable=True),
    sa.Column("github_installation_id", sa.String(20), nullable=True),
    sa.Column("github_app_key_encrypted", sa.Text(), nullable=True),
    _when("github_token_expires_at", nullable=True),
    sa.Index("ix_repositories_url", "url"),
    sa.Index("uq_repositories_url_ref", "url", "ref", unique=True),
)

sa.Table(
    "watches",
    metadata,
    sa.Column("app_id", sa.String(28), sa.ForeignKey("apps.id"), primary_key=True),
    sa.Column("repository_id", sa.String(29), sa.ForeignKey("repositories.id"), primary_key=True),
    sa.Column("path_globs", sa.Text(), nullable=False, default="[]"),
    sa.Column("status", sa.String(20), nullable=False, default="pending"),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("last_error_type", sa.String(100), nullable=True),
    sa.Column("delivered_commit", sa.String(64), nullable=True),
    sa.Column("retry_count", sa.Integer(), nullable=False, default=0),
    _when("last_synced_at", nullable=True),
    sa.Column("ledger_generation", sa.String(32), nullable=False),
    _when("created_at"),
    sa.Index("ix_watches_repository_id", "repository_id"),
)

sa.Table(
    "delivered_files",
    metadata,
    sa.Column("app_id", sa.String(28), sa.ForeignKey("apps.id"), primary_key=True),
    sa.Column("repository_id", sa.String(29), sa.ForeignKey("repositories.id"), primary_key=True),
    sa.Column("path", sa.String(4096), primary_key=True),
    sa.Column("blob_id", sa.String(64), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    _when("delivered_at"),
)

sa.Table(
    "delivery_attempts",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("app_id", sa.String(28), nullable=False),
    sa.Column("repository_id", sa.String(29), nullable=False),
    sa.Column("event", sa.String(32), nullable=False),
    sa.Column("path", sa.String(4096), nullable=True),
    sa.Column("webhook_id", sa.String(100), nullable=False),
    sa.Column("http_status", sa.Integer(), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("response_excerpt", sa.Text(), nullable=True),
    sa.Column("duration_ms", sa.Float(), nullable=False, default=0.0),
    _when("attempted_at"),
    sa.Index("ix_delivery_attempts_app_id", "app_id"),
)

sa.Table(
    "snapshots",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("repository_id", sa.String(29), sa.ForeignKey("repositories.id"), nullable=False),
    sa.Column("commit", sa.String(64), nullable=True),
    sa.Column("file_count", sa.Integer(), nullable=False, default=0),
    sa.Column("total_bytes", sa.Integer(), nullable=False, default=0),
    sa.Column("skipped_symlinks", sa.Integer(), nullable=False, default=0),
    sa.Column("skipped_submodules", sa.Integer(), nullable=False, default=0),
    sa.Column("skipped_invalid_paths", sa.Integer(), nullable=False, default=0),
    sa.Column("skipped_unsafe_paths", sa.Integer(), nullable=False, default=0),
    _when("taken_at"),
    sa.Index("ix_snapshots_repository_id", "repository_id"),
)

sa.Table(
    "key_fingerprints",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, default=1),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    _when("created_at"),
)
