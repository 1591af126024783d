"""The manifest and reconcile routes in-process (SQLite, a real git repository; Temporal
stubbed where a repair asks it): what they answer, what they refuse, and that a refusal
changes nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from models.sync import BreakerStatus
from models.tables import DeliveredFile, Snapshot, Watch, WatchAccess, WatchStatus
from tests.support import registering
from tests.support.api_helpers import api_client, api_settings, bearer
from tests.support.gitrepos import WorkRepo
from tests.support.receiver_fixture import ledger_rows, watch_row
from treecast.config import Settings
from treecast.crypto import generate_webhook_secret
from treecast.db import session_scope
from treecast.delivery.digest import git_blob_id, tree_digest
from treecast.service import workflows
from treecast.service.core import TreecastService
from treecast.service.results import AppCreated

FILES = {
    "README.md": b"# hello\n",
    "docs/a.md": b"alpha\n",
    "docs/b.md": b"beta\n",
    "docs/skip.tmp": b"ignored by .treecastignore\n",
    "src/main.py": b"print('hi')\n",
    ".treecastignore": b"*.tmp\n",
}


@dataclass
class World:
    settings: Settings
    service: TreecastService
    repo: WorkRepo
    app_id: str
    token: str
    secret: str
    repository_id: str
    commit: str
    first: str  # an older synced commit

    def held(self, files: dict[str, bytes]) -> bytes:
        lines = [
            json.dumps({"path": p, "blob_id": git_blob_id(files[p])}).encode()
            for p in sorted(files, key=str.encode)
        ]
        return b"\n".join(lines) + b"\n"

    def ledger(self) -> dict[str, str]:
        return {row.path: row.blob_id for row in ledger_rows(self.settings, self.app_id)}

    def watch(self) -> Watch:
        return watch_row(self.settings, self.app_id, self.repository_id)


def delivered(files: dict[str, bytes]) -> dict[str, bytes]:
    """What an app watching everything holds: all but the ignored."""
    return {p: c for p, c in files.items() if not p.endswith(".tmp")}


def onboard(service: TreecastService, name: str, url: str, secret: str | None) -> AppCreated:
    """An app registered as the admin API registers one (its token shown once)."""
    return registering.blocking(service.apps.add(name, url, secret))


def make_world(tmp_path: Path, given: Settings | None = None, **extra: str) -> World:
    settings = given or api_settings(tmp_path, **extra)
    service = TreecastService(settings)
    repo = WorkRepo(tmp_path / "repo")
    repo.write("README.md", b"old\n")
    first = repo.commit("first")
    for path, content in FILES.items():
        repo.write(path, content)
    commit = repo.commit("second")
    secret = generate_webhook_secret()
    onboarded = onboard(service, "mirror", "https://example.com/hooks", secret)
    repository_id = registering.add_repository(settings, repo.url)
    registering.watch(settings, onboarded.app_id, repository_id)
    with session_scope(settings.database_url) as session:
        for synced in (first, commit):
            session.add(Snapshot(repository_id=repository_id, commit=synced))
        # As a finished delivery leaves it: the ledger equals the commit's tree.
        for path, content in delivered(FILES).items():
            session.add(
                DeliveredFile(
                    app_id=onboarded.app_id,
                    repository_id=repository_id,
                    path=path,
                    blob_id=git_blob_id(content),
                    sha256="",
                )
            )
        watch = session.get(Watch, (onboarded.app_id, repository_id))
        assert watch is not None
        watch.delivered_commit, watch.status = commit, WatchStatus.SYNCED
        session.add(watch)
    return World(
        settings, service, repo, onboarded.app_id, onboarded.token, secret, repository_id,
        commit, first,
    )  # fmt: skip


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


@pytest.fixture
async def client(world: World) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(world.settings, world.service) as http:
        yield http


def lines_of(body: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    header, *entries = [json.loads(line) for line in body.splitlines()]
    return header, entries


# -- the manifest ---------------------------------------------------------------------------


async def test_the_manifest_is_signed_sorted_and_filtered(
    world: World, client: httpx.AsyncClient
) -> None:
    answer = await client.get(
        f"/api/repositories/{world.repository_id}/manifest", headers=bearer(world.token)
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/x-ndjson")
    # Signed as a webhook: the receiver's own verifier accepts the whole body.
    Webhook(world.secret).verify(answer.content, dict(answer.headers), json_parse=False)
    header, entries = lines_of(answer.content)
    expected = delivered(FILES)
    assert header["commit"] == world.commit and header["object_format"] == "sha1"
    assert header["files"] == len(expected) == len(entries)
    assert header["bytes"] == sum(len(c) for c in expected.values())
    assert [e["path"] for e in entries] == sorted(expected)
    assert all(e["blob_id"] == git_blob_id(expected[e["path"]]) for e in entries)
    assert {e["mode"] for e in entries} == {"100644"}
    digest = tree_digest((p, git_blob_id(c)) for p, c in expected.items())
    assert header["tree_digest"] == digest == answer.headers["x-treecast-tree-digest"]
    # A tampered body no longer verifies.
    with pytest.raises(WebhookVerificationError, match="signature"):
        tampered = answer.content.replace(b"docs/a.md", b"docs/A.md")
        Webhook(world.secret).verify(tampered, dict(answer.headers), json_parse=False)


async def test_the_manifest_of_an_older_synced_commit_and_of_unknown_ones(
    world: World, client: httpx.AsyncClient
) -> None:
    url = f"/api/repositories/{world.repository_id}/manifest"
    answer = await client.get(url, params={"commit": world.first}, headers=bearer(world.token))
    assert answer.status_code == 200, answer.text
    header, entries = lines_of(answer.content)
    assert header["commit"] == world.first and [e["path"] for e in entries] == ["README.md"]
    unknown = await client.get(url, params={"commit": "a" * 40}, headers=bearer(world.token))
    assert unknown.status_code == 404 and "was not synced" in unknown.json()["error"]
    bad = await client.get(url, params={"commit": "z" * 40}, headers=bearer(world.token))
    assert bad.status_code == 400


async def test_the_manifest_follows_the_watch_globs(
    world: World, client: httpx.AsyncClient
) -> None:
    with session_scope(world.settings.database_url) as session:
        watch = session.get(Watch, (world.app_id, world.repository_id))
        assert watch is not None
        watch.path_globs = json.dumps(["docs/**"])
        session.add(watch)
    answer = await client.get(
        f"/api/repositories/{world.repository_id}/manifest", headers=bearer(world.token)
    )
    _, entries = lines_of(answer.content)
    assert [e["path"] for e in entries] == ["docs/a.md", "docs/b.md"]


async def test_no_manifest_before_a_commit_was_fully_delivered_nor_of_another_app(
    world: World, client: httpx.AsyncClient
) -> None:
    other = onboard(world.service, "other", "https://example.com/other", None)
    url = f"/api/repositories/{world.repository_id}/manifest"
    assert (await client.get(url, headers=bearer(other.token))).status_code == 404
    with session_scope(world.settings.database_url) as session:
        watch = session.get(Watch, (world.app_id, world.repository_id))
        assert watch is not None
        watch.delivered_commit = None
        session.add(watch)
    answer = await client.get(url, headers=bearer(world.token))
    assert answer.status_code == 409 and "?commit=" in answer.json()["error"]
    for column, value, said in (
        ("lfs", True, "not supported yet"),
        ("access", WatchAccess.REFUSED, "does not hold"),
    ):
        with session_scope(world.settings.database_url) as session:
            watch = session.get(Watch, (world.app_id, world.repository_id))
            assert watch is not None
            setattr(watch, column, value)
            session.add(watch)
        answer = await client.get(url, params={"commit": world.commit}, headers=bearer(world.token))
        assert answer.status_code == 409 and said in answer.json()["error"], answer.text


# -- reconcile: verify and digest -----------------------------------------------------------


def drifted(files: dict[str, bytes]) -> dict[str, bytes]:
    """The app lost one file, has another changed and one more of its own."""
    mine = dict(files)
    del mine["docs/a.md"]
    mine["docs/b.md"] = b"corrupted\n"
    mine["notes.txt"] = b"mine\n"
    return mine


async def test_a_digest_says_in_sync_or_not(world: World, client: httpx.AsyncClient) -> None:
    url = f"/api/repositories/{world.repository_id}/reconcile"
    good = tree_digest((p, git_blob_id(c)) for p, c in delivered(FILES).items())
    answer = await client.post(url, json={"tree_digest": good}, headers=bearer(world.token))
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "in sync" and answer.json()["held"] is None
    bad = tree_digest((p, git_blob_id(c)) for p, c in drifted(delivered(FILES)).items())
    answer = await client.post(url, json={"tree_digest": bad}, headers=bearer(world.token))
    assert answer.json()["status"] == "not in sync" and not answer.json()["in_sync"]
    assert answer.json()["tree_digest"] == good
    refused = await client.post(url, json={"tree_digest": "x"}, headers=bearer(world.token))
    assert refused.status_code == 400


async def test_verify_counts_the_difference_and_changes_nothing(
    world: World, client: httpx.AsyncClient
) -> None:
    before = world.ledger()
    answer = await client.post(
        f"/api/repositories/{world.repository_id}/reconcile",
        params={"dry_run": "true"},
        content=world.held(drifted(delivered(FILES))),
        headers={**bearer(world.token), "content-type": "application/x-ndjson"},
    )
    assert answer.status_code == 200, answer.text
    out = answer.json()
    assert (out["missing"], out["changed"], out["extra"], out["differ"]) == (1, 1, 1, 3)
    assert out["status"] == "3 files differ" and not out["repair"]
    assert world.ledger() == before and world.watch().delivered_commit == world.commit


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b'{"path": "a", "blob_id": "00"}\n', "40 lowercase hex"),
        (b"not json\n", "not a JSON object"),
        (b"[1]\n", "not a JSON object"),
        (b'{"path": ".git/config", "blob_id": "' + b"0" * 40 + b'"}\n', ".git"),
        (b'{"path": "../up", "blob_id": "' + b"0" * 40 + b'"}\n', "'..'"),
        (b'{"path": "a", "blob_id": "' + b"0" * 40 + b'", "x": 1}\n', "unknown field"),
        (
            b'{"path": "b", "blob_id": "' + b"0" * 40 + b'"}\n'
            b'{"path": "a", "blob_id": "' + b"0" * 40 + b'"}\n',
            "line 2: 'a' is out of order",
        ),
        (b'{"path": "\\ud800", "blob_id": "' + b"0" * 40 + b'"}\n', "not valid UTF-8"),
    ],
)
async def test_hostile_lines_are_refused_and_nothing_changes(
    world: World, client: httpx.AsyncClient, body: bytes, said: str
) -> None:
    before = world.ledger()
    answer = await client.post(
        f"/api/repositories/{world.repository_id}/reconcile",
        content=body,
        headers={**bearer(world.token), "content-type": "application/x-ndjson"},
    )
    assert answer.status_code == 400, answer.text
    assert said in answer.json()["error"] and "nothing was changed" in answer.json()["error"]
    assert world.ledger() == before and world.watch().delivered_commit == world.commit


async def test_limits_other_apps_and_content_types(tmp_path: Path) -> None:
    world = make_world(
        tmp_path, TREECAST_API_RECONCILE_MAX_FILES="2", TREECAST_API_RECONCILE_MAX_BYTES="2048"
    )
    url = f"/api/repositories/{world.repository_id}/reconcile"
    ndjson = {**bearer(world.token), "content-type": "application/x-ndjson"}
    async with api_client(world.settings, world.service) as client:
        too_many = await client.post(url, content=world.held(delivered(FILES)), headers=ndjson)
        assert too_many.status_code == 400 and "more than 2 files" in too_many.json()["error"]
        huge = await client.post(url, content=b"\n" * 4096, headers=ndjson)
        assert huge.status_code == 413
        other = onboard(world.service, "other", "https://example.com/other", None)
        theirs = await client.post(url, content=b"", headers={**ndjson, **bearer(other.token)})
        assert theirs.status_code == 404
        plain = await client.post(url, content=b"x", headers={**bearer(world.token)})
        assert plain.status_code == 415


# -- reconcile: repair ----------------------------------------------------------------------


@pytest.fixture
def temporal(world: World, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Temporal stubbed: the breaker's state, and the sync requests made."""
    seen: dict[str, Any] = {"state": BreakerStatus.CLOSED, "syncs": []}

    async def client() -> object:
        return object()

    async def breaker_state(_client: object, repository_id: str) -> str:
        return str(seen["state"])

    async def request_sync(_c: object, _s: object, repository_id: str, *rest: object) -> None:
        seen["syncs"].append(repository_id)

    monkeypatch.setattr(world.service.runtime, "client", client)
    monkeypatch.setattr(workflows, "breaker_state", breaker_state)
    monkeypatch.setattr(workflows, "request_sync", request_sync)
    return seen


