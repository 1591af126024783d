"""Idle repositories with and without remote checks: history events, and CPU at 10,000.

    python -m bench.idle_checks [--interval 2] [--seconds 40] [--repos 10000] [--check-seconds 120]

1. History, side by side in one run: the Temporal dev server, the worker in this
   process, one app, two repositories where nothing changes, polled every
   `--interval` seconds: one the old way (every poll is a fetch in the workflow:
   TREECAST_FULL_SYNC_SECONDS=0), one with remote checks (a full sync every 10
   intervals here). After the first delivery both sit idle for `--seconds`; the
   events each workflow's history gained are counted, with the `CheckRemotes`
   sweep's own. Scaled to a day at the defaults (60 s interval, a full sync a day).
2. CPU at `--repos` idle repositories: the remote-check sweep (`RemoteChecker`, as
   the activity runs it) over that many repositories, each checked every 60 s, for
   `--check-seconds` after one interval of warming up, against a smart-HTTP git server in another process (one
   bare repository behind `--repos` names). This process's CPU is the worker's
   share; the server's is not counted (it runs git-http-backend for a listing at most
   once a second and answers the rest from it: every name is one repository). Then the same checks by `git ls-remote`
   (its processes' CPU counted) on a tenth of the repositories, scaled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DAY = 86_400


async def history(interval: int, seconds: float) -> dict[str, Any]:
    from examples.receiver import Receiver
    from models.checks import check_workflow_id
    from models.sync import sync_workflow_id
    from tests.support.faults_helpers import fault_stack, in_process_worker, until_delivered
    from tests.support.gitrepos import WorkRepo
    from treecast.crypto import generate_webhook_secret
    from treecast.service import workflows as temporal_ops

    full_sync = interval * 10
    with tempfile.TemporaryDirectory(prefix="treecast-idle-") as tmp:
        root = Path(tmp)
        secret = generate_webhook_secret()
        overrides = {"TREECAST_FULL_SYNC_SECONDS": str(full_sync)}
        async with fault_stack(root / "data", **overrides) as stack:
            client = stack.client
            assert client is not None
            polled = stack.settings.model_copy(update={"full_sync_seconds": 0})
            with Receiver([secret], root / "mirror") as receiver:
                app_id = stack.add_app(receiver, secret)
                ids, commits = {}, {}
                for name in ("polled", "checked"):
                    repo = WorkRepo(root / name)
                    repo.write("README.md", f"# {name}\n")
                    commits[name] = repo.commit("one file")
                    ids[name] = stack.add_repository(repo.url, interval)
                    stack.watch(app_id, ids[name])
                async with in_process_worker(stack):
                    await temporal_ops.ensure_remote_checks(client, stack.settings)
                    for name, settings in (("polled", polled), ("checked", stack.settings)):
                        await temporal_ops.start_sync(
                            client, settings, ids[name], interval, sync_now=True
                        )
                    for name in ids:
                        await until_delivered(stack, app_id, ids[name], commits[name], 60)
                    await asyncio.sleep(interval * 2)  # the first delivery's reports settle
                    handles = {
                        name: client.get_workflow_handle(sync_workflow_id(rid))
                        for name, rid in ids.items()
                    }
                    handles["sweep"] = client.get_workflow_handle(check_workflow_id(0, 1))
                    names = ("polled", "checked")

                    async def syncs() -> dict[str, int]:
                        return {n: (await handles[n].query("status"))["syncs"] for n in names}

                    async def lengths() -> dict[str, int]:
                        return {
                            n: len((await h.fetch_history()).events) for n, h in handles.items()
                        }

                    before, syncs_before = await lengths(), await syncs()
                    await asyncio.sleep(seconds)
                    after, syncs_after = await lengths(), await syncs()
    gained = {name: after[name] - before[name] for name in handles}
    fetches = {name: syncs_after[name] - syncs_before[name] for name in names}
    per_fetch = {name: gained[name] / max(fetches[name], 1) for name in names}
    # A day at the defaults: a fetch every 60 s polled, every TREECAST_FULL_SYNC_SECONDS
    # with checks (each plus the repository's jitter: 5 % on average, at most 30 s); the
    # checks in between cost no history.
    from treecast.config import SETTINGS

    full_default = int(next(r.default for r in SETTINGS if r.name == "TREECAST_FULL_SYNC_SECONDS"))
    polled_day = per_fetch["polled"] * DAY / 63
    checked_day = per_fetch["checked"] * DAY / (full_default + 15)
    # The sweep: one activity an hour and a continue-as-new, shared by the shard.
    sweep_run = len(json.loads((ROOT / "tests/histories/check_remotes.json").read_text())["events"])
    sweep_day = sweep_run * 24
    return {
        "idle_seconds": seconds,
        "events_gained": gained,
        "fetches_in_window": fetches,
        "events_per_fetch": {name: round(value, 1) for name, value in per_fetch.items()},
        "polled_events_per_day_at_60s": round(polled_day),
        "checked_events_per_day_at_60s": round(checked_day),
        "sweep_events_per_day_per_shard": sweep_day,
        "ratio_alone": round(polled_day / (checked_day + sweep_day), 1),
        "ratio_1000_per_shard": round(polled_day / (checked_day + sweep_day / 1000), 1),
    }


SERVER = """
import sys, time
from pathlib import Path
from tests.support.githttp import git_http_server
with git_http_server(Path(sys.argv[1]), None, keep_alive=True, reuse_listings=1.0) as server:
    print(server.port, flush=True)
    while True:
        time.sleep(3600)
