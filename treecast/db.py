"""Database engine and sessions for SQLite and PostgreSQL, and when the schema is made or
migrated (the migrations themselves: treecast/migrations)."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, event, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, SQLModel, create_engine

import models.tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from treecast import migrations
from treecast.migrations import baseline
from treecast.redact import MASK, redact

log = logging.getLogger("treecast.db")


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
            cursor.execute("PRAGMA busy_timeout=30000")
            _use_wal(cursor)
            # WAL makes NORMAL safe against corruption; a crash can only lose the last
            # ledger rows, which means a resend under the same webhook-id.
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def _use_wal(cursor: Any, *, seconds: float = 30.0) -> None:
    """Switch the database to WAL (it stays so). SQLite does not wait on its busy timeout
    while another connection is switching a new database at the same moment, so that
    "database is locked" is retried here, within the same 30 s."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class SchemaBehind(RuntimeError):
    """The database's schema is older than this release's (or newer): one line saying what to run."""


@dataclass(frozen=True)
class SchemaStatus:
    """Where a database's schema is, against this release's migrations."""

    current: str | None  # the revision it is stamped with; None: empty or made before them
    head: str  # this release's newest revision
    empty: bool = False  # no Treecast table at all
    legacy: bool = False  # tables of a release before migrations, not stamped yet

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head

    @property
    def shown(self) -> str:
        """The database's revision in words."""
        if self.empty:
            return "empty"
        if self.legacy:
            return "a release before migrations"
        return self.current or "unknown"

    def problem(self) -> str:
        """Why a process must not run on it yet, in one line."""
        if self.current is not None and not migrations.known(self.current):
            return (
                f"the database schema is at revision {self.current}, which this Treecast does "
                f"not know (a newer release migrated it): run that release, or a newer one"
            )
        return (
            f"the database schema is at {self.shown}, this Treecast needs {self.head}: run "
            "`treecast db upgrade` (or start with TREECAST_AUTO_MIGRATE=1)"
        )


def schema_status(engine: Engine) -> SchemaStatus:
    """Read the database's revision (two small queries)."""
    with engine.connect() as connection:
        current = migrations.current(connection)
        legacy = empty = False
        if current is None:
            tables = set(inspect(connection).get_table_names())
            empty = not tables & set(baseline.metadata.tables)
            legacy = not empty
    return SchemaStatus(current, migrations.head(), empty=empty, legacy=legacy)


def ensure_schema(engine: Engine, *, upgrade: bool) -> SchemaStatus:
    """Make the schema this release's: an empty database gets the tables at once (stamped at
    the newest revision, no revision replayed); one that is behind is migrated only with
    `upgrade`, otherwise `SchemaBehind` says what to run. Processes that start together
    take turns (a lock on the database)."""
    status = schema_status(engine)
    if status.up_to_date:
        return status
    with _migration_lock(engine):
        # Read again under the lock: another process may have done it meanwhile, or be
        # half way (SQLite creates tables outside a transaction, so a database being
        # created looks like one of a release before migrations until it is stamped).
        status = schema_status(engine)
        if status.up_to_date:
            return status
        unknown = status.current is not None and not migrations.known(status.current)
        if unknown or not (status.empty or upgrade):
            raise SchemaBehind(status.problem())
        if status.empty:
            with engine.begin() as connection:
                SQLModel.metadata.create_all(connection, checkfirst=True)
                migrations.stamp(connection, migrations.head())
        else:
            _migrate(engine, status)
    return schema_status(engine)


def _migrate(engine: Engine, status: SchemaStatus) -> None:
    sqlite = engine.dialect.name == "sqlite"
    if status.legacy:
        # A release before migrations: bring it to the baseline as its start-up
        # upgrader would have, then it is that revision.
        baseline.metadata.create_all(engine, checkfirst=True)
        add_missing_columns(engine, baseline.metadata)
        with engine.begin() as connection:
            migrations.stamp(connection, baseline.REVISION)
    log.info("upgrading the database schema from %s to %s", status.shown, status.head)
    with engine.connect() as connection:
        if sqlite:
            # Batch mode copies a table to change it; with foreign keys on, dropping the
            # old copy would fail (or cascade). Checked again below, before committing.
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        try:
            with connection.begin():
                migrations.upgrade(connection)
                if sqlite:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise RuntimeError(f"the upgrade broke foreign keys: {broken[:5]}")
        finally:
            if sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()


# Any constant both processes agree on: the key of PostgreSQL's advisory lock.
_PG_LOCK_KEY = 0x7472_6565_6361_7374 & 0x7FFF_FFFF_FFFF_FFFF


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """One migrating process at a time: an advisory lock on PostgreSQL, a lock file beside
    an SQLite database (which only processes of one host share)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _PG_LOCK_KEY})
            connection.commit()
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_LOCK_KEY})
                connection.commit()
        return
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    try:
        handle = open(f"{database}.migrate-lock", "a")  # noqa: SIM115
    except OSError:  # no directory there: connecting fails next, with its own one line
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def create_schema(engine: Engine) -> SchemaStatus:
    """Create the tables of an empty database, or upgrade one that is behind."""
    return ensure_schema(engine, upgrade=True)


def add_missing_columns(engine: Engine, metadata: MetaData | None = None) -> list[str]:
    """`ALTER TABLE ... ADD COLUMN` for each column a table of an existing database lacks
    (nullable, or with a scalar default) against `metadata` (default: the models); returns
    `table.column` added. This was the whole upgrader before migrations; it now brings a
    database of those releases to the baseline (`metadata` = the baseline's).

    Two processes starting at once may both try; the loser's error is ignored when the
    column is there afterwards.
    """
    added: list[str] = []
    inspector = inspect(engine)
    preparer = engine.dialect.identifier_preparer
    for table in (metadata or SQLModel.metadata).sorted_tables:
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
    # An empty database gets its tables; one that is behind is refused (SchemaBehind), and
    # not cached: once `treecast db upgrade` ran elsewhere, the next call succeeds.
    try:
        ensure_schema(engine, upgrade=False)
    except BaseException:
        engine.dispose()  # its pool holds the connection that looked
        raise
    return engine


def prepare(url: str, *, upgrade: bool) -> SchemaStatus:
    """At a worker's or API's start: the schema up to date (upgraded when `upgrade`, i.e.
    TREECAST_AUTO_MIGRATE or dev mode), or `SchemaBehind` with the line to print."""
    engine = make_engine(url)
    try:
        with _ENGINES_LOCK:
            status = ensure_schema(engine, upgrade=upgrade)
    finally:
        engine.dispose()
    engine_for(url)
    return status


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
