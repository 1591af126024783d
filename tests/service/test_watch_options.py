"""The watch options `submodules` and `lfs` through each front door: the HTTP API, the CLI
and the status they show (delivery itself: test_repository_contents.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import starter
from tests.support.api_helpers import api_client, api_settings, bearer, onboard
from tests.support.cli import run
from treecast.config import Settings

REPO = "https://github.com/acme/handbook"
# These hosts do not exist: the access check at watch time is tests/tenants/test_tenants.py's.
pytestmark = [pytest.mark.usefixtures("hosts_accept_everyone")]


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings: Settings = api_settings(tmp_path)
    async with api_client(settings) as http:
        yield http


async def test_the_api_takes_shows_and_changes_the_options(client: httpx.AsyncClient) -> None:
    app = await onboard(client)
    headers = bearer(app["token"])
    body: dict[str, Any] = {"url": REPO, "submodules": "recursive", "lfs": True}
    created = await client.post("/api/repositories", json=body, headers=headers)
    assert created.status_code == 201, created.text
    assert created.json()["submodules"] == "recursive"
    assert created.json()["lfs"] is True
    repository_id = created.json()["repository_id"]
    again = await client.post("/api/repositories", json=body, headers=headers)
    assert again.status_code == 200  # the same call again changes nothing
    shown = await client.get(f"/api/repositories/{repository_id}?live=false", headers=headers)
    assert shown.json()["submodules"] == "recursive"
    assert shown.json()["lfs"] is True and shown.json()["held_back"] == []
    changed = await client.post(
        "/api/repositories", json={"url": REPO, "submodules": "off"}, headers=headers
    )
    assert changed.json()["submodules"] == "off"
    assert changed.json()["lfs"] is True  # not given: kept
    bad = await client.post(
        "/api/repositories", json={"url": REPO, "submodules": "all"}, headers=headers
    )
    assert bad.status_code == 400 and "error" in bad.json()


def test_the_cli_watch_takes_the_options_and_status_shows_them(
    cli_env: Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    code, app, _ = run(capsys, "app", "add", "--name", "docs", "--url", "https://example.com/h")
    assert code == 0
    run(capsys, "repo", "add", "file:///srv/handbook")  # saved; its sync cannot start here
    _, listed, _ = run(capsys, "repo", "list")
    repository_id = listed["repositories"][0]["repository_id"]
    code, watched, err = run(
        capsys, "watch", app["app_id"], repository_id, "--submodules", "recursive", "--lfs"
    )
    # Temporal is not there: the watch is saved all the same (exit 4 names it).
    assert watched is None or watched.get("submodules", "recursive") == "recursive", err
    code = starter.main(["status", repository_id, "--json"])
    out, _ = capsys.readouterr()
    (row,) = json.loads(out)["repositories"]
    (watch,) = row["apps"]
    assert watch["submodules"] == "recursive" and watch["lfs"] is True
    assert starter.main(["watch", app["app_id"], repository_id, "--submodules", "all"]) == 2


async def test_the_admin_page_shows_the_options_and_what_was_held_back(tmp_path: Path) -> None:
    from models.tables import Watch
    from tests.admin.test_admin_pages import log_in
    from treecast.db import session_scope

    settings = api_settings(tmp_path)
    async with api_client(settings) as client:
        app = await onboard(client)
        body = {"url": REPO, "submodules": "shallow", "lfs": True}
        created = await client.post("/api/repositories", json=body, headers=bearer(app["token"]))
        rid = created.json()["repository_id"]
        with session_scope(settings.database_url) as session:
            watch = session.get(Watch, (app["app_id"], rid))
            assert watch is not None
            watch.held_back = json.dumps(["submodule vendor/x held back: <refused>"])
            session.add(watch)
        await log_in(client)
        page = (await client.get(f"/admin/repositories/{rid}")).text
    assert "submodules: shallow" in page and ">lfs<" in page
    assert "held back: submodule vendor/x held back: &lt;refused&gt;" in page
