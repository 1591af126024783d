"""Treecast's command line: register apps and repositories, watch, sync, inspect.

Run `python starter.py --help`. Every command accepts `--json` and then prints
one JSON document. Mistakes, bad settings and a database that cannot be reached print
one line on stderr and exit with status 2; a Temporal server that cannot be reached or
cannot do what was asked (no worker answers, search attributes missing, a refused call)
exits with status 3; a failed sync with 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.exc import DBAPIError

from treecast import cli_format
from treecast.config import ConfigError, Settings, load_settings, resolve_secret_key
from treecast.crypto import Cipher
from treecast.db import connect_failure, session_scope
from treecast.process_exit import run_and_exit
from treecast.registry import UserError, shown

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


class Unreachable(Exception):
    """Temporal could not be reached or could not do what was asked (no worker answered,
    search attributes missing, a call refused); the message says what to do. Exit status 3.
    """

    def __init__(
        self, message: str, once: str = "when Temporal is back", requested: bool = False
    ) -> None:
        super().__init__(message)
        self.once = once  # when what was saved can be synced ("The watch ... syncs {once}")
        self.requested = requested  # the sync was requested; only the answer is missing


Output = dict[str, Any]


def _seconds(raw: str) -> float:
    """An argparse type: a finite, positive number of seconds (nan or -1 would never end or
    end at once)."""
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{shown(raw)} is not a number of seconds") from None
    if not 0 < value <= 86400 * 365:
        raise argparse.ArgumentTypeError(f"{shown(raw)} must be between 0 and 31536000 seconds")
    return value


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports mistakes as one line and exit status 2 (no usage dump on stderr)."""

    def error(self, message: str) -> Any:
        if len(message) > 300:  # argparse quotes the bad value whole, however long
            message = message[:200] + "…" + message[-60:]
        raise UserError(f"{message} (see {self.prog} --help)")


