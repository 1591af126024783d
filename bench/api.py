"""Benchmark of the HTTP API (`python -m bench.api [--runs 50] [--watches 100] [--seconds 5]`).

Runs the Temporal dev server, a worker, the example receiver and `python -m treecast.api`
as its own uvicorn process on 127.0.0.1 (tests/support/api_stack.py):

1. push latency: commit a one-file change, then time from POSTing GitHub's signed push
   event to /hooks/github to that file's webhook arriving at the receiver; p50 and p95.
2. list throughput: `GET /api/repositories` for an app with `--watches` watches, in
   requests per second (8 concurrent clients, `--seconds` each), with and without the
   live status query, beside a bare FastAPI endpoint under uvicorn returning the same
   JSON from memory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port
from tests.support.api_helpers import admin, bearer, github_headers, github_push
from tests.support.api_stack import ROOT, ApiStack, api_stack, wait_until_up
from tests.support.waiting import until
from treecast.devserver import end_process
from treecast.process_exit import run_and_exit

CONCURRENCY = 8


def bare_factory() -> Any:
    """A FastAPI app answering BENCH_JSON's content from memory (the comparison)."""
    from fastapi import FastAPI
    from fastapi.responses import Response

    body = Path(os.environ["BENCH_JSON"]).read_bytes()
    app = FastAPI()

    @app.get("/api/repositories")
    async def listing() -> Response:
        return Response(body, media_type="application/json")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


async def push_latency(stack: ApiStack, token: str, runs: int) -> list[float]:
    """Seconds from the push hook to the changed file's webhook, per run."""
    repo, receiver = stack.repo, stack.receiver
    repo.write("changing.txt", "seed\n")
    repo.commit("seed")
    watched = await stack.http.post(
        "/api/repositories", json={"url": repo.url}, headers=bearer(token)
    )
    push_secret = watched.json()["push_secret"]
    await until(lambda: any(r.path == "changing.txt" for r in receiver.requests), 60, step=0.001)
    samples: list[float] = []
    for run in range(runs):
        repo.write("changing.txt", f"run {run}\n")
        repo.commit(f"run {run}")
        seen = len(receiver.requests)
        payload = github_push(repo.url)
        started = time.perf_counter()
        answer = await stack.http.post(
            "/hooks/github",
            content=payload,
            headers=github_headers(payload, push_secret, f"bench-{run}"),
        )
        assert answer.status_code == 202, answer.text

        def arrived(seen: int = seen) -> bool:
            return any(
                r.path == "changing.txt" and r.status == 200 for r in stack.receiver.requests[seen:]
            )

        await until(arrived, 60, step=0.001)
        samples.append(time.perf_counter() - started)
        await asyncio.sleep(0.2)  # let the delivery's bookkeeping finish before the next push
    return samples


async def requests_per_second(url: str, headers: dict[str, str], seconds: float) -> float:
    """Completed GETs per second with CONCURRENCY clients on keep-alive connections."""
    done = 0
    deadline = time.monotonic() + seconds

    async def client() -> None:
        nonlocal done
        async with httpx.AsyncClient(timeout=30) as http:
            while time.monotonic() < deadline:
                answer = await http.get(url, headers=headers)
                assert answer.status_code == 200, answer.text[:200]
                done += 1

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    return done / (time.monotonic() - started)


def add_watches(data_dir: Path, app_id: str, count: int) -> None:
    """`count` repositories watched by the app, written to the API's database directly
    (their sync loops are not started: the list's live query finds no workflow)."""
    from tests.support import registering
    from treecast.config import load_settings

    settings = load_settings({**os.environ, "TREECAST_DATA_DIR": str(data_dir)})
    for index in range(count):
        url = f"https://github.com/bench/r{index:03d}"
        registering.watch(settings, app_id, registering.add_repository(settings, url, 3600))


async def listing(stack: ApiStack, root: Path, watches: int, seconds: float) -> dict[str, float]:
    onboarded = await stack.http.post(
        "/admin/api/apps/onboard",
        json={"app_name": "lister", "base_url": "https://example.com/hooks"},
        headers=admin(),
    )
    app = onboarded.json()["data"]
    os.environ["TREECAST_SECRET_KEY"] = stack.secret_key
    add_watches(root / "data", app["app_id"], watches)
    url = f"{stack.api_url}/api/repositories?limit={watches}"
    quick_url = url + "&live=false"
    page = (await stack.http.get(quick_url, headers=bearer(app["token"]))).json()
    assert len(page["data"]) == watches
    body = root / "listing.json"
    body.write_text(json.dumps(page))
    port = free_port()
    bare = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.api:bare_factory",
            "--factory",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env={**os.environ, "BENCH_JSON": str(body)},
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            await wait_until_up(http, bare)
        results = {
            "bare": await requests_per_second(
                f"http://127.0.0.1:{port}/api/repositories", {}, seconds
            ),
            "live=false": await requests_per_second(quick_url, bearer(app["token"]), seconds),
            "live": await requests_per_second(url, bearer(app["token"]), seconds),
        }
    finally:
        end_process(bare, 10)
    return results


async def main_async(runs: int, watches: int, seconds: float) -> None:
    root = Path(tempfile.mkdtemp(prefix="treecast-bench-api-"))
    async with api_stack(root) as stack:
        onboarded = await stack.http.post(
            "/admin/api/apps/onboard",
            json={"app_name": "mirror", "base_url": stack.receiver.url, "secret": stack.secret},
            headers=admin(),
        )
        token = onboarded.json()["data"]["token"]
        samples = await push_latency(stack, token, runs)
        p50 = statistics.median(samples)
        p95 = statistics.quantiles(samples, n=20)[18] if len(samples) >= 20 else max(samples)
        print(
            f"push hook -> file webhook, {runs} runs: p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms"
        )
        rates = await listing(stack, root, watches, seconds)
        for name, rate in rates.items():
            print(f"GET /api/repositories ({watches} watches) {name}: {rate:.0f} req/s")
        print(
            f"ratio to bare: live=false {rates['live=false'] / rates['bare']:.2f}, "
            f"live {rates['live'] / rates['bare']:.2f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.api", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--watches", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    asyncio.run(main_async(args.runs, args.watches, args.seconds))
    return 0


if __name__ == "__main__":
    # Not sys.exit: Python's shutdown can abort after Temporal was used (treecast/process_exit).
    run_and_exit(main)
