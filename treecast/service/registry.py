"""Apps, repositories and watches: the database side of the `starter.py` commands.

Every function validates its input first and raises `UserError` (one line, no
secrets) before changing anything, so bad input leaves the database as it was.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace
from typing import Any

from sqlalchemy import delete, func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from models.contents import SubmoduleMode
from models.tables import (
    App,
    DeliveredFile,
    DeliveryAttempt,
    Repository,
    Snapshot,
    Watch,
    WatchAccess,
    WatchStatus,
    new_app_id,
    new_repository_id,
    utcnow,
)
from treecast.config import Settings
from treecast.crypto import Cipher, generate_webhook_secret, validate_webhook_secret
from treecast.globs import GlobSpec
from treecast.service import access, docora_tokens, pushes, tokens
from treecast.service import credentials as creds
from treecast.service.credentials import CredentialSpec
from treecast.service.errors import Conflict, NotFound, RefusedUrl, UserError, shown
from treecast.store import keys, stamps
from treecast.store.credentials import fetch_order
from treecast.urls import validate_base_url, vet_git_url
from treecast.webhooks.signing import SigningScheme

APP_ID = re.compile(r"^app_[0-9a-f]{24}$")
REPO_ID = re.compile(r"^repo_[0-9a-f]{24}$")
MAX_NAME = 200
MAX_REF = 255
MAX_GLOBS = 100
MAX_GLOB_LENGTH = 1024


@dataclass
class AppCreated:
    """The new app, its webhook secret and its API token (both shown once)."""

    app: App
    secret: str
    token: str = ""


def check_app_id(app_id: str) -> None:
    """Raise UserError unless `app_id` has the `app_` + 24 hex form."""
    if not APP_ID.match(app_id or ""):
        raise UserError(
            f"{shown(app_id or '')} is not an app id (app_ followed by 24 hex characters)"
        )


def check_repository_id(repository_id: str) -> None:
    """Raise UserError unless `repository_id` has the `repo_` + 24 hex form."""
    if not REPO_ID.match(repository_id or ""):
        raise UserError(
            f"{shown(repository_id or '')} is not a repository id (repo_ followed by 24 hex characters)"
        )


def get_app(session: Session, app_id: str) -> App:
    """The app, or UserError when unknown."""
    check_app_id(app_id)
    app = session.get(App, app_id)
    if app is None:
        raise NotFound(f"no app {app_id}; see `starter.py app list`")
    return app


def get_repository(session: Session, repository_id: str) -> Repository:
    """The repository, or UserError when unknown."""
    check_repository_id(repository_id)
    repository = session.get(Repository, repository_id)
    if repository is None:
        raise NotFound(f"no repository {repository_id}; see `starter.py repo list`")
    return repository


def get_watch(session: Session, app_id: str, repository_id: str) -> Watch:
    """The watch, or UserError when that app does not watch that repository."""
    get_app(session, app_id)
    get_repository(session, repository_id)
    watch = session.get(Watch, (app_id, repository_id))
    if watch is None:
        raise NotFound(f"{app_id} does not watch {repository_id}")
    return watch


# --- apps -------------------------------------------------------------------


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise UserError("--name must not be empty")
    if len(name) > MAX_NAME:
        raise UserError(f"--name is longer than {MAX_NAME} characters")
    if not name.isprintable():
        raise UserError("--name must not contain control characters")
    return name


def _check_base_url(settings: Settings, url: str) -> str:
    try:
        return validate_base_url(url, allow_private=settings.allow_private_urls)
    except ValueError as error:
        raise RefusedUrl(f"--url: {error}") from None


def add_app(
    session: Session,
    settings: Settings,
    cipher: Cipher,
    name: str,
    url: str,
    secret: str | None,
    *,
    email: str | None = None,
    website: str | None = None,
    description: str | None = None,
    scheme: str | None = None,
    client_auth_key: str | None = None,
    treecast_events: bool | None = None,
) -> AppCreated:
    """Register an app with a new API token; generate a `whsec_` secret when none is given.

    `scheme` "docora" signs its webhooks as Docora did, with `client_auth_key` (required then).
    """
    name = _check_name(name)
    base_url = _check_base_url(settings, url)
    scheme = check_scheme(scheme, client_auth_key, had_key=False)
    if secret is None:
        secret = generate_webhook_secret()
    else:
        try:
            validate_webhook_secret(secret)
        except ValueError as error:
            raise UserError(f"--secret: {error}") from None
    token = tokens.new_token()
    app = App(
        id=new_app_id(),
        name=name,
        base_url=base_url,
        secrets_encrypted=cipher.encrypt_list([secret]),
        token_id=token.token_id,
        token_hash=token.token_hash,
        email=email,
        website=website,
        description=description,
        signing_scheme=scheme,
        client_auth_key_encrypted=cipher.encrypt(client_auth_key) if client_auth_key else None,
        treecast_events=treecast_events,
    )
    session.add(app)
    keys.remember(session, cipher)
    session.flush()
    return AppCreated(app=app, secret=secret, token=token.token)


def update_app(
    session: Session, settings: Settings, app_id: str, name: str | None, url: str | None
) -> App:
    """Rename an app or move its base URL (checked as when it was added)."""
    app = get_app(session, app_id)
    if name is not None:
        app.name = _check_name(name)
    if url is not None:
        app.base_url = _check_base_url(settings, url)
    app.updated_at = utcnow()
    session.add(app)
    return app


def rotate_app_token(session: Session, app_id: str, *, drop_docora_token: bool = False) -> str:
    """Replace the app's API token; the old one stops working at once. The new one, shown once.

    An imported Docora token keeps working beside it unless `drop_docora_token`.
    """
    app = get_app(session, app_id)
    token = tokens.new_token()
    app.token_id, app.token_hash = token.token_id, token.token_hash
    if drop_docora_token:
        app.docora_token_hash = app.docora_token_sha256 = None
    app.updated_at = utcnow()
    session.add(app)
    return token.token


def app_for_token(session: Session, token: str) -> str | None:
    """The id of the app `token` belongs to, or None: one indexed lookup, constant-time check.

    A `docora_...` token is one imported from Docora (`docora_tokens.app_for_docora_token`).
    """
    if token.startswith(docora_tokens.PREFIX):
        return docora_tokens.app_for_docora_token(session, token)
    parsed = tokens.parse(token)
    if parsed is None:
        return None
    token_id, secret = parsed
    app = session.exec(select(App).where(col(App.token_id) == token_id)).first()
    ok = tokens.matches(secret, app.token_hash if app is not None else None)
    return app.id if ok and app is not None else None


def rotate_app_secret(
    session: Session, cipher: Cipher, app_id: str, secret: str | None, finish: bool
) -> str | None:
    """Add a secret (both stay active, requests carry both signatures) or, with `finish`, keep only the newest."""
    app = get_app(session, app_id)
    secrets = cipher.decrypt_list(app.secrets_encrypted)
    if finish:
        if secret is not None:
            raise UserError("--finish takes no --secret")
        app.secrets_encrypted = cipher.encrypt_list(secrets[-1:])
        app.updated_at = utcnow()
        session.add(app)
        return None
    if secret is None:
        secret = generate_webhook_secret()
    else:
        try:
            validate_webhook_secret(secret)
        except ValueError as error:
            raise UserError(f"--secret: {error}") from None
    if len(secrets) >= 5:
        raise Conflict("this app already has 5 active secrets; finish a rotation first (--finish)")
    app.secrets_encrypted = cipher.encrypt_list([*secrets, secret])
    app.updated_at = utcnow()
    session.add(app)
    keys.remember(session, cipher)
    return secret


def set_app_batch(session: Session, app_id: str, on: bool) -> None:
    """Turn batch delivery on or off for an app (docs/webhooks.md, "Batches").

    Takes effect from the app's next delivery run; a run under way keeps its mode.
    """
    app = get_app(session, app_id)
    app.batch = on
    app.updated_at = utcnow()
    session.add(app)


def list_apps(session: Session) -> list[dict[str, Any]]:
    """Every app with how many repositories it watches (no secrets)."""
    counts = dict(session.exec(select(Watch.app_id, func.count()).group_by(Watch.app_id)).all())
    return [
        {
            "app_id": app.id,
            "name": app.name,
            "base_url": app.base_url,
            "watches": int(counts.get(app.id, 0)),
            "created_at": app.created_at.isoformat(),
            "batch": bool(app.batch),
            "scheme": app.signing_scheme or SigningScheme.STANDARD,
        }
        for app in session.exec(select(App).order_by(col(App.created_at), col(App.id))).all()
    ]


def remove_app(session: Session, app_id: str) -> list[str]:
    """Delete the app, its watches, ledgers and delivery log; return the repositories it watched."""
    get_app(session, app_id)
    repository_ids = sorted(
        session.exec(select(Watch.repository_id).where(col(Watch.app_id) == app_id)).all()
    )
    session.exec(delete(DeliveredFile).where(col(DeliveredFile.app_id) == app_id))
    session.exec(delete(DeliveryAttempt).where(col(DeliveryAttempt.app_id) == app_id))
    session.exec(delete(Watch).where(col(Watch.app_id) == app_id))
    session.exec(delete(App).where(col(App.id) == app_id))
    return repository_ids


# --- repositories -----------------------------------------------------------


# Why credentials given without an app are refused.
NO_APP = (
    "credentials belong to an app's watch of the repository, not to the repository: "
    "give them with the app (`starter.py repo add GIT_URL --app APP_ID ...`, "
    "`starter.py watch APP_ID REPO_ID ...`, docs/credentials.md)"
)


def vet_repository(
    settings: Settings, url: str, ref: str, interval: int | None, spec: CredentialSpec
) -> tuple[str, str]:
    """The normalised URL and the ref of a repository to register, with the credentials
    `spec` asks for (checked, nothing changes); RefusedUrl or UserError otherwise."""
    kinds = spec.kinds()
    try:
        normalised = vet_git_url(
            url,
            allow_private=settings.allow_private_urls,
            allow_file=settings.allow_file_urls,
            token=creds.TOKEN in kinds or creds.GITHUB_APP in kinds,
            allow_insecure=settings.allow_insecure_transport,
        ).url
    except ValueError as error:
        raise RefusedUrl(f"GIT_URL: {error}") from None
    ref = check_ref(ref)
    if interval is not None and not 1 <= interval <= 7 * 86400:
        raise UserError("--interval must be between 1 and 604800 seconds")
    creds.check_spec(spec, normalised)
    return normalised, ref


def check_token_transport(settings: Settings, url: str, spec: CredentialSpec) -> None:
    """Refuse a token or GitHub App for a registered repository reached over plain http
    (as at registration); the rest of its URL was vetted then."""
    kinds = spec.kinds()
    if creds.TOKEN not in kinds and creds.GITHUB_APP not in kinds:
        return
    try:
        vet_git_url(
            url,
            allow_private=True,
            allow_file=True,
            token=True,
            allow_insecure=settings.allow_insecure_transport,
            resolve=lambda _host, _port: [],
        )
    except ValueError as error:
        raise UserError(f"GIT_URL: {error}") from None


def find_repository(session: Session, url: str, ref: str) -> Repository | None:
    """The registered repository with this normalised URL and ref, if any."""
    return session.exec(
        select(Repository).where(col(Repository.url) == url, Repository.ref == ref)
    ).first()


def add_repository(
    session: Session,
    settings: Settings,
    cipher: Cipher,
    url: str,
    ref: str,
    interval: int | None,
    token: str | None = None,
    credentials: CredentialSpec | None = None,
    *,
    repository_id: str | None = None,
) -> tuple[Repository, bool]:
    """Register a repository (or return the one with the same URL and ref); True when new.

    A new repository gets a push-hook secret (shared by every ref of the same URL) and
    `repository_id` when given. Credentials are an app's (`NO_APP`): `token` and
    `credentials` are refused.
    """
    spec = replace(credentials) if credentials is not None else CredentialSpec()
    spec.token = token if token is not None else spec.token
    normalised, ref = vet_repository(settings, url, ref, interval, spec)  # its errors first
    if not spec.empty():
        raise UserError(NO_APP)
    existing = find_repository(session, normalised, ref)
    if existing is not None:
        if interval is not None and interval != existing.poll_interval_seconds:
            existing.poll_interval_seconds = interval
            existing.updated_at = existing.changed_at = utcnow()
            session.add(existing)
        return existing, False
    # One push secret per git repository, so one hook on the host serves every ref of it.
    sibling = session.exec(
        select(Repository).where(
            col(Repository.url) == normalised, col(Repository.push_secret_encrypted).is_not(None)
        )
    ).first()
    repository = Repository(
        id=repository_id or new_repository_id(),
        url=normalised,
        ref=ref,
        poll_interval_seconds=interval or settings.poll_interval_seconds,
        push_secret_encrypted=(
            sibling.push_secret_encrypted
            if sibling is not None
            else cipher.encrypt(pushes.new_push_secret())
        ),
    )
    keys.remember(session, cipher)  # the push secret is stored with it
    session.add(repository)
    session.flush()
    return repository, True


def fetch_credentials(
    session: Session, repository: Repository
) -> tuple[str | None, creds.CredentialInfo]:
    """Whose credentials the repository's fetches use (an app id, None: none) and their
    public parts."""
    watches = list(
        session.exec(select(Watch).where(col(Watch.repository_id) == repository.id)).all()
    )
    order = fetch_order(repository, watches)
    if not order:
        return None, creds.CredentialInfo()
    return order[0].app_id, creds.credential_info(order[0])


def list_repositories(session: Session) -> list[dict[str, Any]]:
    """Every repository with its watch count and whose credentials fetch it (no tokens)."""
    counts = dict(
        session.exec(select(Watch.repository_id, func.count()).group_by(Watch.repository_id)).all()
    )
    rows = []
    for repo in session.exec(
        select(Repository).order_by(col(Repository.created_at), col(Repository.id))
    ).all():
        fetcher, info = fetch_credentials(session, repo)
        rows.append(
            {
                "repository_id": repo.id,
                "url": repo.url,
                "ref": repo.ref,
                "poll_interval_seconds": repo.poll_interval_seconds,
                "has_token": info.kind == creds.TOKEN,
                "watches": int(counts.get(repo.id, 0)),
                "created_at": repo.created_at.isoformat(),
                "credentials": info,
                "fetched_with": fetcher,
            }
        )
    return rows


def set_paused(session: Session, repository_id: str, paused: bool) -> None:
    """Record a pause or resume, so the remote checks skip (or check again) the repository."""
    repository = get_repository(session, repository_id)
    repository.paused = paused
    repository.changed_at = utcnow()
    session.add(repository)


def remove_repository(session: Session, repository_id: str) -> None:
    """Delete the repository, its watches, ledgers, snapshots and delivery log."""
    get_repository(session, repository_id)
    for table in (DeliveredFile, DeliveryAttempt, Watch, Snapshot):
        session.exec(delete(table).where(col(table.repository_id) == repository_id))
    session.exec(delete(Repository).where(col(Repository.id) == repository_id))


# --- watches ----------------------------------------------------------------


def check_globs(globs: list[str]) -> list[str]:
    if len(globs) > MAX_GLOBS:
        raise UserError(f"at most {MAX_GLOBS} --path patterns")
    cleaned: list[str] = []
    for glob in globs:
        glob = glob.strip()
        if not glob or len(glob) > MAX_GLOB_LENGTH or "\n" in glob or "\0" in glob:
            raise UserError(f"--path {shown(glob)} is not a usable glob pattern")
        cleaned.append(glob)
    try:
        # What delivery matches with (gitignore syntax, linear time, bounded in size).
        GlobSpec.from_lines(cleaned)
    except ValueError as error:
        raise UserError(f"--path: {error}") from None
    return cleaned


def check_submodules(value: str | None) -> str | None:
    """A `submodules` choice as stored (None: off), or UserError."""
    try:
        mode = SubmoduleMode.parse(value)
    except ValueError as error:
        raise UserError(f"--submodules: {error}") from None
    return None if mode == SubmoduleMode.OFF else mode.value


def watch(
    session: Session,
    app_id: str,
    repository_id: str,
    globs: list[str],
    submodules: str | None = None,
    lfs: bool | None = None,
) -> tuple[Watch, bool]:
    """Make an app watch a repository (or update its globs and, when given, its
    `submodules` and `lfs` choices); a disabled watch is enabled again."""
    get_app(session, app_id)
    get_repository(session, repository_id)
    patterns = check_globs(globs)
    mode = check_submodules(submodules)
    existing = session.get(Watch, (app_id, repository_id))
    if existing is not None:
        existing.path_globs = json.dumps(patterns)
        if submodules is not None:
            existing.submodules = mode
        if lfs is not None:
            existing.lfs = lfs or None
        if existing.status in (WatchStatus.DISABLED, WatchStatus.FAILED):
            existing.status = WatchStatus.PENDING
            existing.retry_count = 0
            existing.last_error = None
            existing.last_error_type = None
        # A changed filter must be re-evaluated against the whole tree.
        existing.delivered_commit = None
        session.add(existing)
        stamps.stamp(session, repository_id)
        return existing, False
    created = Watch(
        app_id=app_id,
        repository_id=repository_id,
        path_globs=json.dumps(patterns),
        submodules=mode,
        lfs=lfs or None,
    )
    session.add(created)
    session.flush()
    stamps.stamp(session, repository_id)  # one the remote checks check from now
    return created, True


def watch_with(
    session: Session,
    app_id: str,
    repository_id: str,
    globs: list[str] | None,
    checked: access.Checked | None,
    submodules: str | None = None,
    lfs: bool | None = None,
) -> tuple[Watch, bool, bool]:
    """Make an app watch a repository, or change its watch: `globs` (None: as they are;
    a new watch: the whole repository), `submodules` and `lfs` (None: as they are) and,
    when given, credentials the git host accepted. Returns the watch, whether it is new,
    and whether anything changed."""
    existing = session.get(Watch, (app_id, repository_id))
    changed = (
        existing is None
        or (globs is not None and globs != json.loads(existing.path_globs))
        or (submodules is not None and check_submodules(submodules) != existing.submodules)
        or (lfs is not None and lfs != bool(existing.lfs))
    )
    if changed:
        if globs is None:
            globs = json.loads(existing.path_globs) if existing is not None else []
        current, created = watch(session, app_id, repository_id, globs or [], submodules, lfs)
    else:
        assert existing is not None
        current, created = existing, False
    if checked is not None:
        access.store(current, checked)
        if current.status in (WatchStatus.FAILED, WatchStatus.DISABLED):
            current.status = WatchStatus.PENDING
        current.retry_count, current.last_error, current.last_error_type = 0, None, None
        session.add(current)
        touch(session, repository_id)
        changed = True
    return current, created, changed


def watches_of_repository(session: Session, repository_id: str) -> list[Watch]:
    """Every watch of a repository, by app id."""
    return list(
        session.exec(
            select(Watch)
            .where(col(Watch.repository_id) == repository_id)
            .order_by(col(Watch.app_id))
        ).all()
    )


def touch(session: Session, repository_id: str) -> None:
    """Mark the repository changed: whoever caches what its fetch needs reads it again,
    and the remote checks learn it at once (`store.stamps`)."""
    repository = session.get(Repository, repository_id)
    if repository is not None:
        repository.updated_at = repository.changed_at = utcnow()
        session.add(repository)


def unwatch(session: Session, app_id: str, repository_id: str) -> int:
    """Stop the watch and forget what the app received; return the ledger rows removed."""
    get_watch(session, app_id, repository_id)
    removed = session.exec(
        delete(DeliveredFile).where(
            col(DeliveredFile.app_id) == app_id,
            col(DeliveredFile.repository_id) == repository_id,
        )
    )
    session.exec(
        delete(Watch).where(col(Watch.app_id) == app_id, col(Watch.repository_id) == repository_id)
    )
    stamps.stamp(session, repository_id)
    return int(removed.rowcount or 0)


def watches_of(session: Session, repository_id: str) -> list[dict[str, Any]]:
    """The watches of one repository, for `status`."""
    rows = session.exec(
        select(Watch, App)
        .join(App, col(App.id) == Watch.app_id)
        .where(col(Watch.repository_id) == repository_id)
    ).all()
    return [
        {
            "app_id": w.app_id,
            "app_name": a.name,
            "status": w.status,
            "delivered_commit": w.delivered_commit,
            "last_error_type": w.last_error_type,
            "last_error": w.last_error,
            "retry_count": w.retry_count,
            "last_synced_at": w.last_synced_at.isoformat() if w.last_synced_at else None,
            "path_globs": json.loads(w.path_globs),
            "credentials": asdict(creds.credential_info(w)),
            **access_of(w),
            **watch_options(w),
        }
        for w, a in sorted(rows, key=lambda pair: pair[0].app_id)
    ]


def access_of(watch: Watch) -> dict[str, Any]:
    """Whether the app's own access to the repository holds, as people see it."""
    return {
        "access": watch.access or WatchAccess.GRANTED,
        "access_checked_at": watch.access_checked_at.isoformat()
        if watch.access_checked_at
        else None,
        "access_error": watch.access_error,
    }


