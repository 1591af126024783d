"""Inputs and results of `BulkWatches`, the admin page's bulk retry or resync: ids only."""

from dataclasses import dataclass
from enum import StrEnum


class BulkAction(StrEnum):
    """What a bulk job does to each watch."""

    RETRY = "retry"  # pending again (its ledger kept), breaker closed, sync now
    RESYNC = "resync"  # the app's ledger forgotten, sync now: every file is sent again


@dataclass
class BulkInput:
    """A job of `total` watches, listed in its `bulk_steps` rows (never in the input: a
    large job would not fit Temporal's payload limit); `next`, `done` and `failed` carry
    its progress across continue-as-new."""

    job_id: str
    action: BulkAction
    label: str
    total: int = 0
    next: int = 0
    done: int = 0
    failed: int = 0


@dataclass
class BulkResult:
    """How many watches the job went through, and how many it could not change."""

    done: int = 0
    failed: int = 0


@dataclass
class BulkStepInput:
    """One watch of a job, by its position in the job."""

    job_id: str
    position: int
    action: BulkAction


@dataclass
class BulkStepResult:
    """A step's outcome: `error` says why the watch could not be changed."""

    error: str | None = None


@dataclass
class BulkFailureInput:
    """A step whose activity kept failing: recorded as failed with `error`."""

    job_id: str
    position: int
    error: str


def bulk_workflow_id(job_id: str) -> str:
    """The id of a bulk job's `BulkWatches` workflow."""
    return f"bulk/{job_id}"
