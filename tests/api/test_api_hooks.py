"""Push receivers in-process: signatures (GitHub, GitLab, Gitea), which repositories a
push moves, duplicates, pings, and pushes that match nothing. Syncs are recorded, not run."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import IntegrityError

from tests.support.api_helpers import (
    api_client,
    api_settings,
    bearer,
    github_headers,
    github_push,
    onboard,
    post_github_push,
)
from treecast.db import session_scope
from treecast.service import pushes
from treecast.service.core import TreecastService
from treecast.store import push_deliveries

# Their hosts (github.com/acme/..., git.example) are not reached: see the fixture.
pytestmark = [pytest.mark.usefixtures("hosts_accept_everyone")]

REPO = "https://github.com/acme/handbook"


@dataclass
class Hooked:
    http: httpx.AsyncClient
    service: TreecastService
    synced: list[str] = field(default_factory=list)
    token: str = ""

    async def watch(self, url: str = REPO, ref: str = "") -> dict[str, Any]:
        answer = await self.http.post(
            "/api/repositories", json={"url": url, "ref": ref}, headers=bearer(self.token)
        )
        assert answer.status_code == 201, answer.text
        self.synced.clear()  # the watch's own sync request
        data: dict[str, Any] = answer.json()
        return data


async def _hooked(tmp_path: Path, **extra: str) -> AsyncIterator[Hooked]:
    settings = api_settings(tmp_path, **extra)
    service = TreecastService(settings)
    hooked = Hooked(http=None, service=service)  # type: ignore[arg-type]

    async def start_sync(repository_id: str, **_kwargs: Any) -> None:
        hooked.synced.append(repository_id)

    service.syncs.start = start_sync  # type: ignore[method-assign]
    async with api_client(settings, service) as http:
        hooked.http = http
        hooked.token = (await onboard(http))["token"]
        yield hooked


@pytest.fixture
async def hooked(tmp_path: Path) -> AsyncIterator[Hooked]:
    async for value in _hooked(tmp_path):
        yield value


async def test_a_signed_github_push_syncs_the_repository(hooked: Hooked) -> None:
    repo = await hooked.watch()
    answer = await post_github_push(hooked.http, REPO, repo["push_secret"])
    assert answer.status_code == 202, answer.text
    assert answer.json()["repository_ids"] == [repo["repository_id"]]
    assert hooked.synced == [repo["repository_id"]]


@pytest.mark.parametrize(
    "signature",
    [None, "", "sha256=", "sha256=" + "0" * 64, "sha1=abc", "0" * 64, "sha256=" + "é" * 64],
)
async def test_a_bad_github_signature_is_401_and_syncs_nothing(
    hooked: Hooked, signature: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    repo = await hooked.watch()
    body = github_push(REPO)
    headers: dict[str, Any] = dict(github_headers(body, repo["push_secret"]))
    if signature is None:
        del headers["X-Hub-Signature-256"]
    else:
        headers["X-Hub-Signature-256"] = signature.encode("latin-1")
    answer = await hooked.http.post("/hooks/github", content=body, headers=headers)
    assert answer.status_code == 401
    assert "push secret" in answer.json()["error"]
    assert hooked.synced == []
    assert repo["push_secret"] not in caplog.text
    refused = [r for r in caplog.records if "refused a github push hook" in r.getMessage()]
    assert len(refused) == 1  # one line per refused hook, no traceback
    assert refused[0].exc_info is None


async def test_a_body_changed_after_signing_is_refused(hooked: Hooked) -> None:
    repo = await hooked.watch()
    body = github_push(REPO)
    headers = github_headers(body, repo["push_secret"])
    tampered = body.replace(b"refs/heads/main", b"refs/heads/evil")
    answer = await hooked.http.post("/hooks/github", content=tampered, headers=headers)
    assert answer.status_code == 401 and hooked.synced == []


async def test_a_push_signed_for_another_repository_is_refused(hooked: Hooked) -> None:
    mine = await hooked.watch()
    other = await hooked.watch("https://github.com/acme/other")
    answer = await post_github_push(hooked.http, REPO, other["push_secret"])
    assert answer.status_code == 401
    assert mine["repository_id"] not in hooked.synced


async def test_refs_pick_the_repositories(hooked: Hooked) -> None:
    default = await hooked.watch()
    main = await hooked.watch(ref="main")
    release = await hooked.watch(ref="v1")
    # Every ref of one URL shares its push secret: one hook on the host serves them all.
    secret = default["push_secret"]
    assert main.get("push_secret") == secret == release.get("push_secret")

    async def push(ref: str, delivery: str) -> list[str]:
        answer = await post_github_push(hooked.http, REPO, secret, delivery, ref=ref)
        assert answer.status_code == 202
        ids: list[str] = answer.json()["repository_ids"]
        return sorted(ids)

    assert await push("refs/heads/main", "a") == sorted(
        [default["repository_id"], main["repository_id"]]
    )
    assert await push("refs/tags/v1", "b") == [release["repository_id"]]
    assert await push("refs/heads/feature", "c") == []
    health = await hooked.http.get("/health")
    assert health.json()["pushes"]["unmatched"] == 1


async def test_duplicates_pings_and_other_events(hooked: Hooked) -> None:
    repo = await hooked.watch()
    secret = repo["push_secret"]
    first = await post_github_push(hooked.http, REPO, secret, "same")
    again = await post_github_push(hooked.http, REPO, secret, "same")
    body = github_push(REPO)
    assert first.status_code == again.status_code == 202
    assert again.json()["duplicate"] is True and again.json()["repository_ids"] == []
    assert hooked.synced == [repo["repository_id"]]
    ping = await hooked.http.post(
        "/hooks/github", content=body, headers=github_headers(body, secret, "p", event="ping")
    )
    assert ping.status_code == 200 and ping.json()["ping"] is True
    issue = await hooked.http.post(
        "/hooks/github", content=body, headers=github_headers(body, secret, "i", event="issues")
    )
    assert issue.status_code == 202 and issue.json()["ignored"]
    assert hooked.synced == [repo["repository_id"]]


async def test_the_same_delivery_to_two_api_processes_starts_one_sync(tmp_path: Path) -> None:
    """Two apps on one database stand for two API processes (tests/reliability/test_replicas.py runs
    real ones): the delivery id is claimed in the database, not in one process."""
    async with asynccontextmanager(_hooked)(tmp_path) as one:
        other_service = TreecastService(one.service.settings)
        other_service.syncs.start = one.service.syncs.start  # type: ignore[method-assign]
        async with api_client(one.service.settings, other_service) as other:
            repo = await one.watch()
            body = github_push(REPO)
            headers = github_headers(body, repo["push_secret"], "one-delivery")
            answers = await asyncio.gather(
                one.http.post("/hooks/github", content=body, headers=headers),
                other.post("/hooks/github", content=body, headers=headers),
            )
    assert sorted(a.json()["duplicate"] for a in answers) == [False, True]
    assert one.synced == [repo["repository_id"]]


async def test_gitlab_token_and_gitea_signature(hooked: Hooked) -> None:
    url = "https://gitlab.example.com/acme/handbook"
    repo = await hooked.watch(url)
    assert repo["push_url"].endswith("/hooks/gitlab")
    body = json.dumps(
        {
            "object_kind": "push",
            "ref": "refs/heads/main",
            "project": {
                "web_url": url,
                "git_http_url": url + ".git",
                "git_ssh_url": "git@gitlab.example.com:acme/handbook.git",
                "default_branch": "main",
            },
        }
    ).encode()
    headers = {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Event-UUID": "u1"}
    wrong = await hooked.http.post(
        "/hooks/gitlab", content=body, headers={**headers, "X-Gitlab-Token": "nope"}
    )
    assert wrong.status_code == 401
    right = await hooked.http.post(
        "/hooks/gitlab", content=body, headers={**headers, "X-Gitlab-Token": repo["push_secret"]}
    )
    assert right.status_code == 202 and right.json()["repository_ids"] == [repo["repository_id"]]

    gitea_url = "https://gitea.example.com/acme/handbook"
    gitea = await hooked.watch(gitea_url)
    body = github_push(gitea_url)
    signature = hmac.new(gitea["push_secret"].encode(), body, hashlib.sha256).hexdigest()
    answer = await hooked.http.post(
        "/hooks/gitea",
        content=body,
        headers={"X-Gitea-Event": "push", "X-Gitea-Delivery": "g1", "X-Gitea-Signature": signature},
    )
    assert answer.status_code == 202 and answer.json()["repository_ids"] == [gitea["repository_id"]]
    # Gitea also sends GitHub's header, which is enough on its own.
    github_style = github_headers(body, gitea["push_secret"], "g2")
    answer = await hooked.http.post("/hooks/gitea", content=body, headers=github_style)
    assert answer.status_code == 202


async def test_the_global_push_secret_verifies_any_repository(tmp_path: Path) -> None:
    shared = "global-push-secret-0123456789"
    async for hooked in _hooked(tmp_path, TREECAST_PUSH_SECRET=shared):
        repo = await hooked.watch()
        answer = await post_github_push(hooked.http, REPO, shared)
        assert answer.json()["repository_ids"] == [repo["repository_id"]]
        answer = await post_github_push(
            hooked.http, "https://github.com/nobody/nothing", shared, "x"
        )
        assert answer.status_code == 202 and answer.json()["repository_ids"] == []


async def test_hostile_hook_bodies(hooked: Hooked) -> None:
    repo = await hooked.watch()
    secret = repo["push_secret"]
    # Signed but not JSON, and the URL only in the raw text: verified, then refused as input.
    junk = b'{"repository": {"clone_url": "' + REPO.encode() + b'"}' + b"[" * 10_000
    answer = await hooked.http.post(
        "/hooks/github", content=junk, headers=github_headers(junk, secret)
    )
    assert answer.status_code == 400 and "JSON" in answer.json()["error"]
    deep = b"[" * 200_000
    answer = await hooked.http.post(
        "/hooks/github", content=deep, headers=github_headers(deep, secret)
    )
    assert answer.status_code == 401  # names no repository: nothing to verify against
    assert hooked.synced == []


def test_ref_matching_rules() -> None:
    assert pushes.ref_matches("", "refs/heads/main", "main")
    assert not pushes.ref_matches("", "refs/heads/dev", "main")
    assert pushes.ref_matches("", "refs/heads/dev", None)  # unknown default: sync
    assert pushes.ref_matches("v1", "refs/tags/v1", "main")
    assert pushes.ref_matches("dev", "refs/heads/dev", "main")
    assert not pushes.ref_matches("dev", "refs/heads/develop", "main")


def test_candidate_urls_are_bounded_and_normalised() -> None:
    body = b"".join(b'"clone_url": "https://github.com/o/r%d.git",' % i for i in range(100))
    found = pushes.candidate_urls(body)
    assert len(found) == pushes.MAX_CANDIDATE_URLS
    assert found[0] == "https://github.com/o/r0"


def test_the_replay_guard_is_shared_and_forgets_after_its_retention(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/guard.db"
    now = datetime.now(UTC)

    def claim(host: str, delivery: str, at: datetime) -> bool:
        try:
            with session_scope(url) as session:
                push_deliveries.claim(session, host, delivery, at)
        except IntegrityError:
            return False
        return True

    assert claim("github", "d-1", now)
    assert not claim("github", "d-1", now)  # any process: the same table
    assert claim("gitlab", "d-1", now)  # another host's id space
    with session_scope(url) as session:  # its sync could not start: a retry may
        push_deliveries.release(session, "github", "d-1")
    assert claim("github", "d-1", now)
    later = now + push_deliveries.RETENTION + timedelta(seconds=1)
    assert claim("github", "d-1", later)  # the old row was swept


def test_gitlab_delivery_ids_prefer_the_idempotency_key() -> None:
    """GitLab keeps `Idempotency-Key` across its retries of one delivery (17.4+)."""
    headers = {"idempotency-key": "k", "x-gitlab-event-uuid": "e", "x-gitlab-webhook-uuid": "w"}
    assert pushes.read_headers(pushes.GitHost.GITLAB, headers).delivery_id == "k"
    del headers["idempotency-key"]
    assert pushes.read_headers(pushes.GitHost.GITLAB, headers).delivery_id == "e"
