"""The admin page in-process (httpx.ASGITransport): every page and action refuses without a
session, forms without the session's CSRF token are refused, input renders as text, secrets
are shown once, and a missing Temporal makes pages say so instead of hanging."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.support.api_helpers import (
    ADMIN_TOKEN,
    admin,
    api_client,
    api_settings,
    onboard,
    post_onboard,
)

pytest.importorskip("jinja2")

from fastapi.routing import APIRoute
from sqlmodel import select
from temporalio.worker import Worker

from activities.bulk import BulkActivities
from models.bulk import bulk_workflow_id
from models.tables import AdminSession, DeliveryAttempt, Watch
from tests.support.temporal_env import start_time_skipping
from treecast.api import admin_pages
from treecast.api.admin_pages import COOKIE
from treecast.db import session_scope
from treecast.store import keys
from treecast.store.admin_sessions import AdminSessions
from workflows.bulk_watches import BulkWatches

# Their hosts (github.com/acme/..., git.example) are not reached: see the fixture.
pytestmark = [pytest.mark.usefixtures("hosts_accept_everyone")]

APP_ID = "app_" + "0" * 24
REPO_ID = "repo_" + "0" * 24
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
LOGIN_CSRF = re.compile(r'name="login_csrf" value="([^"]+)"')


def admin_routes(method: str) -> list[str]:
    """Every page (GET) or action (POST) of the admin router with ids filled in, but the
    login form and the static files, which anyone may fetch."""
    paths = []
    for route in admin_pages.router.routes:
        assert isinstance(route, APIRoute)
        if method not in (route.methods or set()) or route.path.startswith(
            ("/admin/login", "/admin/static")
        ):
            continue
        paths.append(route.path.replace("{app_id}", APP_ID).replace("{repository_id}", REPO_ID))
    return sorted(set(paths))


async def log_in(client: httpx.AsyncClient, token: str = ADMIN_TOKEN) -> httpx.Response:
    page = await client.get("/admin/login")
    found = LOGIN_CSRF.search(page.text)
    assert found, page.text
    return await client.post(
        "/admin/login", data={"token": token, "login_csrf": found.group(1), "next": "/admin"}
    )


async def csrf_of(client: httpx.AsyncClient, path: str = "/admin") -> str:
    page = await client.get(path)
    found = CSRF.search(page.text)
    assert found, page.text
    return found.group(1)


async def post_onboarding(
    client: httpx.AsyncClient, csrf: str, name: str, base_url: str, **more: str
) -> httpx.Response:
    """Submit the apps page's onboarding form."""
    return await client.post(
        "/admin/apps", data={"csrf": csrf, "name": name, "base_url": base_url, **more}
    )


def test_the_router_has_the_pages_and_actions_the_issue_names() -> None:
    gets, posts = admin_routes("GET"), admin_routes("POST")
    for page in ("/admin", "/admin/apps", f"/admin/apps/{APP_ID}", "/admin/repositories"):
        assert page in gets
    for page in (f"/admin/repositories/{REPO_ID}", "/admin/failed", "/admin/deliveries"):
        assert page in gets
    assert f"/admin/apps/{APP_ID}/delete" in posts and "/admin/failed/retry-all" in posts
    assert len(posts) >= 15


async def test_every_page_and_action_refuses_without_a_session(tmp_path: Path) -> None:
    async with api_client(api_settings(tmp_path)) as client:
        for path in admin_routes("GET"):
            answer = await client.get(path)
            assert answer.status_code == 303, path
            assert answer.headers["location"].startswith("/admin/login?next="), path
        for path in admin_routes("POST"):
            answer = await client.post(path, data={"csrf": "x", "app_id": APP_ID})
            assert answer.status_code == 403, path
            assert "not logged in" in answer.text
        # A made-up session cookie is no session either.
        client.cookies.set(COOKIE, "forged-session-id", path="/admin")
        assert (await client.get("/admin")).status_code == 303
        assert (await client.post(f"/admin/apps/{APP_ID}/delete", data={})).status_code == 403


