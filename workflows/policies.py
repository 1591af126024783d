"""Retry policies, timeouts and failure helpers shared by the workflows (one place each)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import Priority, RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

with workflow.unsafe.imports_passed_through():
    from models.delivery import DeliveryErrorType
    from models.git import NON_RETRYABLE_GIT_ERRORS
    from treecast.redact import redact

# -- git -------------------------------------------------------------------------------

SNAPSHOT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=4,
    non_retryable_error_types=list(NON_RETRYABLE_GIT_ERRORS),
)

# -- database --------------------------------------------------------------------------

DB_TIMEOUT = timedelta(seconds=60)
DB_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
)

# -- file delivery ---------------------------------------------------------------------

# Retrying cannot help: the target is forbidden, gone, or no longer watching.
NOT_RETRIED: tuple[str, ...] = (
    DeliveryErrorType.BLOCKED_ADDRESS,
    DeliveryErrorType.GONE,
    DeliveryErrorType.WATCH_MISSING,
)
# The tries DeliverFiles gives an app in a pass, as its own workflow timers (not
# Temporal's retries, so a newer commit can cut the waits short): 5 tries, 1 s, 2 s,
# 4 s, 8 s apart, stretched by a Retry-After.
DELIVER_TRIES = 5
DELIVER_FIRST_WAIT = timedelta(seconds=1)
DELIVER_BACKOFF = 2.0
# Every try is one activity attempt.
DELIVER_TRY = RetryPolicy(maximum_attempts=1, non_retryable_error_types=list(NOT_RETRIED))
# A big first delivery can take long; heartbeats detect a dead worker. The activity
# heartbeats every second while it lives (also during a slow POST), so a short
# timeout only measures how soon a killed worker's delivery resumes elsewhere.
DELIVER_TIMEOUT = timedelta(hours=2)
DELIVER_HEARTBEAT = timedelta(seconds=10)

# -- task priority ---------------------------------------------------------------------

# Temporal's priority keys run from 1 (first) to 5; unset is 3. What an app waits for
# (a delivery, a breaker notice) goes before queued snapshots: when thousands of new
# repositories arrive at once, each one's files follow its sync instead of waiting for
# every other repository's snapshot. A server orders by priority within each of a
# queue's partitions; one that ignores priorities runs them in order of arrival. The
# children (DeliverFiles, NotifyBreaker) start at it too: their workflow tasks then go
# before the first tasks of repositories registered meanwhile (a priority is no part of
# replay's determinism check: histories recorded without it replay alike).
TO_APPS = Priority(priority_key=2)

# -- breaker notices -------------------------------------------------------------------

NOTICE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), backoff_coefficient=2.0, maximum_attempts=3
)
NOTICE_MARGIN = timedelta(seconds=5)  # connect + sign + bookkeeping around the HTTP timeout


def failure_of(err: BaseException) -> tuple[str, str]:
    """The error class and a redacted one-line message of an activity failure."""
    cause = err.cause if isinstance(err, ActivityError) and err.cause is not None else err
    if isinstance(cause, ApplicationError) and cause.type:
        error_type = cause.type
    else:
        error_type = type(cause).__name__
    message = str(cause.message if isinstance(cause, FailureError) else cause)
    return error_type, redact(message.splitlines()[0] if message else error_type)
