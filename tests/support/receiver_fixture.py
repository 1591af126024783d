"""A running example receiver for tests, and helpers that register apps, repositories and watches.

Use from a test module:

    from tests.support.receiver_fixture import receiver, receiver_secret, register  # noqa: F401

`receiver` is an `examples.receiver.Receiver` on 127.0.0.1 (port 0) mirroring into
a temp folder; `register(settings, base_url, secrets, repo_url)` adds the rows a
delivery needs and returns `(app_id, repository_id)`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select

from examples.receiver import Receiver
from models.tables import (
    App,
    DeliveredFile,
    Repository,
    Watch,
    new_app_id,
    new_repository_id,
)
from treecast.config import Settings, resolve_secret_key
from treecast.crypto import Cipher, generate_webhook_secret
from treecast.db import session_scope


@pytest.fixture
def receiver_secret() -> str:
    """The webhook secret the app and the receiver share."""
    return generate_webhook_secret()


@pytest.fixture
def receiver(tmp_path: Path, receiver_secret: str) -> Iterator[Receiver]:
    """An example receiver serving on 127.0.0.1, stopped after the test."""
    instance = Receiver([receiver_secret], tmp_path / "mirror").start()
    try:
        yield instance
    finally:
        instance.stop()


def app_row(cipher: Cipher, app_id: str, base_url: str, secrets: list[str]) -> App:
    """An app row named test-app, its secrets encrypted with `cipher`."""
    return App(
        id=app_id,
        name="test-app",
        base_url=base_url,
        secrets_encrypted=cipher.encrypt_list(secrets),
    )


def register(
    settings: Settings,
    base_url: str,
    secrets: list[str],
    repo_url: str,
    *,
    ref: str = "",
    path_globs: list[str] | None = None,
) -> tuple[str, str]:
    """Insert an app, a repository and a watch; returns (app_id, repository_id)."""
    cipher = Cipher(resolve_secret_key(settings))
    app_id, repository_id = new_app_id(), new_repository_id()
    with session_scope(settings.database_url) as session:
        session.add(app_row(cipher, app_id, base_url, secrets))
        session.add(Repository(id=repository_id, url=repo_url, ref=ref))
        session.flush()
        session.add(
            Watch(
                app_id=app_id,
                repository_id=repository_id,
                path_globs=json.dumps(path_globs or []),
            )
        )
    return app_id, repository_id


def add_watch(
    settings: Settings,
    base_url: str,
    secrets: list[str],
    repository_id: str,
    *,
    token: str | None = None,
) -> str:
    """A second app watching an existing repository (with its own git `token`); returns
    its app id."""
    cipher = Cipher(resolve_secret_key(settings))
    app_id = new_app_id()
    with session_scope(settings.database_url) as session:
        session.add(app_row(cipher, app_id, base_url, secrets))
        session.flush()
        session.add(
            Watch(
                app_id=app_id,
                repository_id=repository_id,
                token_encrypted=cipher.encrypt(token) if token else None,
            )
        )
    return app_id


def set_secrets(settings: Settings, app_id: str, secrets: list[str]) -> None:
    """Replace an app's active secrets (rotation)."""
    cipher = Cipher(resolve_secret_key(settings))
    with session_scope(settings.database_url) as session:
        app = session.get(App, app_id)
        assert app is not None
        app.secrets_encrypted = cipher.encrypt_list(secrets)
        session.add(app)


def watch_row(settings: Settings, app_id: str, repository_id: str) -> Watch:
    """The app's watch of the repository, as stored now."""
    with session_scope(settings.database_url) as session:
        watch = session.get(Watch, (app_id, repository_id))
        assert watch is not None
        session.expunge(watch)
        return watch


def ledger_rows(settings: Settings, app_id: str) -> list[DeliveredFile]:
    """What the app's ledger holds now."""
    with session_scope(settings.database_url) as session:
        return list(session.exec(select(DeliveredFile).where(DeliveredFile.app_id == app_id)))
