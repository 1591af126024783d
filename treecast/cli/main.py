"""Treecast's command line: register apps and repositories, watch, sync, inspect.

Run `python starter.py --help`. Every command accepts `--json` and then prints
one JSON document. Mistakes, bad settings and a database that cannot be reached print
one line on stderr and exit with status 2; a Temporal server that cannot be reached or
cannot do what was asked (no worker answers, search attributes missing, a refused call)
exits with status 3; a failed sync with 1.

Each command group is a module of `treecast.cli` with a `register(commands)` that adds
its parsers, each naming its `handler`; `main` parses, runs that handler on the service
layer and prints its `Result`. Adding a command: docs/contracts.md, "Adding an act".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import NoReturn

from sqlalchemy.exc import DBAPIError

from treecast.cli import apps, db, docora, mirrors, repos, syncs, watches
from treecast.cli.common import (
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    ArgumentParser,
    Handler,
    Result,
    add_json,
)
from treecast.cli.words import said
from treecast.config import ConfigError, Settings, load_settings
from treecast.process_exit import run_and_exit
from treecast.service.core import TreecastService
from treecast.service.errors import (
    SchemaBehind,
    Unreachable,
    UserError,
    connect_failure,
    temporal_failure,
)


def build_parser() -> ArgumentParser:
    """The whole command tree (also documents it: `starter.py COMMAND --help`)."""
    parser = ArgumentParser(
        prog="starter.py",
        description="Push the files of git repositories to apps as signed webhooks.",
        epilog="Settings come from the environment; see docs/configuration.md.",
    )
    add_json(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    apps.register(commands)
    repos.register(commands)
    db.register(commands)
    api = commands.add_parser("api", help="run the HTTP API server (see docs/api.md)")
    api.add_argument(
        "--listen", metavar="HOST:PORT", help="address to listen on (default: TREECAST_API_LISTEN)"
    )
    watches.register(commands)
    syncs.register(commands)
    docora.register(commands)
    mirrors.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, run one command, print its result; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in argv
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
        result = asyncio.run(_run(TreecastService(settings), args))
    except UserError as error:
        return _fail(said(error), EXIT_USAGE, as_json)
    except (ConfigError, SchemaBehind) as error:
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
    else:
        for line in result.lines or ():
            print(line)
        if result.text:
            print(result.text)
    if result.problem:  # a result printed in spite of an error (status without Temporal)
        return _fail(result.problem, result.exit_code, as_json)
    return result.exit_code


async def _run(service: TreecastService, args: argparse.Namespace) -> Result:
    handler: Handler = args.handler
    return await handler(service, args)


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
