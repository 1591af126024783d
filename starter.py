"""Treecast's command line: register apps and repositories, watch, sync, inspect.

Run `python starter.py --help`. Every command accepts `--json` and then prints
one JSON document. Mistakes, bad settings and a database that cannot be reached print
one line on stderr and exit with status 2; a Temporal server that cannot be reached or
cannot do what was asked (no worker answers, search attributes missing, a refused call)
exits with status 3; a failed sync with 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NoReturn

from sqlalchemy.exc import DBAPIError

from treecast.cli import credentials as cli_credentials
from treecast.cli import format as cli_format
from treecast.cli import mirrors as cli_mirrors
from treecast.config import ConfigError, Settings, load_settings
from treecast.db import SchemaBehind, SchemaStatus, connect_failure
from treecast.process_exit import run_and_exit
from treecast.service.core import RepositoryStatus, TreecastService
from treecast.service.credentials import CredentialInfo, CredentialSpec
from treecast.service.errors import Unreachable, UserError, shown, temporal_failure

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


@dataclass
class Result:
    """What one command prints: `data` as the `--json` document, `text` for a person.

    `problem` is an error printed after a result that still stands (status without
    Temporal); `exit_code` is the process's status.
    """

    data: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    exit_code: int = 0
    problem: str | None = None


def _seconds(raw: str) -> float:
    """An argparse type: a finite, positive number of seconds (nan or -1 would never end or
    end at once)."""
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{shown(raw)} is not a number of seconds") from None
    if not 0 < value <= 86400 * 365:
        raise argparse.ArgumentTypeError(f"{shown(raw)} must be between 0 and 31536000 seconds")
    return value


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports mistakes as one line and exit status 2 (no usage dump on stderr)."""

    def error(self, message: str) -> Any:
        if len(message) > 300:  # argparse quotes the bad value whole, however long
            message = message[:200] + "…" + message[-60:]
        raise UserError(f"{message} (see {self.prog} --help)")


