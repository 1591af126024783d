"""Syncs: sync a repository now (and wait, or follow the request), close its breaker,
pause it, read its workflow's live state, and the git hosts' push hooks that make
repositories sync."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from models.sync import SyncOutcome
from models.tables import WatchAccess
from treecast.service import checks, pushes, workflows
from treecast.service.errors import (
    NotFound,
    Unauthorized,
    Unreachable,
    UserError,
    call_failure,
    shown,
)
from treecast.service.results import LiveState, PushResult, SyncAccepted, Watch, live_of
from treecast.service.runtime import Runtime
from treecast.store import push_deliveries
from treecast.store import repositories as repository_rows
from treecast.store import watches as watch_rows

log = logging.getLogger("treecast.api")

# How long a workflow's live state, once asked, answers repository listings.
LIVE_CACHE_SECONDS = 1.0
_SYNC_ID = re.compile(r"^sync_([0-9a-f]{24})_([0-9a-f]{32})$")


def sync_id_of(repository_id: str, request_id: str) -> str:
    """The public id of a sync request: it names its repository, so no table is needed."""
    return f"sync_{repository_id.removeprefix('repo_')}_{request_id}"


def parse_sync_id(sync_id: str) -> tuple[str, str] | None:
    """`(repository_id, request_id)` of a sync id, or None."""
    match = _SYNC_ID.match(sync_id or "")
    return (f"repo_{match.group(1)}", match.group(2)) if match else None


class Syncs:
    """Syncing repositories, and what their workflows say."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        # Push hooks' outcomes in this process, for /health (delivery ids: push_deliveries).
        self.push_counts: dict[str, int] = {}
        self._live_cache: dict[str, tuple[float, LiveState]] = {}

    async def _interval(self, repository_id: str) -> int:
        """The repository's poll interval (`NotFound` for an unknown id)."""
        return await self.runtime.db(
            lambda session: checks.repository(session, repository_id).poll_interval_seconds
        )

    async def start(
        self, repository_id: str, *, reuse_recent: bool = False, what: str | None = None
    ) -> None:
        """Make sure the repository's loop runs, and sync it now.

        `reuse_recent` (a new or changed watch): the running sync, or one within a
        minute, serves the request: its commit goes to the apps behind, no fetch.
        `what` names the call in a refusal ("Temporal refused {what}").
        """
        interval = await self._interval(repository_id)
        await self.runtime.temporal(
            lambda client: workflows.start_sync(
                client,
                self.settings,
                repository_id,
                interval,
                sync_now=True,
                reuse_recent=reuse_recent,
            ),
            what or f"the sync request for {repository_id}",
        )

    async def after_saving(
        self,
        repository_id: str,
        *,
        reset: bool = False,
        reuse_recent: bool = False,
        what: str | None = None,
    ) -> Unreachable | None:
        """Sync (or with `reset`, close the breaker and sync) once a change is saved;
        None when Temporal was asked, else why not (the change stays saved, and the next
        poll picks it up)."""
        try:
            if reset:
                await self.reset(repository_id)
            else:
                await self.start(repository_id, reuse_recent=reuse_recent, what=what)
        except Unreachable as error:
            return error
        return None

    async def request(
        self, app_id: str, repository_id: str, idempotency_key: str | None = None
    ) -> SyncAccepted:
        """The app asks for a sync of a repository it watches, to follow with its
        `sync_id`; the same idempotency key never starts a second sync."""

        def asked(session: Session) -> int:
            watch, repository = checks.own_watch(session, app_id, repository_id)
            watch_rows.check_access_soon(session, watch)  # access back on the host: found now
            return repository.poll_interval_seconds

        interval = await self.runtime.db(asked)
        if idempotency_key:
            seed = f"{app_id}\0{repository_id}\0{idempotency_key}".encode()
            request_id = hashlib.sha256(seed).hexdigest()[:32]
        else:
            request_id = uuid.uuid4().hex
        await self.runtime.temporal(
            lambda client: workflows.request_sync(
                client, self.settings, repository_id, interval, request_id
            ),
            f"the sync request for {repository_id}",
        )
        return SyncAccepted(sync_id_of(repository_id, request_id), repository_id, request_id)

    async def wait(
        self,
        repository_id: str,
        *,
        timeout: float,
        on_progress: Callable[[str], None] | None = None,
        request_id: str | None = None,
    ) -> SyncOutcome:
        """Sync now and return once that sync's deliveries are done (or it was refused).

        Raises TimeoutError when it is not done within `timeout` (it goes on).
        """
        interval = await self._interval(repository_id)
        return await self.runtime.temporal(
            lambda client: workflows.sync_and_wait(
                client,
                self.settings,
                repository_id,
                interval,
                on_progress=on_progress,
                timeout=timeout,
                request_id=request_id,
            ),
            f"the sync request for {repository_id}",
        )

    async def outcome(self, app_id: str, sync_id: str) -> SyncOutcome:
        """What became of a sync the app requested (NotFound when unknown or not its own)."""
        parsed = parse_sync_id(sync_id)
        if parsed is None:
            raise NotFound(f"no sync {shown(sync_id)}")
        repository_id, request_id = parsed
        granted = await self.runtime.db(
            lambda session: (
                checks.own_watch(session, app_id, repository_id)[0].access
                in WatchAccess.DELIVERABLE
            )
        )
        outcome = await self.runtime.temporal(
            lambda client: workflows.sync_request(client, repository_id, request_id),
            f"the request query of {repository_id}",
        )
        if outcome is None:
            raise NotFound(f"no sync {shown(sync_id)} (unknown, or finished too long ago)")
        if not granted:
            # Only how it ended: the commit and the errors are for apps whose access holds.
            outcome = replace(outcome, commit=None, message=None, apps=[], summary=outcome.state)
        return outcome

    async def reset(self, repository_id: str) -> None:
        """Close the repository's breaker and sync now."""
        interval = await self._interval(repository_id)
        await self.runtime.temporal(
            lambda client: workflows.reset(client, self.settings, repository_id, interval),
            f"the reset of {repository_id}",
        )

    async def pause(self, repository_id: str, paused: bool) -> bool:
        """Pause (or resume) polling; False when the repository's loop does not run."""
        await self._interval(repository_id)  # an unknown id is NotFound
        toggle = workflows.pause if paused else workflows.resume
        doing = "pausing" if paused else "resuming"
        running: bool = await self.runtime.temporal(
            lambda client: toggle(client, repository_id), f"{doing} {repository_id}"
        )
        if running or not paused:  # a loop that does not run is not paused: no check skipped
            await self.runtime.db(
                lambda session: repository_rows.set_paused(
                    session, checks.repository(session, repository_id), paused
                )
            )
        return running

    # -- live state -----------------------------------------------------------------------

    async def live(self, repository_ids: list[str]) -> dict[str, LiveState]:
        """Each repository workflow's live state, asked at once within the API's status
        timeout; what does not answer keeps `known=False` with the reason."""
        states = {rid: LiveState(known=False) for rid in repository_ids}
        # Connecting is bounded too: a Temporal that does not answer never hangs a page.
        wait = self.settings.api_status_timeout_seconds + 2.0
        try:
            await asyncio.wait_for(self._ask(states), wait)
        except TimeoutError:
            for state in states.values():
                if not state.known:
                    state.error = f"Temporal did not answer within {wait:g} s"
        return states

    async def fill(self, watches: list[Watch]) -> None:
        """Each watch's `live`: its repository workflow's state, shown only to an app
        whose own access holds (what the workflow knows, its commit and its errors, is
        not for the others)."""
        for watch in watches:
            if watch.access != WatchAccess.GRANTED:
                watch.live = LiveState(
                    known=False,
                    error=f"not shown: this app's access to the repository is {watch.access}",
                )
        shown_to = [w for w in watches if w.access == WatchAccess.GRANTED]
        states = {w.repository_id: w.live for w in shown_to}
        await self._ask(states)
        for watch in shown_to:
            watch.live = states[watch.repository_id]

    async def _ask(self, states: dict[str, LiveState]) -> None:
        """Ask every repository's workflow at once, within the API's status timeout; what
        does not answer in time keeps `known=False` with the reason."""
        if not states:
            return
        try:
            client = await self.runtime.client()
        except Unreachable as error:
            for state in states.values():
                state.error = str(error)
            return
        loop = asyncio.get_running_loop()

        async def ask(repository_id: str) -> None:
            try:
                status = await workflows.get_status(
                    client, repository_id, self.settings.check_shards
                )
            except Exception as error:
                failure = call_failure(error, "the status query", self.settings)
                states[repository_id].error = str(failure) if failure else type(error).__name__
                return
            states[repository_id] = live_of(status)
            self._live_cache[repository_id] = (loop.time(), states[repository_id])

        # A client polling its list costs the workflows one question per LIVE_CACHE_SECONDS.
        asking: list[str] = []
        for repository_id in states:
            cached = self._live_cache.get(repository_id)
            if cached is not None and loop.time() - cached[0] < LIVE_CACHE_SECONDS:
                states[repository_id] = cached[1]
            else:
                asking.append(repository_id)
        if len(self._live_cache) > 10_000:
            self._live_cache.clear()
        if not asking:
            return
        timeout = self.settings.api_status_timeout_seconds
        tasks = [asyncio.ensure_future(ask(repository_id)) for repository_id in asking]
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        for state in states.values():
            if not state.known and state.error is None:
                state.error = f"Temporal did not answer within {timeout:g} s"

    # -- push hooks -----------------------------------------------------------------------

    async def receive_push(
        self, host: pushes.GitHost, headers: Mapping[str, str], body: bytes
    ) -> PushResult:
        """A git host's push hook: verify its signature against the secrets of the
        repositories it names (or TREECAST_PUSH_SECRET), then sync the registered
        repositories whose URL and ref it moved. `Unauthorized` when nothing verifies."""
        hook = pushes.read_headers(host, headers)
        urls = pushes.candidate_urls(body)
        cipher = self.runtime.cipher()
        candidates = await self.runtime.db(
            lambda session: [
                (r.id, r.url, r.ref, r.push_secret_encrypted)
                for r in repository_rows.at_urls(session, urls)
            ]
        )
        secrets = {url: cipher.decrypt(secret) for _, url, _, secret in candidates if secret}
        trusted = {url for url, secret in secrets.items() if pushes.verify(hook, body, secret)}
        everything = bool(self.settings.push_secret) and pushes.verify(
            hook, body, self.settings.push_secret or ""
        )
        if not trusted and not everything:
            self._count("rejected")
            log.warning(
                "refused a %s push hook (delivery %s): its signature matches none of the "
                "%d registered repositories it names",
                host,
                shown(hook.delivery_id or "none", 80),
                len(candidates),
            )
            raise Unauthorized(
                f"the {host} hook's signature matches no registered repository's push secret"
            )
        if pushes.is_ping(hook):
            return PushResult(hook.event, ping=True)
        if not pushes.is_push(hook):
            self._count("ignored")
            return PushResult(hook.event, ignored=f"the {hook.event!r} event moves no ref")
        try:
            push = pushes.parse_push(body)
        except ValueError as error:
            raise UserError(str(error)) from None
        moved = [
            rid
            for rid, url, ref, _ in candidates
            if (everything or url in trusted)
            and url in push.urls
            and pushes.ref_matches(ref, push.ref, push.default_branch)
        ]
        delivery = hook.delivery_id
        if delivery:
            try:
                await self.runtime.db(
                    lambda session: push_deliveries.claim(session, host, delivery)
                )
            except IntegrityError:  # claimed already, by this process or another
                self._count("duplicate")
                return PushResult(hook.event, duplicate=True)
        try:
            for rid in moved:
                await self.start(rid, what=f"the push-triggered sync of {rid}")
                log.info("a %s push made %s sync", host, rid, extra={"repository_id": rid})
        except BaseException:
            if delivery:  # a retry of this delivery may try again
                await self.runtime.db(
                    lambda session: push_deliveries.release(session, host, delivery)
                )
            raise
        self._count("synced" if moved else "unmatched")
        return PushResult(hook.event, moved)

    def _count(self, outcome: str) -> None:
        self.push_counts[outcome] = self.push_counts.get(outcome, 0) + 1


class Part:
    """One concept of the service layer: the process's runtime and settings, and the
    syncs its acts ask for once they saved a change."""

    def __init__(self, runtime: Runtime, syncs: Syncs) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.syncs = syncs
