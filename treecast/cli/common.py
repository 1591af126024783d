"""What every command group of the command line shares: the result a command prints, the
parser that reports mistakes in one line, and the wording of a change saved while
Temporal could not be asked."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from treecast.cli import credentials as cli_credentials
from treecast.cli import format as cli_format
from treecast.service.core import TreecastService
from treecast.service.credentials import CredentialSpec
from treecast.service.errors import Unreachable, UserError, shown
from treecast.service.results import CredentialInfo

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


@dataclass
class Result:
    """What one command prints: `data` as the `--json` document, `text` for a person.

    `problem` is an error printed after a result that still stands (status without
    Temporal); `exit_code` is the process's status. `lines`, for a person, are printed
    before `text` as they come (a manifest's files, never held all at once).
    """

    data: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    exit_code: int = 0
    problem: str | None = None
    lines: Iterator[str] | None = None


# A command: what its parser's `handler` default names; it gets the parsed arguments.
Handler = Callable[[TreecastService, argparse.Namespace], Coroutine[Any, Any, Result]]
Commands = argparse._SubParsersAction  # the `add_subparsers()` a group adds its parsers to


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports mistakes as one line and exit status 2 (no usage dump on stderr)."""

    def error(self, message: str) -> Any:
        if len(message) > 300:  # argparse quotes the bad value whole, however long
            message = message[:200] + "…" + message[-60:]
        raise UserError(f"{message} (see {self.prog} --help)")


# The positional ids commands take, and how `--help` names them.
IDS = {"app_id": "APP_ID", "repository_id": "REPO_ID"}


def add_json(parser: argparse.ArgumentParser) -> None:
    """`--json`, the last option of every command."""
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def command(
    commands: Commands[Any], name: str, handler: Handler, *ids: str, **kwargs: Any
) -> argparse.ArgumentParser:
    """A command's parser (`help=` and the like in `kwargs`) naming its handler, with its
    positional ids (`app_id`, `repository_id`); its options, then `add_json`, follow."""
    parser: argparse.ArgumentParser = commands.add_parser(name, **kwargs)
    parser.set_defaults(handler=handler)
    for dest in ids:
        parser.add_argument(dest, metavar=IDS[dest])
    return parser


def switch(commands: Commands[Any], name: str, handler: Handler, help: str) -> None:
    """A command turning something on or off for an app: `NAME APP_ID on|off [--json]`."""
    parser = command(commands, name, handler, "app_id", help=help)
    parser.add_argument("state", choices=["on", "off"], metavar="on|off")
    add_json(parser)


def add_choice(parser: argparse.ArgumentParser, flag: str, help: str) -> None:
    """`--FLAG` / `--no-FLAG`, left unset (None) when neither is given."""
    parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help)


def group(commands: Commands[Any], name: str, help: str, actions: str) -> Commands[Any]:
    """A command group (`app`, `repo`, `db`): its parser, and the one its actions go in;
    given no action it says which there are."""
    parser = commands.add_parser(name, help=help)
    add_json(parser)
    message = f"{name} needs an action: {actions} (see starter.py {name} --help)"

    async def refuse(_service: TreecastService, _args: argparse.Namespace) -> Result:
        raise UserError(message)

    parser.set_defaults(handler=refuse)
    subparsers: Commands[Any] = parser.add_subparsers(
        dest=f"{name}_command", metavar="ACTION", parser_class=ArgumentParser
    )
    return subparsers


def add_wait(parser: argparse.ArgumentParser, help: str) -> None:
    """`--wait` (with `help`) and its `--timeout`."""
    parser.add_argument("--wait", action="store_true", help=help)
    parser.add_argument(
        "--timeout", type=seconds, default=600.0, help="seconds to wait with --wait (default 600)"
    )


def json_of(result: Any, names: str) -> dict[str, Any]:
    """Some fields of a result for `--json`, in order: `names` split by spaces, each
    `field` or `shown=field`; a dataclass value as a dict."""
    picked = {}
    for name in names.split():
        shown, _, attribute = name.partition("=")
        value = getattr(result, attribute or shown)
        is_dataclass = dataclasses.is_dataclass(value) and not isinstance(value, type)
        picked[shown] = dataclasses.asdict(value) if is_dataclass else value
    return picked