def check_ref(ref: str) -> str:
    """A ref as `add_repository` accepts it (stripped), or UserError."""
    ref = (ref or "").strip()
    if (
        len(ref) > MAX_REF
        or any(c.isspace() or ord(c) < 0x20 for c in ref)
        or ref.startswith("-")
        or ".." in ref
    ):
        raise UserError(
            "--ref must be a branch, tag or commit id (no spaces, no '..', not starting with '-')"
        )
    return ref


# --- push hooks -------------------------------------------------------------


def rotate_push_secret(session: Session, cipher: Cipher, repository_id: str) -> str:
    """A new push secret for the repository (and every other ref of the same URL, which
    share it); the old one stops verifying at once. The new one, shown once."""
    repository = get_repository(session, repository_id)
    secret = pushes.new_push_secret()
    encrypted = cipher.encrypt(secret)
    keys.remember(session, cipher)
    for row in session.exec(select(Repository).where(col(Repository.url) == repository.url)):
        row.push_secret_encrypted = encrypted
        row.updated_at = utcnow()
        session.add(row)
    return secret


def repositories_at(session: Session, urls: list[str]) -> list[Repository]:
    """Registered repositories whose normalised URL is one of `urls`."""
    if not urls:
        return []
    return list(session.exec(select(Repository).where(col(Repository.url).in_(urls))).all())


