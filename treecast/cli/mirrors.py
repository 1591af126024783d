"""Verifiable mirrors (docs/cli.md): `manifest`, `reconcile` and `sync-completed`."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from treecast.cli import common
from treecast.cli.common import Commands, Result
from treecast.service.core import TreecastService
from treecast.service.errors import UserError
from treecast.service.results import Reconciled


def register(commands: Commands[Any]) -> None:
    manifest = common.command(
        commands,
        "manifest",
        show_manifest,
        "app_id",
        "repository_id",
        help="every file an app should hold, with blob ids and the tree digest",
        description="The files an app should hold at the commit it last fully acknowledged "
        "(or --commit), after its paths and the repository's .treecastignore: "
        "blob id, size, mode and path a line, then the tree digest.",
    )
    manifest.add_argument("--commit", metavar="C", help="a commit synced for the repository")
    common.add_json(manifest)
    reconcile = common.command(
        commands,
        "reconcile",
        reconcile_held,
        "app_id",
        "repository_id",
        help="compare what an app holds with what it acknowledged; send the difference",
        description='Compare what an app holds (JSON Lines: one {"path", "blob_id"} a '
        "line, the manifest's own lines do) with what it acknowledged, and send exactly the "
        "difference as ordinary webhooks (unless --dry-run).",
    )
    held = reconcile.add_mutually_exclusive_group(required=True)
    held.add_argument("--from-file", metavar="HELD.jsonl", help="what the app holds")
    held.add_argument("--digest", metavar="HEX", help="only the app's tree digest: in sync?")
    reconcile.add_argument("--dry-run", action="store_true", help="compare only: send nothing")
    common.add_json(reconcile)
    common.switch(
        commands,
        "sync-completed",
        set_sync_completed,
        "turn the sync_completed event (each commit's tree digest) on or off for an app",
    )


async def show_manifest(service: TreecastService, args: argparse.Namespace) -> Result:
    manifest = await service.mirrors.manifest(
        args.app_id, args.repository_id, args.commit, signed=False
    )
    header = manifest.header
    summary = (
        f"{header['files']} files, {header['bytes']} bytes at {header['commit']}; "
        f"tree digest {header['tree_digest']}"
    )
    if args.json:  # one document: the files are read into it
        return Result({**header, "entries": list(manifest.entries())}, summary)

    def lines() -> Iterator[str]:
        for entry in manifest.entries():
            yield f"{entry['blob_id']} {entry['size']:>10} {entry['mode']} {entry['path']}"

    return Result(header, summary, lines=lines())


async def reconcile_held(service: TreecastService, args: argparse.Namespace) -> Result:
    if args.digest is not None:
        done = await service.mirrors.reconcile(args.app_id, args.repository_id, digest=args.digest)
        return _reconciled(done)
    path = Path(args.from_file)
    limit = service.settings.api_reconcile_max_bytes
    try:
        if path.stat().st_size > limit:
            raise UserError(
                f"{args.from_file} is larger than {limit} bytes (TREECAST_API_RECONCILE_MAX_BYTES)"
            )
        with path.open("rb") as handle:
            held = handle.readlines()
    except OSError as error:
        raise UserError(f"cannot read {args.from_file}: {error.strerror or error}") from None
    done = await service.mirrors.reconcile(
        args.app_id, args.repository_id, held=held, repair=not args.dry_run, sort=True
    )
    return _reconciled(done)


def _reconciled(done: Reconciled) -> Result:
    data = common.json_of(
        done,
        "repository_id status=summary in_sync commit tree_digest files held missing changed "
        "extra repair sync_requested sync_id sync_error",
    )
    text = done.summary
    if done.held is not None and not done.in_sync:
        text += f" ({done.missing} missing, {done.changed} changed, {done.extra} extra)"
    if done.repair:
        text += (
            f"; the difference is being sent (sync {done.sync_id})"
            if done.sync_id
            else f"; {done.sync_error}"
        )
    return Result(data, text)


async def set_sync_completed(service: TreecastService, args: argparse.Namespace) -> Result:
    on = args.state == "on"
    await service.apps.update(args.app_id, sync_completed=on)
    return Result(
        {"app_id": args.app_id, "sync_completed": on},
        f"sync_completed {args.state} for {args.app_id} (from its next delivery)",
    )
