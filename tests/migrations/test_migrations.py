"""Schema migrations (Alembic), on SQLite and PostgreSQL: an empty database is made at the
newest revision at once; the revisions build exactly the models (the drift check); a
populated database at the baseline, or made by a release before migrations, is upgraded
without losing a row; a process refuses a schema that is behind (or newer) with one line
saying what to run; `treecast db current` / `db upgrade`; processes upgrading at once
take turns."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Boolean, DateTime, Float, Integer, MetaData, String, Text, inspect, select
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

import starter
from models.tables import App, Watch
from tests.conftest import free_port
from tests.docora.test_docora import fresh_database
from treecast import migrations
from treecast.config import load_settings
from treecast.crypto import generate_key
from treecast.db import (
    SchemaBehind,
    create_schema,
    engine_for,
    ensure_schema,
    make_engine,
    schema_status,
    session_scope,
)
from treecast.migrations import baseline
from treecast.service.core import TreecastService, run
from treecast.upgrade_credentials import COLUMNS as CREDENTIALS

ROOT = Path(__file__).resolve().parents[2]
ROWS = 3


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/treecast.db"
    return fresh_database(request.getfixturevalue("postgres_url"), "migrations")


def _value(column: Any, index: int, rows: dict[str, list[dict[str, Any]]]) -> Any:
    for key in column.foreign_keys:  # the parent's row of the same index
        return rows[key.column.table.name][index][key.column.name]
    kind = column.type
    if isinstance(kind, Boolean):
        return index % 2 == 0
    if isinstance(kind, Integer):
        return index + 1
    if isinstance(kind, Float):
        return index + 0.5
    if isinstance(kind, DateTime):
        return datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC) + timedelta(days=index)
    if isinstance(kind, String | Text):
        text = f"{column.name}-{index}-é"
        length = getattr(kind, "length", None)
        return text[-length:] if length else text
    raise AssertionError(f"no test value for {column.table.name}.{column.name} ({kind})")


def populate(engine: Engine, metadata: MetaData) -> None:
    """ROWS rows in every table, each column set (foreign keys point at the parents' rows)."""
    rows: dict[str, list[dict[str, Any]]] = {}
    with engine.begin() as connection:
        for table in metadata.sorted_tables:
            rows[table.name] = [
                {column.name: _value(column, index, rows) for column in table.columns}
                for index in range(ROWS)
            ]
            connection.execute(table.insert(), rows[table.name])


def read_all(engine: Engine, metadata: MetaData) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of `metadata`, in primary-key order."""
    with engine.connect() as connection:
        return {
            table.name: [
                tuple(row)
                for row in connection.execute(
                    select(table).order_by(*table.primary_key.columns)
                ).all()
            ]
            for table in metadata.sorted_tables
        }


def upgraded(before: dict[str, list[tuple[Any, ...]]]) -> dict[str, list[tuple[Any, ...]]]:
    """The baseline's rows as the revisions since leave them: 0005 moves each repository's
    credentials to its watches (`treecast.upgrade_credentials`), clearing the repository's."""
    columns = list(baseline.metadata.tables["repositories"].columns.keys())
    cleared = {columns.index(name) for name in CREDENTIALS}
    return {
        **before,
        "repositories": [
            tuple(None if i in cleared else v for i, v in enumerate(row))
            for row in before["repositories"]
        ],
    }


def assert_credentials_moved(url: str) -> None:
    """Each populated watch holds its repository's former credentials (ROWS of each)."""
    with session_scope(url) as session:
        for index in range(ROWS):
            watch = session.get(Watch, (f"id-{index}-é", f"id-{index}-é"))
            assert watch is not None
            assert watch.token_encrypted == f"token_encrypted-{index}-é"
            assert watch.ssh_host_keys == f"ssh_host_keys-{index}-é"


def test_an_empty_database_gets_the_newest_schema_without_replaying(db_url: str) -> None:
    engine = engine_for(db_url)
    status = schema_status(engine)
    assert status.up_to_date and status.current == migrations.head()
    tables = set(inspect(engine).get_table_names())
    assert tables == set(SQLModel.metadata.tables) | {"alembic_version"}


def test_the_revisions_build_exactly_the_models(db_url: str) -> None:
    """The drift check: a model changed without a revision fails here (alembic's
    autogenerate comparison of the migrated database with models/tables.py)."""
    engine = make_engine(db_url)
    with engine.begin() as connection:
        migrations.upgrade(connection)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, SQLModel.metadata)
    assert differences == [], (
        "models/tables.py and treecast/migrations differ; add a revision "
        f"(docs/operations.md, Adding a revision): {differences}"
    )


def test_a_populated_baseline_is_upgraded_without_losing_a_row(db_url: str) -> None:
    engine = make_engine(db_url)
    with engine.begin() as connection:
        migrations.upgrade(connection, baseline.REVISION)
    populate(engine, baseline.metadata)
    before = read_all(engine, baseline.metadata)
    assert all(len(rows) == ROWS for rows in before.values())

    with pytest.raises(SchemaBehind, match=r"at 0001_baseline, .*run `treecast db upgrade`"):
        engine_for(db_url)
    status = create_schema(engine)

    assert status.up_to_date and status.current == migrations.head()
    assert read_all(engine, baseline.metadata) == upgraded(before)
    assert_credentials_moved(db_url)
    with session_scope(db_url) as session:  # and the models read them
        app = session.get(App, "id-0-é")
        assert app is not None and app.batch is True
        assert session.get(Watch, ("id-1-é", "id-1-é")) is not None


