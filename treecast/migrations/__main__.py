"""`python -m treecast.migrations revision -m "what changed" --rev-id 0003_what`: write a
new revision from what models/tables.py has and the newest revision lacks (Alembic's
autogenerate against a scratch SQLite database); then read it, add any data move, and
format it (docs/operations.md, "Adding a revision")."""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections.abc import Sequence

from alembic import command

from treecast import migrations
from treecast.db import make_engine


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m treecast.migrations", description=__doc__)
    actions = parser.add_subparsers(dest="action", required=True)
    revision = actions.add_parser("revision", help="write a new revision file")
    revision.add_argument("-m", "--message", required=True, help="what the revision changes")
    revision.add_argument(
        "--rev-id", required=True, help="NNNN_name: the next number and a word or two"
    )
    args = parser.parse_args(argv)
    if not re.fullmatch(r"\d{4}_[a-z0-9_]{1,40}", args.rev_id):
        print(f"error: --rev-id {args.rev_id!r} is not NNNN_name", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        engine = make_engine(f"sqlite:///{scratch}/scratch.db")
        with engine.begin() as connection:
            migrations.upgrade(connection)
            script = command.revision(
                migrations.config(connection),
                message=args.message,
                autogenerate=True,
                rev_id=args.rev_id,
            )
        engine.dispose()
    path = getattr(script, "path", None)
    print(
        f"wrote {path}: review it, then `ruff format` it and run tests/migrations/test_migrations.py"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