async def test_repair_makes_the_ledger_say_what_the_app_holds_and_syncs(
    world: World, client: httpx.AsyncClient, temporal: dict[str, Any]
) -> None:
    mine = drifted(delivered(FILES))
    answer = await client.post(
        f"/api/repositories/{world.repository_id}/reconcile",
        content=world.held(mine),
        headers={**bearer(world.token), "content-type": "application/x-ndjson"},
    )
    assert answer.status_code == 202, answer.text
    out = answer.json()
    assert out["repair"] and out["sync_requested"] and out["status_url"].endswith(out["sync_id"])
    assert temporal["syncs"] == [world.repository_id]
    assert world.ledger() == {p: git_blob_id(c) for p, c in mine.items()}
    watch = world.watch()
    assert watch.delivered_commit is None and watch.status == WatchStatus.PENDING


async def test_repair_in_sync_sends_nothing(
    world: World, client: httpx.AsyncClient, temporal: dict[str, Any]
) -> None:
    answer = await client.post(
        f"/api/repositories/{world.repository_id}/reconcile",
        content=world.held(delivered(FILES)),
        headers={**bearer(world.token), "content-type": "application/x-ndjson"},
    )
    assert answer.status_code == 200 and answer.json()["status"] == "in sync"
    assert temporal["syncs"] == [] and world.watch().delivered_commit == world.commit


