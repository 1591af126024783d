"""The command line's verifiable mirrors (docs/cli.md): `manifest`, `reconcile` and
`sync-completed`, on top of `treecast.service.mirrors`."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from treecast.delivery.reconcile import in_path_order
from treecast.service.core import TreecastService
from treecast.service.errors import UserError
from treecast.service.mirrors import Mirrors, Reconciled

COMMANDS = ("manifest", "reconcile", "sync-completed")


@dataclass
class Printed:
    """A command's result: `data` for --json, `text` for a person, and `lines` printed
    before `text` as they come (a manifest's files, never held all at once)."""

    data: dict[str, Any]
    text: str
    lines: Iterator[str] | None = None


def add_parsers(commands: Any, add_json: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add the three commands to the command tree."""
    man = commands.add_parser(
        "manifest",
        help="every file an app should hold, with blob ids and the tree digest",
        description="The files an app should hold at the commit it last fully acknowledged "
        "(or --commit), after its paths and the repository's .treecastignore: "
        "blob id, size, mode and path a line, then the tree digest.",
    )
    man.add_argument("app_id", metavar="APP_ID")
    man.add_argument("repository_id", metavar="REPO_ID")
    man.add_argument("--commit", metavar="C", help="a commit synced for the repository")
    add_json(man)
    rec = commands.add_parser(
        "reconcile",
        help="compare what an app holds with what it acknowledged; send the difference",
        description='Compare what an app holds (JSON Lines: one {"path", "blob_id"} a '
        "line, the manifest's own lines do) with what it acknowledged, and send exactly the "
        "difference as ordinary webhooks (unless --dry-run).",
    )
    rec.add_argument("app_id", metavar="APP_ID")
    rec.add_argument("repository_id", metavar="REPO_ID")
    held = rec.add_mutually_exclusive_group(required=True)
    held.add_argument("--from-file", metavar="HELD.jsonl", help="what the app holds")
    held.add_argument("--digest", metavar="HEX", help="only the app's tree digest: in sync?")
    rec.add_argument("--dry-run", action="store_true", help="compare only: send nothing")
    add_json(rec)
    sc = commands.add_parser(
        "sync-completed",
        help="turn the sync_completed event (each commit's tree digest) on or off for an app",
    )
    sc.add_argument("app_id", metavar="APP_ID")
    sc.add_argument("state", choices=["on", "off"], metavar="on|off")
    add_json(sc)


async def run(service: TreecastService, args: argparse.Namespace) -> Printed:
    """Run one of `COMMANDS`."""
    mirrors = Mirrors(service)
    if args.command == "manifest":
        return _manifest(mirrors, args)
    if args.command == "reconcile":
        return await _reconcile(service, mirrors, args)
    mirrors.set_sync_completed(args.app_id, args.state == "on")
    return Printed(
        {"app_id": args.app_id, "sync_completed": args.state == "on"},
        f"sync_completed {args.state} for {args.app_id} (from its next delivery)",
    )


def _manifest(mirrors: Mirrors, args: argparse.Namespace) -> Printed:
    signed = mirrors.manifest(args.app_id, args.repository_id, args.commit, signed=False)
    built = signed.manifest
    header = dict(built.header)
    summary = (
        f"{header['files']} files, {header['bytes']} bytes at {header['commit']}; "
        f"tree digest {header['tree_digest']}"
    )
    if args.json:  # one document: the files are read into it
        try:
            return Printed({**header, "entries": list(built.entries())}, summary)
        finally:
            built.close()

    def lines() -> Iterator[str]:
        try:
            for entry in built.entries():
                yield f"{entry['blob_id']} {entry['size']:>10} {entry['mode']} {entry['path']}"
        finally:
            built.close()

    return Printed(header, summary, lines())


async def _reconcile(
    service: TreecastService, mirrors: Mirrors, args: argparse.Namespace
) -> Printed:
    if args.digest is not None:
        done = await mirrors.reconcile(args.app_id, args.repository_id, digest=args.digest)
        return _reconciled(done)
    path = Path(args.from_file)
    limit = service.settings.api_reconcile_max_bytes
    try:
        size = path.stat().st_size
        if size > limit:
            raise UserError(
                f"{args.from_file} is larger than {limit} bytes (TREECAST_API_RECONCILE_MAX_BYTES)"
            )
        with path.open("rb") as handle:
            lines = in_path_order(handle)
    except OSError as error:
        raise UserError(f"cannot read {args.from_file}: {error.strerror or error}") from None
    done = await mirrors.reconcile(
        args.app_id, args.repository_id, held=lines, repair=not args.dry_run
    )
    return _reconciled(done)


def _reconciled(done: Reconciled) -> Printed:
    data = {
        "repository_id": done.repository_id,
        "status": done.summary,
        "in_sync": done.in_sync,
        "commit": done.commit,
        "tree_digest": done.tree_digest,
        "files": done.files,
        "held": done.held,
        "missing": done.missing,
        "changed": done.changed,
        "extra": done.extra,
        "repair": done.repair,
        "sync_requested": done.sync_requested,
        "sync_id": done.sync_id,
        "sync_error": done.sync_error,
    }
    text = done.summary
    if done.held is not None and not done.in_sync:
        text += f" ({done.missing} missing, {done.changed} changed, {done.extra} extra)"
    if done.repair:
        text += (
            "; the difference is being sent (sync " + done.sync_id + ")"
            if done.sync_id
            else f"; {done.sync_error}"
        )
    return Printed(data, text)