def seconds(raw: str) -> float:
    """An argparse type: a finite, positive number of seconds (nan or -1 would never end or
    end at once)."""
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{shown(raw)} is not a number of seconds") from None
    if not 0 < value <= 86400 * 365:
        raise argparse.ArgumentTypeError(f"{shown(raw)} must be between 0 and 31536000 seconds")
    return value


def env_value(var: str | None, flag: str) -> str | None:
    """The value of the environment variable a `--...-env` flag names (None without the flag)."""
    if var is None:
        return None
    value = os.environ.get(var)
    if not value:
        raise UserError(f"{flag} {var}: that environment variable is not set or empty")
    return value


def sentence(error: Exception) -> str:
    """An error's message ending like a sentence, to go on after it."""
    text = str(error)
    return text if text.endswith((".", "?", "!")) else f"{text}."


def saved_but_unreachable(
    done: str, kept: str, repository_id: str, error: Unreachable
) -> Unreachable:
    """Temporal failed after a change was saved: say it is kept and how it gets synced."""
    if error.requested:  # the sync was requested, but no worker answered
        return Unreachable(
            f"{done} and a sync was requested, but {sentence(error)} {kept} {error.once}",
            error.once,
        )
    return Unreachable(
        f"{done}, but no sync could be requested: {sentence(error)} {kept} {error.once}: "
        f"at {repository_id}'s next poll, or at once with `starter.py sync {repository_id}` "
        "(needed too if its sync never started)",
        error.once,
    )


async def scan_unconfirmed(
    service: TreecastService, args: argparse.Namespace, url: str | None, spec: CredentialSpec
) -> Result | None:
    """With --scan-host-keys and no --accept-host-keys: print what the server offers and
    store nothing, unless a person at a terminal confirms (then `spec` accepts them).
    `url` None: the registered repository's (`args.repository_id`)."""
    if not spec.scan_host_keys or spec.accept_host_keys:
        return None
    if url is None:
        url = (await service.repositories.get(args.repository_id)).url
    keys = await service.repositories.scan_host_keys(url)
    confirmed = cli_credentials.confirm_scanned(
        keys, interactive=sys.stdin.isatty() and not args.json
    )
    if confirmed is not None:
        spec.accept_host_keys = confirmed
        return None
    listed = " ".join(f"--accept-host-keys {key.fingerprint}" for key in keys)
    return Result(
        {"host_keys": [asdict(key) for key in keys], "stored": False},
        "\n".join(["the server offers these host keys:", *cli_credentials.host_key_lines(keys)]),
        exit_code=EXIT_USAGE,
        problem=(
            "nothing stored: confirm the fingerprints with the git host, then run the command "
            f"again with the ones to pin: {listed}"
        ),
    )


def new_deploy_key(
    repository_id: str, url: str, ref: str, info: CredentialInfo, verb: str, whose: str
) -> Result:
    """A generated deploy key to add to the git host before anything syncs."""
    return Result(
        {
            "repository_id": repository_id,
            "url": url,
            "ref": ref,
            "credentials": asdict(info),
        },
        "\n".join(
            [
                f"repository {repository_id} {verb} ({url}) with a new deploy key for {whose}",
                "add this public key to the git host as a read-only deploy key:",
                f"  {info.ssh_public_key}",
                f"  ({info.ssh_key_fingerprint})",
                f"then start syncing: starter.py sync {repository_id}",
            ]
        ),
    )


async def sync_and_wait(
    service: TreecastService, repository_id: str, timeout: float, as_json: bool
) -> Result:
    """Sync now and wait for that sync's deliveries, printing progress on stderr."""
    progress: Callable[[str], None] | None = (
        None if as_json else (lambda line: print(line, file=sys.stderr, flush=True))
    )
    try:
        outcome = await service.syncs.wait(repository_id, timeout=timeout, on_progress=progress)
    except TimeoutError as error:
        return Result(
            {"repository_id": repository_id, "ok": False},
            f"{error}: see `starter.py status`",
            EXIT_FAILED,
        )
    data = cli_format.plain(outcome) or {}
    ok = bool(data.get("ok", False))
    text = str(data.get("summary") or ("sync done" if ok else "sync failed"))
    return Result(data, text, 0 if ok else EXIT_FAILED)
