"""The admin page's Verify and Repair on a watch: what the operator pastes is compared
with what the app acknowledged; Verify sends nothing, Repair sends the difference."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import pytest

from models.tables import WatchStatus
from tests.admin.test_admin_pages import csrf_of, log_in
from tests.api.test_mirrors_api import FILES, delivered, drifted, make_world
from tests.support.api_helpers import api_client
from treecast.delivery.digest import git_blob_id, tree_digest
from treecast.service import workflows


async def test_verify_and_repair_from_the_admin_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = make_world(tmp_path)
    syncs: list[str] = []

    async def client() -> object:
        return object()

    async def breaker_state(_client: object, _repository_id: str) -> str:
        return "closed"

    async def request_sync(_c: object, _s: object, repository_id: str, *_: Any) -> None:
        syncs.append(repository_id)

    monkeypatch.setattr(world.service.runtime, "client", client)
    monkeypatch.setattr(workflows, "breaker_state", breaker_state)
    monkeypatch.setattr(workflows, "request_sync", request_sync)
    page = f"/admin/apps/{world.app_id}/mirror/{world.repository_id}"
    async with api_client(world.settings, world.service) as http:
        assert (await http.get(page)).status_code == 303  # to the login
        refused = await http.post(page, data={"csrf": "x", "held": "y", "action": "verify"})
        assert refused.status_code == 403
        await log_in(http)
        app_page = await http.get(f"/admin/apps/{world.app_id}")
        assert html.escape(page) in app_page.text and "Verify or repair" in app_page.text
        form = await http.get(page)
        assert form.status_code == 200 and 'value="repair"' in form.text
        csrf = await csrf_of(http, page)

        async def submit(held: str, action: str) -> str:
            answer = await http.post(page, data={"csrf": csrf, "held": held, "action": action})
            assert answer.status_code == 303, answer.text
            return (await http.get(page)).text

        mine = world.held(drifted(delivered(FILES))).decode()
        said = await submit(mine, "verify")
        assert "3 files differ (1 missing, 1 changed, 1 extra); nothing was sent." in said
        assert syncs == [] and world.watch().delivered_commit == world.commit
        good = tree_digest((p, git_blob_id(c)) for p, c in delivered(FILES).items())
        assert "In sync" in await submit(good, "verify")
        assert "paste what the app holds" in await submit("", "verify")
        assert "refused" in await submit('{"path": "/etc/passwd", "blob_id": "0"}', "verify")
        said = await submit(mine, "repair")
        assert "sending exactly the difference now" in said
        assert syncs == [world.repository_id]
        assert world.watch().status == WatchStatus.PENDING
        missing = await http.get(f"/admin/apps/{world.app_id}/mirror/repo_{'0' * 24}")
        assert missing.status_code == 404
