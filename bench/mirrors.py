"""Benchmark of verifiable mirrors (`python -m bench.mirrors [--files 100000]`).

Runs the Temporal dev server, a worker, the example receiver and `python -m treecast.api`
as its own process (tests/support/api_stack.py). One app watches a synthetic repository of `--files` files (built with
`git fast-import`) and holds all of it: its ledger is filled as a finished delivery leaves
it (sending 100,000 webhooks first would measure something else). Then:

1. manifest: `GET /api/repositories/{id}/manifest`, streamed and read by the client piece
   by piece, while the API process's resident memory is sampled every 5 ms: its growth over
   the memory it had before the request (issue 25: under 64 MB), twice (the first request
   imports the manifest's code);
2. verify: `POST .../reconcile?dry_run=true` with all the files, 10 of them differing;
3. repair: the same without dry_run: until the 202, then until the sync is final and the
   receiver has the 10 events (the ordinary delivery's full comparison of the whole tree
   with the rewritten ledger included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
from sqlalchemy import insert

from bench.git_snapshot import build_remote, git
from examples.receiver import FILE_EVENTS, Receiver
from models.tables import DeliveredFile, Snapshot, Watch, WatchStatus
from tests.support import registering
from tests.support.api_helpers import bearer
from tests.support.api_stack import api_stack
from treecast.config import Settings, load_settings
from treecast.db import session_scope
from treecast.delivery.manifest import manifest_files
from treecast.gitcache.repository import RemoteAccess, RepositoryCache
from treecast.process_exit import run_and_exit
from treecast.service.core import TreecastService

DIFFERENCES = 10  # 4 lost, 3 changed, 3 of the app's own


@dataclass
class Memory:
    """A process's resident memory before sampling, and the peak seen while sampled."""

    before: int
    peak: int

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.before) / 2**20


@contextmanager
def sampled(pid: int) -> Iterator[Memory]:
    """The process's resident memory, sampled every 5 ms in a thread while inside."""
    process = psutil.Process(pid)
    before = process.memory_info().rss
    memory = Memory(before, before)
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.005):
            memory.peak = max(memory.peak, process.memory_info().rss)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield memory
    finally:
        stop.set()
        thread.join()


def holding_everything(
    settings: Settings, url: str, receiver: Receiver, secret: str
) -> tuple[str, str]:
    """An app watching the repository and holding all of it: (token, repository id)."""
    service = TreecastService(settings)
    registering.blocking(service.admin.prepare_database())
    onboarded = registering.blocking(service.apps.add("bench", receiver.url, secret))
    repository_id = registering.add_repository(settings, url)
    registering.watch(settings, onboarded.app_id, repository_id)
    commit = git(Path(url.removeprefix("file://")), "rev-parse", "refs/heads/main")
    cache = RepositoryCache(settings, repository_id)
    access = RemoteAccess(repository_id, url, "", None)
    cache.ensure_commit(access, commit)  # as the worker on this host left it
    with cache.reading():
        rows = [
            {
                "app_id": onboarded.app_id,
                "repository_id": repository_id,
                "path": entry.path,
                "blob_id": entry.blob_id,
                "sha256": "",
            }
            for entry in manifest_files(cache, access, commit, [], sizes=False)
        ]
    with session_scope(settings.database_url) as session:
        for start in range(0, len(rows), 5000):
            session.execute(insert(DeliveredFile), rows[start : start + 5000])
        session.add(Snapshot(repository_id=repository_id, commit=commit))
        watch = session.get(Watch, (onboarded.app_id, repository_id))
        assert watch is not None
        watch.delivered_commit, watch.status = commit, WatchStatus.SYNCED
        session.add(watch)
    return onboarded.token, repository_id


def held_lines(manifest_body: bytes) -> bytes:
    """What the app says it holds: the manifest's files, 10 of them not as delivered."""
    entries = [json.loads(line) for line in manifest_body.splitlines()[1:]]
    mine = {e["path"]: e["blob_id"] for e in entries}
    paths = sorted(mine)
    for path in paths[:4]:
        del mine[path]  # lost
    for path in paths[100:103]:
        mine[path] = "0" * 40  # changed on the app's side
    for n in range(3):
        mine[f"zz-mine-{n}.txt"] = "1" * 40  # the app's own
    return b"".join(
        json.dumps({"path": p, "blob_id": mine[p]}).encode() + b"\n"
        for p in sorted(mine, key=str.encode)
    )


