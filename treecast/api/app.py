"""The application factory: routes, the error handler, the limits, and a lifespan that
makes the process's one `TreecastService` (one database engine, one Temporal client)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache
from pathlib import Path

from fastapi import FastAPI, Response

import treecast
from treecast.api import errors, hooks, routes_admin, routes_apps, routes_mirrors
from treecast.api.auth import Service
from treecast.api.docs_page import mount_docs
from treecast.api.limits import Limits
from treecast.api.pages import mount_admin_pages
from treecast.api.schemas import HealthOut, ReadyOut, VersionOut
from treecast.config import Settings
from treecast.service.core import TreecastService
from treecast.service.errors import Unreachable
from treecast.service.results import Readiness

log = logging.getLogger("treecast.api")
ROOT = Path(__file__).resolve().parent.parent.parent


@lru_cache(maxsize=1)
def build_id() -> str:
    """The commit this server runs (`git describe`), or "unknown" outside a checkout."""
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() or "unknown"


def create_app(settings: Settings, service: TreecastService | None = None) -> FastAPI:
    """The ASGI application; `service` lets tests hand in one with a test Temporal client."""

    made = service or TreecastService(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Warm up only: a database or Temporal that is down is reported by /ready. (A
        # schema that is behind was refused before the server started: __main__.py.)
        try:
            await made.admin.open_database()
        except Exception as error:  # /ready says so; the server still starts
            log.warning("the database is not usable yet (%s)", type(error).__name__)
        try:
            await asyncio.wait_for(made.client(), 5)
        except (Unreachable, TimeoutError) as error:
            log.warning("Temporal is not reachable yet; retried per request (%s)", error)
        yield

    app = FastAPI(
        title="Treecast",
        version=treecast.__version__,
        description=(
            "Push the files of git repositories to apps as signed webhooks. "
            "See docs/api.md for the auth model and the push-hook setup."
        ),
        lifespan=lifespan,
        # Served by mount_docs from a package, never from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = made
    errors.install(app)
    app.add_middleware(Limits, settings=settings)
    app.include_router(routes_admin.router)
    app.include_router(routes_apps.router)
    app.include_router(routes_mirrors.router)
    app.include_router(hooks.router)
    mount_admin_pages(app)
    mount_docs(app)
    app.state.ready = _ReadinessCache()

    @app.get("/health", tags=["anyone"], response_model=HealthOut)
    def health(service: Service) -> HealthOut:
        """Liveness: 200 while the process answers (whether it can serve: /ready), with the
        push hooks' outcomes counted by this process."""
        return HealthOut(status="ok", pushes=dict(service.syncs.push_counts))

    @app.get(
        "/ready",
        tags=["anyone"],
        response_model=ReadyOut,
        responses={503: {"model": ReadyOut, "description": "not ready: says what is wrong"}},
    )
    async def ready(service: Service, response: Response) -> ReadyOut:
        """Readiness: 200 when the database answers with this release's schema and Temporal
        answers; 503 naming what does not (a load balancer sends no traffic meanwhile)."""
        report = await app.state.ready.get(service)
        if not report.ok:
            response.status_code = 503
        return ReadyOut(
            status="ready" if report.ok else "not ready",
            database=report.database,
            temporal=report.temporal,
            migrations=report.migrations,
        )

    @app.get("/version", tags=["anyone"], response_model=VersionOut)
    def version() -> VersionOut:
        """Treecast's version and the commit it was built from."""
        return VersionOut(version=treecast.__version__, build=build_id())

    return app


class _ReadinessCache:
    """The last readiness check for a second, so a flood of probes costs one check."""

    def __init__(self) -> None:
        self._at = -1.0
        self._report: Readiness | None = None
        self._lock = asyncio.Lock()

    async def get(self, service: TreecastService) -> Readiness:
        loop = asyncio.get_running_loop()
        async with self._lock:
            if self._report is None or loop.time() - self._at > 1.0:
                self._report = await service.admin.readiness()
                self._at = loop.time()
            report: Readiness = self._report
            return report