def _add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def build_parser() -> ArgumentParser:
    """The whole command tree (also documents it: `starter.py COMMAND --help`)."""
    parser = ArgumentParser(
        prog="starter.py",
        description="Push the files of git repositories to apps as signed webhooks.",
        epilog="Settings come from the environment; see docs/configuration.md.",
    )
    _add_json(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)

    app = commands.add_parser("app", help="register and remove apps")
    _add_json(app)
    app_cmds = app.add_subparsers(dest="app_command", metavar="ACTION", parser_class=ArgumentParser)
    add = app_cmds.add_parser("add", help="register an app; prints its id and secret (shown once)")
    add.add_argument("--name", required=True, help="a name for people")
    add.add_argument("--url", required=True, help="base URL; webhooks go to BASE_URL/create etc.")
    add.add_argument("--secret", help="a whsec_ secret (generated when omitted)")
    _add_json(add)
    lst = app_cmds.add_parser("list", help="list apps")
    _add_json(lst)
    rm = app_cmds.add_parser("remove", help="remove an app, its watches and ledgers")
    rm.add_argument("app_id", metavar="APP_ID")
    _add_json(rm)
    rot = app_cmds.add_parser(
        "rotate-secret", help="add a secret (both sign) or --finish to keep only the newest"
    )
    rot.add_argument("app_id", metavar="APP_ID")
    rot.add_argument("--secret", help="the new whsec_ secret (generated when omitted)")
    rot.add_argument("--finish", action="store_true", help="drop every secret but the newest")
    _add_json(rot)

    repo = commands.add_parser("repo", help="register and remove repositories")
    _add_json(repo)
    repo_cmds = repo.add_subparsers(
        dest="repo_command", metavar="ACTION", parser_class=ArgumentParser
    )
    radd = repo_cmds.add_parser("add", help="register a repository and start syncing it")
    radd.add_argument(
        "url", metavar="GIT_URL", help="https://, ssh://, git@host:path or file:// URL"
    )
    radd.add_argument(
        "--ref", default="", help="branch, tag or commit (default: the remote's default branch)"
    )
    radd.add_argument(
        "--interval",
        type=int,
        help="poll interval in seconds (default: TREECAST_POLL_INTERVAL_SECONDS)",
    )
    radd.add_argument(
        "--token-env", metavar="VAR", help="name of an environment variable holding an access token"
    )
    _add_json(radd)
    rlst = repo_cmds.add_parser("list", help="list repositories")
    _add_json(rlst)
    rrm = repo_cmds.add_parser("remove", help="stop syncing a repository and forget it")
    rrm.add_argument("repository_id", metavar="REPO_ID")
    _add_json(rrm)

    w = commands.add_parser("watch", help="make an app watch a repository")
    w.add_argument("app_id", metavar="APP_ID")
    w.add_argument("repository_id", metavar="REPO_ID")
    w.add_argument(
        "--path",
        action="append",
        default=[],
        metavar="GLOB",
        help="only paths matching (repeatable)",
    )
    _add_json(w)
    uw = commands.add_parser("unwatch", help="stop a watch and forget what the app received")
    uw.add_argument("app_id", metavar="APP_ID")
    uw.add_argument("repository_id", metavar="REPO_ID")
    _add_json(uw)

    s = commands.add_parser("sync", help="sync a repository now")
    s.add_argument("repository_id", metavar="REPO_ID")
    s.add_argument(
        "--wait", action="store_true", help="return when the sync and its deliveries are done"
    )
    s.add_argument(
        "--timeout",
        type=_seconds,
        default=600.0,
        help="seconds to wait with --wait (default 600)",
    )
    _add_json(s)
    st = commands.add_parser("status", help="breaker, commits and per-app state")
    st.add_argument("repository_id", metavar="REPO_ID", nargs="?")
    _add_json(st)
    rs = commands.add_parser("reset", help="close an open breaker and sync now")
    rs.add_argument("repository_id", metavar="REPO_ID")
    _add_json(rs)
    for name, text in (
        ("pause", "stop polling a repository until resume"),
        ("resume", "poll it again"),
    ):
        toggle = commands.add_parser(name, help=text)
        toggle.add_argument("repository_id", metavar="REPO_ID")
        _add_json(toggle)
    rd = commands.add_parser(
        "redeliver", help="forget an app's ledger for a repository and send everything again"
    )
    rd.add_argument("app_id", metavar="APP_ID")
    rd.add_argument("repository_id", metavar="REPO_ID")
    rd.add_argument("--wait", action="store_true", help="return when every file was sent again")
    rd.add_argument(
        "--timeout", type=_seconds, default=600.0, help="seconds to wait with --wait (default 600)"
    )
    _add_json(rd)
    return parser


# --- helpers ----------------------------------------------------------------


def _cipher(settings: Settings) -> Cipher:
    return Cipher(resolve_secret_key(settings))


def _run_temporal(call: Callable[[], Any], what: str, settings: Settings) -> Any:
    """Run an async Temporal call, turning connection failures, queries no worker answers
    and refused calls into `Unreachable`; `what` names the call ("Temporal refused {what}")."""
    try:
        return asyncio.run(call())
    except Exception as error:
        failure = _call_failure(error, what, settings)
        if failure is None:
            raise
        raise failure from None


def _call_failure(error: BaseException, what: str, settings: Settings) -> Unreachable | None:
    """`_temporal_failure`, and a connection lost during the call (the SDK's RuntimeError)."""
    if isinstance(error, RuntimeError) and any(
        word in str(error).lower() for word in ("connect", "transport")
    ):
        return Unreachable(str(error).splitlines()[0])
    return _temporal_failure(error, what, settings)


