"""`import-docora`: move a Docora installation's state into Treecast, resending nothing.

Reads Docora's PostgreSQL tables (docs: /work/shared/reference/docora-spec.md section 1.2)
with SQLAlchemy core, decrypts its secrets (AES-256-GCM, `hex(iv16):hex(tag):hex(ct)`,
keyed with Docora's `ENCRYPTION_KEY`) and writes, in one Treecast transaction:

- apps with the same ids, names and base URLs, on the `docora` signing scheme with
  their `client_auth_key` (re-encrypted with Treecast's key) and their bcrypt token
  hashes, so receivers and API clients keep working unchanged;
- repositories with the same ids (the remote's default branch);
- watches with their status, retry count and last error, and each app's own GitHub
  token for it (Docora's `github_token_encrypted`, per app as here); each app's access
  is checked with it at the repository's first sync, before anything is delivered;
- each app's delivery ledger, as rows without a blob id (`IMPORTED_BLOB_ID`): the
  first sync hashes those files once and sends only what changed since Docora's last
  delivery (`treecast.delivery.changes.compute_changes`).

Rows already in Treecast are left as they are (Treecast's state wins), so a second run
changes nothing. Every secret is decrypted before anything is written: a wrong key is
refused with one line and the database untouched.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, NoSuchTableError
from sqlmodel import Session

from models.tables import App, Repository, Watch, WatchStatus
from treecast import store
from treecast.config import Settings
from treecast.crypto import Cipher, generate_webhook_secret
from treecast.paths import unsafe_path_reason
from treecast.service.errors import UserError
from treecast.service.results import DocoraImportReport
from treecast.store import apps as app_rows
from treecast.store import keys, ledger
from treecast.store import repositories as repository_rows
from treecast.store import watches as watch_rows
from treecast.urls import normalise_git_url, validate_base_url
from treecast.webhooks.signing import SigningScheme

APP_ID = re.compile(r"^app_[0-9a-f]{24}$")
REPO_ID = re.compile(r"^repo_[0-9a-f]{24}$")

# Docora's app_repositories.status -> Treecast's Watch.status
STATUSES = {
    "pending_snapshot": WatchStatus.PENDING,
    "scanning": WatchStatus.PENDING,  # a job cut short by stopping Docora: sync again
    "synced": WatchStatus.SYNCED,
    "failed": WatchStatus.FAILED,
}


class WrongKey(UserError):
    """Docora's ENCRYPTION_KEY is malformed or does not decrypt its secrets."""


def docora_key(hex_key: str) -> bytes:
    """The 32 bytes of a Docora ENCRYPTION_KEY (64 hex characters)."""
    value = (hex_key or "").strip()
    if not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise WrongKey("Docora's ENCRYPTION_KEY must be 64 hex characters (32 bytes)")
    return bytes.fromhex(value)


def docora_decrypt(key: bytes, value: str) -> str:
    """One Docora secret: `hex(iv):hex(tag):hex(ciphertext)`, AES-256-GCM, no AAD.

    Raises ValueError for a malformed value, InvalidTag for a wrong key."""
    parts = value.split(":")
    if len(parts) != 3:
        raise ValueError("not Docora's iv:tag:ciphertext format")
    iv, tag, ciphertext = (bytes.fromhex(p) for p in parts)
    if len(tag) != 16 or not iv:
        raise ValueError("not Docora's iv:tag:ciphertext format")
    return AESGCM(key).decrypt(iv, ciphertext + tag, None).decode("utf-8")


def docora_encrypt(key: bytes, plain: str, iv: bytes) -> str:
    """Docora's format for `plain` (tests build Docora databases with it)."""
    sealed = AESGCM(key).encrypt(iv, plain.encode(), None)
    return f"{iv.hex()}:{sealed[-16:].hex()}:{sealed[:-16].hex()}"


def _engine_url(database_url: str) -> str:
    """Docora's DATABASE_URL with the psycopg driver SQLAlchemy needs."""
    try:
        url = make_url(database_url)
    except Exception:
        raise UserError("{database_url} is not a database URL", "database_url") from None
    if url.drivername in ("postgres", "postgresql"):
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def read_docora(database_url: str) -> dict[str, list[dict[str, Any]]]:
    """Every row the import needs from Docora's database, read in one read-only transaction."""
    queries = {
        "apps": "SELECT app_id, token_hash, app_name, base_url, email, website, description,"
        " created_at, client_auth_key_encrypted FROM apps ORDER BY app_id",
        "repositories": "SELECT repository_id, github_url, owner, name, created_at"
        " FROM repositories ORDER BY repository_id",
        "links": "SELECT app_id, repository_id, github_token_encrypted, created_at, status,"
        " retry_count, last_error, last_scanned_at FROM app_repositories"
        " ORDER BY app_id, repository_id",
        "delivered": "SELECT app_id, repository_id, file_path, file_sha, delivered_at"
        " FROM app_delivered_files ORDER BY app_id, repository_id, file_path",
    }
    engine = create_engine(_engine_url(database_url), pool_pre_ping=True)
    try:
        with engine.connect() as connection:
            connection.execute(text("SET TRANSACTION READ ONLY"))
            return {
                name: [dict(row._mapping) for row in connection.execute(text(sql))]
                for name, sql in queries.items()
            }
    except (DBAPIError, NoSuchTableError) as error:
        reason = str(getattr(error, "orig", error)).strip().splitlines()[0]
        raise UserError(f"cannot read Docora's database: {reason}") from None
    finally:
        engine.dispose()


