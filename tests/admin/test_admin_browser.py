"""The admin page in headless Chromium (Debian's, driven by Playwright for Python) against a
real stack: `python -m treecast.api` under uvicorn, the Temporal dev server, a worker with
short polls and a low breaker threshold, and the example receiver.

Log in; onboard an app and see its token once; watch a repository through the API; see
the first sync land on the repository page; break the remote and see the breaker open
and the watch listed under failed watches; fix it, press Retry and see it recover;
filter the delivery log; delete the app. On the way: every form control has a label and
pressing Tab reaches every link and button of each page.

With TREECAST_SAVE_SCREENSHOTS=1 the overview and failed-watches screenshots are written
to docs/admin-overview.png and docs/admin-failed.png (the README shows them)."""

from __future__ import annotations

import asyncio
import os
import shutil
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

pytest.importorskip("jinja2")
pytest.importorskip("playwright.async_api")

from playwright.async_api import Page, async_playwright

from tests.support.api_helpers import ADMIN_TOKEN, bearer
from tests.support.api_stack import ROOT, api_stack
from tests.support.waiting import until

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="Chromium is not installed (make browser installs Debian's chromium)",
    ),
]


eventually = partial(until, timeout=60.0, step=0.5)


async def _contains(page: Page, url: str, text: str) -> bool:
    return text in await page_text(page, url)


async def page_text(page: Page, url: str) -> str:
    await page.goto(url)
    text: str = await page.inner_text("main")
    return text


# What keyboard users can reach: links, buttons and form controls that are shown.
FOCUSABLE = """() => {
  const all = [...document.querySelectorAll(
    'a[href], button, input:not([type=hidden]), select, textarea')];
  const shown = all.filter(e => e.offsetParent !== null || e.getClientRects().length);
  shown.forEach((e, i) => e.setAttribute('data-tab-id', String(i)));
  return shown.length;
}"""

UNLABELLED = """() => [...document.querySelectorAll(
    'input:not([type=hidden]), select, textarea')]
  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
  .map(e => e.outerHTML)"""

NAMELESS_BUTTONS = """() => [...document.querySelectorAll('button, a[href]')]
  .filter(e => !e.textContent.trim() && !e.getAttribute('aria-label'))
  .map(e => e.outerHTML)"""


async def check_accessible(page: Page) -> None:
    """Every control has a label and Tab reaches every link, button and control in turn."""
    assert await page.evaluate(UNLABELLED) == [], page.url
    assert await page.evaluate(NAMELESS_BUTTONS) == [], page.url
    count = await page.evaluate(FOCUSABLE)
    await page.evaluate("() => { document.activeElement && document.activeElement.blur(); }")
    reached: set[str] = set()
    for _ in range(count + 3):
        await page.keyboard.press("Tab")
        tab_id = await page.evaluate(
            "() => document.activeElement && document.activeElement.getAttribute('data-tab-id')"
        )
        if tab_id is not None:
            reached.add(tab_id)
    missing = {str(i) for i in range(count)} - reached
    assert not missing, f"{page.url}: Tab never reaches elements {sorted(missing)}"


async def test_admin_page_in_a_browser(tmp_path: Path, dev_env: WorkflowEnvironment) -> None:
    extra = {
        "TREECAST_BREAKER_THRESHOLD": "2",
        "TREECAST_POLL_INTERVAL_SECONDS": "2",
        "TREECAST_BREAKER_COOLDOWN_SECONDS": "3600",
        "TREECAST_GIT_TIMEOUT_SECONDS": "20",
        "TREECAST_API_STATUS_TIMEOUT_SECONDS": "3",
    }
    shots = tmp_path / "shots"
    shots.mkdir()
    async with api_stack(tmp_path, dev_env, **extra) as stack, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(30_000)
            await run_scenario(page, stack, shots)
        finally:
            await browser.close()
    if os.environ.get("TREECAST_SAVE_SCREENSHOTS") == "1":
        for name in ("admin-overview.png", "admin-failed.png"):
            shutil.copy(shots / name, ROOT / "docs" / name)


