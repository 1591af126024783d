"""Schema creation is idempotent and round-trips rows on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import inspect
from sqlmodel import select

from models.tables import App, DeliveredFile, Repository, Watch, new_app_id, new_repository_id
from treecast.config import Settings
from treecast.db import create_schema, make_engine, session_scope


def test_schema_creation_is_idempotent_and_round_trips(any_db_settings: Settings) -> None:
    url = any_db_settings.database_url
    engine = make_engine(url)
    create_schema(engine)
    create_schema(engine)  # a second start must not fail or duplicate anything
    names = set(inspect(engine).get_table_names())
    assert {
        "apps",
        "repositories",
        "watches",
        "delivered_files",
        "delivery_attempts",
        "snapshots",
    } <= names

    app_id, repo_id = new_app_id(), new_repository_id()
    with session_scope(url) as session:
        session.add(App(id=app_id, name="a", base_url="https://example.com", secrets_encrypted="x"))
        session.add(Repository(id=repo_id, url="https://example.com/o/r"))
        session.flush()
        session.add(Watch(app_id=app_id, repository_id=repo_id))
        session.add(
            DeliveredFile(
                app_id=app_id,
                repository_id=repo_id,
                path="é/a b.txt",
                blob_id="b" * 40,
                sha256="s" * 64,
            )
        )
    with session_scope(url) as session:
        ledger = session.exec(select(DeliveredFile)).all()
        assert [row.path for row in ledger] == ["é/a b.txt"]
        assert session.get(Watch, (app_id, repo_id)) is not None


def test_ids_have_documented_format() -> None:
    import re

    assert re.fullmatch(r"app_[0-9a-f]{24}", new_app_id())
    assert re.fullmatch(r"repo_[0-9a-f]{24}", new_repository_id())
