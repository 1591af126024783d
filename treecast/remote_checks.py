"""The remote checks: ask every watched repository's remote what its ref is, cheaply.

A repository whose workflow relies on these checks fetches only when a check says a
sync has something to do (`CheckReason`), plus a full sync at the long
`TREECAST_FULL_SYNC_SECONDS` as a safety net. Each repository is checked every poll
interval, at a stable phase within it (a hash of its id), so a sweep spreads evenly
and a restarted sweep keeps each repository's rhythm.

`RemoteChecker` is the loop the `check_remotes` activity runs: every second it re-reads
the repositories changed since its last read (`treecast.store.stamps`: registered,
re-timed, watched, paused or resumed, synced), and all of them every `RELOAD_SECONDS` as
a safety net; it checks the due ones (one smart-HTTP request, or `git ls-remote` on a
small thread pool, vetted and pinned like every git command), and hands a `RemoteMoved`
to its `signal` callback for the repositories to wake. A check compares with the commit
the repository synced, or the one it was just woken for. Nothing is written anywhere by
a check that finds nothing.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import select as sa_select
from sqlmodel import col, select

from models.checks import CheckProgress, CheckReason, RemoteMoved, shard_of
from models.tables import Repository, Snapshot, Watch, WatchAccess, WatchStatus
from treecast.config import Settings
from treecast.db import session_scope
from treecast.gitcache.errors import GitError
from treecast.gitcache.refcheck import ASK_GIT, AskGit, has_moved, remote_names, remote_names_over
from treecast.gitcache.repository import RemoteAccess
from treecast.gitcache.smarthttp import RefClient
from treecast.redact import redact
from treecast.remote_access import load_access
from treecast.store import stamps
from treecast.store.credentials import has_credentials
from treecast.webhooks.transport import shared_ssl_context

log = logging.getLogger(__name__)

RELOAD_SECONDS = 30.0  # every repository of the shard (and who is behind) re-read: a safety net
CHANGES_SECONDS = 1.0  # the repositories changed since the last read, re-read this often
# Each read of the changes looks this far behind the previous one: a change committed a
# little after it was stamped, or stamped by a clock a little behind, is still seen.
CHANGES_OVERLAP = timedelta(seconds=5)
# More changed repositories than this at once (a first wave): one full read instead.
CHANGES_AT_ONCE = 2000
# A `moved` wake's commits count as being synced for this long at most (a snapshot's
# default timeout); after it, a check that finds the remote still ahead wakes again.
SYNCING_SECONDS = 900.0
ACCESS_SECONDS = 900.0  # decrypted credentials are re-read at least this often
MAX_SLEEP = 1.0  # the loop wakes at least this often (heartbeats, cancellation)
# Heartbeats are not history events, but each is a server call (and a billable action
# on Temporal Cloud): one a minute, against CheckRemotes' 5-minute heartbeat timeout.
HEARTBEAT_SECONDS = 60.0
BATCH_SECONDS = 0.05  # checks due this close together start in one wake of the loop


@dataclass
class Target:
    """One repository as its checks see it."""

    repository_id: str
    interval: float  # its poll interval, seconds
    known_commit: str | None  # the newest snapshot's commit
    has_snapshot: bool
    quiet_since: float  # epoch seconds: its newest snapshot, or its last change
    behind: bool  # an app had not acknowledged the newest snapshot when read
    updated_at: datetime | None = None
    # Set for a repository no app has credentials for: what git needs, read with the
    # targets (one with a token, key or GitHub App is read and decrypted by `load_access`).
    public: RemoteAccess | None = None
    paused: bool = False
    read_at: float = field(default_factory=time.time)  # when `behind` was read
    # The ids a `moved` wake named, while its loop syncs them (`syncing_since`): checks
    # that see them again do not wake it twice.
    syncing: frozenset[str] = frozenset()
    syncing_since: float = 0.0
    missed: bool = False  # a check fell due before its first snapshot was read


def phase(repository_id: str, interval: float) -> float:
    """The repository's stable offset within its interval, in seconds."""
    return zlib.crc32(repository_id.encode()) / 2**32 * interval