def _add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def build_parser() -> ArgumentParser:
    """The whole command tree (also documents it: `starter.py COMMAND --help`)."""
    parser = ArgumentParser(
        prog="starter.py",
        description="Push the files of git repositories to apps as signed webhooks.",
        epilog="Settings come from the environment; see docs/configuration.md.",
    )
    _add_json(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)

    app = commands.add_parser("app", help="register and remove apps")
    _add_json(app)
    app_cmds = app.add_subparsers(dest="app_command", metavar="ACTION", parser_class=ArgumentParser)
    add = app_cmds.add_parser(
        "add", help="register an app; prints its id, secret and API token (shown once)"
    )
    add.add_argument("--name", required=True, help="a name for people")
    add.add_argument("--url", required=True, help="base URL; webhooks go to BASE_URL/create etc.")
    add.add_argument("--secret", help="a whsec_ secret (generated when omitted)")
    add.add_argument(
        "--batch", action="store_true", help="send file events in batches to BASE_URL/batch"
    )
    _add_scheme_flags(add)
    _add_json(add)
    sb = app_cmds.add_parser(
        "set-batch", help="turn batch delivery (BASE_URL/batch) on or off for an app"
    )
    sb.add_argument("app_id", metavar="APP_ID")
    sb.add_argument("state", choices=["on", "off"], metavar="on|off")
    _add_json(sb)
    upd = app_cmds.add_parser("update", help="change how an app's webhooks are signed")
    upd.add_argument("app_id", metavar="APP_ID")
    _add_scheme_flags(upd)
    _add_json(upd)
    lst = app_cmds.add_parser("list", help="list apps")
    _add_json(lst)
    rm = app_cmds.add_parser("remove", help="remove an app, its watches and ledgers")
    rm.add_argument("app_id", metavar="APP_ID")
    _add_json(rm)
    rot = app_cmds.add_parser(
        "rotate-secret", help="add a secret (both sign) or --finish to keep only the newest"
    )
    rot.add_argument("app_id", metavar="APP_ID")
    rot.add_argument("--secret", help="the new whsec_ secret (generated when omitted)")
    rot.add_argument("--finish", action="store_true", help="drop every secret but the newest")
    _add_json(rot)

    repo = commands.add_parser("repo", help="register and remove repositories")
    _add_json(repo)
    repo_cmds = repo.add_subparsers(
        dest="repo_command", metavar="ACTION", parser_class=ArgumentParser
    )
    radd = repo_cmds.add_parser("add", help="register a repository and start syncing it")
    radd.add_argument(
        "url", metavar="GIT_URL", help="https://, ssh://, git@host:path or file:// URL"
    )
    radd.add_argument(
        "--ref", default="", help="branch, tag or commit (default: the remote's default branch)"
    )
    radd.add_argument(
        "--interval",
        type=int,
        help="poll interval in seconds (default: TREECAST_POLL_INTERVAL_SECONDS)",
    )
    radd.add_argument(
        "--app",
        metavar="APP_ID",
        help="the app that watches it, with the credentials given (they are the app's own)",
    )
    radd.add_argument(
        "--path",
        action="append",
        default=[],
        metavar="GLOB",
        help="with --app: only paths matching",
    )
    radd.add_argument(
        "--token-env", metavar="VAR", help="name of an environment variable holding an access token"
    )
    cli_credentials.add_arguments(radd, rotating=False)
    _add_json(radd)
    rcred = repo_cmds.add_parser(
        "set-credentials",
        help="rotate or replace an app's token, deploy key, host keys or GitHub App for a "
        "repository (every watching app's without --app)",
    )
    rcred.add_argument("repository_id", metavar="REPO_ID")
    rcred.add_argument(
        "--app", metavar="APP_ID", help="only this app's watch (default: every watch of it)"
    )
    rcred.set_defaults(rotating=True)
    cli_credentials.add_arguments(rcred, rotating=True)
    _add_json(rcred)
    rlst = repo_cmds.add_parser("list", help="list repositories")
    _add_json(rlst)
    rrm = repo_cmds.add_parser("remove", help="stop syncing a repository and forget it")
    rrm.add_argument("repository_id", metavar="REPO_ID")
    _add_json(rrm)
    rps = repo_cmds.add_parser(
        "rotate-push-secret",
        help="a new secret for the git host's push hook (shown once; the old one stops working)",
    )
    rps.add_argument("repository_id", metavar="REPO_ID")
    _add_json(rps)

    db = commands.add_parser("db", help="the database schema: its revision, upgrading it")
    _add_json(db)
    db_cmds = db.add_subparsers(dest="db_command", metavar="ACTION", parser_class=ArgumentParser)
    _add_json(db_cmds.add_parser("current", help="the schema revision, and this release's"))
    _add_json(
        db_cmds.add_parser(
            "upgrade", help="migrate the schema to this release's (stamps a pre-migration one)"
        )
    )

    api = commands.add_parser("api", help="run the HTTP API server (see docs/api.md)")
    api.add_argument(
        "--listen", metavar="HOST:PORT", help="address to listen on (default: TREECAST_API_LISTEN)"
    )

    w = commands.add_parser(
        "watch",
        help="make an app watch a repository, with the app's own credentials for a private one",
    )
    w.add_argument("app_id", metavar="APP_ID")
    w.add_argument("repository_id", metavar="REPO_ID")
    w.add_argument(
        "--path",
        action="append",
        default=[],
        metavar="GLOB",
        help="only paths matching (repeatable)",
    )
    w.add_argument(
        "--submodules",
        choices=("off", "shallow", "recursive"),
        help="deliver submodules' files too (default off; docs/repository-contents.md)",
    )
    w.add_argument(
        "--lfs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="deliver Git LFS objects instead of their pointer files (default off)",
    )
    w.add_argument(
        "--token-env", metavar="VAR", help="name of an environment variable holding an access token"
    )
    cli_credentials.add_arguments(w, rotating=False)
    _add_json(w)
    uw = commands.add_parser("unwatch", help="stop a watch and forget what the app received")
    uw.add_argument("app_id", metavar="APP_ID")
    uw.add_argument("repository_id", metavar="REPO_ID")
    _add_json(uw)

    s = commands.add_parser("sync", help="sync a repository now")
    s.add_argument("repository_id", metavar="REPO_ID")
    s.add_argument(
        "--wait", action="store_true", help="return when the sync and its deliveries are done"
    )
    s.add_argument(
        "--timeout",
        type=_seconds,
        default=600.0,
        help="seconds to wait with --wait (default 600)",
    )
    _add_json(s)
    st = commands.add_parser("status", help="breaker, commits and per-app state")
    st.add_argument("repository_id", metavar="REPO_ID", nargs="?")
    _add_json(st)
    rs = commands.add_parser("reset", help="close an open breaker and sync now")
    rs.add_argument("repository_id", metavar="REPO_ID")
    _add_json(rs)
    for name, text in (
        ("pause", "stop polling a repository until resume"),
        ("resume", "poll it again"),
    ):
        toggle = commands.add_parser(name, help=text)
        toggle.add_argument("repository_id", metavar="REPO_ID")
        _add_json(toggle)
    rd = commands.add_parser(
        "redeliver", help="forget an app's ledger for a repository and send everything again"
    )
    rd.add_argument("app_id", metavar="APP_ID")
    rd.add_argument("repository_id", metavar="REPO_ID")
    rd.add_argument("--wait", action="store_true", help="return when every file was sent again")
    rd.add_argument(
        "--timeout", type=_seconds, default=600.0, help="seconds to wait with --wait (default 600)"
    )
    _add_json(rd)
    imp = commands.add_parser(
        "import-docora",
        help="import a Docora database: apps, tokens, repositories, watches, ledgers",
        description="Import a Docora database (one transaction, idempotent); the first sync "
        "then sends each app only what changed since Docora's last delivery. "
        "See docs/migrating-from-docora.md.",
    )
    imp.add_argument("--database-url", required=True, help="Docora's DATABASE_URL (PostgreSQL)")
    imp.add_argument(
        "--encryption-key-env",
        required=True,
        metavar="VAR",
        help="the environment variable holding Docora's ENCRYPTION_KEY (never the key itself)",
    )
    imp.add_argument(
        "--dry-run", action="store_true", help="print what would be imported; write nothing"
    )
    _add_json(imp)
    cli_mirrors.add_parsers(commands, _add_json)
    return parser


