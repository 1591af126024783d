"""Every app-token route with two apps, in-process against real git over smart HTTP: an app
reads and changes only its own watches. App B against a repository only A watches gets
404 (or 422 for watching it without credentials of its own); on a repository both watch,
B's credential changes are B's alone; no answer to B carries A's secrets or watch
details, and no answer after the first carries a push secret. The table must cover every
route under /api: a new route fails this test until it is added."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from sqlmodel import select

from models.tables import DeliveryAttempt, Watch
from tests.support.api_helpers import api_client, api_settings, bearer, onboard
from tests.support.githttp import GitHttpServer, git_http_server
from tests.support.gitrepos import WorkRepo
from treecast.api.app import create_app
from treecast.config import Settings
from treecast.db import session_scope
from treecast.service.syncs import sync_id_of
from treecast.store import keys

A_PATHS = ["a-only/**"]


@dataclass
class Two:
    """Apps A and B, A's private repository P, and S, which both watch with their own token."""

    http: httpx.AsyncClient
    settings: Settings
    host: GitHttpServer
    a: dict[str, Any]
    b: dict[str, Any]
    p: str
    s: str
    push_secrets: list[str]


@pytest.fixture
async def two(tmp_path: Path) -> AsyncIterator[Two]:
    for name in ("p", "s"):
        origin = WorkRepo(tmp_path / "git" / name)
        origin.write("README.md", f"{name}\n")
        origin.commit()
    settings = api_settings(tmp_path)
    with git_http_server(tmp_path / "git", "token-of-a") as host:
        host.tokens.add("token-of-b")
        async with api_client(settings) as http:
            a, b = await onboard(http), await onboard(http)
            made = await http.post(
                "/api/repositories",
                json={"url": host.url("p/remote.git"), "token": "token-of-a", "paths": A_PATHS},
                headers=bearer(a["token"]),
            )
            assert made.status_code == 201, made.text
            shared = await http.post(
                "/api/repositories",
                json={"url": host.url("s/remote.git"), "token": "token-of-a"},
                headers=bearer(a["token"]),
            )
            joined = await http.post(
                "/api/repositories",
                json={"url": host.url("s/remote.git"), "token": "token-of-b"},
                headers=bearer(b["token"]),
            )
            assert joined.status_code == 201, joined.text
            assert "push_secret" not in joined.json()  # only the first registration has it
            p, s = made.json()["repository_id"], shared.json()["repository_id"]
            with session_scope(settings.database_url) as session:
                session.add(
                    DeliveryAttempt(
                        app_id=a["app_id"],
                        repository_id=p,
                        event="create",
                        path="a-only/secret.md",
                        webhook_id="msg_a",
                        http_status=200,
                    )
                )
            secrets = [made.json()["push_secret"], shared.json()["push_secret"]]
            yield Two(http, settings, host, a, b, p, s, secrets)


def app_routes() -> set[tuple[str, str]]:
    """Every (method, path) an app token can call."""
    app = create_app(api_settings(Path("/nonexistent")))
    return {
        (method, route.path)
        for route in app.routes
        if isinstance(route, APIRoute) and route.path.startswith("/api/")
        for method in route.methods or ()
    }


async def call(
    http: httpx.AsyncClient, token: str, method: str, path: str, body: dict[str, Any] | None = None
) -> httpx.Response:
    sent = body if method in ("POST", "PUT", "PATCH") else None
    return await http.request(method, path, headers=bearer(token), json=sent)


def a_view(two: Two) -> list[tuple[Any, ...]]:
    """What A's watches hold, secrets decrypted: nothing B does may change it."""
    cipher = keys.cipher(two.settings)
    with session_scope(two.settings.database_url) as session:
        rows = session.exec(
            select(Watch).where(Watch.app_id == two.a["app_id"]).order_by(Watch.repository_id)
        ).all()
        return [
            (
                w.repository_id,
                w.path_globs,
                w.access,
                cipher.decrypt(w.token_encrypted) if w.token_encrypted else None,
            )
            for w in rows
        ]


async def a_answers(two: Two) -> list[dict[str, Any]]:
    """A's watches as the API shows them to A (what B must not change)."""
    listed = await call(two.http, two.a["token"], "GET", "/api/repositories?live=false")
    return [{k: v for k, v in w.items() if k != "live"} for w in listed.json()["data"]]


