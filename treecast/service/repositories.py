"""Repositories: registering one (without an app; with one it is `watches.watch`),
listing and reading them with their watches and their workflows' state, their push-hook
secrets, the ssh host keys a person confirms, and removing them."""

from __future__ import annotations

from sqlmodel import Session

from models.tables import Repository as RepositoryRow
from models.tables import new_repository_id
from treecast.config import Settings
from treecast.crypto import Cipher
from treecast.service import checks, pushes, workflows
from treecast.service import credentials as creds
from treecast.service.credentials import CredentialSpec
from treecast.service.errors import Unreachable, UserError
from treecast.service.results import (
    CredentialInfo,
    HostKeyInfo,
    Repository,
    RepositoryAdded,
    StatusReport,
    credential_info,
    iso,
    watch_of,
)
from treecast.service.syncs import Part
from treecast.store import keys, snapshots
from treecast.store import repositories as repository_rows
from treecast.store import watches as watch_rows
from treecast.store.credentials import fetch_order


def register(
    session: Session,
    settings: Settings,
    cipher: Cipher,
    url: str,
    ref: str,
    interval: int | None,
    *,
    repository_id: str | None = None,
) -> tuple[RepositoryRow, bool]:
    """The repository with this (vetted) URL and ref, registered when new (with
    `repository_id` when given); True when new. A new one gets a push-hook secret, shared
    by every ref of the same URL; a known one takes a new `interval`."""
    existing = repository_rows.find(session, url, ref)
    if existing is not None:
        if interval is not None and interval != existing.poll_interval_seconds:
            repository_rows.set_interval(session, existing, interval)
        return existing, False
    # One push secret per git repository, so one hook on the host serves every ref of it.
    secret = repository_rows.push_secret_of(session, url) or cipher.encrypt(
        pushes.new_push_secret()
    )
    keys.remember(session, cipher)  # the push secret is stored with it
    row = RepositoryRow(
        id=repository_id or new_repository_id(),
        url=url,
        ref=ref,
        poll_interval_seconds=interval or settings.poll_interval_seconds,
        push_secret_encrypted=secret,
    )
    return repository_rows.add(session, row), True


def repository_of(session: Session, row: RepositoryRow, *, with_apps: bool = False) -> Repository:
    """A repository as people see it: its watch count, whose credentials fetch it, its
    latest snapshot, and (`with_apps`) its watches."""
    pairs = watch_rows.of_repository(session, row.id)
    order = fetch_order(row, [watch for watch, _ in pairs])
    snapshot = snapshots.latest(session, row.id)
    result = Repository(
        repository_id=row.id,
        url=row.url,
        ref=row.ref,
        poll_interval_seconds=row.poll_interval_seconds,
        watches=len(pairs),
        created_at=iso(row.created_at) or "",
        credentials=credential_info(order[0]) if order else CredentialInfo(),
        fetched_with=order[0].app_id if order else None,
        last_snapshot_commit=snapshot.commit if snapshot else None,
        last_snapshot_at=iso(snapshot.taken_at) if snapshot else None,
        skipped_unsafe_paths=snapshot.skipped_unsafe_paths if snapshot else 0,
    )
    if with_apps:
        result.apps = [
            watch_of(watch, row, app_name=app.name, credentials=credential_info(watch))
            for watch, app in pairs
        ]
    return result