def next_due(repository_id: str, interval: float, after: float) -> float:
    """The first check time after `after`: a multiple of the interval plus the phase."""
    offset = phase(repository_id, interval)
    periods = (after - offset) // interval + 1
    return periods * interval + offset


def _epoch(value: datetime | None) -> float:
    if value is None:
        return 0.0
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def load_targets(
    settings: Settings, shard: int, shards: int, only: Collection[str] | None = None
) -> dict[str, Target]:
    """Every watched repository of the shard (or of `only`), with its newest snapshot
    and who is behind."""
    read_at = time.time()
    with session_scope(settings.database_url) as session:
        secret = has_credentials()
        rows = sa_select(
            col(Repository.id),
            col(Repository.poll_interval_seconds),
            col(Repository.changed_at),
            col(Repository.created_at),
            col(Repository.updated_at),
            col(Repository.paused),
            col(Repository.url),
            col(Repository.ref),
            secret,
        )
        snapshots = select(Snapshot.repository_id, Snapshot.commit, Snapshot.taken_at)
        watch_rows = select(Watch.repository_id, Watch.status, Watch.delivered_commit, Watch.access)
        if only is not None:
            rows = rows.where(col(Repository.id).in_(only))
            snapshots = snapshots.where(col(Snapshot.repository_id).in_(only))
            watch_rows = watch_rows.where(col(Watch.repository_id).in_(only))
        repositories = session.execute(rows).all()
        latest: dict[str, tuple[str | None, datetime]] = {}
        for repository_id, commit, taken_at in session.exec(
            snapshots.order_by(
                col(Snapshot.repository_id), col(Snapshot.taken_at), col(Snapshot.id)
            )
        ):
            latest[repository_id] = (commit, taken_at)  # the last row of each is the newest
        watches = session.exec(watch_rows).all()
    watched: dict[str, bool] = {}
    for repository_id, status, delivered, access in watches:
        # An app whose own access does not hold gets nothing: it is never behind.
        if status == WatchStatus.DISABLED or access not in WatchAccess.DELIVERABLE:
            watched.setdefault(repository_id, False)
            continue
        commit = latest.get(repository_id, (None, None))[0]
        # Behind: not yet delivered, failed, or synced at an older commit. One being
        # delivered right now (syncing) is its DeliverFiles' business: waking the loop
        # would only hand it the same commit again (a first wave would double its work).
        behind = status != WatchStatus.SYNCING and (
            status != WatchStatus.SYNCED or delivered != commit
        )
        watched[repository_id] = watched.get(repository_id, False) or behind
    targets: dict[str, Target] = {}
    for row in repositories:
        repository_id, interval, changed_at, created_at, updated_at, paused, url, ref, secret = row
        if repository_id not in watched or shard_of(repository_id, shards) != shard:
            continue
        snapshot = latest.get(repository_id)
        targets[repository_id] = Target(
            repository_id=repository_id,
            interval=float(interval or settings.poll_interval_seconds),
            known_commit=snapshot[0] if snapshot else None,
            has_snapshot=snapshot is not None,
            # A change (a new watch, a resume) is handed to the loop by the service:
            # an app behind is the sweep's business only an interval after it too.
            quiet_since=max(
                _epoch(snapshot[1] if snapshot else None), _epoch(changed_at or created_at)
            ),
            behind=watched[repository_id],
            updated_at=updated_at,
            public=None if secret else RemoteAccess(repository_id, url, ref or "", None),
            paused=bool(paused),
            read_at=read_at,
        )
    return targets


def read_changes(settings: Settings, since: datetime) -> list[tuple[str, datetime]]:
    """(id, changed_at) of the repositories changed after `since`: one indexed query."""
    with session_scope(settings.database_url) as session:
        return stamps.stamped_since(session, since)