def _add_scheme_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scheme",
        choices=["standard-webhooks", "docora"],
        help="how webhooks are signed (default standard-webhooks; docora: Docora's headers)",
    )
    parser.add_argument(
        "--client-auth-key-env",
        metavar="VAR",
        help="the environment variable holding the docora scheme's client_auth_key",
    )
    parser.add_argument(
        "--treecast-events",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a docora app also receives Treecast-only events (sync_recovered)",
    )


def _env_value(var: str | None, flag: str) -> str | None:
    """The value of the environment variable a `--...-env` flag names (None without the flag)."""
    if var is None:
        return None
    value = os.environ.get(var)
    if not value:
        raise UserError(f"{flag} {var}: that environment variable is not set or empty")
    return value


# --- helpers ----------------------------------------------------------------


def _sentence(error: Exception) -> str:
    """An error's message ending like a sentence, to go on after it."""
    text = str(error)
    return text if text.endswith((".", "?", "!")) else f"{text}."


def _saved_but_unreachable(
    done: str, kept: str, repository_id: str, error: Unreachable
) -> Unreachable:
    """Temporal failed after a change was saved: say it is kept and how it gets synced."""
    if error.requested:  # the sync was requested, but no worker answered
        return Unreachable(
            f"{done} and a sync was requested, but {_sentence(error)} {kept} {error.once}",
            error.once,
        )
    return Unreachable(
        f"{done}, but no sync could be requested: {_sentence(error)} {kept} {error.once}: "
        f"at {repository_id}'s next poll, or at once with `starter.py sync {repository_id}` "
        "(needed too if its sync never started)",
        error.once,
    )


