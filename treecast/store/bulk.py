"""Bulk jobs' rows: a job and one step row per watch, marked applied in the transaction
that changes the watch, so a retried step never changes it twice; the admin page reads
the progress from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, func
from sqlmodel import Session, col, select

from models.bulk import BulkAction, BulkStepInput
from models.tables import BulkJob, BulkStep, Repository, Watch, utcnow
from treecast.config import Settings
from treecast.db import session_scope
from treecast.redact import redact
from treecast.store.ledger import forget_ledger_rows
from treecast.store.watches import reset_watch

KEEP_JOBS_DAYS = 30
SHOWN_ERRORS = 5


@dataclass
class JobProgress:
    """A job as the admin page shows it."""

    job_id: str
    label: str
    total: int
    done: int
    failed: int
    created_at: datetime
    errors: list[str] = field(default_factory=list)  # the newest few

    @property
    def finished(self) -> bool:
        return self.done >= self.total

    @property
    def line(self) -> str:
        """Its progress as one line."""
        state = "finished" if self.finished else "running"
        failed = f", {self.failed} failed" if self.failed else ""
        return f"{self.label}: {self.done} of {self.total} done{failed} ({state})"


def create_job(
    session: Session, job_id: str, action: BulkAction, label: str, watches: list[tuple[str, str]]
) -> None:
    """A new job's row and one step row per (app id, repository id); jobs older than
    KEEP_JOBS_DAYS go, with their steps."""
    old = select(BulkJob.id).where(col(BulkJob.created_at) < utcnow() - timedelta(KEEP_JOBS_DAYS))
    session.execute(delete(BulkStep).where(col(BulkStep.job_id).in_(old)))
    session.execute(delete(BulkJob).where(col(BulkJob.id).in_(old)))
    session.add(BulkJob(id=job_id, action=action, label=label[:300], total=len(watches)))
    session.flush()
    session.add_all(
        BulkStep(job_id=job_id, position=position, app_id=app_id, repository_id=repository_id)
        for position, (app_id, repository_id) in enumerate(watches)
    )


def drop_job(session: Session, job_id: str) -> None:
    """Forget a job whose workflow could not be started."""
    session.execute(delete(BulkStep).where(col(BulkStep.job_id) == job_id))
    session.execute(delete(BulkJob).where(col(BulkJob.id) == job_id))


@dataclass
class StepTarget:
    """The watch a step changed, and its repository's poll interval."""

    app_id: str
    repository_id: str
    poll_interval_seconds: int


def apply_step(settings: Settings, step: BulkStepInput) -> StepTarget | str:
    """Change the step's watch once: a retry of the step finds it applied and changes
    nothing. Its watch (to ask its repository's workflow), or why it cannot be changed
    (the step is then finished as failed)."""
    with session_scope(settings.database_url) as session:
        row = session.get(BulkStep, (step.job_id, step.position))
        if row is None:
            return f"job {step.job_id} has no step {step.position}"
        if row.error is not None:
            return row.error
        repository = session.get(Repository, row.repository_id)
        if row.applied_at is None:
            if repository is None or session.get(Watch, (row.app_id, row.repository_id)) is None:
                row.error = "the watch is gone (unwatched or its app deleted)"
                row.finished_at = utcnow()
                session.add(row)
                return row.error
            if step.action == BulkAction.RETRY:
                reset_watch(session, row.app_id, row.repository_id)
            else:
                forget_ledger_rows(session, row.app_id, row.repository_id)
            row.applied_at = utcnow()
            session.add(row)
        interval = repository.poll_interval_seconds if repository is not None else 0
        return StepTarget(row.app_id, row.repository_id, interval)


def finish_step(settings: Settings, job_id: str, position: int, error: str | None = None) -> None:
    """Mark a step finished, or failed with `error` (a finished step stays as it is)."""
    with session_scope(settings.database_url) as session:
        row = session.get(BulkStep, (job_id, position))
        if row is not None and row.finished_at is None:
            row.finished_at = utcnow()
            row.error = redact(error)[:500] if error else None
            session.add(row)


def recent_jobs(session: Session, limit: int) -> list[JobProgress]:
    """The newest jobs with their progress."""
    jobs = session.exec(
        select(BulkJob).order_by(col(BulkJob.created_at).desc(), col(BulkJob.id)).limit(limit)
    ).all()
    shown: list[JobProgress] = []
    for job in jobs:
        finished = col(BulkStep.finished_at).is_not(None)
        done, failed = session.execute(
            select(func.count(), func.count(col(BulkStep.error))).where(
                col(BulkStep.job_id) == job.id, finished
            )
        ).one()
        errors = session.exec(
            select(BulkStep)
            .where(col(BulkStep.job_id) == job.id, col(BulkStep.error).is_not(None))
            .order_by(col(BulkStep.position).desc())
            .limit(SHOWN_ERRORS)
        ).all()
        shown.append(
            JobProgress(
                job.id,
                job.label,
                job.total,
                int(done),
                int(failed),
                job.created_at,
                [f"{e.app_id} {e.repository_id}: {e.error}" for e in reversed(errors)],
            )
        )
    return shown