class Repositories(Part):
    """The git repositories Treecast syncs."""

    async def add(
        self,
        url: str,
        ref: str = "",
        *,
        interval: int | None = None,
        credentials: CredentialSpec | None = None,
    ) -> RepositoryAdded:
        """Register a repository (or find the one with the same URL and ref) and start its
        sync. Credentials belong to an app's watch (`watches.watch`): given here, they
        are refused. The push-hook secret is shown once, when the repository is new."""
        spec = credentials or CredentialSpec()
        url, ref = checks.git_url(self.settings, url, ref, interval, spec)  # its errors first
        if not spec.empty():
            raise UserError(checks.NO_APP, "app")
        cipher = self.runtime.cipher()

        def add(session: Session) -> RepositoryAdded:
            row, created = register(session, self.settings, cipher, url, ref, interval)
            shown = repository_of(session, row)
            secret = row.push_secret_encrypted if created else None
            return RepositoryAdded(
                **vars(shown),
                created=created,
                push_secret=cipher.decrypt(secret) if secret else None,
            )

        added = await self.runtime.db(add)
        rid = added.repository_id
        added.unreachable = await self.syncs.after_saving(rid, what=f"the start of {rid}'s sync")
        added.sync_requested = added.unreachable is None
        return added

    async def get(
        self, repository_id: str, *, with_apps: bool = False, live: bool = False
    ) -> Repository:
        """One repository (`NotFound` for an unknown id), with its watches and its
        workflow's live state when asked."""
        row = await self.runtime.db(
            lambda session: repository_of(
                session, checks.repository(session, repository_id), with_apps=with_apps
            )
        )
        if live:
            row.live = (await self.syncs.live([repository_id]))[repository_id]
        return row

    async def status(self, repository_id: str | None = None) -> StatusReport:
        """One or every repository with its watches, and its workflow's status.

        When Temporal cannot tell, what the database knows is still returned, with
        `temporal_error` set and the repositories not yet asked marked unknown.
        """

        def read(session: Session) -> list[Repository]:
            if repository_id:
                found = [checks.repository(session, repository_id)]
            else:
                found = repository_rows.listing(session)
            return [repository_of(session, r, with_apps=True) for r in found]

        report = StatusReport(await self.runtime.db(read))
        asked: set[str] = set()
        try:
            for row in report.repositories:
                rid = row.repository_id
                row.sync = await self.runtime.temporal(
                    lambda client, rid=rid: workflows.get_status(  # type: ignore[misc]
                        client, rid, self.settings.check_shards
                    ),
                    f"the status query of {rid}",
                )
                asked.add(rid)
        except Unreachable as error:
            # The others would wait for the same missing worker: they stay unknown.
            report.temporal_error = str(error)
        report.unknown = {r.repository_id for r in report.repositories} - asked
        return report

    async def remove(self, repository_id: str) -> None:
        """Stop the repository's sync, then forget it with its watches, ledgers and log."""
        await self.runtime.db(lambda session: checks.repository(session, repository_id))
        await self.runtime.temporal(
            lambda client: workflows.stop(client, repository_id),
            f"stopping {repository_id}'s sync",
        )

        def remove(session: Session) -> None:
            checks.repository(session, repository_id)
            repository_rows.remove(session, repository_id)

        await self.runtime.db(remove)

    async def rotate_push_secret(self, repository_id: str) -> str:
        """A new push-hook secret for the repository and every other ref of the same URL
        (they share it), shown once; the old one stops verifying at once."""
        secret = pushes.new_push_secret()
        cipher = self.runtime.cipher()

        def rotate(session: Session) -> None:
            url = checks.repository(session, repository_id).url
            repository_rows.set_push_secret(session, url, cipher.encrypt(secret))
            keys.remember(session, cipher)

        await self.runtime.db(rotate)
        return secret

    def push_url(self, host: str = "github", base: str | None = None) -> str:
        """Where a git host sends the repository's push hooks (`base`: the API's own URL)."""
        root = self.settings.api_public_url or base or f"http://{self.settings.api_listen}"
        return f"{root.rstrip('/')}/hooks/{host}"

    async def scan_host_keys(self, url: str) -> list[HostKeyInfo]:
        """The host keys the ssh server of `url` offers now, for a person to confirm before
        they are pinned (`CredentialSpec(scan_host_keys=True, accept_host_keys=[...])`).
        Nothing is stored."""
        return await self.runtime.off_loop(creds.scan, self.settings, url)

    async def list(self, *, live: bool = False) -> list[Repository]:
        """Every repository, oldest first; with `live`, each workflow's live state."""
        rows = await self.runtime.db(
            lambda session: [repository_of(session, r) for r in repository_rows.listing(session)]
        )
        if live:
            states = await self.syncs.live([r.repository_id for r in rows])
            for row in rows:
                row.live = states[row.repository_id]
        return rows