def _check_key(key: bytes, rows: dict[str, list[dict[str, Any]]]) -> None:
    """Refuse a key that decrypts none of Docora's secrets (before anything is written)."""
    values = [a["client_auth_key_encrypted"] for a in rows["apps"]]
    values += [link["github_token_encrypted"] for link in rows["links"]]
    tried = wrong = 0
    for value in values:
        if not value:
            continue
        tried += 1
        try:
            docora_decrypt(key, value)
        except InvalidTag:
            wrong += 1
        except ValueError:
            pass  # malformed: reported per row
    if tried and wrong == tried:
        raise WrongKey(
            "the ENCRYPTION_KEY given does not decrypt Docora's secrets "
            "(is it the ENCRYPTION_KEY of that Docora?); nothing was imported"
        )


def _decrypted(key: bytes, value: str, what: str, skipped: list[str]) -> str | None:
    try:
        return docora_decrypt(key, value)
    except (InvalidTag, ValueError) as error:
        reason = "wrong key for this value" if isinstance(error, InvalidTag) else str(error)
        skipped.append(f"{what}: its encrypted value does not decrypt ({reason})")
        return None


def _when(value: Any) -> datetime | None:
    return value if isinstance(value, datetime) else None


@dataclass
class Docora:
    """A Docora database as read, with its key (checked against its secrets)."""

    key: bytes
    rows: dict[str, list[dict[str, Any]]]


def read(database_url: str, encryption_key: str) -> Docora:
    """Read a Docora database and check its ENCRYPTION_KEY decrypts its secrets."""
    key = docora_key(encryption_key)
    rows = read_docora(database_url)
    _check_key(key, rows)
    return Docora(key, rows)


def write(
    session: Session, settings: Settings, cipher: Cipher, docora: Docora, *, dry_run: bool
) -> DocoraImportReport:
    """Import Docora's state in the caller's transaction (see the module docstring);
    nothing is written with `dry_run`."""
    key, rows = docora.key, docora.rows
    report = DocoraImportReport(dry_run=dry_run)
    apps = _plan_apps(settings, session, cipher, key, rows["apps"], report)
    tokens = _watch_tokens(key, rows["links"], apps, report.skipped)
    repos = _plan_repositories(settings, session, rows["repositories"], report)
    watches = _plan_watches(session, cipher, rows["links"], apps, repos, tokens, report)
    _plan_ledgers(session, rows["delivered"], watches, report)
    if dry_run:
        store.discard(session)
    elif report.changed:
        keys.remember(session, cipher)
    return report