def wake_for_behind(target: Target, now: float) -> RemoteMoved | None:
    """An app was still behind when read an interval after the repository's last sync
    or change: wake it to hand the commit over again (as every poll did), without asking
    the remote. (Read sooner, the app's delivery may just not have begun.)"""
    quiet = target.read_at - target.quiet_since
    if target.behind and target.has_snapshot and quiet >= target.interval:
        return RemoteMoved(reason=CheckReason.BEHIND, checked_at=datetime.fromtimestamp(now, UTC))
    return None


def wake_for(
    target: Target,
    now: float,
    names: frozenset[str] | None,
    error: GitError | None = None,
    secrets: list[str] | None = None,
) -> RemoteMoved | None:
    """What to tell the repository's workflow after asking its remote (None: nothing).

    A repository without a snapshot yet is its workflow's alone: its first sync is on
    its way, and a failed one is retried by the workflow itself."""
    if not target.has_snapshot:
        return None
    at = datetime.fromtimestamp(now, UTC)
    if error is not None:
        message = redact(f"{error.type}: {error.message}", secrets or [])
        return RemoteMoved(reason=CheckReason.FAILED, detail=message[:300], checked_at=at)
    if not has_moved(target.known_commit, names) or (names and names & target.syncing):
        return None
    commits = sorted(names or ())
    return RemoteMoved(
        reason=CheckReason.MOVED, detail=",".join(commits)[:300], checked_at=at, commits=commits
    )


def check_one(settings: Settings, target: Target, access: RemoteAccess) -> RemoteMoved | None:
    """One check by `git ls-remote` (what the sweep does when smart HTTP cannot ask)."""
    now = time.time()
    wake = wake_for_behind(target, now)
    if wake is not None:
        return wake
    try:
        names = remote_names(settings, access)
    except GitError as err:
        return wake_for(target, now, None, err, access.secrets())
    return wake_for(target, now, names)


Signal = Callable[[str, RemoteMoved], Awaitable[None]]


