"""The upgrade of a database whose credentials belong to repositories (revision
0004_watch_contents, with rows in it) through migration 0005_watch_credentials, on SQLite
and PostgreSQL: every watcher of a repository gets its credentials, the repository's are
cleared, nothing else changes, a second run does nothing, and a private repository keeps
syncing with the credentials its apps now hold. The downgrade gives each repository back
the credentials its fetches used."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, MetaData, insert, select, text
from sqlmodel import select as sql_select
from temporalio.testing import ActivityEnvironment

from activities.git import GitActivities
from models.git import SnapshotInput, SnapshotResult
from models.tables import Repository, Watch, WatchAccess
from tests.support.githttp import git_http_server
from tests.support.gitrepos import WorkRepo
from tests.support.schemas import database_at
from treecast import migrations
from treecast.config import Settings
from treecast.credentials.ssh_keys import generate_deploy_key
from treecast.crypto import Cipher
from treecast.db import create_schema, make_engine, schema_status, session_scope
from treecast.upgrade_credentials import COLUMNS, move_repository_credentials_to_watches

BEFORE = "0004_watch_contents"  # the revision before credentials moved to watches
TOKEN = "glpat-" + "T0k3n" * 4
EXPIRES = datetime(2027, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def old_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL nothing has created a schema in yet."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'before.db'}"
    from tests.docora.test_docora import fresh_database

    return fresh_database(request.getfixturevalue("postgres_url"), "upgrade")


@pytest.fixture
def origin(tmp_path: Path) -> WorkRepo:
    work = WorkRepo(tmp_path / "origin")
    work.commit_files({"README.md": "private\n"})
    return work


@pytest.fixture
def host(origin: WorkRepo) -> Iterator[str]:
    """The private repository's URL on a smart-HTTP server that wants TOKEN."""
    with git_http_server(origin.remote.parent, TOKEN) as server:
        yield server.url("remote.git")


def schema_before(engine: Engine) -> None:
    """The schema as it was before credentials moved to watches: the revisions up to
    BEFORE (the release before this one)."""
    database_at(engine, BEFORE)


def downgrade(engine: Engine, target: str) -> None:
    """`alembic downgrade target`, with SQLite's foreign keys off while batch mode copies
    tables (as `treecast.db` upgrades)."""
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        with connection.begin():
            command.downgrade(migrations.config(connection), target)
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()


