"""`watch` and `unwatch`: an app watching a repository, with its own credentials."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from treecast.cli import common
from treecast.cli import credentials as cli_credentials
from treecast.cli.common import Commands, Result
from treecast.service.core import TreecastService


def register(commands: Commands[Any]) -> None:
    watch = common.command(
        commands,
        "watch",
        watch_repository,
        "app_id",
        "repository_id",
        help="make an app watch a repository, with the app's own credentials for a private one",
    )
    watch.add_argument(
        "--path",
        action="append",
        default=[],
        metavar="GLOB",
        help="only paths matching (repeatable)",
    )
    watch.add_argument(
        "--submodules",
        choices=("off", "shallow", "recursive"),
        help="deliver submodules' files too (default off; docs/repository-contents.md)",
    )
    common.add_choice(
        watch, "--lfs", "deliver Git LFS objects instead of their pointer files (default off)"
    )
    cli_credentials.add_arguments(watch, rotating=False)
    common.add_json(watch)
    common.add_json(
        common.command(
            commands,
            "unwatch",
            unwatch_repository,
            "app_id",
            "repository_id",
            help="stop a watch and forget what the app received",
        )
    )


async def watch_repository(service: TreecastService, args: argparse.Namespace) -> Result:
    spec = cli_credentials.spec_from_args(args)
    scanned = await common.scan_unconfirmed(service, args, None, spec)
    if scanned is not None:
        return scanned
    watch = await service.watches.watch(
        args.app_id,
        repository_id=args.repository_id,
        paths=args.path,
        credentials=spec,
        submodules=args.submodules,
        lfs=args.lfs,
        resync=True,
    )
    if watch.pending:
        return common.new_deploy_key(
            args.repository_id, watch.url, watch.ref, watch.credentials, "watched", args.app_id
        )
    what = "now watches" if watch.watch_created else "watch updated:"
    if watch.unreachable is not None:
        raise common.saved_but_unreachable(
            f"{args.app_id} {what} {args.repository_id}",
            "The watch is saved and syncs",
            args.repository_id,
            watch.unreachable,
        )
    return Result(
        {
            "app_id": args.app_id,
            "repository_id": args.repository_id,
            "paths": watch.paths,
            "submodules": watch.submodules,
            "lfs": watch.lfs,
            "created": watch.watch_created,
            "credentials": asdict(watch.credentials),
        },
        f"{args.app_id} {what} {args.repository_id}"
        + (f" (paths: {', '.join(watch.paths)})" if watch.paths else "")
        + (f" with its own {watch.credentials.kind}" if watch.credentials.kind != "none" else "")
        + (f" (submodules: {watch.submodules})" if watch.submodules != "off" else "")
        + (" (lfs)" if watch.lfs else "")
        + "; a sync was requested",
    )


async def unwatch_repository(service: TreecastService, args: argparse.Namespace) -> Result:
    forgotten = await service.watches.unwatch(args.app_id, args.repository_id)
    return Result(
        {
            "app_id": args.app_id,
            "repository_id": args.repository_id,
            "ledger_rows_removed": forgotten,
        },
        f"{args.app_id} no longer watches {args.repository_id}",
    )
