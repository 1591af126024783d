"""The ledger read and rewritten for verifiable mirrors (docs/webhooks.md, "Verifying a
mirror"): in the digest's order, and made to say what the app really holds.

A reconcile makes the app's ledger equal its own word (rows dropped for files it lacks,
its blob ids for files that differ, rows added for files it has beyond them) and clears
the watch's `delivered_commit`: the next delivery then compares the whole tree with that
ledger and sends exactly the difference, through the ordinary path.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, insert
from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from models.tables import DeliveredFile, Watch, utcnow
from treecast.store.ledger import start_over

# Rows per statement: well under SQLite's and PostgreSQL's parameter limits.
_BATCH = 500
_READ_BATCH = 2000


def sorted_ledger(session: Session, app_id: str, repository_id: str) -> Iterator[tuple[str, str]]:
    """(path, blob id) of every row of the app's ledger for a repository, in the digest's
    order (ascending UTF-8 bytes of the path), streamed."""
    path = col(DeliveredFile.path)
    # PostgreSQL sorts text by the database's locale unless told to compare bytes;
    # SQLite compares bytes (BINARY) already.
    bind = session.get_bind()
    order = path.collate("C") if bind.dialect.name == "postgresql" else path
    query = (
        sa_select(path, col(DeliveredFile.blob_id))
        .where(
            col(DeliveredFile.app_id) == app_id, col(DeliveredFile.repository_id) == repository_id
        )
        .order_by(order)
        .execution_options(yield_per=_READ_BATCH)
    )
    for row in session.execute(query):
        yield row[0], row[1]


@dataclass(frozen=True, slots=True)
class LedgerFix:
    """One row made to say what the app holds: `blob_id` None drops it (the app lacks the
    file); otherwise the row holds that blob (and `sha256`, "" when the app did not say)."""

    path: str
    blob_id: str | None
    sha256: str = ""


def take_apps_word(
    session: Session, app_id: str, repository_id: str, fixes: Sequence[LedgerFix]
) -> None:
    """Rewrite the app's ledger with `fixes` and make its watch deliver again: no delivered
    commit (the next delivery compares the whole tree), pending, a new generation (what is
    sent again gets fresh webhook ids, and a run under way stops at its next write), in the
    caller's transaction."""
    ids = {"app_id": app_id, "repository_id": repository_id}
    paths = [fix.path for fix in fixes]
    for start in range(0, len(paths), _BATCH):
        session.execute(
            delete(DeliveredFile).where(
                col(DeliveredFile.app_id) == app_id,
                col(DeliveredFile.repository_id) == repository_id,
                col(DeliveredFile.path).in_(paths[start : start + _BATCH]),
            )
        )
    now = utcnow()
    rows = [
        {**ids, "path": f.path, "blob_id": f.blob_id, "sha256": f.sha256, "delivered_at": now}
        for f in fixes
        if f.blob_id is not None
    ]
    for start in range(0, len(rows), _BATCH):
        session.execute(insert(DeliveredFile), rows[start : start + _BATCH])
    watch = session.get(Watch, (app_id, repository_id))
    if watch is not None:
        start_over(watch)
        session.add(watch)
