"""Databases as an older release left them, for upgrade tests."""

from __future__ import annotations

from sqlalchemy import MetaData, text
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from treecast import migrations
from treecast.migrations import baseline


def drop_everything(engine: Engine) -> None:
    """No Treecast table left, nor the revision stamp: an empty database."""
    with engine.begin() as connection:
        SQLModel.metadata.drop_all(connection)
        baseline.metadata.drop_all(connection)
        existing = MetaData()
        existing.reflect(connection)
        existing.drop_all(connection)
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))


def database_at(engine: Engine, revision: str) -> None:
    """The database emptied, then built by the revisions up to `revision` (inclusive)."""
    drop_everything(engine)
    with engine.begin() as connection:
        migrations.upgrade(connection, revision)


def database_at_head(engine: Engine) -> None:
    """The database emptied, then made at the newest revision the way a fresh start does."""
    drop_everything(engine)
    with engine.begin() as connection:
        SQLModel.metadata.create_all(connection)
        migrations.stamp(connection, migrations.head())