# --- what one app sees ------------------------------------------------------


def app_watch(session: Session, app_id: str, repository_id: str) -> tuple[Watch, Repository]:
    """The app's watch of a repository; NotFound alike for an unknown, malformed or
    unwatched id, so an app learns nothing about repositories it does not watch."""
    found = None
    if REPO_ID.match(repository_id or ""):
        found = session.exec(
            select(Watch, Repository)
            .join(Repository, col(Repository.id) == Watch.repository_id)
            .where(col(Watch.app_id) == app_id, col(Watch.repository_id) == repository_id)
        ).first()
    if found is None:
        raise NotFound(f"repository {shown(repository_id or '')} is not watched by this app")
    return found[0], found[1]


def watch_options(watch: Watch) -> dict[str, Any]:
    """A watch's submodule and LFS choices and what its last delivery held back, as shown."""
    return {
        "submodules": watch.submodules or SubmoduleMode.OFF.value,
        "lfs": bool(watch.lfs),
        "held_back": json.loads(watch.held_back) if watch.held_back else [],
    }


def app_watches(
    session: Session, app_id: str, after: str | None, limit: int
) -> list[tuple[Watch, Repository]]:
    """The app's watches ordered by repository id, after the cursor `after`."""
    query = (
        select(Watch, Repository)
        .join(Repository, col(Repository.id) == Watch.repository_id)
        .where(col(Watch.app_id) == app_id)
    )
    if after:
        query = query.where(col(Watch.repository_id) > after)
    rows = session.exec(query.order_by(col(Watch.repository_id)).limit(limit)).all()
    return [(w, r) for w, r in rows]


