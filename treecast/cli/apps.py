"""`app`: register, list, change and remove apps, rotate their secrets."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from treecast.cli import common
from treecast.cli import format as cli_format
from treecast.cli.common import Commands, Result
from treecast.service.core import TreecastService


def register(commands: Commands[Any]) -> None:
    actions = common.group(
        commands,
        "app",
        "register and remove apps",
        "add, update, list, remove, rotate-secret, set-batch",
    )
    add = common.command(
        actions,
        "add",
        add_app,
        help="register an app; prints its id, secret and API token (shown once)",
    )
    add.add_argument("--name", required=True, help="a name for people")
    add.add_argument("--url", required=True, help="base URL; webhooks go to BASE_URL/create etc.")
    add.add_argument("--secret", help="a whsec_ secret (generated when omitted)")
    add.add_argument(
        "--batch", action="store_true", help="send file events in batches to BASE_URL/batch"
    )
    _add_scheme_flags(add)
    common.add_json(add)
    common.switch(
        actions, "set-batch", set_batch, "turn batch delivery (BASE_URL/batch) on or off for an app"
    )
    update = common.command(
        actions, "update", update_app, "app_id", help="change how an app's webhooks are signed"
    )
    _add_scheme_flags(update)
    common.add_json(update)
    common.add_json(common.command(actions, "list", list_apps, help="list apps"))
    common.add_json(
        common.command(
            actions, "remove", remove_app, "app_id", help="remove an app, its watches and ledgers"
        )
    )
    rotate = common.command(
        actions,
        "rotate-secret",
        rotate_secret,
        "app_id",
        help="add a secret (both sign) or --finish to keep only the newest",
    )
    rotate.add_argument("--secret", help="the new whsec_ secret (generated when omitted)")
    rotate.add_argument("--finish", action="store_true", help="drop every secret but the newest")
    common.add_json(rotate)


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
    common.add_choice(
        parser,
        "--treecast-events",
        "a docora app also receives Treecast-only events (sync_recovered)",
    )


async def add_app(service: TreecastService, args: argparse.Namespace) -> Result:
    app = await service.apps.add(
        args.name,
        args.url,
        args.secret,
        scheme=args.scheme,
        client_auth_key=common.env_value(args.client_auth_key_env, "--client-auth-key-env"),
        treecast_events=args.treecast_events,
        batch=args.batch,
    )
    signs = (
        "\nsigned as Docora did (X-Docora-Signature, with the client_auth_key given)"
        if args.scheme == "docora"
        else ""
    )
    shown = {"app_id": app.app_id, "name": app.name, "base_url": app.base_url}
    return Result(
        {**shown, "secret": app.secret, "token": app.token, "batch": args.batch},
        f"app {app.app_id} registered\nsecret (shown once, keep it): {app.secret}"
        f"\nAPI token (shown once, keep it): {app.token}{signs}"
        + ("\nbatch delivery: on" if args.batch else ""),
    )


async def set_batch(service: TreecastService, args: argparse.Namespace) -> Result:
    await service.apps.update(args.app_id, batch=args.state == "on")
    return Result(
        {"app_id": args.app_id, "batch": args.state == "on"},
        f"app {args.app_id}: batch delivery {args.state}",
    )


async def list_apps(service: TreecastService, args: argparse.Namespace) -> Result:
    apps = (await service.apps.list()).items
    lines = [
        f"{a.app_id}  {cli_format.printable(a.name):<20} {a.base_url}  watches={a.watches}"
        f"  scheme={a.scheme}  batch={'on' if a.batch else 'off'}"
        for a in apps
    ]
    return Result(
        {"apps": [asdict(a) for a in apps]},
        "\n".join(lines) or "no apps yet: starter.py app add --name N --url URL",
    )


async def update_app(service: TreecastService, args: argparse.Namespace) -> Result:
    app = await service.apps.update(
        args.app_id,
        scheme=args.scheme,
        client_auth_key=common.env_value(args.client_auth_key_env, "--client-auth-key-env"),
        treecast_events=args.treecast_events,
    )
    return Result(
        {"app_id": args.app_id, "scheme": app.scheme}, f"app {args.app_id} signs with {app.scheme}"
    )


async def remove_app(service: TreecastService, args: argparse.Namespace) -> Result:
    repositories = await service.apps.remove(args.app_id)
    return Result(
        {"removed": args.app_id, "repositories": repositories}, f"app {args.app_id} removed"
    )


async def rotate_secret(service: TreecastService, args: argparse.Namespace) -> Result:
    secret = await service.apps.rotate_secret(args.app_id, args.secret, finish=args.finish)
    if secret is None:
        return Result(
            {"app_id": args.app_id, "finished": True}, "only the newest secret is active now"
        )
    return Result(
        {"app_id": args.app_id, "secret": secret},
        f"new secret (shown once; old and new both sign until --finish): {secret}",
    )
