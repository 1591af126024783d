"""The git library's error and heartbeat hooks: no Temporal type in here.

`GitError` says what failed (a `GitErrorType`) and whether retrying can help; the
activities turn it into Temporal's `ApplicationError` (`activities/failures.py`).
A caller that must show it is alive while git runs (an activity's heartbeat) hands a
callback to `heartbeats`; long git commands and lock waits call it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar

from models.git import NON_RETRYABLE_GIT_ERRORS

Heartbeat = Callable[[str], None]


class GitError(Exception):
    """A failed git operation, classified and redacted.

    `type` is a `GitErrorType` value; `non_retryable` is true where retrying cannot help
    (the remote said no, the content is refused).
    """

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.type = error_type
        self.message = message
        self.non_retryable = error_type in NON_RETRYABLE_GIT_ERRORS

    def __repr__(self) -> str:
        return f"GitError({self.type!r}, {self.message!r})"


# The caller's heartbeat for this thread's git work (none: nobody is listening).
_heartbeat: ContextVar[Heartbeat | None] = ContextVar("treecast_git_heartbeat", default=None)


@contextlib.contextmanager
def heartbeats(callback: Heartbeat | None) -> Iterator[None]:
    """Within the block, long git commands and lock waits of this context call `callback`
    with a line saying what is running (every `command.HEARTBEAT_SECONDS`); None leaves
    the caller's own in place."""
    if callback is None:
        yield
        return
    token = _heartbeat.set(callback)
    try:
        yield
    finally:
        _heartbeat.reset(token)


def heartbeat(detail: str) -> None:
    """Tell the caller's heartbeat that git is still at work (nothing without one)."""
    callback = _heartbeat.get()
    if callback is not None:
        callback(detail)
