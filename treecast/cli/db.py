"""`db`: the database schema's revision, and upgrading it."""

from __future__ import annotations

import argparse
from typing import Any

from treecast.cli import common
from treecast.cli.common import Commands, Result
from treecast.service.core import TreecastService
from treecast.service.results import SchemaStatus


def register(commands: Commands[Any]) -> None:
    actions = common.group(
        commands, "db", "the database schema: its revision, upgrading it", "current or upgrade"
    )
    common.add_json(
        common.command(
            actions, "current", show_current, help="the schema revision, and this release's"
        )
    )
    common.add_json(
        common.command(
            actions,
            "upgrade",
            upgrade_schema,
            help="migrate the schema to this release's (stamps a pre-migration one)",
        )
    )


def _schema(status: SchemaStatus) -> dict[str, Any]:
    return {"current": status.current, "head": status.head, "up_to_date": status.up_to_date}


async def show_current(service: TreecastService, args: argparse.Namespace) -> Result:
    status = await service.admin.schema_status()
    if status.up_to_date:
        text = f"{status.current} (this release's; up to date)"
    elif status.empty:
        text = f"empty database; it is created at {status.head} on first use"
    else:
        text = status.problem()
    return Result(_schema(status), text)


async def upgrade_schema(service: TreecastService, args: argparse.Namespace) -> Result:
    before, after = await service.admin.upgrade_schema()
    if before.up_to_date:
        text = f"the schema is up to date ({after.current})"
    else:
        text = f"upgraded the schema from {before.shown} to {after.current}"
    return Result({**_schema(after), "was": before.current}, text)
