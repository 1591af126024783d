"""Apps: registering one (with its secret and API token, shown once), listing and reading
them, changing how they are reached and signed, rotating their secrets and tokens,
removing them, and telling which app a bearer token belongs to."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from models.tables import App as AppRow
from models.tables import new_app_id
from treecast.crypto import generate_webhook_secret
from treecast.service import checks, docora_tokens, tokens
from treecast.service.errors import Conflict, Unauthorized, UserError
from treecast.service.results import (
    App,
    AppCreated,
    AppDetail,
    Page,
    app_of,
    credential_info,
    iso,
    watch_of,
)
from treecast.service.syncs import Part
from treecast.store import apps as app_rows
from treecast.store import keys
from treecast.store import watches as watch_rows
from treecast.store.apps import AppOrder as AppOrder
from treecast.webhooks.signing import SigningScheme

MAX_SECRETS = 5
MAX_SEARCH = 200


class Apps(Part):
    """The apps Treecast pushes to."""

    async def add(
        self,
        name: str,
        base_url: str,
        secret: str | None = None,
        *,
        email: str | None = None,
        website: str | None = None,
        description: str | None = None,
        scheme: str | None = None,
        client_auth_key: str | None = None,
        treecast_events: bool | None = None,
        batch: bool = False,
    ) -> AppCreated:
        """Register an app with a new API token; a `whsec_` secret is made when none is
        given. `scheme` "docora" signs as Docora did, with `client_auth_key`."""
        name = checks.name(name)
        base_url = checks.base_url(self.settings, base_url)
        stored_scheme = checks.scheme(scheme, client_auth_key, had_key=False)
        secret = checks.secret(secret) if secret is not None else generate_webhook_secret()
        token = tokens.new_token()
        cipher = self.runtime.cipher()

        def add(session: Session) -> AppRow:
            row = app_rows.add(
                session,
                AppRow(
                    id=new_app_id(),
                    name=name,
                    base_url=base_url,
                    secrets_encrypted=cipher.encrypt_list([secret]),
                    token_id=token.token_id,
                    token_hash=token.token_hash,
                    email=email,
                    website=website,
                    description=description,
                    signing_scheme=stored_scheme,
                    client_auth_key_encrypted=(
                        cipher.encrypt(client_auth_key) if client_auth_key else None
                    ),
                    treecast_events=treecast_events,
                    batch=batch,
                ),
            )
            keys.remember(session, cipher)
            return row

        row = await self.runtime.db(add)
        return AppCreated(
            row.id, row.name, row.base_url, secret, token.token, iso(row.created_at) or "", batch
        )

    async def get(self, app_id: str, *, with_watches: bool = True) -> AppDetail:
        """An app with its details and (for operators) its watches and their state."""
        cipher = self.runtime.cipher()

        def read(session: Session) -> AppDetail:
            app = checks.app(session, app_id)
            watches = [
                watch_of(w, r, app_name=app.name, credentials=credential_info(w))
                for w, r in (watch_rows.of_app(session, app_id) if with_watches else [])
            ]
            return AppDetail(
                app.id,
                app.name,
                app.base_url,
                app.email,
                app.website,
                app.description,
                len(cipher.decrypt_list(app.secrets_encrypted)),
                iso(app.created_at) or "",
                iso(app.updated_at) or "",
                watches,
                app.signing_scheme or SigningScheme.STANDARD,
                bool(app.treecast_events),
                bool(app.batch),
                bool(app.sync_completed),
            )

        return await self.runtime.db(read)

    async def update(
        self,
        app_id: str,
        *,
        name: str | None = None,
        base_url: str | None = None,
        scheme: str | None = None,
        client_auth_key: str | None = None,
        treecast_events: bool | None = None,
        batch: bool | None = None,
        sync_completed: bool | None = None,
    ) -> AppDetail:
        """Rename an app, move its base URL (checked as at registration), change how its
        webhooks are signed, turn batch delivery (several file events per `/batch`
        request) or the `sync_completed` event (each delivered commit's tree digest) on or
        off, both from its next delivery run. None leaves a value as it is."""
        changes: dict[str, Any] = {}
        if name is not None:
            changes["name"] = checks.name(name)
        if base_url is not None:
            changes["base_url"] = checks.base_url(self.settings, base_url)
        if batch is not None:
            changes["batch"] = batch
        if sync_completed is not None:
            changes["sync_completed"] = sync_completed
        signing = scheme is not None or client_auth_key is not None or treecast_events is not None
        cipher = self.runtime.cipher()

        def update(session: Session) -> None:
            app = checks.app(session, app_id)
            if signing:
                wanted = scheme if scheme is not None else app.signing_scheme
                changes["signing_scheme"] = checks.scheme(
                    wanted or SigningScheme.STANDARD,
                    client_auth_key,
                    had_key=app.client_auth_key_encrypted is not None,
                )
                if client_auth_key is not None:
                    changes["client_auth_key_encrypted"] = cipher.encrypt(client_auth_key)
                    keys.remember(session, cipher)
                if treecast_events is not None:
                    changes["treecast_events"] = treecast_events
            app_rows.update(session, app, **changes)

        await self.runtime.db(update)
        return await self.get(app_id, with_watches=False)

    async def remove(self, app_id: str) -> list[str]:
        """Delete an app with its watches, ledgers and log; the repositories it watched."""

        def remove(session: Session) -> list[str]:
            checks.app(session, app_id)
            return app_rows.remove(session, app_id)

        return await self.runtime.db(remove)

    async def rotate_secret(
        self, app_id: str, secret: str | None = None, *, finish: bool = False
    ) -> str | None:
        """Add a webhook secret (both sign until finished; generated when none is given)
        and return it, or with `finish` keep only the newest."""
        if finish and secret is not None:
            raise UserError("{finish} takes no {secret}", "secret")
        cipher = self.runtime.cipher()

        def rotate(session: Session) -> str | None:
            app = checks.app(session, app_id)  # an unknown app before a bad secret
            secrets = cipher.decrypt_list(app.secrets_encrypted)
            if finish:
                app_rows.update(session, app, secrets_encrypted=cipher.encrypt_list(secrets[-1:]))
                return None
            new = generate_webhook_secret() if secret is None else checks.secret(secret)
            if len(secrets) >= MAX_SECRETS:
                raise Conflict(
                    f"this app already has {MAX_SECRETS} active secrets; "
                    "finish a rotation first ({finish})",
                    "finish",
                )
            app_rows.update(session, app, secrets_encrypted=cipher.encrypt_list([*secrets, new]))
            keys.remember(session, cipher)
            return new

        return await self.runtime.db(rotate)

    async def rotate_token(self, app_id: str, *, drop_docora_token: bool = False) -> str:
        """A new API token for the app (shown once); the old one stops working at once. An
        imported `docora_` token keeps working beside it unless `drop_docora_token`."""
        token = tokens.new_token()
        dropped: dict[str, Any] = {"docora_token_hash": None, "docora_token_sha256": None}

        def rotate(session: Session) -> None:
            app = checks.app(session, app_id)
            app_rows.update(
                session,
                app,
                token_id=token.token_id,
                token_hash=token.token_hash,
                **(dropped if drop_docora_token else {}),
            )

        await self.runtime.db(rotate)
        return token.token

    async def authenticate(self, token: str | None) -> str:
        """The id of the app a bearer token belongs to (one indexed lookup, compared in
        constant time; an imported `docora_` token as `docora_tokens` says), or
        `Unauthorized`."""

        def find(session: Session) -> str | None:
            given = token or ""
            if given.startswith(docora_tokens.PREFIX):
                return docora_tokens.app_for_docora_token(session, given)
            parsed = tokens.parse(given)
            if parsed is None:
                return None
            token_id, secret = parsed
            app = app_rows.by_token_id(session, token_id)
            ok = tokens.matches(secret, app.token_hash if app is not None else None)
            return app.id if ok and app is not None else None

        app_id = await self.runtime.db(find)
        if app_id is None:
            raise Unauthorized("missing or invalid app token")
        return app_id

    async def list(
        self,
        *,
        search: str = "",
        order: AppOrder = AppOrder.CREATED,
        cursor: str | None = None,
        offset: int = 0,
        limit: int | None = None,
        with_total: bool = False,
    ) -> Page[App]:
        """Apps (never their secrets) with their watch counts, in `order`: whose name, id
        or base URL contains `search`; a page of `limit` after `cursor` (the last page's
        `next_cursor`, with `AppOrder.ID`) or after `offset`; and, `with_total`, how many
        match."""
        search = (search or "").strip()
        if len(search) > MAX_SEARCH:
            raise UserError(f"the search is longer than {MAX_SEARCH} characters")
        if cursor is not None:
            checks.app_id(cursor)
        rows, total = await self.runtime.db(
            lambda session: app_rows.listing(
                session,
                search=search,
                order=order,
                after=cursor,
                offset=max(0, offset),
                limit=None if limit is None else limit + 1,
                with_total=with_total,
            )
        )
        items = [app_of(r.app, r.watches) for r in rows[:limit]]
        more = limit is not None and len(rows) > limit and order == AppOrder.ID
        return Page(items, items[-1].app_id if more else None, total)