async def test_repair_is_refused_while_the_breaker_is_open(
    world: World, client: httpx.AsyncClient, temporal: dict[str, Any]
) -> None:
    temporal["state"] = BreakerStatus.OPEN
    before = world.ledger()
    answer = await client.post(
        f"/api/repositories/{world.repository_id}/reconcile",
        content=world.held(drifted(delivered(FILES))),
        headers={**bearer(world.token), "content-type": "application/x-ndjson"},
    )
    assert answer.status_code == 409, answer.text
    assert "circuit breaker" in answer.json()["error"] and "nothing" in answer.json()["error"]
    assert world.ledger() == before and temporal["syncs"] == []


async def test_repair_waits_for_a_delivery_under_way_and_lfs_watches_have_none(
    world: World, client: httpx.AsyncClient, temporal: dict[str, Any]
) -> None:
    url = f"/api/repositories/{world.repository_id}/reconcile"
    ndjson = {**bearer(world.token), "content-type": "application/x-ndjson"}
    with session_scope(world.settings.database_url) as session:
        watch = session.get(Watch, (world.app_id, world.repository_id))
        assert watch is not None
        watch.status = WatchStatus.SYNCING
        session.add(watch)
    body = world.held(drifted(delivered(FILES)))
    answer = await client.post(url, content=body, headers=ndjson)
    assert answer.status_code == 409 and "under way" in answer.json()["error"]
    with session_scope(world.settings.database_url) as session:
        watch = session.get(Watch, (world.app_id, world.repository_id))
        assert watch is not None
        watch.status, watch.lfs = WatchStatus.SYNCED, True
        session.add(watch)
    answer = await client.post(url, content=body, headers=ndjson)
    assert answer.status_code == 409 and "lfs" in answer.json()["error"]


async def test_sync_completed_is_opted_into(world: World, client: httpx.AsyncClient) -> None:
    answer = await client.put(
        "/api/app/sync-completed", json={"enabled": True}, headers=bearer(world.token)
    )
    assert answer.status_code == 200 and answer.json() == {"sync_completed": True}
    from models.tables import App

    with session_scope(world.settings.database_url) as session:
        app = session.get(App, world.app_id)
        assert app is not None and app.sync_completed
