"""Database engine and sessions for SQLite and PostgreSQL; idempotent schema creation."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateColumn
from sqlmodel import Session, SQLModel, create_engine

import models.tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from treecast.redact import MASK, redact


def make_engine(url: str) -> Engine:
    """A new engine; SQLite gets WAL, a busy timeout and foreign keys so CLI and worker can share it."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if path and path != ":memory:":
            # When this fails, connecting fails too: "unable to open database file".
            with contextlib.suppress(OSError):
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            # WAL makes NORMAL safe against corruption; a crash can only lose the last
            # ledger rows, which means a resend under the same webhook-id.
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def create_schema(engine: Engine) -> None:
    """Create missing tables and indexes; safe to call on every start."""
    SQLModel.metadata.create_all(engine, checkfirst=True)
    add_missing_columns(engine)


def add_missing_columns(engine: Engine) -> list[str]:
    """Add columns that tables created by an older version lack (`table.column` names).

    Only columns a plain `ALTER TABLE ... ADD COLUMN` can add to rows already there:
    nullable ones and ones with a server default (such as `apps.batch`).
    """
    inspector = inspect(engine)
    added: list[str] = []
    for table in SQLModel.metadata.sorted_tables:
        if not inspector.has_table(table.name):
            continue
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable and column.server_default is None:
                continue
            ddl = CreateColumn(column).compile(dialect=engine.dialect)
            with engine.begin() as connection:
                connection.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {ddl}"))
            added.append(f"{table.name}.{column.name}")
    return added


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    """One engine (and pool) per URL per process, with the schema in place."""
    engine = make_engine(url)
    create_schema(engine)
    return engine


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(engine_for(url), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def shown_url(url: str) -> str:
    """`url` with its password (also a `password=` query parameter) replaced by ***."""
    try:
        parsed = make_url(url)
    except Exception:  # not a URL SQLAlchemy reads: show only its scheme
        return url.split("://", 1)[0] + "://" + MASK
    if "password" in parsed.query:
        parsed = parsed.update_query_dict({"password": "MASKED"})
    return parsed.render_as_string(hide_password=True).replace("=MASKED", "=" + MASK)


def connect_failure(url: str, error: BaseException) -> str | None:
    """One line naming TREECAST_DATABASE_URL when `error` means the database at `url` could
    not be reached or opened (password hidden); None when `error` is anything else.

    SQLAlchemy raises a DBAPIError without a statement when getting a connection failed:
    refused, unknown host, bad password, missing database, an SQLite file it cannot open.
    """
    if not isinstance(error, DBAPIError) or error.statement is not None:
        return None
    secrets: list[str | None] = []
    with contextlib.suppress(Exception):
        parsed = make_url(url)
        secrets += [parsed.password and str(parsed.password), *parsed.query.get("password", ())]
    lines = str(error.orig if error.orig is not None else error).strip().splitlines()
    reason = redact(lines[0] if lines else type(error).__name__, secrets)
    if len(reason) > 300:
        reason = reason[:300] + "…"
    return f"TREECAST_DATABASE_URL: cannot connect ({shown_url(url)}: {reason})"
