"""Credentials per watch (issue 22): each app's own credentials and access on its watch,
and whose credentials the repository's last fetch used. The credentials a repository
held move to every app watching it (`treecast.upgrade_credentials`).

Create Date: 2026-12-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from treecast.upgrade_credentials import (
    move_repository_credentials_to_watches,
    move_watch_credentials_to_repositories,
)

revision = "0005_watch_credentials"
down_revision = "0004_watch_contents"


def upgrade() -> None:
    with op.batch_alter_table("repositories", schema=None) as batch_op:
        batch_op.add_column(sa.Column("fetched_with", sa.String(28), nullable=True))

    # Old watches keep access NULL: granted, and checked at the repository's next sync
    # before anything more is delivered (models.tables.WatchAccess).
    with op.batch_alter_table("watches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("token_encrypted", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("ssh_key_encrypted", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("ssh_public_key", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("ssh_key_fingerprint", sa.String(100), nullable=True))
        batch_op.add_column(sa.Column("ssh_host_keys", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("github_app_id", sa.String(64), nullable=True))
        batch_op.add_column(sa.Column("github_installation_id", sa.String(20), nullable=True))
        batch_op.add_column(sa.Column("github_app_key_encrypted", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("github_token_expires_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("access", sa.String(20), nullable=True))
        batch_op.add_column(
            sa.Column("access_checked_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("access_error", sa.Text(), nullable=True))

    move_repository_credentials_to_watches(op.get_bind())


def downgrade() -> None:
    # The release before reads credentials from repositories: each gets back the ones its
    # last fetch used (or its first watcher's), before the watches' columns go.
    move_watch_credentials_to_repositories(op.get_bind())

    with op.batch_alter_table("watches", schema=None) as batch_op:
        batch_op.drop_column("access_error")
        batch_op.drop_column("access_checked_at")
        batch_op.drop_column("access")
        batch_op.drop_column("github_token_expires_at")
        batch_op.drop_column("github_app_key_encrypted")
        batch_op.drop_column("github_installation_id")
        batch_op.drop_column("github_app_id")
        batch_op.drop_column("ssh_host_keys")
        batch_op.drop_column("ssh_key_fingerprint")
        batch_op.drop_column("ssh_public_key")
        batch_op.drop_column("ssh_key_encrypted")
        batch_op.drop_column("token_encrypted")

    with op.batch_alter_table("repositories", schema=None) as batch_op:
        batch_op.drop_column("fetched_with")