async def test_an_app_token_reaches_only_its_own_watches(two: Two) -> None:
    http, a, b, p, s = two.http, two.a, two.b, two.p, two.s
    seen_by_a = await a_answers(two)
    p_url = two.host.url("p/remote.git")
    # (method, path, body, B's expected status) against P, which only A watches.
    table: list[tuple[str, str, dict[str, Any], int]] = [
        ("POST", "/api/repositories", {"url": p_url}, 422),
        ("POST", "/api/repositories", {"url": p_url, "token": "guess"}, 422),
        ("GET", "/api/repositories", {}, 200),
        ("GET", f"/api/repositories/{p}", {}, 404),
        ("DELETE", f"/api/repositories/{p}", {}, 404),
        ("PATCH", f"/api/repositories/{p}/token", {"token": "token-of-b"}, 404),
        ("PUT", f"/api/repositories/{p}/credentials", {"token": "token-of-b"}, 404),
        ("PUT", f"/api/repositories/{p}/credentials", {"clear": True}, 404),
        ("POST", f"/api/repositories/{p}/sync", {}, 404),
        ("GET", f"/api/syncs/{sync_id_of(p, '0' * 32)}", {}, 404),
        ("POST", f"/api/repositories/{p}/redeliver", {}, 404),
        ("GET", f"/api/deliveries?repository_id={p}", {}, 404),
        ("GET", "/api/deliveries", {}, 200),
        ("GET", "/api/app", {}, 200),
        ("PATCH", "/api/app", {"name": "b renamed"}, 200),
        ("POST", "/api/app/secret/rotate", {}, 200),
        ("POST", "/api/app/token/rotate", {}, 200),
    ]
    covered = {(method, path.split("?")[0]) for method, path, _, _ in table}
    templates = {
        (m, t)
        for m, t in app_routes()
        for method, path in covered
        if m == method and _matches(t, path)
    }
    assert templates == app_routes(), f"routes not in the table: {app_routes() - templates}"

    token = b["token"]
    answers: list[httpx.Response] = []
    for method, path, body, expected in table:
        answer = await call(http, token, method, path, body)
        assert answer.status_code == expected, (method, path, answer.text)
        answers.append(answer)
        if path == "/api/app/token/rotate":
            token = answer.json()["token"]
    listed = answers[2].json()["data"]
    assert [w["repository_id"] for w in listed] == [s]  # B's own, not P
    assert answers[12].json()["data"] == []  # A's deliveries are A's
    assert answers[13].json()["app_id"] == b["app_id"]

    # On S, which both watch, B changes its own credentials and nothing of A's.
    own: list[tuple[str, str, dict[str, Any], int]] = [
        ("PUT", f"/api/repositories/{s}/credentials", {"token": "wrong"}, 422),
        ("PUT", f"/api/repositories/{s}/credentials", {"token": "token-of-b"}, 200),
        ("PATCH", f"/api/repositories/{s}/token", {"token": "token-of-b"}, 200),
        ("PUT", f"/api/repositories/{s}/credentials", {"clear": True}, 200),
        ("GET", f"/api/repositories/{s}", {}, 200),
        ("DELETE", f"/api/repositories/{s}", {}, 204),
    ]
    for method, path, body, expected in own:
        answer = await call(http, token, method, path, body)
        assert answer.status_code == expected, (method, path, answer.text)
        answers.append(answer)
    assert answers[-2].json()["credentials"]["kind"] == "none"  # B's, after its clear
    assert await a_answers(two) == seen_by_a
    assert a_view(two) == sorted(
        [(p, '["a-only/**"]', "granted", "token-of-a"), (s, "[]", "granted", "token-of-a")]
    )
    for rid in (p, s):
        mine = await call(http, a["token"], "GET", f"/api/repositories/{rid}")
        assert mine.status_code == 200 and mine.json()["credentials"]["kind"] == "token"
        answers.append(mine)
    assert (await call(http, a["token"], "GET", "/api/app")).json()["app_id"] == a["app_id"]

    # Nothing of A's in any answer to B; no push secret after the first answer.
    answers.append(await call(http, a["token"], "GET", "/api/repositories"))
    for answer in answers:
        text = answer.text
        assert not any(secret in text for secret in two.push_secrets), answer.request.url
        assert "token-of" not in text
    for answer in answers[: len(table) + len(own)]:
        assert a["app_id"] not in answer.text and a["token"] not in answer.text
        assert "a-only" not in answer.text, answer.request.url


def _matches(template: str, path: str) -> bool:
    """Whether `path` is an instance of the route `template` (`{name}` segments)."""
    want, have = template.strip("/").split("/"), path.strip("/").split("/")
    return len(want) == len(have) and all(
        w == h or (w.startswith("{") and w.endswith("}")) for w, h in zip(want, have, strict=True)
    )
