"""/docs in headless Chromium with every request to anything but the API itself blocked:
Swagger UI's script and stylesheet come from the API (the swagger-ui-bundle package), and
the page lists the operations. Before, they came from a CDN and the page stayed blank."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("playwright.async_api")

from playwright.async_api import Route, async_playwright

from tests.admin.test_admin_browser import CHROMIUM, CHROMIUM_ARGS
from tests.conftest import free_port
from tests.reliability.test_replicas import process
from tests.support.api_helpers import ADMIN_TOKEN
from treecast.crypto import generate_key

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.browser,  # headless Chromium: not in `make unit`
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="Chromium is not installed (make browser installs Debian's chromium)",
    ),
]


async def test_the_api_page_renders_with_the_network_blocked(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "TREECAST_DATA_DIR": str(tmp_path / "data"),
        "TREECAST_SECRET_KEY": generate_key(),
        "TREECAST_ADMIN_TOKEN": ADMIN_TOKEN,
        "TREECAST_API_LISTEN": f"127.0.0.1:{port}",
        "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",  # the page needs no Temporal
    }
    with process([sys.executable, "-m", "treecast.api"], env, tmp_path / "api.log"):
        async with httpx.AsyncClient(base_url=base) as http:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if (await http.get("/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, (tmp_path / "api.log").read_text()
                await asyncio.sleep(0.2)

        blocked: list[str] = []
        served: list[str] = []

        async def only_the_api(route: Route) -> None:
            url = route.request.url
            if url.startswith(base + "/"):
                served.append(url[len(base) :])
                await route.continue_()
            else:
                blocked.append(url)
                await route.abort("internetdisconnected")

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                context = await browser.new_context()
                await context.route("**/*", only_the_api)
                page = await context.new_page()
                await page.goto(base + "/docs")
                await page.wait_for_selector(".opblock", timeout=30_000)
                shown = await page.inner_text("#swagger-ui")
                operations = await page.locator(".opblock").count()
            finally:
                await browser.close()

    assert blocked == [], blocked
    assert {"/docs", "/openapi.json"} <= set(served), served
    assert any(path.startswith("/docs/assets/swagger-ui-bundle.js") for path in served), served
    assert operations >= 20, operations
    for path in ("/api/repositories", "/admin/api/apps/onboard", "/hooks/github", "/ready"):
        assert path in shown, path
