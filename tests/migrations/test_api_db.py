"""A database made before the HTTP API (and before migrations) gains its columns when it is
upgraded, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import inspect, text
from sqlmodel import SQLModel

from treecast.config import Settings
from treecast.db import create_schema, make_engine, schema_status
from treecast.migrations import baseline

NEW = {"apps": {"token_id", "token_hash", "email", "website", "description"}}
NEW_REPOSITORY = {"push_secret_encrypted"}


def test_create_schema_adds_the_new_columns_to_an_old_database(any_db_settings: Settings) -> None:
    engine = make_engine(any_db_settings.database_url)
    create_schema(engine)
    with engine.begin() as connection:  # make it look like a database from before the API
        connection.execute(text("DROP TABLE alembic_version"))  # and before migrations
        for table in reversed(SQLModel.metadata.sorted_tables):
            if table.name not in baseline.metadata.tables:
                connection.execute(text(f"DROP TABLE {table.name}"))
                continue
            # ... and without the columns revisions after the baseline added
            for column in table.columns:
                if column.name not in baseline.metadata.tables[table.name].columns:
                    for index in table.indexes:
                        if column.name in index.columns:
                            connection.execute(text(f"DROP INDEX IF EXISTS {index.name}"))
                    connection.execute(
                        text(f'ALTER TABLE {table.name} DROP COLUMN "{column.name}"')
                    )
        connection.execute(text("DROP INDEX IF EXISTS ix_apps_token_id"))
        for column in NEW["apps"]:
            connection.execute(text(f'ALTER TABLE apps DROP COLUMN "{column}"'))
        connection.execute(text('ALTER TABLE repositories DROP COLUMN "push_secret_encrypted"'))
        connection.execute(
            text(
                "INSERT INTO apps (id, name, base_url, secrets_encrypted, created_at, updated_at)"
                " VALUES ('app_000000000000000000000000', 'old', 'https://e.com', 'x',"
                " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
    create_schema(engine)
    create_schema(engine)  # and again: nothing to add, nothing fails
    inspector = inspect(engine)
    assert NEW["apps"] <= {c["name"] for c in inspector.get_columns("apps")}
    assert {c["name"] for c in inspector.get_columns("repositories")} >= NEW_REPOSITORY
    [index] = [i for i in inspector.get_indexes("apps") if i["name"] == "ix_apps_token_id"]
    assert index["unique"]
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT name, token_id FROM apps")).all()
    assert [tuple(r) for r in rows] == [("old", None)]
    assert schema_status(engine).up_to_date