def _temporal_failure(
    error: BaseException, what: str, settings: Settings | None
) -> Unreachable | None:
    """A failure of a Temporal call as one line, or None when `error` is not one (an
    unexpected error keeps its traceback)."""
    if "temporalio.service" not in sys.modules:  # no Temporal call was made
        return None
    from temporalio.service import RPCError

    from treecast import temporal_ops

    if isinstance(error, temporal_ops.NoWorkerAnswered):
        queue = error.task_queue or (settings.task_queue if settings else "?")
        return Unreachable(
            f"{error}; is worker.py running on task queue {queue}?",
            once="once a worker runs",
            requested=True,
        )
    if not isinstance(error, RPCError):
        return None
    message = (error.message or "").strip().splitlines()
    if temporal_ops.missing_search_attributes(error):
        return Unreachable(
            _no_search_attributes(message[0], settings), once="once they are registered"
        )
    said = f": {message[0]}" if message else ""
    return Unreachable(
        f"Temporal refused {what}: {error.status.name}{said}", once="once Temporal accepts it"
    )


def _no_search_attributes(said: str, settings: Settings | None) -> str:
    """What to do when the namespace lacks Treecast's search attributes (`said`: the server's
    words), with the command registering them."""
    from workflows.search_attributes import operator_create_command

    command = ["temporal", *operator_create_command()]
    where = ""
    if settings is not None:
        command += ["--address", settings.temporal_address]
        command += ["--namespace", settings.temporal_namespace]
        where = f" at {settings.temporal_address}"
    return (
        f"the Temporal server{where} does not know Treecast's search attributes ({said}); "
        f"register them with `{shlex.join(command)}` (see docs/operations.md)"
    )


async def _client(settings: Settings) -> Any:
    from treecast import temporal_ops

    try:
        return await temporal_ops.connect(settings)
    except Exception as error:
        raise Unreachable(
            f"cannot reach Temporal at {settings.temporal_address} ({type(error).__name__}); "
            "start it with `make run` or set TEMPORAL_ADDRESS"
        ) from None


async def _start_sync(
    settings: Settings, repository_id: str, interval: int, sync_now: bool = True
) -> None:
    from treecast import temporal_ops

    client = await _client(settings)
    await temporal_ops.start_sync(client, settings, repository_id, interval, sync_now=sync_now)


def _request_sync(settings: Settings, repository_id: str, interval: int) -> None:
    """Ask the repository's workflow to sync now (starting it if needed)."""
    _run_temporal(
        lambda: _start_sync(settings, repository_id, interval),
        f"the sync request for {repository_id}",
        settings,
    )


def _repository_interval(settings: Settings, repository_id: str) -> int:
    from treecast.registry import get_repository

    with session_scope(settings.database_url) as session:
        return get_repository(session, repository_id).poll_interval_seconds


def _sentence(error: Exception) -> str:
    """An error's message ending like a sentence, to go on after it."""
    text = str(error)
    return text if text.endswith((".", "?", "!")) else f"{text}."


def _saved_but_unreachable(
    done: str, kept: str, repository_id: str, error: Unreachable
) -> Unreachable:
    """Temporal failed after a change was saved: say it is kept and how it gets synced."""
    if error.requested:  # the sync was requested, but no worker answered
        return Unreachable(
            f"{done} and a sync was requested, but {_sentence(error)} {kept} {error.once}",
            error.once,
        )
    return Unreachable(
        f"{done}, but no sync could be requested: {_sentence(error)} {kept} {error.once}: "
        f"at {repository_id}'s next poll, or at once with `starter.py sync {repository_id}` "
        "(needed too if its sync never started)",
        error.once,
    )


# --- commands ---------------------------------------------------------------