async def run_scenario(page: Page, stack: Any, shots: Path) -> None:
    base, repo, receiver = stack.api_url, stack.repo, stack.receiver

    # Log in: the overview redirects to the login form first.
    await page.goto(f"{base}/admin")
    assert "/admin/login" in page.url
    await check_accessible(page)
    await page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_url(f"{base}/admin")
    assert await page.get_by_role("heading", name="Overview").is_visible()

    # Onboard an app: its token is shown once.
    await page.get_by_role("link", name="Apps", exact=True).click()
    await check_accessible(page)
    await page.get_by_label("Name", exact=True).fill("mirror")
    await page.get_by_label("Base URL (webhooks go to it)").fill(receiver.url)
    await page.get_by_label("Webhook secret (optional").fill(stack.secret)
    await page.get_by_role("button", name="Onboard").click()
    await page.wait_for_url(f"{base}/admin/apps/app_*")
    app_url = page.url
    app_id = app_url.rsplit("/", 1)[1]
    token = (await page.locator(".reveal dd code").first.inner_text()).strip()
    assert token.startswith("tc_")
    await check_accessible(page)
    await page.reload()
    assert token not in await page.content()

    # Watch a repository through the API; the first sync lands on its page.
    repo.write("README.md", "# hello\n")
    repo.write("docs/guide.md", "guide\n")
    first = repo.commit("first")
    watched = await stack.http.post(
        "/api/repositories", json={"url": repo.url}, headers=bearer(token)
    )
    assert watched.status_code == 201, watched.text
    rid = watched.json()["repository_id"]
    repo_url = f"{base}/admin/repositories/{rid}"

    async def landed() -> bool:
        text = await page_text(page, repo_url)
        live = await page.locator("#last-commit").all_inner_texts()
        return "synced" in text and first[:10] in "".join(live)

    await eventually(landed)
    assert receiver.files() == repo.files_at(first)
    await check_accessible(page)
    workflow_link = page.get_by_role("link", name=f"sync-repository/{rid} in the Temporal Web UI")
    assert str(await workflow_link.get_attribute("href")).endswith(
        f"/namespaces/default/workflows/sync-repository%2F{rid}"
    )
    await eventually(lambda: _contains(page, f"{base}/admin/repositories", first[:10]))
    await check_accessible(page)

    # Break the remote: the breaker opens and the watch is listed under failed watches.
    hidden = repo.remote.with_name("gone.git")
    repo.remote.rename(hidden)

    async def opened() -> bool:
        return "open" in await page_text(page, repo_url) and "2 consecutive failures" in (
            await page.inner_text("main")
        )

    await eventually(opened, timeout=90)
    await page.goto(f"{base}/admin")
    overview = await page.inner_text("main")
    assert "open breaker" in overview and "holding back 1 watch." in overview
    await page.screenshot(path=str(shots / "admin-overview.png"), full_page=True)
    await check_accessible(page)
    await page.get_by_role("link", name="Failed watches").first.click()
    row = page.locator("tr", has_text=repo.url)
    assert await row.count() == 1
    assert "breaker open" in await row.inner_text()
    await page.screenshot(path=str(shots / "admin-failed.png"), full_page=True)
    await check_accessible(page)

    # Fix it (with a new commit), press Retry: it recovers and delivers the commit.
    hidden.rename(repo.remote)
    repo.write("after.md", "recovered\n")
    third = repo.commit("after")
    await row.get_by_role("button", name="Retry", exact=True).click()
    await page.wait_for_url(f"{base}/admin/failed")
    assert "Retrying" in await page.inner_text("main")

    async def recovered() -> bool:
        text = await page_text(page, repo_url)
        return "closed" in text and third[:10] in text

    await eventually(recovered, timeout=90)
    await eventually(lambda: asyncio.sleep(0, receiver.files() == repo.files_at(third)))
    assert "No failed watches" in await page_text(page, f"{base}/admin/failed")

    # The delivery log, filtered by app, event and outcome.
    await page.goto(f"{base}/admin/deliveries")
    await check_accessible(page)
    await page.get_by_label("App id").fill(app_id)
    await page.get_by_label("Event").select_option("create")
    await page.get_by_label("Outcome").select_option("delivered")
    await page.get_by_role("button", name="Filter").click()
    await page.wait_for_url("**outcome=delivered**")
    log = await page.inner_text("main table")
    assert "after.md" in log and "README.md" in log and "HTTP 200" in log
    assert "sync_failed" not in log
    await page.get_by_label("Event").select_option("sync_failed")
    await page.get_by_label("Outcome").select_option("")
    await page.get_by_role("button", name="Filter").click()
    await page.wait_for_url("**event=sync_failed**")
    filtered = await page.inner_text("main table")
    assert "sync_failed" in filtered and "README.md" not in filtered

    # Delete the app, through its confirmation page.
    await page.goto(app_url)
    await page.get_by_role("link", name="Delete this app…").click()
    await check_accessible(page)
    await page.get_by_role("button", name="Yes, delete mirror").click()
    await page.wait_for_url(f"{base}/admin/apps")
    listing = await page.inner_text("main")
    assert "App mirror deleted" in listing and app_id not in listing
    gone = await stack.http.get("/api/repositories", headers=bearer(token))
    assert gone.status_code == 401

    # Neither the admin token nor the app's token ever reached the server's log.
    log_text = (shots.parent / "api.log").read_text()
    assert ADMIN_TOKEN not in log_text and token not in log_text and stack.secret not in log_text