async def test_login_sets_a_strict_httponly_cookie_and_logout_ends_it(tmp_path: Path) -> None:
    async with api_client(api_settings(tmp_path)) as client:
        wrong = await log_in(client, "not-the-admin-token-at-all")
        assert wrong.status_code == 401 and "not the admin token" in wrong.text
        assert COOKIE not in client.cookies

        answer = await log_in(client)
        assert answer.status_code == 303 and answer.headers["location"] == "/admin"
        cookie = next(
            v for k, v in answer.headers.multi_items() if k == "set-cookie" and COOKIE + "=" in v
        )
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/admin" in cookie
        assert "Max-Age=28800" in cookie
        page = await client.get("/admin")
        assert page.status_code == 200 and "Overview" in page.text
        assert page.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]

        logout = await client.post("/admin/logout", data={"csrf": await csrf_of(client)})
        assert logout.status_code == 303
        assert (await client.get("/admin")).status_code == 303


async def test_the_login_form_needs_its_own_token_and_only_redirects_inside(
    tmp_path: Path,
) -> None:
    async with api_client(api_settings(tmp_path)) as client:
        forged = await client.post("/admin/login", data={"token": ADMIN_TOKEN})
        assert forged.status_code == 403 and COOKIE not in client.cookies
        page = await client.get("/admin/login?next=//evil.example.com/")
        token = LOGIN_CSRF.search(page.text)
        assert token and "evil" not in page.text
        answer = await client.post(
            "/admin/login",
            data={"token": ADMIN_TOKEN, "login_csrf": token.group(1), "next": "https://evil/"},
        )
        assert answer.status_code == 303 and answer.headers["location"] == "/admin"


async def test_the_page_is_off_without_an_admin_token(tmp_path: Path) -> None:
    settings = api_settings(tmp_path, TREECAST_ADMIN_TOKEN="")
    async with api_client(settings) as client:
        page = await client.get("/admin/login")
        assert page.status_code == 503 and "TREECAST_ADMIN_TOKEN" in page.text
        assert (await client.get("/admin")).status_code == 303


async def test_a_form_without_the_csrf_token_is_refused_and_changes_nothing(
    tmp_path: Path,
) -> None:
    async with api_client(api_settings(tmp_path)) as client:
        app = await onboard(client)
        await log_in(client)
        path = f"/admin/apps/{app['app_id']}/delete"
        for data in ({"confirm": "yes"}, {"confirm": "yes", "csrf": "guessed"}):
            answer = await client.post(path, data=data)
            assert answer.status_code == 403 and "security token" in answer.text
        other = httpx.AsyncClient(transport=client._transport, base_url="http://testserver")
        async with other:  # another login's token is not this session's
            await log_in(other)
            stolen = await csrf_of(other)
        assert (await client.post(path, data={"csrf": stolen, "confirm": "yes"})).status_code == 403
        still = await client.get(f"/admin/api/apps/{app['app_id']}", headers=admin())
        assert still.status_code == 200

        # With the token, and confirmed: deleted, with a flash on the apps page.
        deleted = await client.post(path, data={"csrf": await csrf_of(client), "confirm": "yes"})
        assert deleted.status_code == 303 and deleted.headers["location"] == "/admin/apps"
        listing = await client.get("/admin/apps")
        assert "App docs deleted" in listing.text
        gone = await client.get(f"/admin/api/apps/{app['app_id']}", headers=admin())
        assert gone.status_code == 404


async def test_names_urls_and_errors_render_as_text(tmp_path: Path) -> None:
    hostile = "<script>alert(1)</script>"
    async with api_client(api_settings(tmp_path)) as client:
        made = await post_onboard(
            client, {"app_name": hostile, "base_url": "https://example.com/<b>hooks"}
        )
        assert made.status_code == 201, made.text
        app_id = made.json()["data"]["app_id"]
        await log_in(client)
        for path in ("/admin/apps", f"/admin/apps/{app_id}", f"/admin/apps/{app_id}/delete"):
            page = await client.get(path)
            assert page.status_code == 200
            assert hostile not in page.text and "<b>" not in page.text, path
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text, path
        searched = await client.get("/admin/apps", params={"q": hostile})
        assert hostile not in searched.text and "1 app matching" in searched.text
        missing = await client.get(f"/admin/apps/{hostile}")
        assert missing.status_code == 404 and hostile not in missing.text


