"""Alembic's environment: migrate the connection `treecast.migrations.config()` was given,
or, run by the `alembic` tool itself, the database of TREECAST_DATABASE_URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

import models.tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from treecast.migrations import render_item


def migrate(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        # SQLite cannot ALTER most things: batch mode copies the table instead.
        render_as_batch=True,
        compare_type=True,
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    if context.is_offline_mode():
        raise SystemExit("Treecast's migrations run against a database, not as SQL scripts")
    connection = context.config.attributes.get("connection")
    if connection is not None:
        migrate(connection)
        return
    from treecast.config import load_settings
    from treecast.db import make_engine

    with make_engine(load_settings().database_url).connect() as connection:
        migrate(connection)
        connection.commit()


main()
