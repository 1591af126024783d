"""`sync`, `status`, `reset`, `pause`, `resume` and `redeliver`: syncing repositories and
what their workflows say."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from typing import Any

from treecast.cli import common
from treecast.cli import format as cli_format
from treecast.cli.common import Commands, Result
from treecast.service.core import TreecastService
from treecast.service.errors import Unreachable, UserError
from treecast.service.results import Repository, Watch


def register(commands: Commands[Any]) -> None:
    sync = common.command(commands, "sync", sync_now, "repository_id", help="sync a repository now")
    common.add_wait(sync, "return when the sync and its deliveries are done")
    common.add_json(sync)
    status = common.command(
        commands, "status", show_status, help="breaker, commits and per-app state"
    )
    status.add_argument("repository_id", metavar="REPO_ID", nargs="?")
    common.add_json(status)
    common.add_json(
        common.command(
            commands,
            "reset",
            reset_breaker,
            "repository_id",
            help="close an open breaker and sync now",
        )
    )
    for name, text in (
        ("pause", "stop polling a repository until resume"),
        ("resume", "poll it again"),
    ):
        common.add_json(common.command(commands, name, pause_or_resume, "repository_id", help=text))
    redeliver = common.command(
        commands,
        "redeliver",
        redeliver_all,
        "app_id",
        "repository_id",
        help="forget an app's ledger for a repository and send everything again",
    )
    common.add_wait(redeliver, "return when every file was sent again")
    common.add_json(redeliver)


async def sync_now(service: TreecastService, args: argparse.Namespace) -> Result:
    if not args.wait:
        await service.syncs.start(args.repository_id)
        return Result({"repository_id": args.repository_id, "requested": True}, "sync requested")
    try:
        return await common.sync_and_wait(service, args.repository_id, args.timeout, args.json)
    except Unreachable as error:
        if not error.requested:
            raise
        raise Unreachable(
            f"the sync of {args.repository_id} was requested, but {common.sentence(error)} "
            f"It starts {error.once}",
            error.once,
            requested=True,
        ) from None


def _app_row(watch: Watch) -> dict[str, Any]:
    """A watch as `status --json` shows it under its repository."""
    return common.json_of(
        watch,
        "app_id app_name status delivered_commit last_error_type last_error retry_count "
        "last_synced_at path_globs=paths credentials access access_checked_at access_error "
        "submodules lfs held_back",
    )


def status_row(r: Repository) -> dict[str, Any]:
    """One repository of `status --json`."""
    return {
        "repository_id": r.repository_id,
        "url": r.url,
        "ref": r.ref,
        "apps": [_app_row(w) for w in r.apps],
        "sync": cli_format.plain(r.sync),
        "skipped_unsafe_paths": r.skipped_unsafe_paths,
        "credentials": asdict(r.credentials),
        "fetched_with": r.fetched_with,
    }


async def show_status(service: TreecastService, args: argparse.Namespace) -> Result:
    report = await service.repositories.status(args.repository_id)
    rows: list[dict[str, Any]] = [status_row(r) for r in report.repositories]
    text = cli_format.status_table(rows, report.unknown) if rows else "no repositories yet"
    result = Result({"repositories": rows}, text)
    if report.temporal_error:
        # What the database knows is still printed; the exit status says it is incomplete.
        result.data["temporal_error"] = report.temporal_error
        result.problem = report.temporal_error
        result.exit_code = common.EXIT_UNREACHABLE
    return result


async def pause_or_resume(service: TreecastService, args: argparse.Namespace) -> Result:
    """Pause or resume a repository's polling (its workflow keeps running)."""
    paused = args.command == "pause"
    if not await service.syncs.pause(args.repository_id, paused):
        raise UserError(
            f"{args.repository_id} has no running sync; start it with `starter.py sync`"
        )
    return Result(
        {"repository_id": args.repository_id, "paused": paused},
        "polling paused; `resume` to continue" if paused else "polling resumed",
    )


async def reset_breaker(service: TreecastService, args: argparse.Namespace) -> Result:
    await service.syncs.reset(args.repository_id)
    return Result(
        {"repository_id": args.repository_id, "reset": True}, "breaker closed; sync requested"
    )


async def redeliver_all(service: TreecastService, args: argparse.Namespace) -> Result:
    done = await service.deliveries.redeliver(args.app_id, args.repository_id, sync=not args.wait)
    forgotten = done.ledger_rows_removed
    said = f"forgot {forgotten} delivered files; the whole repository will be sent again"
    try:
        if args.wait:
            if not args.json:
                print(said, file=sys.stderr)
            result = await common.sync_and_wait(
                service, args.repository_id, args.timeout, args.json
            )
            result.data = {"app_id": args.app_id, "ledger_rows_removed": forgotten, **result.data}
            return result
        if done.unreachable is not None:
            raise done.unreachable
    except Unreachable as error:
        raise common.saved_but_unreachable(
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