@dataclass
class RemoteChecker:
    """The sweep of one shard: due repositories checked, the ones with work signalled."""

    settings: Settings
    shard: int
    shards: int
    signal: Signal
    heartbeat: Callable[[CheckProgress], None]
    concurrency: int = 32
    native_http: bool = True  # http(s) remotes by one smart-HTTP request, not git
    progress: CheckProgress = field(default_factory=CheckProgress)
    _targets: dict[str, Target] = field(default_factory=dict)
    _due: list[tuple[float, str]] = field(default_factory=list)  # a heap of (when, id)
    _next: dict[str, float] = field(default_factory=dict)  # each one's live heap entry
    _access: dict[str, tuple[RemoteAccess, float, datetime | None]] = field(default_factory=dict)
    _reloaded_at: float = float("-inf")
    _changes_read_at: float = float("-inf")
    _since: datetime | None = None  # the next read of changes asks for rows after this
    _seen: dict[str, datetime | None] = field(default_factory=dict)  # changes already read
    _pass_started: float | None = None
    _pass_left: set[str] = field(default_factory=set)
    _refs: RefClient | None = None
    _vetted: set[str] = field(default_factory=set)  # their access passed `vet_static`

    async def run(self, seconds: float) -> CheckProgress:
        """Check for `seconds`, then return the counts."""
        deadline = time.time() + seconds
        in_flight: set[asyncio.Task[None]] = set()
        beat = float("-inf")
        # Kept-alive connections for the sweep: a check of an http(s) remote is then one
        # request on an open connection, written and read on this loop.
        self._refs = RefClient(
            allow_private=self.settings.allow_private_urls,
            ssl_context=shared_ssl_context(),
            idle_per_host=self.concurrency,
        )
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="remote-check") as pool:
            try:
                while time.time() < deadline:
                    now = time.time()
                    if now - self._reloaded_at >= RELOAD_SECONDS:
                        await self._read_all(pool, now)
                    elif now - self._changes_read_at >= CHANGES_SECONDS:
                        await self._read_changed(pool, now)
                    while (
                        self._due
                        and self._due[0][0] <= now + BATCH_SECONDS
                        and len(in_flight) < self.concurrency
                    ):
                        at, repository_id = heapq.heappop(self._due)
                        target = self._targets.get(repository_id)
                        if target is None or self._next.get(repository_id) != at:
                            continue  # removed, or re-timed since it was scheduled
                        # The next period after this one (not after `now`: an entry
                        # taken a little early would come due again at once).
                        self._schedule(
                            repository_id, next_due(repository_id, target.interval, max(at, now))
                        )
                        if target.paused or not target.has_snapshot:
                            # Paused: not asked. No snapshot yet: its first sync is on
                            # its way; checked as soon as it is read (`_merge`).
                            target.missed = not target.has_snapshot
                            self._passed(repository_id)
                            continue
                        task = asyncio.ensure_future(self._check(pool, target))
                        in_flight.add(task)
                        task.add_done_callback(in_flight.discard)
                    if now - beat >= HEARTBEAT_SECONDS:
                        self.heartbeat(self.progress)
                        beat = now
                    wake = self._due[0][0] if self._due else now + MAX_SLEEP
                    await asyncio.sleep(min(MAX_SLEEP, max(BATCH_SECONDS, wake - time.time())))
                if in_flight:
                    await asyncio.wait(in_flight)
            finally:
                for task in in_flight:
                    task.cancel()
                self._refs.close()
        return self.progress

    async def _read_all(self, pool: ThreadPoolExecutor, now: float) -> None:
        """Every repository of the shard: the safety net for a change a read missed."""
        loop = asyncio.get_running_loop()
        since = datetime.now(UTC) - CHANGES_OVERLAP
        targets = await loop.run_in_executor(
            pool, load_targets, self.settings, self.shard, self.shards, None
        )
        self._merge(targets, set(targets) | set(self._targets), now)
        self._reloaded_at = self._changes_read_at = now
        self._since = since  # what changed during the read is in the next read of changes
        if self._pass_started is None:
            self._pass_started, self._pass_left = now, set(self._targets)

    async def _read_changed(self, pool: ThreadPoolExecutor, now: float) -> None:
        """The repositories changed since the last read (one indexed query), read again."""
        loop = asyncio.get_running_loop()
        assert self._since is not None
        since = datetime.now(UTC) - CHANGES_OVERLAP
        rows = await loop.run_in_executor(pool, read_changes, self.settings, self._since)
        self._changes_read_at, self._since = now, since
        # A row stays in the overlap for a few reads: read again only when stamped anew.
        changed = {
            rid
            for rid, at in rows
            if self._seen.get(rid) != at and shard_of(rid, self.shards) == self.shard
        }
        self._seen = dict(rows)
        if len(changed) > CHANGES_AT_ONCE:
            self._reloaded_at = float("-inf")  # a first wave: read all at the next turn
            return
        if changed:
            read = await loop.run_in_executor(
                pool, load_targets, self.settings, self.shard, self.shards, changed
            )
            self._merge(read, changed, time.time())

    def _merge(self, read: dict[str, Target], ids: set[str], now: float) -> None:
        """Take the targets read for `ids` (absent: no longer watched, or removed), keep
        what the sweep itself knows of each, and schedule the ones that need it."""
        for repository_id in ids:
            before, target = self._targets.get(repository_id), read.get(repository_id)
            if target is None:
                self._targets.pop(repository_id, None)
                self._next.pop(repository_id, None)  # its heap entry is skipped
                self._pass_left.discard(repository_id)
                continue
            self._targets[repository_id] = target
            if before is None or before.interval != target.interval:
                self._schedule(repository_id, next_due(repository_id, target.interval, now))
            if before is None:
                continue
            target.quiet_since = max(target.quiet_since, before.quiet_since)
            resumed = before.paused and not target.paused
            if (
                before.syncing
                and target.known_commit not in before.syncing  # not synced yet
                and now - before.syncing_since < SYNCING_SECONDS
                and not resumed  # (a wake while paused was refused)
            ):
                target.syncing, target.syncing_since = before.syncing, before.syncing_since
            if resumed or (before.missed and target.has_snapshot):
                self._schedule(repository_id, now)  # resumed, or first synced: check now
            else:
                target.missed = before.missed
        self.progress.repositories = len(self._targets)
        if len(self._due) > 2 * len(self._targets) + 16:  # drop stale entries
            self._due = [(at, rid) for at, rid in self._due if self._next.get(rid) == at]
            heapq.heapify(self._due)

    def _schedule(self, repository_id: str, at: float) -> None:
        """Check the repository at `at` (an earlier entry of it in the heap goes stale)."""
        self._next[repository_id] = at
        heapq.heappush(self._due, (at, repository_id))

    def _cached_access(self, target: Target) -> RemoteAccess | None:
        if target.public is not None:
            return target.public
        cached = self._access.get(target.repository_id)
        if (
            cached is not None
            and cached[2] == target.updated_at
            and time.time() - cached[1] < ACCESS_SECONDS
        ):
            return cached[0]
        return None

    def _load_access(self, target: Target) -> RemoteAccess | None:
        try:
            with session_scope(self.settings.database_url) as session:
                access = load_access(self.settings, session, target.repository_id)
        except GitError:
            return None  # removed meanwhile: the next reload drops it
        self._access[target.repository_id] = (access, time.time(), target.updated_at)
        self._vetted.discard(target.repository_id)
        return access

    async def _ask(
        self, pool: ThreadPoolExecutor, target: Target
    ) -> tuple[RemoteMoved | None, RemoteAccess | None]:
        """Ask the remote (smart HTTP on this loop, else git on the pool); what to wake."""
        loop = asyncio.get_running_loop()
        now = time.time()
        wake = wake_for_behind(target, now)
        if wake is not None:
            return wake, None
        access = self._cached_access(target)
        if access is None:
            access = await loop.run_in_executor(pool, self._load_access, target)
            if access is None:
                return None, None
        names: frozenset[str] | AskGit | None = ASK_GIT
        try:
            if self.native_http and self._refs is not None:
                vetted = target.repository_id in self._vetted
                names = await remote_names_over(self.settings, access, self._refs, vetted=vetted)
                self._vetted.add(target.repository_id)
            if names is ASK_GIT:
                names = await loop.run_in_executor(pool, remote_names, self.settings, access)
        except GitError as err:
            self._access.pop(target.repository_id, None)  # a revoked token: mint anew
            return wake_for(target, now, None, err, access.secrets()), access
        assert not isinstance(names, AskGit)
        return wake_for(target, now, names), access

    async def _check(self, pool: ThreadPoolExecutor, target: Target) -> None:
        try:
            moved, _ = await self._ask(pool, target)
        except Exception as exc:  # a bug or the database: logged, the sweep goes on
            log.warning("check of %s failed: %s", target.repository_id, redact(str(exc)))
            moved = None
        self.progress.checks += 1
        self._passed(target.repository_id)
        if moved is None:
            return
        if moved.reason == CheckReason.FAILED:
            self.progress.failed += 1
        try:
            await self.signal(target.repository_id, moved)
        except Exception as exc:  # e.g. the workflow ended (repository removed)
            log.info("could not wake %s: %s", target.repository_id, exc)
            return
        self.progress.signalled += 1
        log.info("remote check woke %s: %s %s", target.repository_id, moved.reason, moved.detail)
        now = time.time()
        # Kept in the target read while the check ran too (a merge took it from this one).
        current = self._targets.get(target.repository_id)
        for woken in [target] if current in (None, target) else [target, current]:
            woken.quiet_since = now  # its workflow syncs now: leave it an interval
            if moved.reason == CheckReason.MOVED and moved.commits:
                woken.syncing, woken.syncing_since = frozenset(moved.commits), now

    def _passed(self, repository_id: str) -> None:
        """Count a full pass: every repository checked once since the pass began."""
        self._pass_left.discard(repository_id)
        if not self._pass_left and self._pass_started is not None:
            self.progress.swept_at = datetime.fromtimestamp(self._pass_started, UTC)
            self._pass_started = time.time()
            self._pass_left = set(self._targets)