"""


def _cpu() -> tuple[float, float]:
    t = os.times()
    return t.user + t.system, t.children_user + t.children_system


async def sweep_cpu(
    repos: int, seconds: float, interval: float, with_git: bool = True
) -> dict[str, Any]:
    from models.tables import Watch
    from tests.support.gitrepos import WorkRepo
    from tests.support.idle_rows import add_idle_repositories
    from treecast import remote_checks
    from treecast.config import load_settings
    from treecast.crypto import generate_key
    from treecast.db import session_scope

    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="treecast-sweep-") as tmp:
        root = Path(tmp)
        repo = WorkRepo(root / "src")
        repo.write("README.md", "# idle\n")
        head = repo.commit("one file")
        served = root / "served"
        served.mkdir()
        for n in range(repos):
            (served / f"r{n}.git").symlink_to(repo.remote)
        server = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(served)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline())
            env = {
                "TREECAST_DATA_DIR": str(root / "data"),
                "TREECAST_SECRET_KEY": generate_key(),
                "TREECAST_ALLOW_PRIVATE_URLS": "1",
                "TREECAST_ALLOW_FILE_URLS": "1",
            }
            settings = load_settings(env)
            urls = [f"http://127.0.0.1:{port}/r{n}.git" for n in range(repos)]
            ids = add_idle_repositories(settings, urls, head, int(interval))
            signalled: list[str] = []

            async def signal(repository_id: str, moved: Any) -> None:
                signalled.append(repository_id)

            ways = (("smart HTTP", True), ("git ls-remote", False))
            for label, native in ways if with_git else ways[:1]:
                count = repos if native else max(1, repos // 10)
                if not native:
                    with session_scope(settings.database_url) as session:
                        for rid in ids[count:]:
                            row = session.get(Watch, ("app1", rid))
                            assert row is not None
                            session.delete(row)
                checker = remote_checks.RemoteChecker(
                    settings,
                    0,
                    1,
                    signal=signal,
                    heartbeat=lambda progress: None,
                    concurrency=settings.check_concurrency,
                )
                if not native:
                    checker.native_http = False
                # One interval to warm up (credentials read once per repository, every
                # connection opened), then the steady state is measured.
                run = asyncio.ensure_future(checker.run(interval + seconds + 1))
                await asyncio.sleep(interval)
                checks0 = checker.progress.checks
                own0, children0 = _cpu()
                wall0 = time.monotonic()
                await asyncio.sleep(seconds)
                wall = time.monotonic() - wall0
                own, children = _cpu()
                progress = replace(checker.progress, checks=checker.progress.checks - checks0)
                await run
                own -= own0
                children -= children0
                scale = repos / count
                share = (own + children) / wall * scale
                figures[label] = {
                    "repositories": count,
                    "checks": progress.checks,
                    "signalled": progress.signalled,
                    "failed": progress.failed,
                    "checks_per_second": round(progress.checks / wall, 1),
                    "cpu_ms_per_check": round((own + children) / max(progress.checks, 1) * 1000, 3),
                    "worker_share_of_a_core_at_repos": round(share, 4),
                    # at the rate due (repos / interval), if the run fell behind it
                    "share_at_due_rate": round(
                        (own + children) / max(progress.checks, 1) * repos / interval, 4
                    ),
                    "git_processes_cpu_s": round(children, 2),
                }
                print(f"  {label}: {json.dumps(figures[label])}", flush=True)
            figures["signals"] = len(signalled)
        finally:
            server.kill()
            server.wait()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--interval", type=int, default=2, help="poll interval of part 1 (s)")
    parser.add_argument("--seconds", type=float, default=40, help="idle window of part 1 (s)")
    parser.add_argument("--repos", type=int, default=10_000, help="idle repositories of part 2")
    parser.add_argument("--check-seconds", type=float, default=120, help="length of part 2 (s)")
    parser.add_argument("--skip-history", action="store_true", help="only part 2")
    parser.add_argument("--skip-sweep", action="store_true", help="only part 1")
    parser.add_argument(
        "--skip-git", action="store_true", help="part 2 without the `git ls-remote` checks"
    )
    args = parser.parse_args(argv)
    if not args.skip_history:
        print("1. history of an idle repository, polled and with remote checks", flush=True)
        figures = asyncio.run(history(args.interval, args.seconds))
        print(json.dumps(figures, indent=1), flush=True)
        print(
            f"  per day at 60 s: {figures['polled_events_per_day_at_60s']} events polled, "
            f"{figures['checked_events_per_day_at_60s']} with checks "
            f"+ {figures['sweep_events_per_day_per_shard']} for the sweep, shared by its shard: "
            f"{figures['ratio_alone']}x fewer alone, {figures['ratio_1000_per_shard']}x with "
            "1,000 repositories per shard"
        )
    if not args.skip_sweep:
        print(f"2. {args.repos} idle repositories checked every 60 s for {args.check_seconds} s")
        cpu = asyncio.run(sweep_cpu(args.repos, args.check_seconds, 60.0, not args.skip_git))
        print(json.dumps(cpu, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
