"""`import-docora`: a Docora installation's apps, tokens, repositories, watches and ledgers."""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any

from treecast.cli import common
from treecast.cli.common import Commands, Result
from treecast.service.core import TreecastService


def register(commands: Commands[Any]) -> None:
    imports = common.command(
        commands,
        "import-docora",
        import_docora,
        help="import a Docora database: apps, tokens, repositories, watches, ledgers",
        description="Import a Docora database (one transaction, idempotent); the first sync "
        "then sends each app only what changed since Docora's last delivery. "
        "See docs/migrating-from-docora.md.",
    )
    imports.add_argument("--database-url", required=True, help="Docora's DATABASE_URL (PostgreSQL)")
    imports.add_argument(
        "--encryption-key-env",
        required=True,
        metavar="VAR",
        help="the environment variable holding Docora's ENCRYPTION_KEY (never the key itself)",
    )
    imports.add_argument(
        "--dry-run", action="store_true", help="print what would be imported; write nothing"
    )
    common.add_json(imports)


async def import_docora(service: TreecastService, args: argparse.Namespace) -> Result:
    key = common.env_value(args.encryption_key_env, "--encryption-key-env")
    assert key is not None
    report = await service.admin.import_docora(args.database_url, key, dry_run=args.dry_run)
    lines = report.lines()
    if not args.dry_run and report.repositories:
        if report.unreachable is None:
            lines.append(f"sync requested for {len(report.repositories)} repositories")
        else:
            lines.append(
                f"imported, but no sync could be requested ({common.sentence(report.unreachable)}) "
                "Start the worker, then `starter.py sync REPO_ID` for each repository above."
            )
    data = {f.name: getattr(report, f.name) for f in fields(report) if f.name != "unreachable"}
    return Result(data, "\n".join(lines))
