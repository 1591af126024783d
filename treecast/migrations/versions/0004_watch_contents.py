"""What a watch receives beyond the repository's own blobs: its `submodules` mode and `lfs`
choice (NULL: off, as before), and what its last delivery held back.

Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_watch_contents"
down_revision = "0003_change_stamps"


def upgrade() -> None:
    with op.batch_alter_table("watches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("submodules", sa.String(16), nullable=True))
        batch_op.add_column(sa.Column("lfs", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("held_back", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("watches", schema=None) as batch_op:
        batch_op.drop_column("held_back")
        batch_op.drop_column("lfs")
        batch_op.drop_column("submodules")