def cmd_app(settings: Settings, args: argparse.Namespace) -> Output:
    from treecast import registry

    action = args.app_command
    if action is None:
        raise UserError(
            "app needs an action: add, list, remove, rotate-secret (see starter.py app --help)"
        )
    with session_scope(settings.database_url) as session:
        if action == "add":
            created = registry.add_app(
                session, settings, _cipher(settings), args.name, args.url, args.secret
            )
            return {
                "app_id": created.app.id,
                "name": created.app.name,
                "base_url": created.app.base_url,
                "secret": created.secret,
                "_text": f"app {created.app.id} registered\nsecret (shown once, keep it): {created.secret}",
            }
        if action == "list":
            apps = registry.list_apps(session)
            lines = [
                f"{a['app_id']}  {a['name']:<20} {a['base_url']}  watches={a['watches']}"
                for a in apps
            ]
            return {
                "apps": apps,
                "_text": "\n".join(lines) or "no apps yet: starter.py app add --name N --url URL",
            }
        if action == "remove":
            repositories = registry.remove_app(session, args.app_id)
            return {
                "removed": args.app_id,
                "repositories": repositories,
                "_text": f"app {args.app_id} removed",
            }
        secret = registry.rotate_app_secret(
            session, _cipher(settings), args.app_id, args.secret, args.finish
        )
        if secret is None:
            return {
                "app_id": args.app_id,
                "finished": True,
                "_text": "only the newest secret is active now",
            }
        return {
            "app_id": args.app_id,
            "secret": secret,
            "_text": f"new secret (shown once; old and new both sign until --finish): {secret}",
        }


def cmd_repo(settings: Settings, args: argparse.Namespace) -> Output:
    from treecast import registry

    action = args.repo_command
    if action is None:
        raise UserError("repo needs an action: add, list, remove (see starter.py repo --help)")
    if action == "add":
        token = None
        if args.token_env:
            token = os.environ.get(args.token_env)
            if not token:
                raise UserError(
                    f"--token-env: the environment variable {shown(args.token_env)} "
                    "is not set or empty"
                )
        with session_scope(settings.database_url) as session:
            repository, created = registry.add_repository(
                session, settings, _cipher(settings), args.url, args.ref, args.interval, token
            )
        try:
            _run_temporal(
                lambda: _start_sync(settings, repository.id, repository.poll_interval_seconds),
                f"the start of {repository.id}'s sync",
                settings,
            )
        except Unreachable as error:
            raise Unreachable(
                f"repository {repository.id} is registered, but its sync could not start: {error}; "
                f"run `starter.py sync {repository.id}` {error.once}",
                error.once,
            ) from None
        verb = "registered" if created else "already registered"
        return {
            "repository_id": repository.id,
            "url": repository.url,
            "ref": repository.ref,
            "created": created,
            "_text": f"repository {repository.id} {verb} ({repository.url}); syncing started",
        }
    if action == "list":
        with session_scope(settings.database_url) as session:
            repos = registry.list_repositories(session)
        lines = [
            f"{r['repository_id']}  {r['url']}  ref={r['ref'] or '(default)'}  watches={r['watches']}"
            for r in repos
        ]
        return {
            "repositories": repos,
            "_text": "\n".join(lines) or "no repositories yet: starter.py repo add GIT_URL",
        }
    with session_scope(settings.database_url) as session:
        registry.get_repository(session, args.repository_id)
    from treecast import temporal_ops

    async def stop() -> None:
        await temporal_ops.stop(await _client(settings), args.repository_id)

    _run_temporal(stop, f"stopping {args.repository_id}'s sync", settings)
    with session_scope(settings.database_url) as session:
        registry.remove_repository(session, args.repository_id)
    return {
        "removed": args.repository_id,
        "_text": f"repository {args.repository_id} removed; its sync stopped",
    }


def cmd_watch(settings: Settings, args: argparse.Namespace) -> Output:
    from treecast import registry

    with session_scope(settings.database_url) as session:
        watch, created = registry.watch(session, args.app_id, args.repository_id, args.path)
        interval = registry.get_repository(session, args.repository_id).poll_interval_seconds
        globs = json.loads(watch.path_globs)
    what = "now watches" if created else "watch updated:"
    try:
        _request_sync(settings, args.repository_id, interval)
    except Unreachable as error:
        raise _saved_but_unreachable(
            f"{args.app_id} {what} {args.repository_id}",
            "The watch is saved and syncs",
            args.repository_id,
            error,
        ) from None
    return {
        "app_id": args.app_id,
        "repository_id": args.repository_id,
        "paths": globs,
        "created": created,
        "_text": f"{args.app_id} {what} {args.repository_id}"
        + (f" (paths: {', '.join(globs)})" if globs else "")
        + "; a sync was requested",
    }


