"""What operators do besides apps, repositories and watches: the admin token and page
sessions, the overview, the watches that need them and bulk jobs over them, the database
schema, whether this process is ready, and importing a Docora installation."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime, timedelta

from sqlmodel import Session

from models.bulk import BulkAction as BulkAction
from models.bulk import BulkInput
from models.bulk import bulk_workflow_id as bulk_workflow_id
from models.tables import WatchStatus
from treecast.db import (
    SchemaBehind,
    SchemaStatus,
    engine_for,
    ensure_schema,
    make_engine,
    prepare,
    schema_status,
)
from treecast.service import checks, docora_import, tokens, workflows
from treecast.service.errors import NotConfigured, Unauthorized, UserError
from treecast.service.results import (
    AdminOverview,
    DocoraImportReport,
    JobProgress,
    Readiness,
    Watch,
    watch_of,
)
from treecast.service.runtime import Runtime
from treecast.service.syncs import Part, Syncs
from treecast.store import apps as app_rows
from treecast.store import attempts, bulk
from treecast.store import repositories as repository_rows
from treecast.store import watches as watch_rows
from treecast.store.admin_sessions import AdminSessions
from treecast.store.admin_sessions import PageSession as PageSession

log = logging.getLogger("treecast.api")

# How long /ready waits for the database and for Temporal.
READY_TIMEOUT = 2.0


class Admin(Part):
    """Operators' acts."""

    def __init__(self, runtime: Runtime, syncs: Syncs) -> None:
        super().__init__(runtime, syncs)
        self._sessions = AdminSessions(self.settings.admin_session_seconds, runtime.cipher)

    # -- who may ----------------------------------------------------------------------------

    def check_token(self, token: str | None) -> None:
        """Accept the operator's bearer token (constant-time), or raise."""
        expected = self.settings.admin_token
        if not expected:
            raise NotConfigured(
                "the admin API is off: set TREECAST_ADMIN_TOKEN on the API server to use it"
            )
        if not token or not tokens.same_secret(token, expected):
            raise Unauthorized("missing or invalid admin token")

    async def log_in(self, token: str | None, previous: str | None = None) -> PageSession:
        """A new admin page session for the operator's token (`Unauthorized` otherwise);
        the session with id `previous`, if any, ends (a fresh id each login)."""
        self.check_token(token)

        def log_in(session: Session) -> PageSession:
            self._sessions.end(session, previous)
            return self._sessions.create(session)

        return await self.runtime.db(log_in)

    async def session(self, session_id: str | None) -> PageSession | None:
        """The live admin page session with this id, or None."""
        return await self.runtime.db(lambda db: self._sessions.get(db, session_id))

    async def save_session(self, session: PageSession) -> None:
        """Store a session's flashes and what it shows once."""
        await self.runtime.db(lambda db: self._sessions.save(db, session))

    async def log_out(self, session_id: str | None) -> None:
        """End a session for every API process."""
        await self.runtime.db(lambda db: self._sessions.end(db, session_id))

    # -- what needs an operator -------------------------------------------------------------

    async def overview(self) -> AdminOverview:
        """The overview's counts, and each repository's live breaker state."""

        def read(session: Session) -> tuple[AdminOverview, list[str]]:
            deliveries, failed = attempts.counts_since(
                session, datetime.now(UTC) - timedelta(hours=1)
            )
            counts = AdminOverview(
                apps=app_rows.count(session),
                repositories=repository_rows.count(session),
                watches_by_status=watch_rows.counts_by_status(session),
                deliveries_last_hour=deliveries,
                failed_deliveries_last_hour=failed,
            )
            return counts, repository_rows.ids(session)

        overview, ids = await self.runtime.db(read)
        overview.live = await self.syncs.live(ids)
        if overview.open_breakers:
            held = set(overview.open_breakers)
            overview.watches_behind_open_breakers = await self.runtime.db(
                lambda session: len(watch_rows.listing(session, repository_ids=held))
            )
        return overview

    async def failed_watches(self, app_id: str | None = None) -> tuple[list[Watch], str | None]:
        """Watches whose delivery failed, then those whose repository's breaker is open
        (`cause` "breaker"); and why the breakers are unknown, when Temporal did not tell."""

        def failed(session: Session) -> tuple[list[Watch], list[str]]:
            if app_id:
                checks.app(session, app_id)
            rows = _watches(session, status=WatchStatus.FAILED, app_id=app_id)
            return rows, repository_rows.ids(session)

        rows, ids = await self.runtime.db(failed)
        live = await self.syncs.live(ids)
        unknown = [state.error for state in live.values() if not state.known and state.error]
        open_ids = {rid for rid, state in live.items() if state.breaker_open}
        if open_ids:
            broken = await self.runtime.db(
                lambda session: _watches(session, app_id=app_id, repository_ids=open_ids)
            )
            seen = {(r.app_id, r.repository_id) for r in rows}
            for row in broken:
                if (row.app_id, row.repository_id) not in seen:
                    row.cause, row.last_error_type = "breaker", "GitFailing"
                    row.last_error = live[row.repository_id].message
                    rows.append(row)
        return rows, (unknown[0] if unknown else None)

    async def start_bulk(self, action: BulkAction, app_id: str | None) -> JobProgress:
        """Retry (the failed watches, and those whose repository's breaker is open) or
        resync (every watch of one app) as a `BulkWatches` workflow; `bulk_jobs` reads its
        progress. `Unreachable` when Temporal could not start it (nothing is changed)."""
        if action == BulkAction.RESYNC and not app_id:
            raise UserError("resync all needs an app: it resends every file of its watches")

        def chosen(session: Session) -> list[tuple[str, str]]:
            if app_id:
                checks.app(session, app_id)
            status = WatchStatus.FAILED if action == BulkAction.RETRY else None
            rows = watch_rows.listing(session, status=status, app_id=app_id)
            return [(w.app_id, w.repository_id) for w, _, _ in rows]

        items = await self.runtime.db(chosen)
        if action == BulkAction.RETRY:
            # A watch whose repository's breaker is open is not `failed`: retry those too.
            rows, _ = await self.failed_watches(app_id)
            items += [
                (r.app_id, r.repository_id)
                for r in rows
                if (r.app_id, r.repository_id) not in items
            ]
        scope = f"app {app_id}" if app_id else "every app"
        label = (
            f"Retry the failed watches of {scope}"
            if action == BulkAction.RETRY
            else f"Resync the watches of {scope}"
        )
        job = BulkInput(uuid.uuid4().hex[:16], action, label, len(items))
        await self.runtime.db(
            lambda session: bulk.create_job(session, job.job_id, action, label, items)
        )
        try:
            await self.runtime.temporal(
                lambda client: workflows.start_bulk(client, self.settings, job),
                f"the start of the job {label!r}",
            )
        except BaseException:
            await self.runtime.db(lambda session: bulk.drop_job(session, job.job_id))
            raise
        log.info("started %s (%d watches)", label, job.total, extra={"job_id": job.job_id})
        return JobProgress(job.job_id, label, job.total, 0, 0, datetime.now(UTC))

    async def bulk_jobs(self, limit: int = 20) -> list[JobProgress]:
        """The newest bulk jobs with their progress (from the database: any API process
        shows any job, also once its workflow is done)."""
        return await self.runtime.db(lambda session: bulk.recent_jobs(session, limit))

    # -- the database and this process ------------------------------------------------------

    async def open_database(self) -> None:
        """Make the process's database engine (a warm-up: /ready says whether it answers)."""
        await self.runtime.off_loop(engine_for, self.settings.database_url)

    async def schema_status(self) -> SchemaStatus:
        """The database's revision against this release's (`treecast db current`)."""

        def read() -> SchemaStatus:
            engine = make_engine(self.settings.database_url)
            try:
                return schema_status(engine)
            finally:
                engine.dispose()

        return await self.runtime.off_loop(read)

    async def prepare_database(self) -> SchemaStatus:
        """At the API's start: the schema up to date, upgraded by itself only with
        TREECAST_AUTO_MIGRATE or in dev mode; otherwise `SchemaBehind` says what to run."""
        upgrade = self.settings.auto_migrate or self.settings.dev
        return await self.runtime.off_loop(
            lambda: prepare(self.settings.database_url, upgrade=upgrade)
        )

    async def upgrade_schema(self) -> tuple[SchemaStatus, SchemaStatus]:
        """Migrate the database to this release's revision (`treecast db upgrade`); the
        status before and after. A database made before migrations is stamped first."""

        def upgrade() -> tuple[SchemaStatus, SchemaStatus]:
            engine = make_engine(self.settings.database_url)
            try:
                before = schema_status(engine)
                return before, ensure_schema(engine, upgrade=True)
            finally:
                engine.dispose()

        return await self.runtime.off_loop(upgrade)

    async def readiness(self) -> Readiness:
        """Whether this process can serve: the database answers and its schema is this
        release's, Temporal answers (each within a few seconds)."""

        def database() -> tuple[str, str]:
            try:
                status = schema_status(engine_for(self.settings.database_url))
            except SchemaBehind as error:
                return "ok", f"behind: {error}"
            except Exception as error:
                return f"unavailable ({type(error).__name__})", "unknown"
            return "ok", "ok" if status.up_to_date else f"behind: {status.problem()}"

        async def database_in_time() -> tuple[str, str]:
            try:
                return await asyncio.wait_for(self.runtime.off_loop(database), READY_TIMEOUT)
            except TimeoutError:
                return f"unavailable (no answer within {READY_TIMEOUT:g} s)", "unknown"

        async def temporal() -> str:
            try:
                client = await asyncio.wait_for(self.runtime.client(), READY_TIMEOUT)
                healthy = await client.service_client.check_health(
                    timeout=timedelta(seconds=READY_TIMEOUT)
                )
            except (Exception, TimeoutError) as error:
                return f"unavailable ({type(error).__name__})"
            return "ok" if healthy else "unavailable (not serving)"

        (db_state, schema), temporal_state = await asyncio.gather(database_in_time(), temporal())
        return Readiness(
            db_state == schema == temporal_state == "ok", db_state, temporal_state, schema
        )

    async def import_docora(
        self, database_url: str, encryption_key: str, *, dry_run: bool = False
    ) -> DocoraImportReport:
        """Import a Docora database's apps, tokens, repositories, watches and ledgers (one
        transaction; idempotent; `dry_run` only reports), then start the imported
        repositories' syncs (`unreachable`: why they could not be). See
        docs/migrating-from-docora.md."""
        docora = await self.runtime.off_loop(docora_import.read, database_url, encryption_key)
        cipher = self.runtime.cipher()
        report = await self.runtime.db(
            lambda session: docora_import.write(
                session, self.settings, cipher, docora, dry_run=dry_run
            )
        )
        if not dry_run:
            for repository_id in report.repositories:
                report.unreachable = await self.syncs.after_saving(repository_id)
                if report.unreachable is not None:
                    break
        return report


def _watches(
    session: Session,
    *,
    status: str | None = None,
    app_id: str | None = None,
    repository_ids: set[str] | None = None,
) -> list[Watch]:
    """`watch_rows.listing` as `Watch` results."""
    rows = watch_rows.listing(session, status=status, app_id=app_id, repository_ids=repository_ids)
    return [watch_of(w, r, app_name=a.name) for w, a, r in rows]