# The columns a listing of one app's watches shows (plain rows: no ORM objects to build).
WATCH_COLUMNS: tuple[Any, ...] = (
    Repository.id,
    Repository.url,
    Repository.ref,
    Watch.path_globs,
    Watch.status,
    Watch.delivered_commit,
    Watch.last_error_type,
    Watch.last_error,
    Watch.retry_count,
    Watch.last_synced_at,
    Watch.created_at,
    Watch.access,
    Watch.access_checked_at,
    Watch.access_error,
    Watch.submodules,
    Watch.lfs,
    Watch.held_back,
)


def app_watch_rows(
    session: Session, app_id: str, after: str | None, limit: int
) -> list[tuple[Any, ...]]:
    """`WATCH_COLUMNS` of the app's watches ordered by repository id, after the cursor."""
    query = (
        sa_select(*WATCH_COLUMNS)
        .join(Repository, col(Repository.id) == Watch.repository_id)
        .where(col(Watch.app_id) == app_id)
    )
    if after:
        query = query.where(col(Watch.repository_id) > after)
    rows = session.execute(query.order_by(col(Watch.repository_id)).limit(limit))
    return [tuple(row) for row in rows]


def delivery_attempts(
    session: Session, app_id: str, repository_id: str | None, before: int | None, limit: int
) -> list[DeliveryAttempt]:
    """The app's delivery attempts, newest first, older than the cursor `before`."""
    query = select(DeliveryAttempt).where(col(DeliveryAttempt.app_id) == app_id)
    if repository_id:
        query = query.where(col(DeliveryAttempt.repository_id) == repository_id)
    if before is not None:
        query = query.where(col(DeliveryAttempt.id) < before)
    return list(session.exec(query.order_by(col(DeliveryAttempt.id).desc()).limit(limit)).all())


