"""What every act checks before it changes anything: its input (names, URLs, refs, globs,
secrets, schemes), and that the ids it names exist (`NotFound` otherwise; for an app
asking about its own watches, NotFound alike for an unknown, malformed or unwatched id,
so it learns nothing of repositories it does not watch).

Each raises a `UserError` naming the field it is about, in one line, and no secret.
"""

from __future__ import annotations

import re

from sqlmodel import Session

from models.contents import SubmoduleMode
from models.tables import App, Repository, Watch
from treecast.config import Settings
from treecast.crypto import validate_webhook_secret
from treecast.globs import GlobSpec
from treecast.service import credentials as creds
from treecast.service.credentials import CredentialSpec
from treecast.service.errors import NotFound, RefusedUrl, UserError, shown
from treecast.service.results import GITHUB_APP, TOKEN
from treecast.store import apps as app_rows
from treecast.store import repositories as repository_rows
from treecast.store import watches as watch_rows
from treecast.urls import validate_base_url, vet_git_url
from treecast.webhooks.signing import SigningScheme

APP_ID = re.compile(r"^app_[0-9a-f]{24}$")
REPO_ID = re.compile(r"^repo_[0-9a-f]{24}$")
MAX_NAME = 200
MAX_REF = 255
MAX_GLOBS = 100
MAX_GLOB_LENGTH = 1024
MAX_INTERVAL = 7 * 86400
MIN_CLIENT_AUTH_KEY = 16  # Docora's limits
MAX_CLIENT_AUTH_KEY = 500
MAX_CURSOR_DIGITS = 18

# Why credentials given without an app are refused.
NO_APP = (
    "credentials belong to an app's watch of the repository, not to the repository: "
    "give them with the app ({app})"
)


# -- ids --------------------------------------------------------------------------------------


def app_id(value: str) -> str:
    """`value` when it has the `app_` + 24 hex form, else UserError."""
    if not APP_ID.match(value or ""):
        raise UserError(
            f"{shown(value or '')} is not an app id (app_ followed by 24 hex characters)"
        )
    return value


def repository_id(value: str) -> str:
    """`value` when it has the `repo_` + 24 hex form, else UserError."""
    if not REPO_ID.match(value or ""):
        raise UserError(
            f"{shown(value or '')} is not a repository id (repo_ followed by 24 hex characters)"
        )
    return value


def cursor(value: str | None) -> int | None:
    """A delivery log's cursor (an attempt id this API gave out), or None."""
    if value is None:
        return None
    if not value.isdigit() or len(value) > MAX_CURSOR_DIGITS:
        raise UserError(f"cursor {shown(value)} is not one this API gave out")
    return int(value)


def app(session: Session, value: str) -> App:
    """The app, or `NotFound`."""
    found = app_rows.get(session, app_id(value))
    if found is None:
        raise NotFound(f"no app {value}", "app_id")
    return found


def repository(session: Session, value: str) -> Repository:
    """The repository, or `NotFound`."""
    found = repository_rows.get(session, repository_id(value))
    if found is None:
        raise NotFound(f"no repository {value}", "repository_id")
    return found


def watch(session: Session, app_id: str, repository_id: str) -> Watch:
    """The watch, or `NotFound` naming what is missing (for operators)."""
    app(session, app_id)
    repository(session, repository_id)
    found = watch_rows.get(session, app_id, repository_id)
    if found is None:
        raise NotFound(f"{app_id} does not watch {repository_id}")
    return found


def own_watch(session: Session, app_id: str, repository_id: str) -> tuple[Watch, Repository]:
    """The calling app's watch of a repository: `NotFound` alike for an unknown,
    malformed or unwatched id."""
    found = None
    if REPO_ID.match(repository_id or ""):
        found = watch_rows.with_repository(session, app_id, repository_id)
    if found is None:
        raise NotFound(f"repository {shown(repository_id or '')} is not watched by this app")
    return found


# -- apps -------------------------------------------------------------------------------------


def name(value: str) -> str:
    value = (value or "").strip()
    if not value:
        raise UserError("{name} must not be empty", "name")
    if len(value) > MAX_NAME:
        raise UserError("{name} is longer than {limit} characters", "name", limit=MAX_NAME)
    if not value.isprintable():
        raise UserError("{name} must not contain control characters", "name")
    return value