def _scan_unconfirmed(
    service: TreecastService, args: argparse.Namespace, url: str, spec: CredentialSpec
) -> Result | None:
    """With --scan-host-keys and no --accept-host-keys: print what the server offers and
    store nothing, unless a person at a terminal confirms (then `spec` accepts them)."""
    if not spec.scan_host_keys or spec.accept_host_keys:
        return None
    keys = service.scan_host_keys(url)
    confirmed = cli_credentials.confirm_scanned(
        keys, interactive=sys.stdin.isatty() and not args.json
    )
    if confirmed is not None:
        spec.accept_host_keys = confirmed
        return None
    listed = " ".join(f"--accept-host-keys {key.fingerprint}" for key in keys)
    return Result(
        {"host_keys": [asdict(key) for key in keys], "stored": False},
        "\n".join(["the server offers these host keys:", *cli_credentials.host_key_lines(keys)]),
        exit_code=EXIT_USAGE,
        problem=(
            "nothing stored: confirm the fingerprints with the git host, then run the command "
            f"again with the ones to pin: {listed}"
        ),
    )


def _new_deploy_key(
    repository_id: str, url: str, ref: str, info: CredentialInfo, verb: str, whose: str
) -> Result:
    return Result(
        {
            "repository_id": repository_id,
            "url": url,
            "ref": ref,
            "credentials": asdict(info),
        },
        "\n".join(
            [
                f"repository {repository_id} {verb} ({url}) with a new deploy key for {whose}",
                "add this public key to the git host as a read-only deploy key:",
                f"  {info.ssh_public_key}",
                f"  ({info.ssh_key_fingerprint})",
                f"then start syncing: starter.py sync {repository_id}",
            ]
        ),
    )


async def _set_credentials(service: TreecastService, args: argparse.Namespace) -> Result:
    spec = cli_credentials.spec_from_args(args)
    if spec.scan_host_keys and not spec.accept_host_keys:
        scanned = _scan_unconfirmed(service, args, service.repository(args.repository_id).url, spec)
        if scanned is not None:
            return scanned
    done = service.set_credentials(args.repository_id, spec, app_id=args.app)
    rid = done.repository_id
    whose = ", ".join(done.app_ids)
    if done.pending:
        return _new_deploy_key(rid, done.url, done.ref, done.credentials, "updated", whose)
    try:
        await service.start_sync(rid, what=f"the sync of {rid}")
    except Unreachable as error:
        raise _saved_but_unreachable(
            f"the credentials of {rid} for {whose} are saved", "They are used", rid, error
        ) from None
    return Result(
        {"repository_id": rid, "app_ids": done.app_ids, "credentials": asdict(done.credentials)},
        f"credentials of {rid} for {whose}: {done.credentials.summary()} (the git host "
        f"accepted them); a sync was requested (if its breaker is open: starter.py reset {rid})",
    )


# --- commands ---------------------------------------------------------------


