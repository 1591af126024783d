"""The schema of the releases before migrations (treecast/migrations/baseline.py).

Create Date: 2026-12-20
"""

from __future__ import annotations

from alembic import op

from treecast.migrations import baseline

revision = baseline.REVISION
down_revision = None


def upgrade() -> None:
    baseline.metadata.create_all(op.get_bind())


def downgrade() -> None:
    baseline.metadata.drop_all(op.get_bind())
