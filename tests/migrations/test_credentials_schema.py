"""A database made before the credential columns existed gains them at start-up (their
move to watches is tests/migrations/test_upgrade_credentials.py's)."""

from __future__ import annotations

from sqlalchemy import inspect, text

from models.tables import Repository
from treecast.config import Settings
from treecast.crypto import Cipher
from treecast.db import add_missing_columns, engine_for, session_scope

OLD_REPOSITORIES = """
CREATE TABLE repositories (
    id VARCHAR(29) NOT NULL PRIMARY KEY,
    url VARCHAR(2048) NOT NULL,
    ref VARCHAR(255) NOT NULL,
    poll_interval_seconds INTEGER NOT NULL,
    token_encrypted TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
)
"""


def test_the_new_columns_are_added_to_an_old_table(any_db_settings: Settings) -> None:
    settings = any_db_settings
    engine = engine_for(settings.database_url)
    assert settings.secret_key is not None
    encrypted = Cipher(settings.secret_key).encrypt("old-token")
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS watches"))
        connection.execute(text("DROP TABLE IF EXISTS snapshots"))
        connection.execute(text("DROP TABLE IF EXISTS delivered_files"))
        connection.execute(text("DROP TABLE repositories"))
        connection.execute(text(OLD_REPOSITORIES))
        connection.execute(
            text(
                "INSERT INTO repositories VALUES ('repo_old', 'https://example.com/o/r', '', 60,"
                " :token, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            ),
            {"token": encrypted},
        )
    added = add_missing_columns(engine)
    assert "repositories.ssh_key_encrypted" in added
    assert "repositories.github_token_expires_at" in added
    columns = {c["name"] for c in inspect(engine).get_columns("repositories")}
    assert set(Repository.model_fields) <= columns
    assert add_missing_columns(engine) == []  # idempotent
    with session_scope(settings.database_url) as session:
        row = session.get(Repository, "repo_old")
    assert row is not None and Cipher(settings.secret_key).decrypt(row.token_encrypted or "") == (
        "old-token"
    )