async def test_onboarding_shows_the_token_and_secret_once(tmp_path: Path) -> None:
    settings = api_settings(tmp_path)
    async with api_client(settings) as client:
        await log_in(client)
        csrf = await csrf_of(client, "/admin/apps")
        answer = await post_onboarding(client, csrf, "handbook", "https://example.com/hooks")
        assert answer.status_code == 303
        # Until the next page shows them, they wait in the session's row, encrypted.
        with session_scope(settings.database_url) as db:
            [row] = db.exec(select(AdminSession)).all()
            stored = f"{row.flashes} {row.reveal_encrypted}"
        page = await client.get(answer.headers["location"])
        token = re.search(r"tc_[A-Za-z0-9_\-]+", page.text)
        secret = re.search(r"whsec_[A-Za-z0-9+/=]+", page.text)
        assert token and secret and "shown only once" in page.text
        assert token.group(0) not in stored and secret.group(0) not in stored
        again = await client.get(answer.headers["location"])
        assert token.group(0) not in again.text and secret.group(0) not in again.text
        # The token works on the client API.
        listed = await client.get(
            "/api/repositories", headers={"Authorization": f"Bearer {token.group(0)}"}
        )
        assert listed.status_code == 200

        # A bad base URL is a flash message, not an error page.
        bad = await post_onboarding(client, csrf, "x", "ftp://nope")
        assert bad.status_code == 303
        assert "was not added" in (await client.get("/admin/apps")).text


async def test_a_refused_field_is_named_by_its_label_beside_it(tmp_path: Path) -> None:
    async with api_client(api_settings(tmp_path)) as client:
        await log_in(client)
        csrf = await csrf_of(client, "/admin/apps")
        await post_onboarding(client, csrf, "x", "ftp://x")
        page = (await client.get("/admin/apps")).text
        # One line on top, and the reason beside the base URL's input, in the page's words.
        assert "The app was not added." in page
        beside = page.split('name="base_url"', 1)[1].split("<label", 1)[0]
        assert 'id="base_url-error"' in beside and "Base URL: " in beside
        assert "--url" not in page and "base_url:" not in page
        # Shown once: the next page has neither.
        again = (await client.get("/admin/apps")).text
        assert "was not added" not in again and "base_url-error" not in again
        await post_onboarding(client, csrf, " ", "x")
        beside = (await client.get("/admin/apps")).text.split('name="name"', 1)[1]
        assert beside.split("<label", 1)[0].count("Name must not be empty") == 1


async def test_app_actions_rotate_and_change_the_base_url(tmp_path: Path) -> None:
    async with api_client(api_settings(tmp_path)) as client:
        app = await onboard(client)
        await log_in(client)
        here = f"/admin/apps/{app['app_id']}"
        csrf = await csrf_of(client, here)
        rotated = await client.post(here + "/secret/rotate", data={"csrf": csrf})
        assert rotated.headers["location"] == here
        page = (await client.get(here)).text
        assert "New secret" in page and "Finish the rotation" in page
        await client.post(here + "/secret/finish", data={"csrf": csrf})
        assert "Rotation finished" in (await client.get(here)).text
        await client.post(here + "/token/rotate", data={"csrf": csrf})
        assert "API token" in (await client.get(here)).text
        old = await client.get(
            "/api/repositories", headers={"Authorization": f"Bearer {app['token']}"}
        )
        assert old.status_code == 401
        await client.post(
            here + "/base-url", data={"csrf": csrf, "base_url": "https://b.example/h"}
        )
        assert "https://b.example/h" in (await client.get(here)).text


