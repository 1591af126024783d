"""Errors every front door shows the same way: one line, no secrets, a status to exit or answer with.

`UserError`: bad input or an unknown id (treecast/errors.py; CLI exit 2, HTTP 4xx; its
subclasses pick the status: `NotFound` 404, `Conflict` 409, `RefusedUrl` 422), naming
the input it is about for each door to word. `Unreachable`: Temporal could not be
reached or could not do what was asked (CLI exit 3, HTTP 503).
"""

from __future__ import annotations

import shlex
import sys

from treecast.config import Settings

# The database's schema is not this release's (HTTP 503, CLI exit 2).
from treecast.db import SchemaBehind as SchemaBehind
from treecast.db import connect_failure as connect_failure

# The errors of input and ids, raised by the data layer too; the front doors import them here.
from treecast.errors import Conflict as Conflict
from treecast.errors import NotConfigured as NotConfigured
from treecast.errors import NotFound as NotFound
from treecast.errors import RefusedUrl as RefusedUrl
from treecast.errors import Unauthorized as Unauthorized
from treecast.errors import UserError as UserError
from treecast.errors import shown as shown


class Unreachable(Exception):
    """Temporal could not be reached or could not do what was asked (no worker answered,
    search attributes missing, a call refused); the message says what to do. Exit status 3.
    """

    def __init__(
        self, message: str, once: str = "when Temporal is back", requested: bool = False
    ) -> None:
        super().__init__(message)
        self.once = once  # when what was saved can be synced ("The watch ... syncs {once}")
        self.requested = requested  # the sync was requested; only the answer is missing


def call_failure(error: BaseException, what: str, settings: Settings | None) -> Unreachable | None:
    """`temporal_failure`, and a connection lost during the call (the SDK's RuntimeError)."""
    if isinstance(error, RuntimeError) and any(
        word in str(error).lower() for word in ("connect", "transport")
    ):
        return Unreachable(str(error).splitlines()[0])
    return temporal_failure(error, what, settings)


def temporal_failure(
    error: BaseException, what: str, settings: Settings | None
) -> Unreachable | None:
    """A failure of a Temporal call as one line, or None when `error` is not one (an
    unexpected error keeps its traceback)."""
    if isinstance(error, Unreachable):
        return error
    if "temporalio.service" not in sys.modules:  # no Temporal call was made
        return None
    from temporalio.service import RPCError

    from treecast.service import workflows

    if isinstance(error, workflows.NoWorkerAnswered):
        queue = error.task_queue or (settings.task_queue if settings else "?")
        return Unreachable(
            f"{error}; is worker.py running on task queue {queue}?",
            once="once a worker runs",
            requested=True,
        )
    if not isinstance(error, RPCError):
        return None
    message = (error.message or "").strip().splitlines()
    if workflows.missing_search_attributes(error):
        return Unreachable(
            _no_search_attributes(message[0], settings), once="once they are registered"
        )
    said = f": {message[0]}" if message else ""
    return Unreachable(
        f"Temporal refused {what}: {error.status.name}{said}", once="once Temporal accepts it"
    )


def _no_search_attributes(said: str, settings: Settings | None) -> str:
    """What to do when the namespace lacks Treecast's search attributes (`said`: the server's
    words), with the command registering them."""
    from models.search_attributes import operator_create_command

    command = ["temporal", *operator_create_command()]
    where = ""
    if settings is not None:
        command += ["--address", settings.temporal_address]
        command += ["--namespace", settings.temporal_namespace]
        where = f" at {settings.temporal_address}"
    return (
        f"the Temporal server{where} does not know Treecast's search attributes ({said}); "
        f"register them with `{shlex.join(command)}` (see docs/operations.md)"
    )
