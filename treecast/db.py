"""Database engine and sessions for SQLite and PostgreSQL; idempotent schema creation."""

from __future__ import annotations

import contextlib
import fcntl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, SQLModel, create_engine

import models.tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from treecast.redact import MASK, redact
from treecast.upgrade_credentials import move_repository_credentials_to_watches

# The PostgreSQL advisory lock that serialises schema changes between processes.
SCHEMA_LOCK_KEY = 0x7472656563617374  # "treecast"


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
    """Create missing tables and indexes, add columns added since and move data they
    replace; safe on every start, also when several processes start at once."""
    with schema_lock(engine):
        SQLModel.metadata.create_all(engine, checkfirst=True)
        add_missing_columns(engine)
        with engine.begin() as connection:
            move_repository_credentials_to_watches(connection)


@contextmanager
def schema_lock(engine: Engine) -> Iterator[None]:
    """Hold a lock that one process at a time gets, across processes: `create_all` checks
    for a table and then creates it, so two processes starting on a fresh database both
    saw it missing and the slower one failed ("table apps already exists"). SQLite: an
    exclusive `flock` on a file beside the database; PostgreSQL: an advisory lock."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
            try:
                yield
            finally:
                connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": SCHEMA_LOCK_KEY}
                )
                connection.commit()
        return
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    try:
        handle = open(f"{database}.lock", "a") if database and database != ":memory:" else None  # noqa: SIM115
    except OSError:
        handle = None  # no file there: connecting fails next, with its own one line
    if handle is None:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def add_missing_columns(engine: Engine) -> list[str]:
    """`ALTER TABLE ... ADD COLUMN` for each column a table of an existing database lacks
    (a column added to models/tables.py since it was created: nullable, or with a scalar
    default), so an upgraded worker reads old databases. Returns `table.column` added.

    Two processes starting at once may both try; the loser's error is ignored when the
    column is there afterwards.
    """
    added: list[str] = []
    inspector = inspect(engine)
    preparer = engine.dialect.identifier_preparer
    for table in SQLModel.metadata.sorted_tables:
        if not inspector.has_table(table.name):
            continue
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            ddl = f"{column.type.compile(dialect=engine.dialect)}"
            default = getattr(column.default, "arg", None)
            if not column.nullable:
                if not isinstance(default, bool | int | float | str):
                    continue  # nothing to fill old rows with: left to a real migration
                if isinstance(default, str):
                    literal = "'" + default.replace("'", "''") + "'"
                elif isinstance(default, bool):
                    literal = "TRUE" if default else "FALSE"  # PostgreSQL and SQLite alike
                else:
                    literal = str(default)
                ddl += f" NOT NULL DEFAULT {literal}"
            statement = (
                f"ALTER TABLE {preparer.quote(table.name)} "
                f"ADD COLUMN {preparer.quote(column.name)} {ddl}"
            )
            try:
                with engine.begin() as connection:
                    connection.execute(text(statement))
            except DBAPIError:
                columns = inspect(engine).get_columns(table.name)
                if column.name not in {c["name"] for c in columns}:
                    raise
            added.append(f"{table.name}.{column.name}")
        if any(name.startswith(f"{table.name}.") for name in added):
            # The indexes of the columns just added (an API token's unique id, say).
            with engine.begin() as connection:
                for index in table.indexes:
                    if any(f"{table.name}.{c.name}" in added for c in index.columns):
                        index.create(connection, checkfirst=True)
    return added


_ENGINES_LOCK = threading.Lock()


def engine_for(url: str) -> Engine:
    """One engine (and pool) per URL per process, with the schema in place (threads that
    ask at once wait for the one creating it: two `create_all`s would race)."""
    with _ENGINES_LOCK:
        return _engine_for(url)


@lru_cache(maxsize=8)
def _engine_for(url: str) -> Engine:
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
