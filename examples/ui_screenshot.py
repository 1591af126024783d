"""Open the Temporal Web UI in headless Chromium: the workflow list filtered by breaker state.

    python -m examples.ui_screenshot [--out docs/ui-breaker-open.png]

Starts a dev server with its Web UI and a worker, registers a repository whose
remote is missing so its breaker opens, then has Chromium (Debian's `chromium`
package) load the UI's workflow list filtered by `TreecastBreakerState = "open"`
and save a screenshot. `tests/workflows/test_web_ui.py` runs the same steps and checks the
rendered page names the workflow.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import worker
from tests.support import registering
from treecast.config import Settings, load_settings
from treecast.crypto import generate_key
from treecast.service import workflows as temporal_ops
from treecast.temporal_client import connect

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # the machine has no network: no calls home
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1400,800",
    "--virtual-time-budget=20000",  # let the single-page app fetch and render its list
]


def chromium() -> str | None:
    """The Chromium binary, if installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def breaker_filter_url(ui_url: str, namespace: str = "default") -> str:
    """The UI's workflow list filtered to open breakers."""
    return f"{ui_url}/namespaces/{namespace}/workflows?query=" + quote(
        'TreecastBreakerState="open"'
    )


def run_chromium(url: str, *extra: str) -> str:
    """Run headless Chromium on `url` with `extra` flags; return its stdout."""
    binary = chromium()
    if binary is None:
        raise RuntimeError("Chromium is not installed (Debian package: chromium)")
    with tempfile.TemporaryDirectory(prefix="treecast-chromium-") as profile:
        done = subprocess.run(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url],
            capture_output=True,
            text=True,
            timeout=120,
        )
    if done.returncode != 0:
        raise RuntimeError(f"chromium failed ({done.returncode}): {done.stderr[-500:]}")
    return done.stdout


def screenshot(url: str, out: Path) -> None:
    """Save a PNG of `url` as rendered."""
    out.parent.mkdir(parents=True, exist_ok=True)
    run_chromium(url, f"--screenshot={out}")


def rendered_text(url: str) -> str:
    """The page's DOM after its scripts ran."""
    return run_chromium(url, "--dump-dom")


async def open_a_breaker(settings: Settings, tmp: Path) -> str:
    """Register a repository whose remote does not exist and sync until its breaker opens."""
    missing = tmp / "missing-remote.git"
    repository_id = registering.add_repository(settings, f"file://{missing}", 3600)
    client = await connect(settings)
    for _ in range(settings.breaker_threshold):
        await temporal_ops.sync_and_wait(
            client, settings, repository_id, 3600, on_progress=None, timeout=60
        )
    status = await temporal_ops.get_status(client, repository_id)
    if status is None or status.breaker_state != "open":
        raise RuntimeError("the breaker did not open")
    return repository_id


async def main_async(out: Path) -> None:
    """Start a dev server with UI and a worker, open a breaker, take the screenshot."""
    from tests.conftest import free_port
    from tests.support.temporal_env import start_local

    # The failing fetches are the point; the SDK would print each with a traceback.
    logging.getLogger("temporalio").setLevel(logging.ERROR)
    tmp = Path(tempfile.mkdtemp(prefix="treecast-ui-"))
    ui_port = free_port()
    env = await start_local(ui=True, ui_port=ui_port)
    settings = load_settings(
        {
            "TREECAST_DATA_DIR": str(tmp),
            "TREECAST_SECRET_KEY": generate_key(),
            "TREECAST_ALLOW_FILE_URLS": "1",
        }
    ).model_copy(
        update={
            "temporal_address": env.client.service_client.config.target_host,
            "task_queue": "treecast-ui",
            "breaker_threshold": 1,
        }
    )
    executor = ThreadPoolExecutor(max_workers=worker.executor_threads(settings))
    try:
        async with worker.build_worker(env.client, settings, executor):
            repository_id = await open_a_breaker(settings, tmp)
            url = breaker_filter_url(f"http://127.0.0.1:{ui_port}")
            await asyncio.to_thread(screenshot, url, out)
            print(f"saved {out}: {url} lists sync-repository/{repository_id}")
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
        await env.shutdown()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (`make screenshot`)."""
    parser = argparse.ArgumentParser(
        prog="python -m examples.ui_screenshot", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "ui-breaker-open.png")
    args = parser.parse_args(argv)
    if chromium() is None:
        print("error: Chromium is not installed (apt-get install chromium)", file=sys.stderr)
        return 2
    asyncio.run(main_async(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
