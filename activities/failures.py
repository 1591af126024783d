"""The libraries' typed errors as the `ApplicationError`s workflows and histories see.

gitcache raises `GitError` and webhooks `WebhookError`; each says its type and whether
retrying can help. Here, and only here, they become Temporal's errors: same `type`,
same `non_retryable`, a Retry-After as the next retry's delay.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from treecast.gitcache.errors import GitError
from treecast.webhooks.sender import WebhookError


def application_error(error: GitError | WebhookError, *details: Any) -> ApplicationError:
    """`error` as an ApplicationError carrying `details`.

    Benign: an unreachable remote or an app that is down or refuses is expected, so the
    SDK logs it at DEBUG instead of a warning with a traceback; the activities log one
    line themselves.
    """
    retry_after = error.retry_after if isinstance(error, WebhookError) else None
    return ApplicationError(
        error.message,
        *details,
        type=error.type,
        non_retryable=error.non_retryable,
        next_retry_delay=timedelta(seconds=retry_after) if retry_after is not None else None,
        category=ApplicationErrorCategory.BENIGN,
    )