def everything(
    engine: Engine, like: dict[str, list[tuple[Any, ...]]] | None = None
) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table as `column=value` cells, sorted (to compare two states);
    with `like`, only the columns that state had (later revisions add their own)."""
    tables = MetaData()
    tables.reflect(engine)
    state: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as connection:
        for name, table in tables.tables.items():
            rows = [
                tuple(f"{column}={value}" for column, value in row._mapping.items())
                for row in connection.execute(select(table))
            ]
            if like is not None and like.get(name):
                kept = {cell.split("=", 1)[0] for cell in like[name][0]}
                rows = [tuple(c for c in row if c.split("=", 1)[0] in kept) for row in rows]
            state[name] = sorted(rows)
    return state


def fill(engine: Engine, cipher: Cipher, url: str) -> dict[str, Any]:
    """Apps, repositories with each kind of credential, and watches, as the old schema
    held them; what was put where."""
    tables = MetaData()
    tables.reflect(engine)
    apps, repositories, watches = (tables.tables[n] for n in ("apps", "repositories", "watches"))
    now = datetime.now(UTC)
    deploy = generate_deploy_key("old")
    made: dict[str, Any] = {
        "apps": ["app_" + c * 24 for c in "abcd"],
        "key": deploy,
        "app_key": cipher.encrypt("-----BEGIN RSA PRIVATE KEY-----\nold\n"),
    }
    a, b, c, d = made["apps"]
    hosts = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    repos: list[dict[str, Any]] = [
        {"id": "repo_" + "1" * 24, "url": url, "token_encrypted": cipher.encrypt(TOKEN)},
        {
            "id": "repo_" + "2" * 24,
            "url": "ssh://git@git.example/acme/docs",
            "ssh_key_encrypted": cipher.encrypt(deploy.private_key),
            "ssh_public_key": deploy.public_key,
            "ssh_key_fingerprint": deploy.fingerprint,
            "ssh_host_keys": hosts,
        },
        {
            "id": "repo_" + "3" * 24,
            "url": "https://github.com/acme/app",
            "github_app_id": "123",
            "github_installation_id": "456",
            "github_app_key_encrypted": made["app_key"],
            "github_token_expires_at": EXPIRES,
        },
        {
            "id": "repo_" + "4" * 24,  # nobody watches it
            "url": "https://github.com/acme/orphan",
            "token_encrypted": cipher.encrypt("orphaned-token"),
        },
        {"id": "repo_" + "5" * 24, "url": "https://github.com/acme/public"},
    ]
    pairs = [(a, 0), (b, 0), (c, 1), (a, 2), (d, 4)]
    with engine.begin() as connection:
        for app in made["apps"]:
            connection.execute(
                insert(apps).values(
                    id=app,
                    name=app,
                    base_url="https://example.com/hooks",
                    secrets_encrypted=cipher.encrypt_list(["whsec_" + "A" * 32]),
                    created_at=now,
                    updated_at=now,
                    batch=False,
                )
            )
        for repo in repos:
            connection.execute(
                insert(repositories).values(
                    ref="", poll_interval_seconds=60, created_at=now, updated_at=now, **repo
                )
            )
        for app, index in pairs:
            connection.execute(
                insert(watches).values(
                    app_id=app,
                    repository_id=repos[index]["id"],
                    path_globs="[]",
                    status="synced",
                    retry_count=0,
                    ledger_generation="g" * 16,
                    created_at=now,
                )
            )
    made["repositories"] = [r["id"] for r in repos]
    return made


def test_credentials_move_to_every_watcher_once(
    old_url: str, host: str, settings: Settings
) -> None:
    assert settings.secret_key is not None
    cipher = Cipher(settings.secret_key)
    engine = make_engine(old_url)
    schema_before(engine)
    made = fill(engine, cipher, host)
    a, b, c, d = made["apps"]
    r1, r2, r3, r4, r5 = made["repositories"]
    before = everything(engine)
    assert schema_status(engine).current == BEFORE

    create_schema(engine)  # `treecast db upgrade`, or a start with TREECAST_AUTO_MIGRATE=1

    assert schema_status(engine).current == migrations.head()
    settings = settings.model_copy(update={"database_url": old_url})
    with session_scope(old_url) as session:
        for repository in session.exec(sql_select(Repository)).all():
            assert all(getattr(repository, name) is None for name in COLUMNS), repository.id
        watch = {(w.app_id, w.repository_id): w for w in session.exec(sql_select(Watch)).all()}
        for app in (a, b):  # two apps watched R1: who set its token was never recorded
            assert cipher.decrypt(watch[(app, r1)].token_encrypted or "") == TOKEN
        ssh = watch[(c, r2)]
        assert cipher.decrypt(ssh.ssh_key_encrypted or "") == made["key"].private_key
        assert (ssh.ssh_public_key, ssh.ssh_key_fingerprint) == (
            made["key"].public_key,
            made["key"].fingerprint,
        )
        assert ssh.ssh_host_keys and ssh.ssh_host_keys.startswith("ssh-ed25519 ")
        app = watch[(a, r3)]
        assert (app.github_app_id, app.github_installation_id) == ("123", "456")
        assert app.github_app_key_encrypted == made["app_key"]
        expires = app.github_token_expires_at
        assert expires is not None and abs(expires.replace(tzinfo=UTC) - EXPIRES) < timedelta(
            seconds=1
        )
        public = watch[(d, r5)]
        assert all(getattr(public, name) is None for name in COLUMNS)
        # They keep working: granted, and checked at the next sync before any delivery.
        assert all(w.access is None for w in watch.values())
        assert len(watch) == 5
    after = everything(engine, like=before)
    for table in set(before) - {"repositories", "watches", "alembic_version"}:
        assert after[table] == before[table], table  # nothing else changed
    assert len(after["repositories"]) == len(before["repositories"]) == 5
    with engine.connect() as connection:
        orphan = connection.execute(
            text("SELECT token_encrypted FROM repositories WHERE id = :id"), {"id": r4}
        ).scalar()
    assert orphan is None  # nobody to give it to: dropped (with a warning)

    # Idempotent: a second run moves nothing (nor does a second upgrade run anything).
    with engine.begin() as connection:
        again = move_repository_credentials_to_watches(connection)
    assert (again.repositories, again.watches) == (0, 0)
    create_schema(engine)
    assert everything(engine, like=before) == after

    # The private repository syncs with the token its apps now hold, and both apps'
    # access is proven by that fetch.
    result = ActivityEnvironment().run(
        GitActivities(settings).snapshot_repository, SnapshotInput(r1)
    )
    assert isinstance(result, SnapshotResult) and result.file_count == 1
    assert result.refused_app_ids == []
    with session_scope(old_url) as session:
        synced = session.get(Repository, r1)
        assert synced is not None and synced.fetched_with in (a, b)
        for app_id in (a, b):
            watched = session.get(Watch, (app_id, r1))
            assert watched is not None and watched.access == WatchAccess.GRANTED
        assert len(session.exec(sql_select(Watch)).all()) == 5


def test_the_move_is_a_no_op_on_a_new_database(settings: Settings) -> None:
    with session_scope(settings.database_url) as session:
        engine = session.get_bind()
        assert isinstance(engine, Engine)
    with engine.begin() as connection:
        report = move_repository_credentials_to_watches(connection)
    assert (report.repositories, report.watches, report.dropped) == (0, 0, [])


def test_the_downgrade_gives_repositories_back_the_credentials_their_fetches_used(
    old_url: str, settings: Settings
) -> None:
    assert settings.secret_key is not None
    cipher = Cipher(settings.secret_key)
    engine = make_engine(old_url)
    schema_before(engine)
    made = fill(engine, cipher, "https://git.example/acme/private")
    _a, b, _c, _d = made["apps"]
    r1, r2, r3, r4, r5 = made["repositories"]
    create_schema(engine)
    with session_scope(old_url) as session:  # A and B hold R1's token; B's own, fetched last
        watch = session.get(Watch, (b, r1))
        repository = session.get(Repository, r1)
        assert watch is not None and repository is not None
        watch.token_encrypted = cipher.encrypt("b-own-token")
        repository.fetched_with = b

    downgrade(engine, BEFORE)

    assert schema_status(engine).current == BEFORE
    tables = MetaData()
    tables.reflect(engine)
    repositories = tables.tables["repositories"]
    assert "fetched_with" not in repositories.c and "access" not in tables.tables["watches"].c
    with engine.connect() as connection:
        rows = {row.id: row for row in connection.execute(select(repositories))}
    assert cipher.decrypt(rows[r1].token_encrypted) == "b-own-token"
    assert cipher.decrypt(rows[r2].ssh_key_encrypted) == made["key"].private_key
    assert rows[r3].github_app_key_encrypted == made["app_key"]
    assert rows[r4].token_encrypted is None  # nobody watched it: dropped on the way up
    assert rows[r5].token_encrypted is None and rows[r5].ssh_key_encrypted is None
