"""Watches: an app watching a repository (registered when new) with its own credentials,
checked against the git host first; changing those credentials; listing and reading an
app's watches; retrying a failed one; and unwatching."""

from __future__ import annotations

import json

from sqlmodel import Session

from models.contents import SubmoduleMode
from models.tables import Watch as WatchRow
from models.tables import new_repository_id
from treecast.service import access, checks
from treecast.service.credentials import CredentialSpec
from treecast.service.errors import UserError
from treecast.service.repositories import register
from treecast.service.results import (
    CredentialsSet,
    Page,
    Watch,
    Watched,
    credential_info,
    watch_of,
    watched_of,
)
from treecast.service.syncs import Part
from treecast.store import keys
from treecast.store import repositories as repository_rows
from treecast.store import watches as watch_rows
from treecast.store.credentials import StoredCredentials


def _save(
    session: Session,
    app_id: str,
    repository_id: str,
    globs: list[str] | None,
    checked: access.Checked | None,
    submodules: SubmoduleMode | None = None,
    lfs: bool | None = None,
) -> tuple[WatchRow, bool, bool]:
    """Make an app watch a repository, or change its watch: `globs` (None: as they are;
    a new watch: the whole repository), `submodules` and `lfs` (None: as they are) and,
    when given, credentials the git host accepted. The watch, whether it is new, and
    whether anything changed."""
    existing = watch_rows.get(session, app_id, repository_id)
    changed = watch_rows.differs(existing, globs, submodules, lfs)
    if changed:
        if globs is None:
            globs = json.loads(existing.path_globs) if existing is not None else []
        current, created = watch_rows.watch(
            session, app_id, repository_id, globs or [], submodules, lfs
        )
    else:
        assert existing is not None
        current, created = existing, False
    if checked is not None:
        watch_rows.set_credentials(
            session, current, checked.planned.stored, pending=checked.pending
        )
        repository_rows.touch(session, repository_id)
        changed = True
    return current, created, changed


