"""Verifiable mirrors (issue 25): whether an app receives `sync_completed`, the event with
each commit's tree digest (off, as before, for every app that exists).

Create Date: 2026-12-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_sync_completed"
down_revision = "0005_watch_credentials"


def upgrade() -> None:
    with op.batch_alter_table("apps", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("sync_completed", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("apps", schema=None) as batch_op:
        batch_op.drop_column("sync_completed")
