"""The admin page's logins: random session ids kept in this process's memory, each with its
CSRF token, flash messages and the secrets to show once; and its background bulk jobs.

A session lives TREECAST_ADMIN_SESSION_SECONDS from login; a restart of the API process
logs everyone out (sessions are not shared between API processes: log in on each, or
pin the admin page to one)."""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

COOKIE = "treecast_admin"
LOGIN_COOKIE = "treecast_admin_login"  # the login form's own CSRF token (double submit)
MAX_SESSIONS = 1000
MAX_JOBS = 20


@dataclass
class AdminSession:
    """One login."""

    id: str
    csrf: str
    expires_at: float
    flashes: list[tuple[str, str]] = field(default_factory=list)  # (kind, text)
    # Shown once on the next page: a title and (label, value) pairs (a new token, a secret).
    reveal: tuple[str, list[tuple[str, str]]] | None = None

    def flash(self, text: str, kind: str = "ok") -> None:
        """A message for the next page this session sees."""
        self.flashes.append((kind, text))
        del self.flashes[:-5]

    def take_flashes(self) -> list[tuple[str, str]]:
        taken, self.flashes = self.flashes, []
        return taken

    def take_reveal(self) -> tuple[str, list[tuple[str, str]]] | None:
        taken, self.reveal = self.reveal, None
        return taken

    def csrf_ok(self, token: str | None) -> bool:
        """The form's hidden token is this session's (constant-time)."""
        return bool(token) and hmac.compare_digest(self.csrf.encode(), (token or "").encode())


class Sessions:
    """Sessions by id, expiring, the oldest forgotten past MAX_SESSIONS."""

    def __init__(self, lifetime: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.lifetime = lifetime
        self._clock = clock
        self._by_id: OrderedDict[str, AdminSession] = OrderedDict()

    def create(self) -> AdminSession:
        session = AdminSession(
            secrets.token_urlsafe(32), secrets.token_urlsafe(32), self._clock() + self.lifetime
        )
        self._by_id[session.id] = session
        while len(self._by_id) > MAX_SESSIONS:
            self._by_id.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> AdminSession | None:
        if not session_id:
            return None
        session = self._by_id.get(session_id)
        if session is None:
            return None
        if self._clock() >= session.expires_at:
            del self._by_id[session_id]
            return None
        return session

    def drop(self, session_id: str | None) -> None:
        self._by_id.pop(session_id or "", None)


@dataclass
class Job:
    """A bulk action running in the background of this API process."""

    id: str
    label: str
    total: int
    done: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    finished: bool = False

    @property
    def line(self) -> str:
        """Its progress as one line."""
        state = "finished" if self.finished else "running"
        failed = f", {self.failed} failed" if self.failed else ""
        return f"{self.label}: {self.done} of {self.total} done{failed} ({state})"


class Jobs:
    """The newest MAX_JOBS bulk jobs; each runs `step` for its items, one after another."""

    def __init__(self) -> None:
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()

    def start(
        self,
        label: str,
        items: list[tuple[str, str]],
        step: Callable[[str, str], Awaitable[object]],
    ) -> Job:
        job = Job(secrets.token_hex(6), label, len(items))
        self._jobs[job.id] = job
        while len(self._jobs) > MAX_JOBS:
            self._jobs.popitem(last=False)

        async def run() -> None:
            try:
                for first, second in items:
                    try:
                        await step(first, second)
                    except Exception as error:  # one failed item does not stop the rest
                        job.failed += 1
                        job.errors = [*job.errors, f"{first} {second}: {error}"][-5:]
                    job.done += 1
            finally:
                job.finished = True

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    def recent(self) -> list[Job]:
        return list(reversed(self._jobs.values()))
