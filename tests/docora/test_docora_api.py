"""The HTTP API with Docora's things: an imported `docora_` token, and onboarding a docora app."""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx

from models.tables import App
from tests.docora.test_docora import CLIENT_AUTH_KEY, KEY_HEX, Docora, fresh_database
from tests.support.api_helpers import admin, api_client, api_settings, bearer, post_onboard
from treecast.db import session_scope
from treecast.service import docora_tokens
from treecast.service.core import TreecastService


async def test_imported_docora_token_authenticates_on_the_api(
    tmp_path: Path, postgres_url: str
) -> None:
    settings = api_settings(tmp_path)
    docora = Docora(
        fresh_database(postgres_url, "docora"),
        "https://github.com/acme/docs",
        "https://example.com/h",
    )
    service = TreecastService(settings)
    report = await service.admin.import_docora(docora.url, KEY_HEX, dry_run=False)
    assert report.apps == [docora.app_id]
    docora_tokens.forget_refusals()
    async with api_client(settings, service) as http:
        me = await http.get("/api/app", headers=bearer(docora.token))
        assert me.status_code == 200, me.text
        assert me.json()["app_id"] == docora.app_id
        wrong = await http.get("/api/app", headers=bearer("docora_" + secrets.token_hex(32)))
        assert wrong.status_code == 401
        # The app rotating its own token retires the Docora one.
        rotated = await http.post("/api/app/token/rotate", headers=bearer(docora.token))
        assert rotated.status_code == 200, rotated.text
        assert (await http.get("/api/app", headers=bearer(docora.token))).status_code == 401
        fresh = bearer(rotated.json()["token"])
        assert (await http.get("/api/app", headers=fresh)).status_code == 200


async def test_onboard_a_docora_app(tmp_path: Path) -> None:
    settings = api_settings(tmp_path)
    async with api_client(settings) as http:
        answer = await post_onboard(
            http,
            {
                "app_name": "docs",
                "base_url": "https://example.com/hooks",
                "scheme": "docora",
                "client_auth_key": CLIENT_AUTH_KEY,
            },
        )
        assert answer.status_code == 201, answer.text
        app_id = answer.json()["data"]["app_id"]
        missing = await post_onboard(
            http, {"app_name": "docs", "base_url": "https://example.com/h", "scheme": "docora"}
        )
        assert missing.status_code == 400, missing.text
        assert "client_auth_key" in missing.json()["error"]
        short: httpx.Response = await post_onboard(
            http,
            {
                "app_name": "docs",
                "base_url": "https://example.com/h",
                "scheme": "docora",
                "client_auth_key": "short",
            },
        )
        assert short.status_code in (400, 422), short.text
        detail = await http.get(f"/admin/api/apps/{app_id}", headers=admin())
        assert detail.json()["data"]["scheme"] == "docora"
    with session_scope(settings.database_url) as session:
        app = session.get(App, app_id)
        assert app is not None and app.signing_scheme == "docora"
        assert (
            app.client_auth_key_encrypted and CLIENT_AUTH_KEY not in app.client_auth_key_encrypted
        )
