"""Mounting the admin web page (treecast/api/admin_pages.py) on the API's app.

The page needs Jinja2; without it the API still serves everything else, and /admin says
in one line what is missing."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

log = logging.getLogger("treecast.api")


def mount_admin_pages(app: FastAPI) -> None:
    """Add the /admin pages, or a 503 naming the missing package."""
    try:
        from treecast.api.admin_pages import router
    except ImportError as error:
        missing = error.name or "jinja2"
        log.warning("the admin page is off: %s is not installed", missing)

        @app.get("/admin", include_in_schema=False)
        def admin_off() -> PlainTextResponse:
            return PlainTextResponse(
                f"the admin page needs {missing} in this Python; install it into .venv", 503
            )

        return
    app.include_router(router)