async def test_pages_say_when_temporal_does_not_answer_instead_of_hanging(
    tmp_path: Path,
) -> None:
    # TEMPORAL_ADDRESS points where nothing listens (api_settings).
    async with api_client(api_settings(tmp_path)) as client:
        app = await onboard(client)
        watched = await client.post(
            "/api/repositories",
            json={"url": "https://github.com/acme/handbook"},
            headers={"Authorization": f"Bearer {app['token']}"},
        )
        assert watched.status_code == 201, watched.text
        rid = watched.json()["repository_id"]
        await log_in(client)
        started = time.monotonic()
        for path in (
            "/admin",
            "/admin/repositories",
            f"/admin/repositories/{rid}",
            "/admin/failed",
        ):
            page = await client.get(path)
            assert page.status_code == 200, path
            assert "Temporal" in page.text, path
        assert time.monotonic() - started < 30
        overview = (await client.get("/admin")).text
        assert "did not answer" in overview and "Is a worker running?" in overview
        link = f"http://localhost:8233/namespaces/default/workflows/sync-repository%2F{rid}"
        assert link in (await client.get("/admin/repositories")).text
        # An action that needs Temporal says so in a flash.
        csrf = await csrf_of(client)
        answer = await client.post(f"/admin/repositories/{rid}/sync", data={"csrf": csrf})
        assert answer.status_code == 303
        assert "Temporal could not be asked" in (await client.get(answer.headers["location"])).text


async def test_the_delivery_log_filters_by_app_repository_event_and_outcome(
    tmp_path: Path,
) -> None:
    settings = api_settings(tmp_path)
    async with api_client(settings) as client:
        first, second = await onboard(client), await onboard(client)
        rows = [
            (first["app_id"], "create", 200, None, "docs/a.md"),
            (first["app_id"], "update", 500, None, "docs/b.md"),
            (second["app_id"], "delete", None, "connection refused", "docs/c.md"),
        ]
        with session_scope(settings.database_url) as session:
            for app_id, event, status, error, path in rows:
                session.add(
                    DeliveryAttempt(
                        app_id=app_id,
                        repository_id=REPO_ID,
                        event=event,
                        path=path,
                        webhook_id="msg_1",
                        http_status=status,
                        error=error,
                        duration_ms=12.5,
                    )
                )
        await log_in(client)

        async def shown(**params: str) -> set[str]:
            page = await client.get("/admin/deliveries", params=params)
            assert page.status_code == 200
            return set(re.findall(r"docs/[abc]\.md", page.text))

        assert await shown() == {"docs/a.md", "docs/b.md", "docs/c.md"}
        assert await shown(app=first["app_id"]) == {"docs/a.md", "docs/b.md"}
        assert await shown(event="delete") == {"docs/c.md"}
        assert await shown(outcome="failed") == {"docs/b.md", "docs/c.md"}
        assert await shown(outcome="delivered") == {"docs/a.md"}
        assert await shown(repository="repo_" + "1" * 24) == set()
        page = await client.get("/admin/deliveries", params={"outcome": "<x>"})
        assert "<x>" not in page.text


def test_a_session_expires_after_its_lifetime_and_expired_ones_are_swept(tmp_path: Path) -> None:
    settings = api_settings(tmp_path)
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    sessions = AdminSessions(60, lambda: keys.cipher(settings), clock=lambda: now[0])
    with session_scope(settings.database_url) as db:
        session = sessions.create(db)
    with session_scope(settings.database_url) as db:
        found = sessions.get(db, session.id)
    assert found is not None and found.csrf == session.csrf and found.csrf_ok(session.csrf)
    assert not found.csrf_ok("") and not found.csrf_ok(None)
    # The table holds neither the cookie's session id nor the forms' token.
    with session_scope(settings.database_url) as db:
        [row] = db.exec(select(AdminSession)).all()
        assert session.id not in str(row.model_dump()) and session.csrf not in str(row.model_dump())
    now[0] += timedelta(seconds=61)
    with session_scope(settings.database_url) as db:
        assert sessions.get(db, session.id) is None
        sessions.create(db)  # a login sweeps the expired rows
    with session_scope(settings.database_url) as db:
        assert len(db.exec(select(AdminSession)).all()) == 1


