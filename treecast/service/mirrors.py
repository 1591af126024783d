"""Verifiable mirrors (docs/webhooks.md, "Verifying a mirror"): an app's signed manifest,
and reconciling what the app says it holds with its ledger (verify without sending, or
repair). The `sync_completed` opt-in is the app's (`Apps.update`).

A repair makes the app's ledger say what the app holds and clears its delivered commit
(`treecast.store.mirrors.take_apps_word`), then asks for a sync: the ordinary delivery
(DeliverFiles, its ledger and attempt log, its resumption after a crash) sends exactly the
difference. Only the app's own watch, and only while its access holds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from sqlmodel import Session

from models.git import GitErrorType
from models.sync import BreakerStatus
from models.tables import Watch, WatchAccess, WatchStatus, parse_globs
from treecast.delivery.digest import SHA1, TreeDigest, digest_of, object_format_of
from treecast.delivery.loading import watch_options
from treecast.delivery.manifest import UnorderedTree, build_manifest
from treecast.delivery.reconcile import (
    Comparison,
    Drift,
    HeldError,
    HeldLimits,
    compare,
    in_path_order,
    parse_held,
)
from treecast.delivery.target import AppTarget, load_target
from treecast.gitcache.errors import GitError
from treecast.gitcache.repository import RemoteAccess, RepositoryCache
from treecast.remote_access import app_access
from treecast.service import checks, workflows
from treecast.service.errors import Conflict, NotFound, Unreachable, UserError, shown
from treecast.service.results import Manifest, Reconciled
from treecast.service.syncs import Part
from treecast.store import mirrors as ledger_rows
from treecast.store import snapshots
from treecast.store.mirrors import LedgerFix
from treecast.webhooks.signing import webhook_id
from treecast.webhooks.streaming import streamed_headers

MANIFEST_TYPE = "application/x-ndjson"
_COMMIT = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class Mirrors(Part):
    """Manifests and reconciles of an app's copy of a repository."""

    def _watch(self, session: Session, app_id: str, repository_id: str, by_app: bool) -> Watch:
        """The watch; `by_app`: the app itself asks (NotFound alike for one it lacks)."""
        if by_app:
            return checks.own_watch(session, app_id, repository_id)[0]
        return checks.watch(session, app_id, repository_id)

    async def check_watch(self, app_id: str, repository_id: str) -> None:
        """NotFound unless the app watches the repository (asked before reading a body)."""
        await self.runtime.db(lambda session: checks.own_watch(session, app_id, repository_id))

    # -- the manifest -----------------------------------------------------------------------

    async def manifest(
        self,
        app_id: str,
        repository_id: str,
        commit: str | None = None,
        *,
        signed: bool = True,
        by_app: bool = False,
    ) -> Manifest:
        """What the app should hold at `commit` (by default the commit it last fully
        acknowledged), `signed` as its webhooks are; git may fetch the commit."""
        settings = self.settings

        def read(session: Session) -> tuple[str, RemoteAccess, AppTarget | None, list[str]]:
            watch = self._watch(session, app_id, repository_id, by_app)
            if watch.access not in WatchAccess.DELIVERABLE:
                raise Conflict(
                    f"the app's own access to {repository_id} does not hold "
                    f"({watch.access}): fix its credentials, then sync"
                )
            if not watch_options(watch.submodules, watch.lfs).plain:
                raise Conflict(
                    f"the watch of {repository_id} has submodules or lfs on: its manifest is "
                    "not supported yet (reconcile works; see docs/webhooks.md)"
                )
            chosen = _commit(session, watch, commit)
            access = app_access(settings, session, repository_id, app_id)
            target = load_target(settings, session, app_id, repository_id) if signed else None
            return chosen, access, target, parse_globs(watch.path_globs)

        chosen, access, target, globs = await self.runtime.db(read)
        return await self.runtime.off_loop(
            self._built, app_id, repository_id, chosen, access, target, globs
        )

    def _built(
        self,
        app_id: str,
        repository_id: str,
        commit: str,
        access: RemoteAccess,
        target: AppTarget | None,
        globs: list[str],
    ) -> Manifest:
        """The manifest written out from git's listing and signed (blocking)."""
        cache = RepositoryCache(self.settings, repository_id)
        about = {"repository_id": repository_id, "app_id": app_id}
        try:
            with cache.reading():
                built = build_manifest(cache, access, commit, globs, about=about)
        except UnorderedTree as error:
            raise Conflict("{reason}", reason=error) from None
        except GitError as error:
            if error.type == GitErrorType.REF_NOT_FOUND:
                raise NotFound(f"commit {commit[:12]} is no longer on the remote") from None
            raise Unreachable(f"git could not read {repository_id}: {error.message}") from None
        if target is None:
            return Manifest(dict(built.header), {}, built)
        msg_id = webhook_id("manifest", app_id, repository_id, commit, built.tree_digest)
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
            raise Conflict("{reason}", reason=error) from None
        headers["x-treecast-commit"] = commit
        headers["x-treecast-tree-digest"] = built.tree_digest
        return Manifest(dict(built.header), headers, built)

    # -- reconcile --------------------------------------------------------------------------

    async def reconcile(
        self,
        app_id: str,
        repository_id: str,
        *,
        held: Iterable[bytes] | None = None,
        digest: str | None = None,
        repair: bool = True,
        sort: bool = False,
        by_app: bool = False,
    ) -> Reconciled:
        """Compare what the app holds (`held`: its JSON lines, sorted by path unless `sort`
        asks to sort them, for a list a person hands over; or only its `digest`) with
        what it acknowledged. With `repair` and a difference, make the ledger say what the
        app holds and sync: exactly the difference is sent. Nothing changes when the input
        is refused, the watch cannot take it or its repository's breaker is open."""
        if (held is None) == (digest is None):
            raise UserError("send either the files the app holds or its tree digest")
        if digest is not None:
            return await self._digest_check(app_id, repository_id, digest, by_app)
        assert held is not None
        found, fixes = await self.runtime.db(
            lambda session: self._compare(
                session,
                app_id,
                repository_id,
                in_path_order(held) if sort else held,
                repair,
                by_app,
            )
        )
        if not repair or found.in_sync:
            return found
        await self._breaker_closed(repository_id)
        await self.runtime.db(
            lambda session: ledger_rows.take_apps_word(session, app_id, repository_id, fixes)
        )
        found.repair = True
        try:
            accepted = await self.syncs.request(app_id, repository_id)
        except Unreachable as error:
            found.sync_error = f"{error}; the difference is sent at the next sync"
            return found
        found.sync_requested, found.sync_id = True, accepted.sync_id
        return found

    async def _digest_check(
        self, app_id: str, repository_id: str, digest: str, by_app: bool
    ) -> Reconciled:
        if not _DIGEST.match(digest.strip()):
            raise UserError("{tree_digest} must be 64 lowercase hex digits", "tree_digest")

        def check(session: Session) -> Reconciled:
            watch = self._reconcilable(session, app_id, repository_id, by_app)
            ours, files = digest_of(ledger_rows.sorted_ledger(session, app_id, repository_id))
            return Reconciled(
                repository_id, watch.delivered_commit, ours, files, ours == digest.strip()
            )

        return await self.runtime.db(check)

    def _compare(
        self,
        session: Session,
        app_id: str,
        repository_id: str,
        held: Iterable[bytes],
        keep: bool,
        by_app: bool,
    ) -> tuple[Reconciled, list[LedgerFix]]:
        watch = self._reconcilable(session, app_id, repository_id, by_app)
        limits = HeldLimits(
            max_files=self.settings.api_reconcile_max_files,
            max_path_bytes=self.settings.tree_max_path_bytes,
            object_format=_object_format(session, watch),
        )
        recorded = _Recorded(ledger_rows.sorted_ledger(session, app_id, repository_id))
        try:
            found = compare(parse_held(held, limits), recorded, keep=keep)
        except HeldError as error:
            raise UserError(
                "what the app holds is refused: {reason}; nothing was changed", reason=error
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

    def _reconcilable(
        self, session: Session, app_id: str, repository_id: str, by_app: bool
    ) -> Watch:
        watch = self._watch(session, app_id, repository_id, by_app)
        if watch.lfs:
            raise Conflict(
                f"the watch of {repository_id} has lfs on: its files are LFS objects, which "
                "have no git blob id to compare (docs/webhooks.md)"
            )
        return watch

    async def _breaker_closed(self, repository_id: str) -> None:
        """Conflict when the repository's breaker is open (nothing would be delivered)."""
        state = await self.runtime.temporal(
            lambda client: workflows.breaker_state(client, repository_id),
            f"the description of {repository_id}'s workflow",
        )
        if state == BreakerStatus.OPEN:
            raise Conflict(
                f"the circuit breaker of {repository_id} is open: nothing was changed; "
                "reconcile once it recovers (or after `reset`)"
            )


def _commit(session: Session, watch: Watch, asked: str | None) -> str:
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
    if commit != watch.delivered_commit and not snapshots.was_synced(
        session, watch.repository_id, commit
    ):
        raise NotFound(
            f"commit {commit[:12]} was not synced for {watch.repository_id} (the newest "
            f"{snapshots.KEEP_SNAPSHOTS} syncs are kept)"
        )
    return commit


def _object_format(session: Session, watch: Watch) -> str:
    commit = watch.delivered_commit
    if commit is None:
        newest = snapshots.latest(session, watch.repository_id)
        commit = newest.commit if newest is not None else None
    return object_format_of(commit) if commit else SHA1


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


def _fixes(found: Comparison) -> list[LedgerFix]:
    """The ledger rows that make it say what the app holds."""
    return [
        LedgerFix(d.path, None)
        if d.held is None
        else LedgerFix(d.path, d.held.blob_id, d.held.sha256)
        for d in found.differences
    ]
