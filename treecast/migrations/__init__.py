"""Treecast's database migrations (Alembic), inside the package so an installed Treecast
and the Docker image carry them. `treecast.db` decides when they run; docs/operations.md
("Schema migrations") says how to add one."""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from alembic import command
from alembic.autogenerate.api import AutogenContext
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

HERE = Path(__file__).resolve().parent


class _Chatter(logging.Filter):
    """Alembic says which dialect it uses every time a database's revision is read; the
    lines worth logging are the revisions it runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(("Context impl", "Will assume"))


logging.getLogger("alembic.runtime.migration").addFilter(_Chatter())


def config(connection: Connection | None = None) -> Config:
    """An Alembic config for these migrations; `connection` is the one env.py migrates."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@lru_cache(maxsize=1)
def scripts() -> ScriptDirectory:
    """The revisions (read once per process)."""
    return ScriptDirectory.from_config(config())


def head() -> str:
    """The newest revision: what this release's models are."""
    found = scripts().get_current_head()
    if found is None:  # pragma: no cover - the baseline is always there
        raise RuntimeError("treecast/migrations has no revisions")
    return found


def known(revision: str) -> bool:
    """Whether `revision` is one of this release's (a newer release's is not)."""
    return any(script.revision == revision for script in scripts().walk_revisions())


def current(connection: Connection) -> str | None:
    """The revision the database is stamped with (None: not stamped)."""
    return MigrationContext.configure(connection).get_current_revision()


def stamp(connection: Connection, revision: str) -> None:
    """Record `revision` as the database's without running anything."""
    MigrationContext.configure(connection).stamp(scripts(), revision)


def upgrade(connection: Connection, target: str = "head") -> None:
    """Run every revision from the database's up to `target` on `connection`."""
    command.upgrade(config(connection), target)


def render_item(type_: str, obj: Any, _context: AutogenContext) -> str | Literal[False]:
    """Autogenerate writes SQLModel's column types as the plain SQLAlchemy ones they are."""
    from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

    if type_ == "type" and isinstance(obj, AutoString):
        length = getattr(obj.impl, "length", None)
        return f"sa.String({length})" if length else "sa.String()"
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False