async def manifest_once(
    http: httpx.AsyncClient, pid: int, url: str, token: str
) -> tuple[float, float, bytes]:
    """(seconds, API memory growth in MiB, the body) of one manifest read piece by piece."""
    pieces: list[bytes] = []
    started = time.perf_counter()
    with sampled(pid) as sampler:
        async with http.stream("GET", url, headers=bearer(token)) as answer:
            assert answer.status_code == 200, await answer.aread()
            async for piece in answer.aiter_bytes():
                pieces.append(piece)
    return time.perf_counter() - started, sampler.growth_mib, b"".join(pieces)


async def run(files: int, root: Path) -> dict[str, float]:
    remote = root / "remote.git"
    started = time.perf_counter()
    build_remote(remote, files)
    print(f"== {files:,} files (built with fast-import in {time.perf_counter() - started:.1f} s)")
    figures: dict[str, float] = {}
    async with api_stack(root) as stack:
        settings = load_settings(
            {
                "TREECAST_DATA_DIR": str(root / "data"),
                "TREECAST_SECRET_KEY": stack.secret_key,
                "TREECAST_ALLOW_FILE_URLS": "1",
                "TREECAST_ALLOW_PRIVATE_URLS": "1",
            }
        )
        receiver, http = stack.receiver, stack.http
        token, repository_id = holding_everything(
            settings, f"file://{remote}", receiver, stack.secret
        )
        url = f"/api/repositories/{repository_id}/manifest"
        rss = psutil.Process(stack.api_pid).memory_info().rss / 2**20
        print(f"API process ready: {rss:.0f} MiB resident")
        for attempt in ("first", "second"):
            took, growth, body = await manifest_once(http, stack.api_pid, url, token)
            header = json.loads(body.split(b"\n", 1)[0])
            print(
                f"manifest ({attempt}): {header['files']:,} files, "
                f"{len(body) / 2**20:.1f} MiB in {took:.2f} s; API memory +{growth:.1f} MiB"
            )
            figures[f"manifest_{attempt}_s"] = took
            figures[f"manifest_{attempt}_growth_mib"] = growth
        held = held_lines(body)
        ndjson = {**bearer(token), "content-type": "application/x-ndjson"}
        reconcile = f"/api/repositories/{repository_id}/reconcile"
        started = time.perf_counter()
        verify = await http.post(
            reconcile, params={"dry_run": "true"}, content=held, headers=ndjson, timeout=600
        )
        took = time.perf_counter() - started
        assert verify.status_code == 200, verify.text
        assert verify.json()["differ"] == DIFFERENCES, verify.text
        print(f"verify: {files:,} held paths, {DIFFERENCES} differ, in {took:.2f} s")
        figures["verify_s"] = took
        mark = len(receiver.requests)
        started = time.perf_counter()
        repair = await http.post(reconcile, content=held, headers=ndjson, timeout=600)
        accepted = time.perf_counter() - started
        assert repair.status_code == 202, repair.text
        status_url = repair.json()["status_url"]
        while True:
            outcome = (await http.get(status_url, headers=bearer(token))).json()
            if outcome.get("final"):
                break
            await asyncio.sleep(0.05)
        done = time.perf_counter() - started
        sent = [r for r in receiver.requests[mark:] if r.event in FILE_EVENTS]
        assert outcome["ok"] and len(sent) == DIFFERENCES, (outcome, len(sent))
        print(
            f"repair: answered 202 in {accepted:.2f} s; the {DIFFERENCES} files "
            f"delivered and the sync final in {done:.2f} s"
        )
        figures["repair_accepted_s"], figures["repair_done_s"] = accepted, done
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="treecast-bench-mirrors-") as root:
        figures = asyncio.run(run(args.files, Path(root)))
    growth = max(figures["manifest_first_growth_mib"], figures["manifest_second_growth_mib"])
    print(f"manifest memory growth {growth:.1f} MiB ({'under' if growth < 64 else 'OVER'} 64 MiB)")
    return 0 if growth < 64 else 1


if __name__ == "__main__":
    # Not sys.exit: Python's shutdown can abort after Temporal was used (treecast/process_exit).
    run_and_exit(main)