async def cmd_app(service: TreecastService, args: argparse.Namespace) -> Result:
    action = args.app_command
    if action is None:
        raise UserError(
            "app needs an action: add, update, list, remove, rotate-secret, set-batch "
            "(see starter.py app --help)"
        )
    if action == "add":
        app = service.add_app(
            args.name,
            args.url,
            args.secret,
            scheme=args.scheme,
            client_auth_key=_env_value(args.client_auth_key_env, "--client-auth-key-env"),
            treecast_events=args.treecast_events,
        )
        if args.batch:
            service.set_app_batch(app.app_id, True)
        signs = (
            "\nsigned as Docora did (X-Docora-Signature, with the client_auth_key given)"
            if args.scheme == "docora"
            else ""
        )
        return Result(
            {**asdict(app), "batch": args.batch},
            f"app {app.app_id} registered\nsecret (shown once, keep it): {app.secret}"
            f"\nAPI token (shown once, keep it): {app.token}{signs}"
            + ("\nbatch delivery: on" if args.batch else ""),
        )
    if action == "set-batch":
        service.set_app_batch(args.app_id, args.state == "on")
        return Result(
            {"app_id": args.app_id, "batch": args.state == "on"},
            f"app {args.app_id}: batch delivery {args.state}",
        )
    if action == "list":
        apps = service.list_apps()
        lines = [
            f"{a.app_id}  {cli_format.printable(a.name):<20} {a.base_url}  watches={a.watches}"
            f"  scheme={a.scheme}  batch={'on' if a.batch else 'off'}"
            for a in apps
        ]
        return Result(
            {"apps": [asdict(a) for a in apps]},
            "\n".join(lines) or "no apps yet: starter.py app add --name N --url URL",
        )
    if action == "update":
        scheme = service.set_app_scheme(
            args.app_id,
            args.scheme,
            _env_value(args.client_auth_key_env, "--client-auth-key-env"),
            args.treecast_events,
        )
        return Result(
            {"app_id": args.app_id, "scheme": scheme}, f"app {args.app_id} signs with {scheme}"
        )
    if action == "remove":
        repositories = service.remove_app(args.app_id)
        return Result(
            {"removed": args.app_id, "repositories": repositories}, f"app {args.app_id} removed"
        )
    secret = service.rotate_app_secret(args.app_id, args.secret, args.finish)
    if secret is None:
        return Result(
            {"app_id": args.app_id, "finished": True}, "only the newest secret is active now"
        )
    return Result(
        {"app_id": args.app_id, "secret": secret},
        f"new secret (shown once; old and new both sign until --finish): {secret}",
    )


async def cmd_repo(service: TreecastService, args: argparse.Namespace) -> Result:
    action = args.repo_command
    if action is None:
        raise UserError(
            "repo needs an action: add, list, remove, set-credentials, rotate-push-secret "
            "(see starter.py repo --help)"
        )
    if action == "set-credentials":
        return await _set_credentials(service, args)
    if action == "add":
        spec = cli_credentials.spec_from_args(args)
        if args.app is None and args.path:
            raise UserError("--path needs --app (the app whose watch it limits)")
        scanned = _scan_unconfirmed(service, args, args.url, spec)
        if scanned is not None:
            return scanned
        repository, created = service.add_repository(
            args.url, args.ref, args.interval, None, spec, app_id=args.app, paths=args.path or None
        )
        rid = repository.repository_id
        if spec.generate_ssh_key:
            # It cannot fetch before the key is on the git host: no sync (and no failure) yet.
            return _new_deploy_key(
                rid,
                repository.url,
                repository.ref,
                repository.credentials,
                "registered" if created else "already registered",
                args.app,
            )
        try:
            await service.start_sync(rid, what=f"the start of {rid}'s sync")
        except Unreachable as error:
            raise Unreachable(
                f"repository {rid} is registered, but its sync could not start: {error}; "
                f"run `starter.py sync {rid}` {error.once}",
                error.once,
            ) from None
        verb = "registered" if created else "already registered"
        data: dict[str, Any] = {
            "repository_id": repository.repository_id,
            "url": repository.url,
            "ref": repository.ref,
            "created": created,
            "credentials": asdict(repository.credentials),
        }
        text = f"repository {repository.repository_id} {verb} ({repository.url}); syncing started"
        if args.app:
            data["app_id"] = args.app
            text += f"\n{args.app} watches it" + (
                f" with its {repository.credentials.kind}"
                if repository.credentials.kind != "none"
                else ""
            )
        if repository.push_secret:
            data["push_secret"] = repository.push_secret
            data["push_url"] = service.push_url()
            text += (
                f"\npush hook (optional; shown once): URL {data['push_url']} "
                f"(or /hooks/gitlab, /hooks/gitea), secret {repository.push_secret}"
            )
        return Result(data, text)
    if action == "list":
        repos = service.list_repositories()
        lines = [
            f"{r.repository_id}  {r.url}  ref={r.ref or '(default)'}  watches={r.watches}"
            f"  fetched with={r.credentials.kind}"
            + (f" ({r.fetched_with}'s)" if r.fetched_with else "")
            for r in repos
        ]
        return Result(
            {"repositories": [asdict(r) for r in repos]},
            "\n".join(lines) or "no repositories yet: starter.py repo add GIT_URL",
        )
    if action == "rotate-push-secret":
        secret = service.rotate_push_secret(args.repository_id)
        return Result(
            {"repository_id": args.repository_id, "push_secret": secret},
            f"new push secret (shown once; paste it into the git host's hook): {secret}",
        )
    await service.remove_repository(args.repository_id)
    return Result(
        {"removed": args.repository_id},
        f"repository {args.repository_id} removed; its sync stopped",
    )