def test_a_database_of_a_release_before_migrations_is_stamped_and_upgraded(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(db_url)
    baseline.metadata.create_all(engine)  # what those releases' create_all made
    populate(engine, baseline.metadata)
    before = read_all(engine, baseline.metadata)
    assert schema_status(engine).legacy

    monkeypatch.setenv("TREECAST_DATABASE_URL", db_url)
    assert starter.main(["db", "upgrade"]) == 0

    assert schema_status(engine).current == migrations.head()
    assert read_all(engine, baseline.metadata) == upgraded(before)
    assert_credentials_moved(db_url)
    assert set(inspect(engine).get_table_names()) == set(SQLModel.metadata.tables) | {
        "alembic_version"
    }


def test_processes_upgrading_at_once_take_turns(db_url: str) -> None:
    engine = make_engine(db_url)
    baseline.metadata.create_all(engine)
    populate(engine, baseline.metadata)
    before = read_all(engine, baseline.metadata)
    errors: list[BaseException] = []

    def upgrade() -> None:
        own = make_engine(db_url)  # as another process would
        try:
            ensure_schema(own, upgrade=True)
        except BaseException as error:
            errors.append(error)
        finally:
            own.dispose()

    threads = [threading.Thread(target=upgrade) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert schema_status(engine).up_to_date
    assert read_all(engine, baseline.metadata) == upgraded(before)
    assert_credentials_moved(db_url)


def test_a_schema_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/newer.db"
    engine = make_engine(url)
    create_schema(engine)
    with engine.begin() as connection:
        migrations.stamp(connection, migrations.head())
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = '9999_later'")
    for upgrade in (False, True):
        with pytest.raises(SchemaBehind, match="9999_later, which this Treecast does not know"):
            ensure_schema(engine, upgrade=upgrade)


def test_db_current_and_upgrade_and_commands_on_a_schema_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    engine = make_engine(url)
    with engine.begin() as connection:
        migrations.upgrade(connection, baseline.REVISION)
    monkeypatch.setenv("TREECAST_DATABASE_URL", url)
    monkeypatch.setenv("TREECAST_SECRET_KEY", generate_key())

    assert starter.main(["db", "current"]) == 0
    assert "at 0001_baseline, this Treecast needs" in capsys.readouterr().out
    # Any other command refuses in one line, naming what to run.
    assert starter.main(["app", "list"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "run `treecast db upgrade`" in error

    assert starter.main(["db", "upgrade"]) == 0
    assert f"from 0001_baseline to {migrations.head()}" in capsys.readouterr().out
    assert starter.main(["db", "upgrade", "--json"]) == 0
    assert '"up_to_date": true' in capsys.readouterr().out
    assert starter.main(["db", "current"]) == 0
    assert "up to date" in capsys.readouterr().out
    assert starter.main(["app", "list"]) == 0


def _behind(tmp_path: Path) -> dict[str, str]:
    """The environment of a process whose database is at the baseline."""
    url = f"sqlite:///{tmp_path}/behind.db"
    with make_engine(url).begin() as connection:
        migrations.upgrade(connection, baseline.REVISION)
    return {
        **os.environ,
        "TREECAST_DATABASE_URL": url,
        "TREECAST_DATA_DIR": str(tmp_path / "data"),
        "TREECAST_SECRET_KEY": generate_key(),
        "TREECAST_DEV": "0",
        "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",  # nothing listens
        "TREECAST_API_LISTEN": f"127.0.0.1:{free_port()}",
    }


@pytest.mark.slow  # Treecast's own processes (a second or more each)
@pytest.mark.parametrize("command", [["worker.py"], ["-m", "treecast.api"]])
def test_the_worker_and_the_api_refuse_a_schema_that_is_behind(
    tmp_path: Path, command: list[str]
) -> None:
    env = _behind(tmp_path)
    done = subprocess.run(
        [sys.executable, *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: the database schema is at 0001_baseline")
    assert "run `treecast db upgrade` (or start with TREECAST_AUTO_MIGRATE=1)" in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr


@pytest.mark.slow  # the worker as its own process
def test_told_to_the_worker_upgrades_a_schema_that_is_behind_at_start(tmp_path: Path) -> None:
    env = _behind(tmp_path)
    # Told to, the worker upgrades it at start (then finds no Temporal, and stops).
    env["TREECAST_AUTO_MIGRATE"] = "1"
    subprocess.run(
        [sys.executable, "worker.py"], cwd=ROOT, env=env, capture_output=True, timeout=60
    )
    assert schema_status(make_engine(env["TREECAST_DATABASE_URL"])).up_to_date


@pytest.mark.parametrize("setting", ["TREECAST_DEV", "TREECAST_AUTO_MIGRATE"])
def test_dev_mode_or_auto_migrate_upgrade_at_the_api_start(tmp_path: Path, setting: str) -> None:
    env = _behind(tmp_path)
    values = {k: v for k, v in env.items() if k.startswith(("TREECAST_", "TEMPORAL_"))}
    service = TreecastService(load_settings({**values, setting: "1"}))
    assert run(service.admin.prepare_database()).up_to_date
    with pytest.raises(SchemaBehind):  # and without either, it refuses
        run(TreecastService(load_settings(_behind(tmp_path / "other"))).admin.prepare_database())
