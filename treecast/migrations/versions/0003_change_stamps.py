"""The remote checks' change stamps: when a repository last changed in a way a sweep
must learn (`repositories.changed_at`, indexed), and whether it is paused.

Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_change_stamps"
down_revision = "0002_shared_state"


def upgrade() -> None:
    # Old rows keep changed_at NULL: a sweep's full re-read covers them, as before.
    with op.batch_alter_table("repositories", schema=None) as batch_op:
        batch_op.add_column(sa.Column("changed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("paused", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.create_index("ix_repositories_changed_at", ["changed_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("repositories", schema=None) as batch_op:
        batch_op.drop_index("ix_repositories_changed_at")
        batch_op.drop_column("paused")
        batch_op.drop_column("changed_at")