def base_url(settings: Settings, url: str) -> str:
    try:
        return validate_base_url(url, allow_private=settings.allow_private_urls)
    except ValueError as error:
        raise RefusedUrl("{base_url}: {reason}", "base_url", reason=error) from None


def secret(value: str) -> str:
    try:
        validate_webhook_secret(value)
    except ValueError as error:
        raise UserError("{secret}: {reason}", "secret", reason=error) from None
    return value


def scheme(value: str | None, client_auth_key: str | None, *, had_key: bool) -> str | None:
    """The scheme to store (None for the default) after checking the key it needs."""
    if value is not None and value not in SigningScheme.ALL:
        raise UserError(
            "{scheme} must be one of {choices}, not {value}",
            "scheme",
            choices=", ".join(SigningScheme.ALL),
            value=repr(value),
        )
    if client_auth_key is not None and not (
        MIN_CLIENT_AUTH_KEY <= len(client_auth_key) <= MAX_CLIENT_AUTH_KEY
    ):
        raise UserError(
            f"the client_auth_key must be {MIN_CLIENT_AUTH_KEY} to {MAX_CLIENT_AUTH_KEY} characters"
        )
    if value == SigningScheme.DOCORA and client_auth_key is None and not had_key:
        raise UserError(
            "the docora scheme signs with the app's client_auth_key: give one ({client_auth_key})",
            "client_auth_key",
        )
    return None if value in (None, SigningScheme.STANDARD) else value


# -- repositories and watches -----------------------------------------------------------------


def ref(value: str) -> str:
    """A ref as a repository is registered with (stripped), or UserError."""
    value = (value or "").strip()
    if (
        len(value) > MAX_REF
        or any(c.isspace() or ord(c) < 0x20 for c in value)
        or value.startswith("-")
        or ".." in value
    ):
        raise UserError(
            "{ref} must be a branch, tag or commit id (no spaces, no '..', not starting with '-')",
            "ref",
        )
    return value


def git_url(
    settings: Settings, url: str, ref_: str, interval: int | None, spec: CredentialSpec
) -> tuple[str, str]:
    """The normalised URL and the ref of a repository to register, with the credentials
    `spec` asks for (checked, nothing changes); RefusedUrl or UserError otherwise."""
    kinds = spec.kinds()
    try:
        normalised = vet_git_url(
            url,
            allow_private=settings.allow_private_urls,
            allow_file=settings.allow_file_urls,
            token=TOKEN in kinds or GITHUB_APP in kinds,
            allow_insecure=settings.allow_insecure_transport,
        ).url
    except ValueError as error:
        raise RefusedUrl("{url}: {reason}", "url", reason=error) from None
    checked = ref(ref_)
    if interval is not None and not 1 <= interval <= MAX_INTERVAL:
        raise UserError(
            "{interval} must be between 1 and {limit} seconds", "interval", limit=MAX_INTERVAL
        )
    creds.check_spec(spec, normalised)
    return normalised, checked


def token_transport(settings: Settings, url: str, spec: CredentialSpec) -> None:
    """Refuse a token or GitHub App for a registered repository reached over plain http
    (as at registration); the rest of its URL was vetted then."""
    kinds = spec.kinds()
    if TOKEN not in kinds and GITHUB_APP not in kinds:
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
        raise UserError("{url}: {reason}", "url", reason=error) from None


def globs(values: list[str]) -> list[str]:
    """Path globs as a watch stores them (stripped), or UserError."""
    if len(values) > MAX_GLOBS:
        raise UserError("at most {limit} {paths} patterns", "paths", limit=MAX_GLOBS)
    cleaned: list[str] = []
    for glob in values:
        glob = glob.strip()
        if not glob or len(glob) > MAX_GLOB_LENGTH or "\n" in glob or "\0" in glob:
            raise UserError(
                "{paths} {glob} is not a usable glob pattern", "paths", glob=shown(glob)
            )
        cleaned.append(glob)
    try:
        # What delivery matches with (gitignore syntax, linear time, bounded in size).
        GlobSpec.from_lines(cleaned)
    except ValueError as error:
        raise UserError("{paths}: {reason}", "paths", reason=error) from None
    return cleaned


def submodules(value: str | None) -> SubmoduleMode | None:
    """A `submodules` choice (None: as it is), or UserError."""
    if value is None:
        return None
    try:
        return SubmoduleMode.parse(value)
    except ValueError as error:
        raise UserError("{submodules}: {reason}", "submodules", reason=error) from None