def cmd_unwatch(settings: Settings, args: argparse.Namespace) -> Output:
    from treecast import registry

    with session_scope(settings.database_url) as session:
        forgotten = registry.unwatch(session, args.app_id, args.repository_id)
    return {
        "app_id": args.app_id,
        "repository_id": args.repository_id,
        "ledger_rows_removed": forgotten,
        "_text": f"{args.app_id} no longer watches {args.repository_id}",
    }


def _sync_and_wait(settings: Settings, repository_id: str, timeout: float, as_json: bool) -> Output:
    """Sync now and wait for that sync's deliveries, printing progress on stderr."""
    from treecast import temporal_ops

    interval = _repository_interval(settings, repository_id)
    progress: Callable[[str], None] | None = (
        None if as_json else (lambda line: print(line, file=sys.stderr, flush=True))
    )

    async def run() -> Any:
        client = await _client(settings)
        return await temporal_ops.sync_and_wait(
            client, settings, repository_id, interval, on_progress=progress, timeout=timeout
        )

    try:
        outcome = _run_temporal(run, f"the sync request for {repository_id}", settings)
    except TimeoutError as error:
        return {
            "repository_id": repository_id,
            "ok": False,
            "_text": str(error),
            "_exit": EXIT_FAILED,
        }
    result = cli_format.plain(outcome) or {}
    ok = bool(result.get("ok", False))
    result["_text"] = str(result.get("summary") or ("sync done" if ok else "sync failed"))
    result["_exit"] = 0 if ok else EXIT_FAILED
    return result


def cmd_sync(settings: Settings, args: argparse.Namespace) -> Output:
    interval = _repository_interval(settings, args.repository_id)
    if not args.wait:
        _request_sync(settings, args.repository_id, interval)
        return {"repository_id": args.repository_id, "requested": True, "_text": "sync requested"}
    try:
        return _sync_and_wait(settings, args.repository_id, args.timeout, args.json)
    except Unreachable as error:
        if not error.requested:
            raise
        raise Unreachable(
            f"the sync of {args.repository_id} was requested, but {_sentence(error)} "
            f"It starts {error.once}",
            error.once,
            requested=True,
        ) from None


def cmd_status(settings: Settings, args: argparse.Namespace) -> Output:
    from treecast import registry

    with session_scope(settings.database_url) as session:
        if args.repository_id:
            repos = [registry.get_repository(session, args.repository_id)]
        else:
            repos = [
                registry.get_repository(session, r["repository_id"])
                for r in registry.list_repositories(session)
            ]
        rows: list[dict[str, Any]] = [
            {
                "repository_id": r.id,
                "url": r.url,
                "ref": r.ref,
                "apps": registry.watches_of(session, r.id),
            }
            for r in repos
        ]

    statuses: dict[str, Any] = {}  # repository id -> its status (None: not running)

    async def query() -> None:
        from treecast import temporal_ops

        client = await _client(settings)
        for row in rows:
            repository_id = row["repository_id"]
            try:
                statuses[repository_id] = await temporal_ops.get_status(client, repository_id)
            except Exception as error:
                failure = _call_failure(error, f"the status query of {repository_id}", settings)
                if failure is None:
                    raise
                # The others would wait for the same missing worker: they stay unknown.
                raise failure from None

    unreachable: str | None = None
    try:
        asyncio.run(query())
    except Unreachable as error:
        unreachable = str(error)
    for row in rows:
        row["sync"] = cli_format.plain(statuses.get(row["repository_id"]))
    unknown = {row["repository_id"] for row in rows} - statuses.keys()
    text = cli_format.status_table(rows, unknown) if rows else "no repositories yet"
    out: Output = {"repositories": rows, "_text": text}
    if unreachable:
        # What the database knows is still printed; the exit status says it is incomplete.
        out["temporal_error"] = unreachable
        out["_error"] = unreachable
        out["_exit"] = EXIT_UNREACHABLE
    return out


