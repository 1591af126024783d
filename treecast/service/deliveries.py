"""Deliveries: the log of webhook attempts, and sending an app everything again."""

from __future__ import annotations

from sqlmodel import Session

from treecast.service import checks
from treecast.service.errors import UserError, shown
from treecast.service.results import Delivery, Page, Redelivered, delivery_of
from treecast.service.syncs import Part
from treecast.store import attempts
from treecast.store.ledger import forget_ledger_rows

OUTCOMES = (attempts.DELIVERED, attempts.FAILED)


class Deliveries(Part):
    """What was sent to apps, and sending it again."""

    async def log(
        self,
        *,
        app_id: str | None = None,
        repository_id: str | None = None,
        event: str | None = None,
        outcome: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
        by_app: bool = False,
    ) -> Page[Delivery]:
        """Delivery attempts, newest first, filtered; `cursor` is the last page's
        `next_cursor`. `by_app`: the app itself asks, for its own (a `repository_id` it
        does not watch is NotFound)."""
        if outcome and outcome not in OUTCOMES:
            raise UserError(f"outcome {shown(outcome)} is not one of {', '.join(OUTCOMES)}")
        before = checks.cursor(cursor)

        def read(session: Session) -> list[Delivery]:
            if by_app and app_id and repository_id:
                checks.own_watch(session, app_id, repository_id)
            rows = attempts.page(
                session,
                app_id=app_id or None,
                repository_id=repository_id or None,
                event=event or None,
                outcome=outcome or None,
                before=before,
                limit=limit + 1,
            )
            return [delivery_of(row) for row in rows]

        rows = await self.runtime.db(read)
        items = rows[:limit]
        return Page(items, str(items[-1].id) if len(rows) > limit else None)

    async def events(self) -> list[str]:
        """The events the log holds (for a filter)."""
        return await self.runtime.db(attempts.events)

    async def redeliver(
        self, app_id: str, repository_id: str, *, by_app: bool = False, sync: bool = True
    ) -> Redelivered:
        """Forget what an app received from a repository (its watch pending again, new
        webhook ids) and, with `sync`, sync: it gets every file again. `by_app`: the app
        itself asks (NotFound alike for a repository it does not watch)."""

        def forget(session: Session) -> int:
            if by_app:
                checks.own_watch(session, app_id, repository_id)
            else:
                checks.watch(session, app_id, repository_id)
            return forget_ledger_rows(session, app_id, repository_id)

        done = Redelivered(app_id, repository_id, await self.runtime.db(forget))
        if sync:
            done.unreachable = await self.syncs.after_saving(repository_id)
            done.sync_requested = done.unreachable is None
        return done
