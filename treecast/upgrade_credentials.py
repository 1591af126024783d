"""An upgrade step: credentials move from repositories to the watches of every app.

Credentials used to belong to a repository, shared by every app watching it. They now
belong to each app's watch (docs/security.md, "Tenants"). Who set a repository's
credentials was never recorded, so this gives them to every app watching it at the
time of the upgrade, keeping their deliveries working; a watch that already has
credentials of its own keeps them. The repository's columns are then cleared. A
repository that no app watches has nobody to give them to: they are dropped, with a
warning naming it.

Written with SQLAlchemy Core on a plain connection and frozen column names (not the
ORM models, which move on), for migration revision 0005_watch_credentials. Idempotent:
a second run finds nothing to move. Its downgrade moves them back
(`move_watch_credentials_to_repositories`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import Connection, and_, column, or_, select, table, update

log = logging.getLogger(__name__)

# The credential columns, under the same names on both tables.
COLUMNS = (
    "token_encrypted",
    "ssh_key_encrypted",
    "ssh_public_key",
    "ssh_key_fingerprint",
    "ssh_host_keys",
    "github_app_id",
    "github_installation_id",
    "github_app_key_encrypted",
    "github_token_expires_at",
)
# A watch holding any of these has credentials of its own, which are never overwritten.
OWN = ("token_encrypted", "ssh_key_encrypted", "ssh_host_keys", "github_app_key_encrypted")


@dataclass
class MoveReport:
    """What one run moved."""

    repositories: int = 0  # repositories whose credentials were moved (and cleared)
    watches: int = 0  # watches that received them
    dropped: list[str] = field(default_factory=list)  # repositories no app watched


def move_repository_credentials_to_watches(connection: Connection) -> MoveReport:
    """Give each repository's credentials to every watch of it without credentials of
    its own, then clear the repository's; see the module docstring."""
    repositories = table("repositories", column("id"), *(column(name) for name in COLUMNS))
    watches = table("watches", column("repository_id"), *(column(name) for name in COLUMNS))
    holding = or_(*(repositories.c[name].is_not(None) for name in COLUMNS))
    report = MoveReport()
    for row in connection.execute(select(repositories).where(holding)).mappings().all():
        values = {name: row[name] for name in COLUMNS}
        given = connection.execute(
            update(watches)
            .where(
                watches.c.repository_id == row["id"],
                and_(*(watches.c[name].is_(None) for name in OWN)),
            )
            .values(**values)
        ).rowcount
        watched = connection.execute(
            select(watches.c.repository_id).where(watches.c.repository_id == row["id"]).limit(1)
        ).first()
        if watched is None:
            report.dropped.append(str(row["id"]))
            log.warning(
                "repository %s had credentials but no app watched it: they were dropped; "
                "give an app's own with `starter.py watch APP_ID %s --token-env VAR` "
                "(or a deploy key, see docs/credentials.md)",
                row["id"],
                row["id"],
            )
        connection.execute(
            update(repositories)
            .where(repositories.c.id == row["id"])
            .values(**dict.fromkeys(COLUMNS))
        )
        report.repositories += 1
        report.watches += int(given or 0)
    if report.repositories:
        log.info(
            "moved the credentials of %d repositories to %d watches",
            report.repositories,
            report.watches,
        )
    return report


def move_watch_credentials_to_repositories(connection: Connection) -> int:
    """The downgrade's way back: each repository gets the credentials of the watch its
    last fetch used (`fetched_with`), else of its first watcher holding any (by app id),
    so the release before keeps fetching; the other apps' are lost with their columns.
    Returns the repositories given credentials."""
    repositories = table(
        "repositories", column("id"), column("fetched_with"), *(column(n) for n in COLUMNS)
    )
    watches = table(
        "watches", column("app_id"), column("repository_id"), *(column(n) for n in COLUMNS)
    )
    holding = or_(*(watches.c[name].is_not(None) for name in OWN))
    chosen: dict[str, dict[str, object]] = {}
    fetchers = dict(
        connection.execute(select(repositories.c.id, repositories.c.fetched_with)).all()
    )
    rows = connection.execute(
        select(watches).where(holding).order_by(watches.c.repository_id, watches.c.app_id)
    ).mappings()
    for row in rows:
        repository_id = row["repository_id"]
        if repository_id not in chosen or fetchers.get(repository_id) == row["app_id"]:
            chosen[repository_id] = {name: row[name] for name in COLUMNS}
    for repository_id, values in chosen.items():
        connection.execute(
            update(repositories).where(repositories.c.id == repository_id).values(**values)
        )
    return len(chosen)
