"""One exception handler: every error becomes `{"error": "<one line>"}` with its status.

Service errors carry their meaning (`NotFound` 404, `RefusedUrl` 422, ...); FastAPI's
validation errors become 400 like Docora's; anything unexpected is logged with its
traceback and answered 500 without a word of internals.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError
from starlette.exceptions import HTTPException

from treecast.config import ConfigError
from treecast.service.errors import (
    Conflict,
    NotConfigured,
    NotFound,
    RefusedUrl,
    SchemaBehind,
    Unauthorized,
    Unreachable,
    UserError,
    temporal_failure,
)

log = logging.getLogger("treecast.api")

# The inputs a service error names, as this API's JSON fields call them (the others
# are named as the service names them).
FIELDS = {
    "name": "app_name",
    "host_keys": "known_hosts",  # the API pins host keys from known_hosts only
    "app": "the app's own: app_id, or the app's token; docs/credentials.md",
}


def said(error: UserError) -> str:
    """A service error in the API's words."""
    return error.worded(FIELDS)


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    from treecast.api.schemas import ErrorOut

    meaning = {
        400: "invalid input",
        401: "missing or unknown token",
        404: "unknown, or not the caller's",
        409: "conflict",
        413: "body too large",
        422: "a refused URL, or credentials the git host did not accept",
        429: "rate-limited (see Retry-After)",
        503: "the database, Temporal or a setting is missing",
    }
    return {s: {"model": ErrorOut, "description": meaning[s]} for s in statuses}


# What every authenticated route may answer besides its success (for OpenAPI).
ERROR_RESPONSES = documented(400, 401, 404, 409, 413, 422, 429, 503)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one error shape."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _status_of(exc: Exception) -> int:
    for kind, status in (
        (NotFound, 404),
        (Conflict, 409),
        (RefusedUrl, 422),
        (UserError, 400),
    ):
        if isinstance(exc, kind):
            return status
    return 400


def _validation_message(exc: RequestValidationError) -> str:
    errors: list[Any] = list(exc.errors())
    if not errors:
        return "the request is not valid"
    first = errors[0]
    if first.get("type") == "json_invalid":
        at = [p for p in first.get("loc", ()) if isinstance(p, int)]
        return "the body is not valid JSON" + (f" (at character {at[0]})" if at else "")
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    text = str(first.get("msg", "is not valid"))
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"{where}: {text}{more}"[:500]


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, Unauthorized):
        return error(401, str(exc), {"WWW-Authenticate": "Bearer"})
    if isinstance(exc, UserError):
        return error(_status_of(exc), said(exc))
    if isinstance(exc, RequestValidationError):
        return error(400, _validation_message(exc))
    if isinstance(exc, HTTPException):
        return error(exc.status_code, str(exc.detail), dict(exc.headers or {}) or None)
    if isinstance(exc, NotConfigured | Unreachable):
        return error(503, str(exc))
    if isinstance(exc, SchemaBehind):
        log.error("%s", exc)
        return error(503, "the database schema is not this release's; the server log says why")
    if isinstance(exc, ConfigError):
        log.error("the API server is misconfigured: %s", exc)
        return error(503, "the server is misconfigured; its log says which setting to fix")
    if isinstance(exc, IntegrityError):  # two requests raced to create the same row
        return error(409, "a concurrent request changed the same thing; try again")
    if isinstance(exc, DBAPIError) and exc.statement is None:
        log.error("the database cannot be reached (%s)", type(exc.orig).__name__)
        return error(503, "the database is unavailable; try again later")
    failure = temporal_failure(exc, "a request", None)
    if failure is not None:
        return error(503, str(failure))
    # Starlette re-raises after this answer, so the server logs the traceback once.
    return error(500, "internal error; the server log has the details")


def install(app: FastAPI) -> None:
    """Register the handler for every kind of error (the expected ones answer without a
    traceback; `Exception` is the 500 of last resort)."""
    from temporalio.service import RPCError

    from treecast.service.workflows import NoWorkerAnswered

    for kind in (
        Exception,
        HTTPException,
        RequestValidationError,
        UserError,
        Unauthorized,
        NotConfigured,
        Unreachable,
        ConfigError,
        DBAPIError,
        RPCError,
        NoWorkerAnswered,
        SchemaBehind,
    ):
        app.add_exception_handler(kind, _handle)