def _schema(status: SchemaStatus) -> dict[str, Any]:
    return {"current": status.current, "head": status.head, "up_to_date": status.up_to_date}


async def cmd_db(service: TreecastService, args: argparse.Namespace) -> Result:
    if args.db_command is None:
        raise UserError("db needs an action: current or upgrade (see starter.py db --help)")
    if args.db_command == "current":
        status = service.schema_status()
        if status.up_to_date:
            text = f"{status.current} (this release's; up to date)"
        elif status.empty:
            text = f"empty database; it is created at {status.head} on first use"
        else:
            text = status.problem()
        return Result(_schema(status), text)
    before, after = service.upgrade_schema()
    if before.up_to_date:
        text = f"the schema is up to date ({after.current})"
    else:
        text = f"upgraded the schema from {before.shown} to {after.current}"
    return Result({**_schema(after), "was": before.current}, text)


async def cmd_watch(service: TreecastService, args: argparse.Namespace) -> Result:
    spec = cli_credentials.spec_from_args(args)
    if spec.scan_host_keys and not spec.accept_host_keys:
        scanned = _scan_unconfirmed(service, args, service.repository(args.repository_id).url, spec)
        if scanned is not None:
            return scanned
    watch = service.watch(
        args.app_id, args.repository_id, args.path, spec, args.submodules, args.lfs
    )
    if watch.pending:
        repository = service.repository(args.repository_id)
        return _new_deploy_key(
            args.repository_id,
            repository.url,
            repository.ref,
            watch.credentials,
            "watched",
            args.app_id,
        )
    what = "now watches" if watch.created else "watch updated:"
    try:
        await service.start_sync(args.repository_id, reuse_recent=True)
    except Unreachable as error:
        raise _saved_but_unreachable(
            f"{args.app_id} {what} {args.repository_id}",
            "The watch is saved and syncs",
            args.repository_id,
            error,
        ) from None
    return Result(
        {
            "app_id": args.app_id,
            "repository_id": args.repository_id,
            "paths": watch.paths,
            "submodules": watch.submodules,
            "lfs": watch.lfs,
            "created": watch.created,
            "credentials": asdict(watch.credentials),
        },
        f"{args.app_id} {what} {args.repository_id}"
        + (f" (paths: {', '.join(watch.paths)})" if watch.paths else "")
        + (f" with its own {watch.credentials.kind}" if watch.credentials.kind != "none" else "")
        + (f" (submodules: {watch.submodules})" if watch.submodules != "off" else "")
        + (" (lfs)" if watch.lfs else "")
        + "; a sync was requested",
    )


async def cmd_unwatch(service: TreecastService, args: argparse.Namespace) -> Result:
    forgotten = service.unwatch(args.app_id, args.repository_id)
    return Result(
        {
            "app_id": args.app_id,
            "repository_id": args.repository_id,
            "ledger_rows_removed": forgotten,
        },
        f"{args.app_id} no longer watches {args.repository_id}",
    )