async def test_a_session_works_on_every_api_process_and_logout_ends_it_on_all(
    tmp_path: Path,
) -> None:
    settings = api_settings(tmp_path)
    async with api_client(settings) as one, api_client(settings) as other:
        await log_in(one)
        other.cookies.set(COOKIE, one.cookies[COOKIE], path="/admin")
        csrf = await csrf_of(other)  # the other process knows the session and its token
        assert csrf == await csrf_of(one)
        # A flash set by an action on one process shows on the next page of the other.
        app = await onboard(one)
        rotated = await one.post(f"/admin/apps/{app['app_id']}/token/rotate", data={"csrf": csrf})
        page = await other.get(rotated.headers["location"])
        assert "A new API token" in page.text and re.search(r"tc_[A-Za-z0-9_\-]+", page.text)
        assert (await one.post("/admin/logout", data={"csrf": csrf})).status_code == 303
        assert (await other.get("/admin")).status_code == 303


@pytest.mark.temporal
async def test_retry_all_runs_as_a_workflow_and_shows_its_progress(tmp_path: Path) -> None:
    env = await start_time_skipping()
    address = env.client.service_client.config.target_host
    settings = api_settings(tmp_path, TEMPORAL_ADDRESS=address)
    # Only the bulk job runs: the repositories' own workflows wait for a worker.
    bulk_worker = Worker(
        env.client,
        task_queue=settings.task_queue,
        workflows=[BulkWatches],
        activities=BulkActivities(settings).all(),
    )
    try:
        async with api_client(settings) as client, bulk_worker:
            app = await onboard(client)
            headers = {"Authorization": f"Bearer {app['token']}"}
            rids = []
            for name in ("one", "two"):
                watched = await client.post(
                    "/api/repositories",
                    json={"url": f"https://github.com/acme/{name}"},
                    headers=headers,
                )
                rids.append(watched.json()["repository_id"])
            with session_scope(settings.database_url) as session:
                for rid in rids:
                    watch = session.get(Watch, (app["app_id"], rid))
                    assert watch is not None
                    watch.status, watch.last_error = "failed", "HTTP 500 <from the app>"
                    watch.last_error_type = "WebhookHttpError"
                    session.add(watch)
            await log_in(client)
            page = await client.get("/admin/failed")
            assert page.text.count("WebhookHttpError") == 2 and "<from the app>" not in page.text
            assert "2 watches failed to deliver" in (await client.get("/admin")).text
            csrf = await csrf_of(client, "/admin/failed")

            refused = await client.post("/admin/failed/resync-all", data={"csrf": csrf})
            assert "needs an app" in (await client.get(refused.headers["location"])).text

            started = await client.post("/admin/failed/retry-all", data={"csrf": csrf})
            assert started.status_code == 303
            first = (await client.get("/admin/failed")).text
            assert "Retry the failed watches of every app" in first
            [job_id] = re.findall(r"bulk/([0-9a-f]{16}) in the Temporal Web UI", first)

            async def finished() -> bool:
                text = (await client.get("/admin/failed")).text
                return "2 of 2 done (finished)" in text

            deadline = time.monotonic() + 30
            while not await finished():
                assert time.monotonic() < deadline, (await client.get("/admin/failed")).text
                await asyncio.sleep(0.1)
            assert "No failed watches" in (await client.get("/admin/failed")).text
            with session_scope(settings.database_url) as session:
                statuses = {session.get(Watch, (app["app_id"], rid)).status for rid in rids}  # type: ignore[union-attr]
            assert statuses == {"pending"}
            result = await env.client.get_workflow_handle(bulk_workflow_id(job_id)).result()
            assert (result["done"], result["failed"]) == (2, 0)
    finally:
        await env.shutdown()