def cmd_pause_resume(settings: Settings, args: argparse.Namespace) -> Output:
    """Pause or resume a repository's polling (its workflow keeps running)."""
    _repository_interval(settings, args.repository_id)  # an unknown id is a UserError
    paused = args.command == "pause"

    async def run() -> bool:
        from treecast import temporal_ops

        client = await _client(settings)
        toggle = temporal_ops.pause if paused else temporal_ops.resume
        return await toggle(client, args.repository_id)

    doing = "pausing" if paused else "resuming"
    if not _run_temporal(run, f"{doing} {args.repository_id}", settings):
        raise UserError(
            f"{args.repository_id} has no running sync; start it with `starter.py sync`"
        )
    return {
        "repository_id": args.repository_id,
        "paused": paused,
        "_text": "polling paused; `resume` to continue" if paused else "polling resumed",
    }


def cmd_reset(settings: Settings, args: argparse.Namespace) -> Output:
    interval = _repository_interval(settings, args.repository_id)

    async def run() -> None:
        from treecast import temporal_ops

        await temporal_ops.reset(await _client(settings), settings, args.repository_id, interval)

    _run_temporal(run, f"the reset of {args.repository_id}", settings)
    return {
        "repository_id": args.repository_id,
        "reset": True,
        "_text": "breaker closed; sync requested",
    }


def cmd_redeliver(settings: Settings, args: argparse.Namespace) -> Output:
    from treecast import registry

    with session_scope(settings.database_url) as session:
        registry.get_watch(session, args.app_id, args.repository_id)
    from activities.watchers import forget_ledger

    forgotten = forget_ledger(settings, args.app_id, args.repository_id)
    said = f"forgot {forgotten} delivered files; the whole repository will be sent again"
    try:
        if args.wait:
            if not args.json:
                print(said, file=sys.stderr)
            result = _sync_and_wait(settings, args.repository_id, args.timeout, args.json)
            return {"app_id": args.app_id, "ledger_rows_removed": forgotten, **result}
        interval = _repository_interval(settings, args.repository_id)
        _request_sync(settings, args.repository_id, interval)
    except Unreachable as error:
        raise _saved_but_unreachable(
            f"forgot {forgotten} files delivered to {args.app_id}",
            "They are sent again",
            args.repository_id,
            error,
        ) from None
    return {
        "app_id": args.app_id,
        "repository_id": args.repository_id,
        "ledger_rows_removed": forgotten,
        "_text": said,
    }


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], Output]] = {
    "app": cmd_app,
    "repo": cmd_repo,
    "watch": cmd_watch,
    "unwatch": cmd_unwatch,
    "sync": cmd_sync,
    "status": cmd_status,
    "reset": cmd_reset,
    "pause": cmd_pause_resume,
    "resume": cmd_pause_resume,
    "redeliver": cmd_redeliver,
}


def _wants_json(argv: Sequence[str]) -> bool:
    return "--json" in argv


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, run one command, print its result; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = _wants_json(argv)
    settings: Settings | None = None
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            build_parser().print_help()
            return EXIT_USAGE
        settings = load_settings()
        result = COMMANDS[args.command](settings, args)
    except (UserError, ConfigError) as error:
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
        failure = _temporal_failure(error, "a request", settings)
        if failure is None:
            raise
        return _fail(str(failure), EXIT_UNREACHABLE, as_json)
    exit_code = int(result.pop("_exit", 0))
    text = result.pop("_text", "")
    problem = result.pop("_error", None)
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    elif text:
        print(text)
    if problem:  # a result printed in spite of an error (status without Temporal)
        return _fail(str(problem), exit_code, as_json)
    return exit_code


def _fail(message: str, code: int, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"error": message}), file=sys.stderr)
    else:
        print(f"error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    # Not sys.exit: Python's shutdown can abort after Temporal was used (see process_exit).
    run_and_exit(main)
