"""Verifiable mirrors, for every front door (docs/webhooks.md, "Verifying a mirror"): an
app's signed manifest, reconciling what the app says it holds with its ledger (verify
without sending, or repair), and the `sync_completed` opt-in.

A repair makes the app's ledger say what the app holds and clears its delivered commit
(`treecast.store.mirrors.take_apps_word`), then asks for a sync: the ordinary delivery
(DeliverFiles, its ledger and attempt log, its resumption after a crash) sends exactly the
difference. Only the app's own watch, and only while its access holds.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from sqlmodel import Session
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from models.git import GitErrorType
from models.sync import BreakerStatus, sync_workflow_id
from models.tables import Watch, WatchAccess, WatchStatus
from treecast.db import session_scope
from treecast.delivery.digest import SHA1, TreeDigest, digest_of, object_format_of
from treecast.delivery.loading import watch_options
from treecast.delivery.manifest import BuiltManifest, UnorderedTree, build_manifest
from treecast.delivery.reconcile import (
    Comparison,
    Drift,
    HeldError,
    HeldLimits,
    compare,
    parse_held,
)
from treecast.gitcache.errors import GitError
from treecast.gitcache.repository import RepositoryCache
from treecast.gitcache.tree import parse_globs
from treecast.service import registry
from treecast.service.core import TreecastService
from treecast.service.errors import Conflict, NotFound, Unreachable, UserError, shown
from treecast.store import mirrors as store
from treecast.store import snapshots
from treecast.store.repositories import app_access
from treecast.store.targets import load_target
from treecast.webhooks.signing import webhook_id
from treecast.webhooks.streaming import streamed_headers
from workflows import search_attributes

MANIFEST_TYPE = "application/x-ndjson"
_COMMIT = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class SignedManifest:
    """A manifest ready to stream: its body's pieces and the headers signing them (none
    for the command line, which is not the app)."""

    manifest: BuiltManifest
    headers: dict[str, str] = field(default_factory=dict)

    def pieces(self) -> Iterator[bytes]:
        """The body, then the spooled file is dropped (also when the reader stops early)."""
        try:
            yield from self.manifest.pieces()
        finally:
            self.manifest.close()


@dataclass
class Reconciled:
    """What a reconcile found, and whether the difference is on its way."""

    repository_id: str
    commit: str | None  # the commit the app last fully acknowledged (None: none yet)
    tree_digest: str  # of what Treecast recorded the app holds, before any repair
    files: int  # in that record
    in_sync: bool
    held: int | None = None  # files the app listed (None: it sent its digest only)
    missing: int = 0
    changed: int = 0
    extra: int = 0
    repair: bool = False  # the difference is being sent
    sync_requested: bool = False
    sync_id: str | None = None
    sync_error: str | None = None

    @property
    def differ(self) -> int:
        """Files that differ (0 with a digest only: it says whether, not how many)."""
        return self.missing + self.changed + self.extra

    @property
    def summary(self) -> str:
        """One line for a person: "in sync", "not in sync" or "N files differ"."""
        if self.in_sync:
            return "in sync"
        if self.held is None:
            return "not in sync"
        return f"{self.differ} file{'s' if self.differ != 1 else ''} differ"


class Mirrors:
    """Manifests and reconciles on top of one `TreecastService` (its settings, database
    and Temporal client)."""

    def __init__(self, service: TreecastService) -> None:
        self.service = service
        self.settings = service.settings

    def check_watch(self, app_id: str, repository_id: str) -> None:
        """NotFound unless the app watches the repository."""
        with session_scope(self.settings.database_url) as session:
            registry.app_watch(session, app_id, repository_id)

    # -- the manifest -----------------------------------------------------------------------

    def manifest(
        self, app_id: str, repository_id: str, commit: str | None = None, *, signed: bool = True
    ) -> SignedManifest:
        """What the app should hold at `commit` (by default the commit it last fully
        acknowledged), signed as its webhooks are. Blocking: git may fetch the commit."""
        settings = self.settings
        with session_scope(settings.database_url) as session:
            watch, _ = registry.app_watch(session, app_id, repository_id)
            if watch.access not in WatchAccess.DELIVERABLE:
                raise Conflict(
                    f"the app's own access to {repository_id} does not hold "
                    f"({watch.access}): fix its credentials, then sync"
                )
            if not watch_options(watch).plain:
                raise Conflict(
                    f"the watch of {repository_id} has submodules or lfs on: its manifest is "
                    "not supported yet (reconcile works; see docs/webhooks.md)"
                )
            chosen = self._commit(session, watch, commit)
            access = app_access(settings, session, repository_id, app_id)
            target = load_target(settings, session, app_id, repository_id) if signed else None
            globs = parse_globs(watch.path_globs)
        cache = RepositoryCache(settings, repository_id)
        about = {"repository_id": repository_id, "app_id": app_id}
        try:
            with cache.reading():
                built = build_manifest(cache, access, chosen, globs, about=about)
        except UnorderedTree as error:
            raise Conflict(str(error)) from None
        except GitError as error:
            if error.type == GitErrorType.REF_NOT_FOUND:
                raise NotFound(f"commit {chosen[:12]} is no longer on the remote") from None
            raise Unreachable(f"git could not read {repository_id}: {error.message}") from None
        if target is None:
            return SignedManifest(built)
        msg_id = webhook_id("manifest", app_id, repository_id, chosen, built.tree_digest)
        try:
            headers = streamed_headers(
                target.scheme,
                target.secrets,
                msg_id,
                "manifest",
                built.pieces(),
                content_type=MANIFEST_TYPE,
                app_id=app_id,
                client_auth_key=target.client_auth_key,
            )
        except ValueError as error:  # no secret to sign with
            built.close()
            raise Conflict(str(error)) from None
        headers["x-treecast-commit"] = chosen
        headers["x-treecast-tree-digest"] = built.tree_digest
        return SignedManifest(built, headers)

    def _commit(self, session: Session, watch: Watch, asked: str | None) -> str:
        """The commit of a manifest: the one asked for, when Treecast synced it for the
        repository, or the one the app last fully acknowledged."""
        if asked is None:
            if watch.delivered_commit is None:
                raise Conflict(
                    f"the app has not acknowledged every file of a commit of "
                    f"{watch.repository_id} yet (its watch is {watch.status}): wait for the "
                    "sync, or ask for a synced commit with ?commit="
                )
            return watch.delivered_commit
        commit = asked.strip().lower()
        if not _COMMIT.match(commit):
            raise UserError(f"commit {shown(asked)} is not a full commit id (40 or 64 hex digits)")
        synced = store.synced_commit(session, watch.repository_id, commit)
        if commit != watch.delivered_commit and not synced:
            raise NotFound(
                f"commit {commit[:12]} was not synced for {watch.repository_id} (the newest "
                f"{snapshots.KEEP_SNAPSHOTS} syncs are kept)"
            )
        return commit

    # -- reconcile --------------------------------------------------------------------------

    async def reconcile(
        self,
        app_id: str,
        repository_id: str,
        *,
        held: Iterable[bytes] | None = None,
        digest: str | None = None,
        repair: bool = True,
    ) -> Reconciled:
        """Compare what the app holds (`held`: its JSON lines, sorted by path; or only its
        `digest`) with what it acknowledged. With `repair` and a difference, make the
        ledger say what the app holds and sync: exactly the difference is sent. Nothing
        changes when the input is refused, the watch cannot take it or its repository's
        breaker is open."""
        if (held is None) == (digest is None):
            raise UserError("send either the files the app holds or its tree digest")
        if digest is not None:
            return await asyncio.to_thread(self._digest_check, app_id, repository_id, digest)
        assert held is not None
        found, fixes = await asyncio.to_thread(self._compare, app_id, repository_id, held, repair)
        if not repair or found.in_sync:
            return found
        await self._breaker_closed(repository_id)
        await asyncio.to_thread(self._take_word, app_id, repository_id, fixes)
        found.repair = True
        try:
            accepted = await self.service.request_sync(app_id, repository_id, None)
        except Unreachable as error:
            found.sync_error = f"{error}; the difference is sent at the next sync"
            return found
        found.sync_requested, found.sync_id = True, accepted.sync_id
        return found

    def _digest_check(self, app_id: str, repository_id: str, digest: str) -> Reconciled:
        if not _DIGEST.match(digest.strip()):
            raise UserError("tree_digest must be 64 lowercase hex digits")
        with session_scope(self.settings.database_url) as session:
            watch = self._reconcilable(session, app_id, repository_id)
            ours, files = digest_of(store.sorted_ledger(session, app_id, repository_id))
        return Reconciled(
            repository_id, watch.delivered_commit, ours, files, in_sync=ours == digest.strip()
        )

    def _compare(
        self, app_id: str, repository_id: str, held: Iterable[bytes], keep: bool
    ) -> tuple[Reconciled, list[store.LedgerFix]]:
        settings = self.settings
        with session_scope(settings.database_url) as session:
            watch = self._reconcilable(session, app_id, repository_id)
            limits = HeldLimits(
                max_files=settings.api_reconcile_max_files,
                max_path_bytes=settings.tree_max_path_bytes,
                object_format=self._object_format(session, watch),
            )
            recorded = _Recorded(store.sorted_ledger(session, app_id, repository_id))
            try:
                found = compare(parse_held(held, limits), recorded, keep=keep)
            except HeldError as error:
                raise UserError(
                    f"what the app holds is refused: {error}; nothing was changed"
                ) from None
            ours, files = recorded.digest()
            if keep and found.differ and watch.status == WatchStatus.SYNCING:
                raise Conflict(
                    f"a delivery of {repository_id} to this app is under way: reconcile when "
                    "it finishes (its sync_completed, or the watch's status); nothing was changed"
                )
            if keep and found.differ and watch.status == WatchStatus.DISABLED:
                raise Conflict(
                    f"the watch of {repository_id} is disabled (the app answered 410): watch "
                    "it again first; nothing was changed"
                )
        return _reconciled(repository_id, watch.delivered_commit, ours, files, found), _fixes(found)

    def _reconcilable(self, session: Session, app_id: str, repository_id: str) -> Watch:
        watch, _ = registry.app_watch(session, app_id, repository_id)
        if watch.lfs:
            raise Conflict(
                f"the watch of {repository_id} has lfs on: its files are LFS objects, which "
                "have no git blob id to compare (docs/webhooks.md)"
            )
        return watch

    @staticmethod
    def _object_format(session: Session, watch: Watch) -> str:
        commit = watch.delivered_commit
        if commit is None:
            newest = snapshots.latest(session, watch.repository_id)
            commit = newest.commit if newest is not None else None
        return object_format_of(commit) if commit else SHA1

    async def _breaker_closed(self, repository_id: str) -> None:
        """Conflict when the repository's breaker is open (nothing would be delivered).

        Read from the workflow's search attribute, which the server answers: a query
        would need a worker's answer in time, and a busy worker is no reason to refuse.
        """
        state = await self.service._temporal(
            lambda client: breaker_state(client, repository_id),
            f"the description of {repository_id}'s workflow",
        )
        if state == BreakerStatus.OPEN:
            raise Conflict(
                f"the circuit breaker of {repository_id} is open: nothing was changed; "
                "reconcile once it recovers (or after `reset`)"
            )

    def _take_word(self, app_id: str, repository_id: str, fixes: list[store.LedgerFix]) -> None:
        with session_scope(self.settings.database_url) as session:
            store.take_apps_word(session, app_id, repository_id, fixes)

    # -- sync_completed ---------------------------------------------------------------------

    def set_sync_completed(self, app_id: str, on: bool) -> None:
        """Turn the app's `sync_completed` event on or off (from its next delivery)."""
        with session_scope(self.settings.database_url) as session:
            if not store.set_sync_completed(session, app_id, on):
                raise NotFound(f"no app {shown(app_id)}")