async def _sync_and_wait(
    service: TreecastService, repository_id: str, timeout: float, as_json: bool
) -> Result:
    """Sync now and wait for that sync's deliveries, printing progress on stderr."""
    progress: Callable[[str], None] | None = (
        None if as_json else (lambda line: print(line, file=sys.stderr, flush=True))
    )
    try:
        outcome = await service.sync_and_wait(repository_id, timeout=timeout, on_progress=progress)
    except TimeoutError as error:
        return Result({"repository_id": repository_id, "ok": False}, str(error), EXIT_FAILED)
    data = cli_format.plain(outcome) or {}
    ok = bool(data.get("ok", False))
    text = str(data.get("summary") or ("sync done" if ok else "sync failed"))
    return Result(data, text, 0 if ok else EXIT_FAILED)


async def cmd_sync(service: TreecastService, args: argparse.Namespace) -> Result:
    service.poll_interval(args.repository_id)  # an unknown id is a UserError
    if not args.wait:
        await service.start_sync(args.repository_id)
        return Result({"repository_id": args.repository_id, "requested": True}, "sync requested")
    try:
        return await _sync_and_wait(service, args.repository_id, args.timeout, args.json)
    except Unreachable as error:
        if not error.requested:
            raise
        raise Unreachable(
            f"the sync of {args.repository_id} was requested, but {_sentence(error)} "
            f"It starts {error.once}",
            error.once,
            requested=True,
        ) from None


def status_row(r: RepositoryStatus) -> dict[str, Any]:
    """One repository of `status --json`."""
    return {
        "repository_id": r.repository_id,
        "url": r.url,
        "ref": r.ref,
        "apps": r.apps,
        "sync": cli_format.plain(r.sync),
        "skipped_unsafe_paths": r.skipped_unsafe_paths,
        "credentials": asdict(r.credentials),
        "fetched_with": r.fetched_with,
    }


async def cmd_status(service: TreecastService, args: argparse.Namespace) -> Result:
    report = await service.status(args.repository_id)
    rows: list[dict[str, Any]] = [status_row(r) for r in report.repositories]
    text = cli_format.status_table(rows, report.unknown) if rows else "no repositories yet"
    result = Result({"repositories": rows}, text)
    if report.temporal_error:
        # What the database knows is still printed; the exit status says it is incomplete.
        result.data["temporal_error"] = report.temporal_error
        result.problem = report.temporal_error
        result.exit_code = EXIT_UNREACHABLE
    return result


async def cmd_pause_resume(service: TreecastService, args: argparse.Namespace) -> Result:
    """Pause or resume a repository's polling (its workflow keeps running)."""
    paused = args.command == "pause"
    if not await service.set_paused(args.repository_id, paused):
        raise UserError(
            f"{args.repository_id} has no running sync; start it with `starter.py sync`"
        )
    return Result(
        {"repository_id": args.repository_id, "paused": paused},
        "polling paused; `resume` to continue" if paused else "polling resumed",
    )


async def cmd_reset(service: TreecastService, args: argparse.Namespace) -> Result:
    await service.reset(args.repository_id)
    return Result(
        {"repository_id": args.repository_id, "reset": True}, "breaker closed; sync requested"
    )


async def cmd_redeliver(service: TreecastService, args: argparse.Namespace) -> Result:
    forgotten = service.forget_ledger(args.app_id, args.repository_id)
    said = f"forgot {forgotten} delivered files; the whole repository will be sent again"
    try:
        if args.wait:
            if not args.json:
                print(said, file=sys.stderr)
            result = await _sync_and_wait(service, args.repository_id, args.timeout, args.json)
            result.data = {"app_id": args.app_id, "ledger_rows_removed": forgotten, **result.data}
            return result
        await service.start_sync(args.repository_id)
    except Unreachable as error:
        raise _saved_but_unreachable(
            f"forgot {forgotten} files delivered to {args.app_id}",
            "They are sent again",
            args.repository_id,
            error,
        ) from None
    return Result(
        {
            "app_id": args.app_id,
            "repository_id": args.repository_id,
            "ledger_rows_removed": forgotten,
        },
        said,
    )


