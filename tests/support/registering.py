"""Apps, repositories and watches for a test, made as the service layer makes them, from
synchronous code (inside a running event loop too) and without asking Temporal: a test
starts the syncs itself, on its own server and schedule."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import Any, TypeVar

from treecast.config import Settings
from treecast.db import session_scope
from treecast.service import checks
from treecast.service.core import TreecastService
from treecast.service.credentials import CredentialSpec
from treecast.service.repositories import register
from treecast.store import keys
from treecast.store import watches as watch_rows

T = TypeVar("T")


def blocking(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a service call to the end on a thread of its own (a test's loop may be running)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def offline(settings: Settings) -> TreecastService:
    """The service layer with Temporal nowhere: an act that syncs after saving says it
    could not (`unreachable`), at once, and nothing else runs."""
    from tests.conftest import free_port

    return TreecastService(
        settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})
    )


def add_app(
    settings: Settings, url: str, secret: str | None = None, name: str = "app", batch: bool = False
) -> str:
    """Register an app posting to `url`; its id."""
    return blocking(TreecastService(settings).apps.add(name, url, secret, batch=batch)).app_id


def add_repository(settings: Settings, url: str, interval: int | None = None, ref: str = "") -> str:
    """`repo add URL [--interval N]` without starting its sync; its id."""
    return registered(settings, url, interval, ref)[0]


def registered(
    settings: Settings, url: str, interval: int | None = None, ref: str = ""
) -> tuple[str, str | None]:
    """`add_repository`: its id, and its push secret when it is new."""
    url, ref = checks.git_url(settings, url, ref, interval, CredentialSpec())
    cipher = keys.cipher(settings)
    with session_scope(settings.database_url) as session:
        row, created = register(session, settings, cipher, url, ref, interval)
        secret = row.push_secret_encrypted if created else None
        return row.id, cipher.decrypt(secret) if secret else None


def watch(
    settings: Settings, app_id: str, repository_id: str, paths: list[str] | None = None
) -> None:
    """Make an app watch a repository (all of it, or `paths`), without credentials."""
    with session_scope(settings.database_url) as session:
        watch_rows.watch(session, app_id, repository_id, paths or [])