def apps_page(session: Session, after: str | None, limit: int) -> list[dict[str, Any]]:
    """Apps ordered by id after the cursor `after`, with their watch counts (no secrets)."""
    query = select(App)
    if after:
        query = query.where(col(App.id) > after)
    apps = session.exec(query.order_by(col(App.id)).limit(limit)).all()
    ids = [a.id for a in apps]
    counts = dict(
        session.exec(
            select(Watch.app_id, func.count())
            .where(col(Watch.app_id).in_(ids))
            .group_by(Watch.app_id)
        ).all()
    )
    return [
        {
            "app_id": a.id,
            "name": a.name,
            "base_url": a.base_url,
            "watches": int(counts.get(a.id, 0)),
            "created_at": a.created_at.isoformat(),
            "batch": bool(a.batch),
            "scheme": a.signing_scheme or SigningScheme.STANDARD,
        }
        for a in apps
    ]


def watches_of_app(session: Session, app_id: str) -> list[dict[str, Any]]:
    """Every watch of one app with its repository, for the admin's app detail."""
    return [
        {
            "repository_id": r.id,
            "url": r.url,
            "ref": r.ref,
            "status": w.status,
            "delivered_commit": w.delivered_commit,
            "last_error_type": w.last_error_type,
            "last_error": w.last_error,
            "retry_count": w.retry_count,
            "last_synced_at": w.last_synced_at.isoformat() if w.last_synced_at else None,
            "path_globs": json.loads(w.path_globs),
            **watch_options(w),
            "credentials": asdict(creds.credential_info(w)),
            **access_of(w),
        }
        for w, r in app_watches(session, app_id, None, 10_000)
    ]


