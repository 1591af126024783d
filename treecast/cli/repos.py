"""`repo`: register repositories (for an app, with its credentials), list and remove
them, set an app's credentials, rotate the push-hook secret."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from treecast.cli import common
from treecast.cli import credentials as cli_credentials
from treecast.cli.common import Commands, Result
from treecast.service.core import TreecastService
from treecast.service.errors import Unreachable, UserError
from treecast.service.results import Repository


def register(commands: Commands[Any]) -> None:
    actions = common.group(
        commands,
        "repo",
        "register and remove repositories",
        "add, list, remove, set-credentials, rotate-push-secret",
    )
    add = common.command(
        actions, "add", add_repository, help="register a repository and start syncing it"
    )
    add.add_argument(
        "url", metavar="GIT_URL", help="https://, ssh://, git@host:path or file:// URL"
    )
    add.add_argument(
        "--ref", default="", help="branch, tag or commit (default: the remote's default branch)"
    )
    add.add_argument(
        "--interval",
        type=int,
        help="poll interval in seconds (default: TREECAST_POLL_INTERVAL_SECONDS)",
    )
    add.add_argument(
        "--app",
        metavar="APP_ID",
        help="the app that watches it, with the credentials given (they are the app's own)",
    )
    add.add_argument(
        "--path",
        action="append",
        default=[],
        metavar="GLOB",
        help="with --app: only paths matching",
    )
    cli_credentials.add_arguments(add, rotating=False)
    common.add_json(add)
    credentials = common.command(
        actions,
        "set-credentials",
        set_credentials,
        "repository_id",
        help="rotate or replace an app's token, deploy key, host keys or GitHub App for a "
        "repository (every watching app's without --app)",
    )
    credentials.add_argument(
        "--app", metavar="APP_ID", help="only this app's watch (default: every watch of it)"
    )
    credentials.set_defaults(rotating=True)
    cli_credentials.add_arguments(credentials, rotating=True)
    common.add_json(credentials)
    common.add_json(common.command(actions, "list", list_repositories, help="list repositories"))
    common.add_json(
        common.command(
            actions,
            "remove",
            remove_repository,
            "repository_id",
            help="stop syncing a repository and forget it",
        )
    )
    common.add_json(
        common.command(
            actions,
            "rotate-push-secret",
            rotate_push_secret,
            "repository_id",
            help="a new secret for the git host's push hook (shown once; the old one stops "
            "working)",
        )
    )


async def add_repository(service: TreecastService, args: argparse.Namespace) -> Result:
    spec = cli_credentials.spec_from_args(args)
    if args.app is None and args.path:
        raise UserError("--path needs --app (the app whose watch it limits)")
    scanned = await common.scan_unconfirmed(service, args, args.url, spec)
    if scanned is not None:
        return scanned
    if args.app is None:
        added = await service.repositories.add(
            args.url, args.ref, interval=args.interval, credentials=spec
        )
        rid, url, ref, created = added.repository_id, added.url, added.ref, added.created
        credentials, push_secret, unreachable = (
            added.credentials,
            added.push_secret,
            added.unreachable,
        )
    else:
        watched = await service.watches.watch(
            args.app,
            url=args.url,
            ref=args.ref,
            interval=args.interval,
            paths=args.path or None,
            credentials=spec,
            resync=True,
        )
        rid, url, ref, created = (
            watched.repository_id,
            watched.url,
            watched.ref,
            watched.repository_created,
        )
        credentials, push_secret, unreachable = (
            watched.credentials,
            watched.push_secret,
            watched.unreachable,
        )
        if watched.pending:
            # It cannot fetch before the key is on the git host: no sync (and no failure) yet.
            verb = "registered" if created else "already registered"
            return common.new_deploy_key(rid, url, ref, credentials, verb, args.app)
    if unreachable is not None:
        raise Unreachable(
            f"repository {rid} is registered, but its sync could not start: {unreachable}; "
            f"run `starter.py sync {rid}` {unreachable.once}",
            unreachable.once,
        )
    verb = "registered" if created else "already registered"
    data: dict[str, Any] = {
        "repository_id": rid,
        "url": url,
        "ref": ref,
        "created": created,
        "credentials": asdict(credentials),
    }
    text = f"repository {rid} {verb} ({url}); syncing started"
    if args.app:
        data["app_id"] = args.app
        text += f"\n{args.app} watches it" + (
            f" with its {credentials.kind}" if credentials.kind != "none" else ""
        )
    if push_secret:
        data["push_secret"] = push_secret
        data["push_url"] = service.repositories.push_url()
        text += (
            f"\npush hook (optional; shown once): URL {data['push_url']} "
            f"(or /hooks/gitlab, /hooks/gitea), secret {push_secret}"
        )
    return Result(data, text)


async def set_credentials(service: TreecastService, args: argparse.Namespace) -> Result:
    spec = cli_credentials.spec_from_args(args)
    scanned = await common.scan_unconfirmed(service, args, None, spec)
    if scanned is not None:
        return scanned
    done = await service.watches.set_credentials(args.repository_id, spec, app_id=args.app)
    rid = done.repository_id
    whose = ", ".join(done.app_ids)
    if done.pending:
        return common.new_deploy_key(rid, done.url, done.ref, done.credentials, "updated", whose)
    if done.unreachable is not None:
        raise common.saved_but_unreachable(
            f"the credentials of {rid} for {whose} are saved",
            "They are used",
            rid,
            done.unreachable,
        ) from None
    return Result(
        {"repository_id": rid, "app_ids": done.app_ids, "credentials": asdict(done.credentials)},
        f"credentials of {rid} for {whose}: {done.credentials.summary()} (the git host "
        f"accepted them); a sync was requested (if its breaker is open: starter.py reset {rid})",
    )


async def list_repositories(service: TreecastService, args: argparse.Namespace) -> Result:
    repos = await service.repositories.list()
    lines = [
        f"{r.repository_id}  {r.url}  ref={r.ref or '(default)'}  watches={r.watches}"
        f"  fetched with={r.credentials.kind}"
        + (f" ({r.fetched_with}'s)" if r.fetched_with else "")
        for r in repos
    ]
    return Result(
        {"repositories": [shown(r) for r in repos]},
        "\n".join(lines) or "no repositories yet: starter.py repo add GIT_URL",
    )


def shown(repository: Repository) -> dict[str, Any]:
    """A repository as `repo list --json` shows it."""
    return common.json_of(
        repository,
        "repository_id url ref poll_interval_seconds has_token watches created_at "
        "credentials fetched_with",
    )


async def remove_repository(service: TreecastService, args: argparse.Namespace) -> Result:
    await service.repositories.remove(args.repository_id)
    return Result(
        {"removed": args.repository_id},
        f"repository {args.repository_id} removed; its sync stopped",
    )


async def rotate_push_secret(service: TreecastService, args: argparse.Namespace) -> Result:
    secret = await service.repositories.rotate_push_secret(args.repository_id)
    return Result(
        {"repository_id": args.repository_id, "push_secret": secret},
        f"new push secret (shown once; paste it into the git host's hook): {secret}",
    )
