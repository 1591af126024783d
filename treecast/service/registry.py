"""Apps, repositories and watches: the database side of the `starter.py` commands.

Every function validates its input first and raises `UserError` (one line, no
secrets) before changing anything, so bad input leaves the database as it was.
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass
from typing import Any

import pathspec
from sqlalchemy import delete, func
from sqlmodel import Session, col, select

from models.tables import (
    App,
    DeliveredFile,
    DeliveryAttempt,
    Repository,
    Snapshot,
    Watch,
    WatchStatus,
    new_app_id,
    new_repository_id,
    utcnow,
)
from treecast.config import Settings
from treecast.crypto import Cipher, generate_webhook_secret, validate_webhook_secret
from treecast.service.errors import UserError, shown
from treecast.urls import normalise_git_url, validate_base_url

APP_ID = re.compile(r"^app_[0-9a-f]{24}$")
REPO_ID = re.compile(r"^repo_[0-9a-f]{24}$")
MAX_NAME = 200
MAX_REF = 255
MAX_GLOBS = 100
MAX_GLOB_LENGTH = 1024
MAX_TOKEN = 4096


@dataclass
class AppCreated:
    """The new app and its secret (shown once)."""

    app: App
    secret: str


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
        raise UserError(f"no app {app_id}; see `starter.py app list`")
    return app


def get_repository(session: Session, repository_id: str) -> Repository:
    """The repository, or UserError when unknown."""
    check_repository_id(repository_id)
    repository = session.get(Repository, repository_id)
    if repository is None:
        raise UserError(f"no repository {repository_id}; see `starter.py repo list`")
    return repository


def get_watch(session: Session, app_id: str, repository_id: str) -> Watch:
    """The watch, or UserError when that app does not watch that repository."""
    get_app(session, app_id)
    get_repository(session, repository_id)
    watch = session.get(Watch, (app_id, repository_id))
    if watch is None:
        raise UserError(f"{app_id} does not watch {repository_id}")
    return watch


# --- apps -------------------------------------------------------------------


def add_app(
    session: Session, settings: Settings, cipher: Cipher, name: str, url: str, secret: str | None
) -> AppCreated:
    """Register an app; generate a `whsec_` secret when none is given."""
    name = (name or "").strip()
    if not name:
        raise UserError("--name must not be empty")
    if len(name) > MAX_NAME:
        raise UserError(f"--name is longer than {MAX_NAME} characters")
    try:
        base_url = validate_base_url(url, allow_private=settings.allow_private_urls)
    except ValueError as error:
        raise UserError(f"--url: {error}") from None
    if secret is None:
        secret = generate_webhook_secret()
    else:
        try:
            validate_webhook_secret(secret)
        except ValueError as error:
            raise UserError(f"--secret: {error}") from None
    app = App(
        id=new_app_id(),
        name=name,
        base_url=base_url,
        secrets_encrypted=cipher.encrypt_list([secret]),
    )
    session.add(app)
    session.flush()
    return AppCreated(app=app, secret=secret)


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
        raise UserError("this app already has 5 active secrets; finish a rotation first (--finish)")
    app.secrets_encrypted = cipher.encrypt_list([*secrets, secret])
    app.updated_at = utcnow()
    session.add(app)
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


def add_repository(
    session: Session,
    settings: Settings,
    cipher: Cipher,
    url: str,
    ref: str,
    interval: int | None,
    token: str | None,
) -> tuple[Repository, bool]:
    """Register a repository (or return the one with the same URL and ref); True when new."""
    try:
        normalised = normalise_git_url(url)
    except ValueError as error:
        raise UserError(f"GIT_URL: {error}") from None
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
    if interval is not None and not 1 <= interval <= 7 * 86400:
        raise UserError("--interval must be between 1 and 604800 seconds")
    if token is not None and (not token.strip() or len(token) > MAX_TOKEN or "\n" in token):
        raise UserError("the access token is empty, too long or spans several lines")
    existing = session.exec(
        select(Repository).where(col(Repository.url) == normalised, Repository.ref == ref)
    ).first()
    if existing is not None:
        changed = False
        if interval is not None and interval != existing.poll_interval_seconds:
            existing.poll_interval_seconds = interval
            changed = True
        if token is not None:
            existing.token_encrypted = cipher.encrypt(token.strip())
            changed = True
        if changed:
            existing.updated_at = utcnow()
            session.add(existing)
        return existing, False
    repository = Repository(
        id=new_repository_id(),
        url=normalised,
        ref=ref,
        poll_interval_seconds=interval or settings.poll_interval_seconds,
        token_encrypted=cipher.encrypt(token.strip()) if token is not None else None,
    )
    session.add(repository)
    session.flush()
    return repository, True


def list_repositories(session: Session) -> list[dict[str, Any]]:
    """Every repository with its watch count (no tokens)."""
    counts = dict(
        session.exec(select(Watch.repository_id, func.count()).group_by(Watch.repository_id)).all()
    )
    return [
        {
            "repository_id": repo.id,
            "url": repo.url,
            "ref": repo.ref,
            "poll_interval_seconds": repo.poll_interval_seconds,
            "has_token": repo.token_encrypted is not None,
            "watches": int(counts.get(repo.id, 0)),
            "created_at": repo.created_at.isoformat(),
        }
        for repo in session.exec(
            select(Repository).order_by(col(Repository.created_at), col(Repository.id))
        ).all()
    ]


def remove_repository(session: Session, repository_id: str) -> None:
    """Delete the repository, its watches, ledgers, snapshots and delivery log."""
    get_repository(session, repository_id)
    for table in (DeliveredFile, DeliveryAttempt, Watch, Snapshot):
        session.exec(delete(table).where(col(table.repository_id) == repository_id))
    session.exec(delete(Repository).where(col(Repository.id) == repository_id))


# --- watches ----------------------------------------------------------------


def _check_globs(globs: list[str]) -> list[str]:
    if len(globs) > MAX_GLOBS:
        raise UserError(f"at most {MAX_GLOBS} --path patterns")
    cleaned: list[str] = []
    for glob in globs:
        glob = glob.strip()
        if not glob or len(glob) > MAX_GLOB_LENGTH or "\n" in glob or "\0" in glob:
            raise UserError(f"--path {shown(glob)} is not a usable glob pattern")
        try:
            re.compile(fnmatch.translate(glob))
            # Delivery matches globs with pathspec (gitignore syntax), which rejects more.
            pathspec.GitIgnoreSpec.from_lines([glob])
        except (re.error, ValueError):
            raise UserError(f"--path {shown(glob)} is not a usable glob pattern") from None
        cleaned.append(glob)
    return cleaned


def watch(
    session: Session, app_id: str, repository_id: str, globs: list[str]
) -> tuple[Watch, bool]:
    """Make an app watch a repository (or update its globs); a disabled watch is enabled again."""
    get_app(session, app_id)
    get_repository(session, repository_id)
    patterns = _check_globs(globs)
    existing = session.get(Watch, (app_id, repository_id))
    if existing is not None:
        existing.path_globs = json.dumps(patterns)
        if existing.status in (WatchStatus.DISABLED, WatchStatus.FAILED):
            existing.status = WatchStatus.PENDING
            existing.retry_count = 0
            existing.last_error = None
            existing.last_error_type = None
        # A changed filter must be re-evaluated against the whole tree.
        existing.delivered_commit = None
        session.add(existing)
        return existing, False
    created = Watch(app_id=app_id, repository_id=repository_id, path_globs=json.dumps(patterns))
    session.add(created)
    session.flush()
    return created, True


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
        }
        for w, a in sorted(rows, key=lambda pair: pair[0].app_id)
    ]
