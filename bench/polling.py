"""Benchmark: polling without a push hook, push → webhook over smart HTTP and file://.

    python -m bench.polling [--interval 10] [--pushes 16] [--seed N] [--json]

The Temporal dev server (headless), `worker.py` as its own process (remote checks on, as
by default), the example receiver and a smart-HTTP git server (`git http-backend`,
tests/support/githttp.py), all on 127.0.0.1. Two repositories in the same run, one served over
smart HTTP and one over file://, each set up the way a new user does it (`starter.py repo
add URL --interval N`, then `starter.py watch`), then pushed to `--pushes` times more at
random moments (a random wait of 0 to one interval after the previous change arrived,
stratified: `waits`), with no hook: every change is found by the `CheckRemotes` sweep.
Per repository: the first change after the watch, mean and max push → webhook (from `git
push` returning to the changed file's content in the receiver's mirror), and snapshots
(the sync loop's sync attempts) per distinct commit. docs/performance.md, Polling without
a hook.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from examples.receiver import Receiver
from tests.support.faults_helpers import WorkerProcess, fault_stack
from tests.support.githttp import git_http_server
from tests.support.gitrepos import WorkRepo
from treecast.crypto import generate_webhook_secret

ROOT = Path(__file__).resolve().parent.parent
ARRIVAL_POLL = 0.005  # how often the mirror is looked at (the figures' resolution)
DAY = 86_400  # TREECAST_FULL_SYNC_SECONDS' default


async def cli(env: dict[str, str], *argv: str) -> dict[str, Any]:
    """`python starter.py --json ARGV`, as a user runs it (settings in `env`)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "starter.py"),
        "--json",
        *argv,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"starter.py {' '.join(argv)} failed: {err.decode().strip()}")
    answer: dict[str, Any] = json.loads(out)
    return answer


async def arrived(path: Path, content: bytes, timeout: float) -> float:
    """Wait until the mirror holds `content` at `path`; the monotonic time it was seen."""
    deadline = time.monotonic() + timeout
    while True:
        now = time.monotonic()
        if path.exists() and path.read_bytes() == content:
            return now
        if now > deadline:
            raise TimeoutError(f"{path.name} did not arrive in {timeout:g} s")
        await asyncio.sleep(ARRIVAL_POLL)


def waits(rng: random.Random, count: int, interval: float) -> list[float]:
    """`count` random waits of 0 to one interval, stratified: one in each of `count` equal
    slices of the interval, in random order. Each push then meets the checks at a random
    phase, and the phases cover the interval evenly, so the mean of a few pushes is not
    one run's luck (plain uniform draws: +-0.7 s at 17 pushes and a 10 s interval)."""
    slices = [(n + rng.random()) * interval / count for n in range(count)]
    rng.shuffle(slices)
    return slices


@dataclass
class Remote:
    """One repository of the run and what its pushes cost."""

    name: str
    repo: WorkRepo
    url: str
    repository_id: str = ""
    latencies: list[float] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        commits = len(self.latencies) + 1  # the first commit and one per push
        syncs = int(self.status.get("syncs", 0))
        wakes = int(self.status.get("remote_wakes", 0))
        return {
            "remote": self.name,
            "first_change_after_watch_s": round(self.latencies[0], 2),
            "mean_s": round(statistics.mean(self.latencies), 2),
            "median_s": round(statistics.median(self.latencies), 2),
            "max_s": round(max(self.latencies), 2),
            "pushes": len(self.latencies),
            "distinct_commits": commits,
            "snapshots": syncs,
            "snapshots_per_commit": round(syncs / commits, 2),
            "remote_wakes": wakes,
            "wakes_beyond_one_per_push": wakes - len(self.latencies),
        }


async def exercise(
    env: dict[str, str],
    remote: Remote,
    app_id: str,
    mirror: Path,
    interval: int,
    pushes: int,
    rng: random.Random,
) -> None:
    """Register and watch as a user would, then push at random moments and time each."""
    repo = remote.repo
    target = f"{remote.name}.txt"
    added = await cli(env, "repo", "add", remote.url, "--interval", str(interval))
    remote.repository_id = added["repository_id"]
    await cli(env, "watch", app_id, remote.repository_id)
    await arrived(mirror / target, b"start\n", 120)
    for n, wait in enumerate(waits(rng, pushes + 1, interval)):  # n 0: the first change
        await asyncio.sleep(wait)
        content = f"change {n}\n".encode()
        repo.write(target, content)
        await asyncio.to_thread(repo.commit, f"change {n}")
        pushed = time.monotonic()
        remote.latencies.append(await arrived(mirror / target, content, 20 * interval) - pushed)
        print(f"  {remote.name} push {n}: {remote.latencies[-1]:.2f} s", flush=True)
    # Checks after the last change: none may wake the loop for what it has.
    await asyncio.sleep(2 * interval)
    shown = await cli(env, "status", remote.repository_id)
    remote.status = dict(shown["repositories"][0]["sync"])


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    """Set everything up, push, and return the figures."""
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    tmp = Path(tempfile.mkdtemp(prefix="treecast-bench-polling-"))
    remotes = [
        Remote("smart-http", WorkRepo(tmp / "http"), ""),
        Remote("file", WorkRepo(tmp / "file"), ""),
    ]
    for remote in remotes:
        remote.repo.write(f"{remote.name}.txt", "start\n")
        remote.repo.commit("start")
    print(
        f"polling, no hook: interval {args.interval} s, {args.pushes} pushes after the first "
        f"change, seed {seed}",
        flush=True,
    )
    secret = generate_webhook_secret()
    # Remote checks on, as by default (the fault stack turns them off).
    async with fault_stack(tmp / "data", TREECAST_FULL_SYNC_SECONDS=str(DAY)) as stack:
        worker = WorkerProcess(stack.env, tmp / "worker.log")
        worker.start()
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("TREECAST_")}
        env = {**inherited, **stack.env}
        try:
            with (
                Receiver([secret], tmp / "mirror") as receiver,
                git_http_server(tmp / "http", None, keep_alive=True) as git_server,
            ):
                remotes[0].url = git_server.url("remote.git")
                remotes[1].url = remotes[1].repo.url
                app = await cli(
                    env, "app", "add", "--name", "bench", "--url", receiver.url, "--secret", secret
                )
                await asyncio.gather(
                    *(
                        exercise(
                            env,
                            remote,
                            app["app_id"],
                            receiver.mirror,
                            args.interval,
                            args.pushes,
                            random.Random(f"{seed}-{remote.name}"),
                        )
                        for remote in remotes
                    )
                )
        finally:
            worker.stop()
    shutil.rmtree(tmp, ignore_errors=True)  # kept, with the worker's log, when it failed
    return {
        "interval_s": args.interval,
        "seed": seed,
        "remotes": [remote.summary() for remote in remotes],
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.polling", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--interval", type=int, default=10, help="poll interval (s)")
    parser.add_argument("--pushes", type=int, default=16, help="pushes after the first change")
    parser.add_argument("--seed", type=int, default=None, help="the random moments' seed")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    figures = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    for row in figures["remotes"]:
        print(
            f"{row['remote']}: first change after the watch {row['first_change_after_watch_s']} s;"
            f" push -> webhook mean {row['mean_s']} s, median {row['median_s']} s,"
            f" max {row['max_s']} s over {row['pushes']} changes;"
            f" {row['snapshots']} snapshots for {row['distinct_commits']} commits"
            f" ({row['snapshots_per_commit']} each), {row['remote_wakes']} remote wakes"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