async def test_onboarding_with_the_docora_scheme_makes_a_docora_app(tmp_path: Path) -> None:
    async with api_client(api_settings(tmp_path)) as client:
        await log_in(client)
        csrf = await csrf_of(client, "/admin/apps")
        form = (await client.get("/admin/apps")).text
        assert 'name="scheme"' in form and 'name="client_auth_key" type="password"' in form
        assert '<label for="onboard-client-auth-key">' in form
        key = "k" * 24
        answer = await post_onboarding(
            client,
            csrf,
            "legacy",
            "https://example.com/hooks",
            scheme="docora",
            client_auth_key=key,
        )
        assert answer.status_code == 303
        app_id = answer.headers["location"].rsplit("/", 1)[1]
        detail = await client.get(f"/admin/api/apps/{app_id}", headers=admin())
        assert detail.json()["data"]["scheme"] == "docora"
        page = (await client.get(f"/admin/apps/{app_id}")).text
        assert "Signing scheme</dt><dd>docora" in page and key not in page

        # docora without a key is refused with a flash; nothing is added.
        refused = await post_onboarding(client, csrf, "nokey", "https://e.example", scheme="docora")
        assert refused.status_code == 303
        listing = (await client.get("/admin/apps")).text
        assert "was not added" in listing and "client_auth_key" in listing
        assert "nokey" not in listing
        assert "<td>docora</td>" in listing  # the list's signing column


async def test_changing_the_scheme_on_the_app_page_needs_csrf(tmp_path: Path) -> None:
    async with api_client(api_settings(tmp_path)) as client:
        app = await onboard(client)
        await log_in(client)
        here = f"/admin/apps/{app['app_id']}"
        page = (await client.get(here)).text
        assert "Signing scheme</dt><dd>standard-webhooks" in page
        assert f'action="{here}/scheme"' in page
        data = {"scheme": "docora", "client_auth_key": "s" * 20}
        forged = await client.post(here + "/scheme", data={**data, "csrf": "forged"})
        assert forged.status_code == 403
        missing = await client.post(here + "/scheme", data=data)
        assert missing.status_code == 403
        detail = await client.get(f"/admin/api/apps/{app['app_id']}", headers=admin())
        assert detail.json()["data"]["scheme"] == "standard-webhooks"

        csrf = await csrf_of(client, here)
        changed = await client.post(here + "/scheme", data={**data, "csrf": csrf})
        assert changed.status_code == 303 and changed.headers["location"] == here
        page = (await client.get(here)).text
        assert "signed with docora" in page and "s" * 20 not in page
        detail = await client.get(f"/admin/api/apps/{app['app_id']}", headers=admin())
        assert detail.json()["data"]["scheme"] == "docora"
        # Back to Standard Webhooks; the stored key needs no retyping to return later.
        await client.post(here + "/scheme", data={"csrf": csrf, "scheme": "standard-webhooks"})
        detail = await client.get(f"/admin/api/apps/{app['app_id']}", headers=admin())
        assert detail.json()["data"]["scheme"] == "standard-webhooks"
        await client.post(here + "/scheme", data={"csrf": csrf, "scheme": "docora"})
        detail = await client.get(f"/admin/api/apps/{app['app_id']}", headers=admin())
        assert detail.json()["data"]["scheme"] == "docora"


async def test_the_repository_page_shows_its_credential_never_the_secret(tmp_path: Path) -> None:
    async with api_client(api_settings(tmp_path)) as client:
        app = await onboard(client)
        created = await client.post(
            "/api/repositories",
            json={"url": "https://github.com/acme/handbook", "token": "ghp_secret_value_123"},
            headers={"Authorization": f"Bearer {app['token']}"},
        )
        rid = created.json()["repository_id"]
        await log_in(client)
        page = (await client.get(f"/admin/repositories/{rid}")).text
        assert f"Fetched with</dt><dd>token ({app['app_id']}&#39;s)" in page
        assert "granted (token)" in page and "ghp_secret_value_123" not in page