def _new_rows(
    rows: list[dict[str, Any]],
    kind: str,
    pattern: re.Pattern[str],
    found: Callable[[str], object | None],
    report: DocoraImportReport,
    usable: set[str],
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """The rows of `kind` ("app", "repository") Treecast lacks: (id, how to name it, row).
    A row whose id is not Treecast's form is skipped; one Treecast has is counted, usable."""
    prefix = {"app": "app_", "repository": "repo_"}[kind]
    for row in rows:
        row_id = row[f"{kind}_id"]
        what = f"{kind} {row_id}"
        if not pattern.match(row_id or ""):
            report.skipped.append(f"{what}: its id is not {prefix} + 24 hex characters")
        elif found(row_id) is not None:
            report.already_present += 1
            usable.add(row_id)
        else:
            yield row_id, what, row


def _plan_apps(
    settings: Settings,
    session: Session,
    cipher: Cipher,
    key: bytes,
    rows: list[dict[str, Any]],
    report: DocoraImportReport,
) -> set[str]:
    """Add the apps Treecast lacks; the ids of every app whose watches may be imported."""
    usable: set[str] = set()
    found = partial(app_rows.get, session)
    for app_id, what, row in _new_rows(rows, "app", APP_ID, found, report, usable):
        try:
            base_url = validate_base_url(
                row["base_url"], allow_private=settings.allow_private_urls, resolve=False
            )
        except ValueError as error:
            report.skipped.append(f"{what}: base URL refused ({error})")
            continue
        client_auth_key = _decrypted(
            key, row["client_auth_key_encrypted"] or "", f"{what} client_auth_key", report.skipped
        )
        if client_auth_key is None:
            continue
        token_hash = row["token_hash"] or None
        if token_hash is not None and not token_hash.startswith(("$2a$", "$2b$", "$2y$")):
            report.skipped.append(f"{what} bearer token: not a bcrypt hash (issue a new token)")
            token_hash = None
        app_rows.add(
            session,
            App(
                id=app_id,
                name=(row["app_name"] or app_id)[:200],
                base_url=base_url,
                # Unused by the docora scheme; there for a later switch to Standard Webhooks.
                secrets_encrypted=cipher.encrypt_list([generate_webhook_secret()]),
                email=row["email"],
                website=row["website"],
                description=row["description"],
                created_at=_when(row["created_at"]) or datetime.now().astimezone(),
                signing_scheme=SigningScheme.DOCORA,
                client_auth_key_encrypted=cipher.encrypt(client_auth_key),
                docora_token_hash=token_hash,
            ),
        )
        report.apps.append(app_id)
        usable.add(app_id)
    return usable


def _watch_tokens(
    key: bytes, links: list[dict[str, Any]], apps: set[str], skipped: list[str]
) -> dict[tuple[str, str], str]:
    """Each app's own GitHub token for each repository it watches, by (app, repository)."""
    found: dict[tuple[str, str], str] = {}
    for link in links:
        if link["app_id"] not in apps or not link["github_token_encrypted"]:
            continue
        what = f"GitHub token of {link['app_id']} for {link['repository_id']}"
        token = _decrypted(key, link["github_token_encrypted"], what, skipped)
        if token is not None:
            found[(link["app_id"], link["repository_id"])] = token
    return found


def _plan_repositories(
    settings: Settings,
    session: Session,
    rows: list[dict[str, Any]],
    report: DocoraImportReport,
) -> set[str]:
    usable: set[str] = set()
    found = partial(repository_rows.get, session)
    for repository_id, what, row in _new_rows(rows, "repository", REPO_ID, found, report, usable):
        try:
            url = normalise_git_url(row["github_url"])
        except ValueError as error:
            report.skipped.append(f"{what}: URL refused ({error})")
            continue
        if url.startswith("file://") and not settings.allow_file_urls:
            report.skipped.append(f"{what}: file:// URLs need TREECAST_ALLOW_FILE_URLS=1")
            continue
        # Docora always synced `main`; Treecast follows the remote's default branch (ref "").
        twin = repository_rows.find(session, url, "")
        if twin is not None:
            report.skipped.append(f"{what}: {url} is already registered in Treecast as {twin.id}")
            continue
        repository_rows.add(
            session,
            Repository(
                id=repository_id,
                url=url,
                ref="",
                created_at=_when(row["created_at"]) or datetime.now().astimezone(),
            ),
        )
        report.repositories.append(repository_id)
        usable.add(repository_id)
    return usable


def _plan_watches(
    session: Session,
    cipher: Cipher,
    links: list[dict[str, Any]],
    apps: set[str],
    repos: set[str],
    tokens: dict[tuple[str, str], str],
    report: DocoraImportReport,
) -> set[tuple[str, str]]:
    """Add the watches Treecast lacks; the pairs whose ledgers are imported (new ones only)."""
    new: set[tuple[str, str]] = set()
    for link in links:
        pair = (link["app_id"], link["repository_id"])
        what = f"watch of {pair[1]} by {pair[0]}"
        if pair[0] not in apps or pair[1] not in repos:
            report.skipped.append(f"{what}: its app or repository was not imported")
            continue
        if watch_rows.get(session, *pair) is not None:
            report.already_present += 1
            continue
        status = STATUSES.get(link["status"] or "", WatchStatus.PENDING)
        token = tokens.get(pair)
        watch_rows.add(
            session,
            Watch(
                app_id=pair[0],
                repository_id=pair[1],
                token_encrypted=cipher.encrypt(token) if token else None,
                status=status,
                retry_count=int(link["retry_count"] or 0),
                last_error=link["last_error"],
                last_error_type="DocoraError" if link["last_error"] else None,
                last_synced_at=_when(link["last_scanned_at"]),
                created_at=_when(link["created_at"]) or datetime.now().astimezone(),
            ),
        )
        report.watches.append(f"{pair[0]} {pair[1]}")
        new.add(pair)
    return new


def _plan_ledgers(
    session: Session,
    rows: list[dict[str, Any]],
    watches: set[tuple[str, str]],
    report: DocoraImportReport,
) -> None:
    """Each new watch's ledger, as imported rows (a content SHA-256, no blob id)."""
    kept_out = 0
    for row in rows:
        pair = (row["app_id"], row["repository_id"])
        if pair not in watches:
            if watch_rows.get(session, *pair) is not None:
                report.already_present += 1
            else:
                kept_out += 1
            continue
        path, sha = row["file_path"], (row["file_sha"] or "").lower()
        if unsafe_path_reason(path) is not None or not re.fullmatch(r"[0-9a-f]{64}", sha):
            report.skipped.append(
                f"delivered file {path!r} of {pair[0]} for {pair[1]}: "
                "unsafe path or not a SHA-256 (it will be sent again)"
            )
            continue
        ledger.add_imported(
            session, *pair, path, sha, _when(row["delivered_at"]) or datetime.now().astimezone()
        )
        report.ledger_rows += 1
    if kept_out:
        report.skipped.append(
            f"{kept_out} delivered files: their watch was not imported (see above)"
        )