class Watches(Part):
    """Apps watching repositories."""

    async def watch(
        self,
        app_id: str,
        *,
        repository_id: str | None = None,
        url: str = "",
        ref: str = "",
        interval: int | None = None,
        paths: list[str] | None = None,
        credentials: CredentialSpec | None = None,
        submodules: str | None = None,
        lfs: bool | None = None,
        resync: bool = False,
    ) -> Watched:
        """Make an app watch a repository (a registered `repository_id`, or `url` and
        `ref`, registered when new with `interval`), or change its watch: `paths` (its
        globs), `credentials`, `submodules` and `lfs` (None: as they are), then sync
        (with `resync`, even when nothing changed).

        A new watch, or new credentials, only once the git host accepts the app's own
        (none, for a public repository): `AccessRefused` otherwise, and nothing is saved.
        A generated deploy key is saved pending (no sync until it is on the host).
        Without Temporal the watch is still saved (`unreachable` says why no sync was
        asked for): the repository's next poll delivers.
        """
        spec = credentials or CredentialSpec()
        if repository_id is not None:

            def known(session: Session) -> tuple[str, str]:
                checks.app(session, app_id)
                found = checks.repository(session, repository_id)
                return found.url, found.ref

            url, ref = await self.runtime.db(known)
        url, ref = checks.git_url(self.settings, url, ref, interval, spec)
        globs = checks.globs(paths) if paths is not None else None  # before the host is asked
        mode = checks.submodules(submodules)

        def before(session: Session) -> tuple[str, StoredCredentials | None, bool]:
            checks.app(session, app_id)
            found = repository_rows.find(session, url, ref)
            rid = found.id if found is not None else new_repository_id()
            watched = watch_rows.get(session, app_id, rid)
            current = StoredCredentials.of(watched) if watched is not None else None
            return rid, current, watched is None

        rid, current, new = await self.runtime.db(before)
        cipher = self.runtime.cipher()
        checked = None
        if new or not spec.empty():
            # Between two transactions: no database lock is held while the host answers.
            checked = await self.runtime.off_loop(
                lambda: access.check(
                    self.settings, cipher, url, ref, spec, current, comment=f"treecast-{rid}"
                )
            )

        def save(session: Session) -> Watched:
            repo, repository_created = register(
                session, self.settings, cipher, url, ref, interval, repository_id=rid
            )
            watch, watch_created, changed = _save(
                session, app_id, repo.id, globs, checked, mode, lfs
            )
            if checked is not None:
                keys.remember(session, cipher)
            secret = repo.push_secret_encrypted if repository_created else None
            return watched_of(
                watch,
                repo,
                repository_created=repository_created,
                watch_created=watch_created,
                changed=changed,
                push_secret=cipher.decrypt(secret) if secret else None,
                pending=checked is not None and checked.planned.generated,
            )

        watched = await self.runtime.db(save)
        if not watched.pending and (watched.changed or resync):
            watched.unreachable = await self.syncs.after_saving(
                watched.repository_id, reuse_recent=True
            )
            watched.sync_requested = watched.unreachable is None
        return watched

    async def set_credentials(
        self,
        repository_id: str,
        spec: CredentialSpec,
        *,
        app_id: str | None = None,
        by_app: bool = False,
    ) -> CredentialsSet:
        """Rotate, replace or (`CredentialSpec(clear=True)`) drop the credentials of
        `app_id`'s watch of a repository, or (for operators, without `app_id`) of every
        watch of it, then close its breaker and sync. `by_app`: the app itself asks
        (NotFound alike for a repository it does not watch). Each is checked against the
        git host first: `AccessRefused` when any is refused, and then none changed."""
        if spec.empty():
            raise UserError(
                "nothing to change: give a token, a deploy key, host keys, a GitHub App or {clear}",
                "clear",
            )

        def read(session: Session) -> tuple[str, str, list[tuple[str, StoredCredentials]]]:
            if by_app and app_id is not None:
                checks.own_watch(session, app_id, repository_id)
            repo = checks.repository(session, repository_id)
            if app_id is not None:
                targets = [checks.watch(session, app_id, repository_id)]
            else:
                targets = [w for w, _ in watch_rows.of_repository(session, repository_id)]
            if not targets:
                raise UserError(f"no app watches {repository_id}: {checks.NO_APP}", "app")
            return repo.url, repo.ref or "", [(w.app_id, StoredCredentials.of(w)) for w in targets]

        url, ref, currents = await self.runtime.db(read)
        checks.token_transport(self.settings, url, spec)
        comment = f"treecast-{repository_id}"
        spec, generated = access.one_key_for_all(spec, comment)
        cipher = self.runtime.cipher()

        def check_all() -> dict[str, access.Checked]:
            return {
                app: access.check(
                    self.settings,
                    cipher,
                    url,
                    ref,
                    spec,
                    current,
                    comment=comment,
                    generated=generated,
                )
                for app, current in currents
            }

        checked = await self.runtime.off_loop(check_all)

        def save(session: Session) -> None:
            for app, done in checked.items():
                _save(session, app, repository_id, None, done)
            keys.remember(session, cipher)

        await self.runtime.db(save)
        first = next(iter(checked.values()))
        done = CredentialsSet(
            repository_id,
            url,
            ref,
            sorted(checked),
            credential_info(first.planned.stored),
            pending=first.planned.generated,
        )
        if not done.pending:  # a new key is not on the git host yet: nothing to sync
            done.unreachable = await self.syncs.after_saving(repository_id, reset=True)
            done.sync_requested = done.unreachable is None
        return done

    async def list(
        self, app_id: str, cursor: str | None, limit: int, *, live: bool = True
    ) -> Page[Watch]:
        """The app's watches by repository id, `limit` after `cursor`, each with its
        workflow's live state unless not `live`."""
        if cursor is not None:
            checks.repository_id(cursor)

        def read(session: Session) -> tuple[list[Watch], bool]:
            rows = watch_rows.columns_of_app(session, app_id, cursor, limit + 1)
            page = [watch_of(row, row) for row in rows[:limit]]
            held = watch_rows.of_app_at(session, app_id, [w.repository_id for w in page])
            for watch in page:
                found = held.get(watch.repository_id)
                watch.credentials = credential_info(found) if found is not None else None
            return page, len(rows) > limit

        watches, more = await self.runtime.db(read)
        if live:
            await self.syncs.fill(watches)
        else:
            for watch in watches:
                watch.live.error = "not asked (live=false)"
        return Page(watches, watches[-1].repository_id if more else None)

    async def get(self, app_id: str, repository_id: str) -> Watch:
        """One of the app's watches with its workflow's live state (NotFound otherwise)."""

        def read(session: Session) -> Watch:
            watch, repository = checks.own_watch(session, app_id, repository_id)
            return watch_of(watch, repository, credentials=credential_info(watch))

        found = await self.runtime.db(read)
        await self.syncs.fill([found])
        return found

    async def retry(self, app_id: str, repository_id: str) -> bool:
        """Make a watch pending again (its ledger kept; an app whose access was refused is
        checked again), close its repository's breaker and sync now; False when Temporal
        could not be asked (the next poll retries)."""

        def reset(session: Session) -> None:
            checks.watch(session, app_id, repository_id)
            watch_rows.reset_watch(session, app_id, repository_id)

        await self.runtime.db(reset)
        return await self.syncs.after_saving(repository_id, reset=True) is None

    async def unwatch(self, app_id: str, repository_id: str, *, by_app: bool = False) -> int:
        """Stop a watch and forget what the app received; the ledger rows removed.
        `by_app`: the app itself asks (NotFound alike for a repository it does not watch)."""

        def unwatch(session: Session) -> int:
            if by_app:
                checks.own_watch(session, app_id, repository_id)
            else:
                checks.watch(session, app_id, repository_id)
            return watch_rows.unwatch(session, app_id, repository_id)

        return await self.runtime.db(unwatch)
