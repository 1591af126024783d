"""A whole stack for end-to-end API runs: the Temporal dev server, a worker, the example
receiver and `python -m treecast.api` as its own uvicorn process (tests and bench/api.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from temporalio.testing import WorkflowEnvironment

import worker
from examples.receiver import Receiver
from tests.conftest import free_port
from tests.support.api_helpers import ADMIN_TOKEN
from tests.support.gitrepos import WorkRepo
from tests.support.temporal_env import new_task_queue, start_local
from treecast.config import load_settings
from treecast.crypto import generate_key, generate_webhook_secret
from treecast.devserver import end_process

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ApiStack:
    """What a run talks to: the API over HTTP, the receiver, a git repository."""

    http: httpx.AsyncClient
    receiver: Receiver
    secret: str
    repo: WorkRepo
    api_url: str
    secret_key: str = ""
    api_pid: int = 0  # the API process (bench/mirrors.py samples its memory)


async def wait_until_up(http: httpx.AsyncClient, process: subprocess.Popen[bytes]) -> None:
    """Until /ready answers 200 (the server started and sees the database and Temporal)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the API server exited with {process.returncode}")
        try:
            if (await http.get("/ready")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError("the API server did not become ready within 60 s")


@asynccontextmanager
async def api_stack(
    root: Path, env: WorkflowEnvironment | None = None, **extra: str
) -> AsyncIterator[ApiStack]:
    """Start everything under `root` on `env` (tests pass `dev_env`; by default a dev server
    of its own); stop it all afterwards."""
    env_server = env or await start_local()
    port = free_port()
    values = {
        "TEMPORAL_ADDRESS": env_server.client.service_client.config.target_host,
        "TREECAST_DATA_DIR": str(root / "data"),
        "TREECAST_SECRET_KEY": generate_key(),
        "TREECAST_ALLOW_PRIVATE_URLS": "1",
        "TREECAST_ALLOW_FILE_URLS": "1",
        "TREECAST_ALLOW_INSECURE_TRANSPORT": "1",
        "TREECAST_TASK_QUEUE": new_task_queue(),
        "TREECAST_ADMIN_TOKEN": ADMIN_TOKEN,
        "TREECAST_API_LISTEN": f"127.0.0.1:{port}",
        "TREECAST_POLL_INTERVAL_SECONDS": "3600",
        "TREECAST_API_RATE_PER_SECOND": "100000",
        "TREECAST_API_RATE_BURST": "100000",
        # The worker below polls itself (no remote-check sweep); test_remote_checks.py
        # and test_e2e.py run with the sweep.
        "TREECAST_FULL_SYNC_SECONDS": "0",
        **extra,
    }
    environment = {**os.environ, **values}
    environment.pop("TREECAST_DATABASE_URL", None)
    settings = load_settings(
        {k: v for k, v in environment.items() if k.startswith(("TREECAST_", "TEMPORAL_"))}
    )
    log = open(root / "api.log", "wb")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        [sys.executable, "-m", "treecast.api"], cwd=ROOT, env=environment, stdout=log, stderr=log
    )
    secret = generate_webhook_secret()
    executor = ThreadPoolExecutor(max_workers=worker.executor_threads(settings))
    try:
        with Receiver([secret], root / "mirror") as receiver:
            async with (
                worker.build_worker(env_server.client, settings, executor),
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
            ):
                await wait_until_up(http, process)
                yield ApiStack(
                    http,
                    receiver,
                    secret,
                    WorkRepo(root / "git"),
                    str(http.base_url).rstrip("/"),
                    values["TREECAST_SECRET_KEY"],
                    process.pid,
                )
    finally:
        end_process(process, 15)
        log.close()
        executor.shutdown(wait=False, cancel_futures=True)
        if env is None:
            await env_server.shutdown()