async def cmd_import_docora(service: TreecastService, args: argparse.Namespace) -> Result:
    key = _env_value(args.encryption_key_env, "--encryption-key-env")
    assert key is not None
    report = service.import_docora(args.database_url, key, dry_run=args.dry_run)
    lines = report.lines()
    if not args.dry_run and report.repositories:
        try:
            for repository_id in report.repositories:
                await service.start_sync(repository_id)
            lines.append(f"sync requested for {len(report.repositories)} repositories")
        except Unreachable as error:
            lines.append(
                f"imported, but no sync could be requested ({_sentence(error)}) "
                "Start the worker, then `starter.py sync REPO_ID` for each repository above."
            )
    return Result(asdict(report), "\n".join(lines))


async def cmd_mirrors(service: TreecastService, args: argparse.Namespace) -> Result:
    done = await cli_mirrors.run(service, args)
    for line in done.lines if done.lines is not None and not args.json else ():
        print(line)
    return Result(done.data, done.text)


COMMANDS: dict[
    str, Callable[[TreecastService, argparse.Namespace], Coroutine[Any, Any, Result]]
] = {
    "app": cmd_app,
    "repo": cmd_repo,
    "db": cmd_db,
    "watch": cmd_watch,
    "unwatch": cmd_unwatch,
    "sync": cmd_sync,
    "status": cmd_status,
    "reset": cmd_reset,
    "pause": cmd_pause_resume,
    "resume": cmd_pause_resume,
    "redeliver": cmd_redeliver,
    "import-docora": cmd_import_docora,
    **dict.fromkeys(cli_mirrors.COMMANDS, cmd_mirrors),
}


def _wants_json(argv: Sequence[str]) -> bool:
    return "--json" in argv


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, run one command, print its result; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = _wants_json(argv)
    settings: Settings | None = None
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            build_parser().print_help()
            return EXIT_USAGE
        settings = load_settings()
        if args.command == "api":
            from treecast.api.__main__ import serve

            return serve(settings, args.listen)
        result = asyncio.run(COMMANDS[args.command](TreecastService(settings), args))
    except (UserError, ConfigError, SchemaBehind) as error:
        return _fail(str(error), EXIT_USAGE, as_json)
    except DBAPIError as error:
        # An unreachable or unopenable database is a setting to fix, like a malformed one.
        line = connect_failure(settings.database_url, error) if settings else None
        if line is None:
            raise
        return _fail(line, EXIT_USAGE, as_json)
    except Unreachable as error:
        return _fail(str(error), EXIT_UNREACHABLE, as_json)
    except KeyboardInterrupt:
        return _fail("interrupted", 130, as_json)
    except Exception as error:
        # A Temporal failure some command did not expect; anything else keeps its traceback.
        failure = temporal_failure(error, "a request", settings)
        if failure is None:
            raise
        return _fail(str(failure), EXIT_UNREACHABLE, as_json)
    if as_json:
        print(json.dumps(result.data, indent=2, default=str))
    elif result.text:
        print(result.text)
    if result.problem:  # a result printed in spite of an error (status without Temporal)
        return _fail(result.problem, result.exit_code, as_json)
    return result.exit_code


def _fail(message: str, code: int, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"error": message}), file=sys.stderr)
    else:
        print(f"error: {message}", file=sys.stderr)
    return code


def cli() -> NoReturn:
    """The `treecast` console command: `main()` with its exit status.

    Not sys.exit: Python's shutdown can abort after Temporal was used (see process_exit).
    """
    run_and_exit(main)


if __name__ == "__main__":
    cli()
