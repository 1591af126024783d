"""End to end: a real uvicorn process (`python -m treecast.api`), the dev server, a worker
and the example receiver verifying signatures. Onboard through the admin API, watch
through the client API, push a commit and send GitHub's signed push event: the file
arrives. With a bad signature: 401, and nothing is synced."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from tests.support.api_helpers import (
    bearer,
    github_headers,
    github_push,
    post_github_push,
    post_onboard,
)
from tests.support.api_stack import api_stack
from tests.support.waiting import until

pytestmark = pytest.mark.e2e


async def test_push_event_delivers_the_file_and_a_bad_signature_does_nothing(
    tmp_path: Path, dev_env: WorkflowEnvironment
) -> None:
    async with api_stack(tmp_path, dev_env) as stack:
        http, repo, receiver = stack.http, stack.repo, stack.receiver
        onboarded = await post_onboard(
            http, {"app_name": "mirror", "base_url": receiver.url, "secret": stack.secret}
        )
        assert onboarded.status_code == 201, onboarded.text
        token = onboarded.json()["data"]["token"]

        repo.write("README.md", "# hello\n")
        first = repo.commit("first")
        watched = await http.post(
            "/api/repositories", json={"url": repo.url}, headers=bearer(token)
        )
        assert watched.status_code == 201, watched.text
        body = watched.json()
        assert body["sync_requested"] is True
        push_secret, rid = body["push_secret"], body["repository_id"]
        await until(lambda: receiver.files() == repo.files_at(first))

        # A push: the hook makes it arrive now, not at the next poll (an hour away).
        repo.write("docs/new.md", "pushed\n")
        second = repo.commit("second")
        hooked = await post_github_push(http, repo.url, push_secret, "d1")
        assert hooked.status_code == 202, hooked.text
        assert hooked.json()["repository_ids"] == [rid]
        await until(lambda: receiver.files() == repo.files_at(second))
        assert receiver.files()["docs/new.md"] == b"pushed\n"

        # The same with a bad signature: refused, and nothing moves.
        before = len(receiver.requests)
        repo.write("docs/unsigned.md", "should not arrive\n")
        repo.commit("third")
        payload = github_push(repo.url)
        forged = await http.post(
            "/hooks/github",
            content=payload,
            headers=github_headers(payload, "not-the-secret", "d2"),
        )
        assert forged.status_code == 401
        await asyncio.sleep(3)
        assert len(receiver.requests) == before
        assert "docs/unsigned.md" not in receiver.files()

        # What the app sees of it all.
        listed = await http.get("/api/repositories", headers=bearer(token))
        [row] = listed.json()["data"]
        assert row["delivered_commit"] == second and row["live"]["last_commit"] == second
        deliveries = await http.get("/api/deliveries", headers=bearer(token))
        assert deliveries.json()["data"][0]["path"] == "docs/new.md"
        log = (tmp_path / "api.log").read_text()
        assert push_secret not in log and token not in log and stack.secret not in log