class _Recorded:
    """The ledger rows as the comparison reads them, digested on the way."""

    def __init__(self, rows: Iterable[tuple[str, str]]) -> None:
        self._rows = iter(rows)
        self._digest = TreeDigest()

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for path, blob_id in self._rows:
            self._digest.add(path, blob_id)
            yield path, blob_id

    def digest(self) -> tuple[str, int]:
        """The digest of every row, and how many there are."""
        for path, blob_id in self._rows:
            self._digest.add(path, blob_id)
        return self._digest.hexdigest(), self._digest.files


def _reconciled(
    repository_id: str, commit: str | None, ours: str, files: int, found: Comparison
) -> Reconciled:
    return Reconciled(
        repository_id,
        commit,
        ours,
        files,
        in_sync=found.differ == 0,
        held=found.held,
        missing=found.counts[Drift.MISSING],
        changed=found.counts[Drift.CHANGED],
        extra=found.counts[Drift.EXTRA],
    )


def _fixes(found: Comparison) -> list[store.LedgerFix]:
    """The ledger rows that make it say what the app holds."""
    return [
        store.LedgerFix(d.path, None)
        if d.held is None
        else store.LedgerFix(d.path, d.held.blob_id, d.held.sha256)
        for d in found.differences
    ]


async def breaker_state(client: Client, repository_id: str) -> str | None:
    """The breaker state the repository's workflow last published (None: no workflow)."""
    handle = client.get_workflow_handle(sync_workflow_id(repository_id))
    try:
        described = await handle.describe()
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    return described.typed_search_attributes.get(search_attributes.BREAKER_STATE)