def credentials_of(
    session: Session, app_id: str, repository_ids: list[str]
) -> dict[str, creds.CredentialInfo]:
    """The app's own credentials (their public parts) for each of these repositories."""
    if not repository_ids:
        return {}
    rows = session.exec(
        select(Watch).where(
            col(Watch.app_id) == app_id, col(Watch.repository_id).in_(repository_ids)
        )
    ).all()
    return {w.repository_id: creds.credential_info(w) for w in rows}


# --- signing schemes --------------------------------------------------------

MIN_CLIENT_AUTH_KEY = 16  # Docora's limits
MAX_CLIENT_AUTH_KEY = 500


def check_scheme(scheme: str | None, client_auth_key: str | None, *, had_key: bool) -> str | None:
    """The scheme to store (None for the default) after checking the key it needs."""
    if scheme is not None and scheme not in SigningScheme.ALL:
        raise UserError(f"--scheme must be one of {', '.join(SigningScheme.ALL)}, not {scheme!r}")
    if client_auth_key is not None and not (
        MIN_CLIENT_AUTH_KEY <= len(client_auth_key) <= MAX_CLIENT_AUTH_KEY
    ):
        raise UserError(
            f"the client_auth_key must be {MIN_CLIENT_AUTH_KEY} to {MAX_CLIENT_AUTH_KEY} characters"
        )
    if scheme == SigningScheme.DOCORA and client_auth_key is None and not had_key:
        raise UserError(
            "the docora scheme signs with the app's client_auth_key: give one "
            "(--client-auth-key-env VAR, or client_auth_key in the API body)"
        )
    return None if scheme in (None, SigningScheme.STANDARD) else scheme


def set_app_scheme(
    session: Session,
    cipher: Cipher,
    app_id: str,
    scheme: str | None,
    client_auth_key: str | None,
    treecast_events: bool | None,
) -> App:
    """Change how an app's webhooks are signed (None leaves a value as it is)."""
    app = get_app(session, app_id)
    wanted = scheme if scheme is not None else (app.signing_scheme or SigningScheme.STANDARD)
    stored = check_scheme(
        wanted, client_auth_key, had_key=app.client_auth_key_encrypted is not None
    )
    app.signing_scheme = stored
    if client_auth_key is not None:
        app.client_auth_key_encrypted = cipher.encrypt(client_auth_key)
        keys.remember(session, cipher)
    if treecast_events is not None:
        app.treecast_events = treecast_events
    app.updated_at = utcnow()
    session.add(app)
    return app
