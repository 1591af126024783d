"""Credentials over the HTTP API, in-process and without Temporal: a deploy key with
pinned host keys at registration, a generated key's public half, rotation by the app
that watches the repository (404 for another's) and by the operator, refusals as
`{"error": ...}`, and never a secret in an answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.api_helpers import admin, api_client, api_settings, bearer, onboard
from treecast.config import Settings
from treecast.credentials.ssh_keys import generate_deploy_key

# Their hosts (github.com/acme/..., git.example) are not reached: see the fixture.
pytestmark = [pytest.mark.usefixtures("hosts_accept_everyone")]

SSH_REPO = "ssh://git@git.example/acme/handbook.git"
HTTPS_REPO = "https://github.com/acme/handbook"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings: Settings = api_settings(tmp_path)
    async with api_client(settings) as http:
        yield http


def host_line() -> tuple[str, str]:
    """A known_hosts line for git.example and the fingerprint of its key."""
    host = generate_deploy_key("host")
    key_type, blob = host.public_key.split()[:2]
    return f"git.example {key_type} {blob}\n", host.fingerprint


async def put_credentials(
    http: httpx.AsyncClient, repository: str, token: str, body: dict[str, Any]
) -> httpx.Response:
    """PUT `body` to the credentials of `repository` (its API path) with an app's token."""
    return await http.put(f"{repository}/credentials", json=body, headers=bearer(token))


async def add(http: httpx.AsyncClient, token: str, **body: Any) -> httpx.Response:
    return await http.post(
        "/api/repositories", json={"url": SSH_REPO, **body}, headers=bearer(token)
    )


async def test_a_deploy_key_shows_its_kind_and_fingerprint_never_the_key(
    client: httpx.AsyncClient,
) -> None:
    app = await onboard(client)
    deploy = generate_deploy_key("mine")
    known, host_fingerprint = host_line()
    answer = await add(client, app["token"], ssh_private_key=deploy.private_key, known_hosts=known)
    assert answer.status_code == 201, answer.text
    credentials = answer.json()["credentials"]
    assert credentials["kind"] == "ssh-key"
    assert credentials["ssh_key_fingerprint"] == deploy.fingerprint
    assert credentials["host_key_fingerprints"] == [host_fingerprint]
    rid = answer.json()["repository_id"]
    body = deploy.private_key.split("\n")[1]
    listed = await client.get("/api/repositories?live=false", headers=bearer(app["token"]))
    one = await client.get(f"/api/repositories/{rid}", headers=bearer(app["token"]))
    detail = await client.get(f"/admin/api/apps/{app['app_id']}", headers=admin())
    assert listed.json()["data"][0]["credentials"]["kind"] == "ssh-key"
    assert one.json()["credentials"]["ssh_key_fingerprint"] == deploy.fingerprint
    watched = detail.json()["data"]["watches"][0]["credentials"]
    assert watched["kind"] == "ssh-key" and watched["host_key_fingerprints"] == [host_fingerprint]
    for response in (answer, listed, one, detail):
        assert body not in response.text and "PRIVATE KEY" not in response.text


async def test_generate_ssh_key_answers_the_public_key_to_paste(client: httpx.AsyncClient) -> None:
    app = await onboard(client)
    known, _ = host_line()
    answer = await add(client, app["token"], generate_ssh_key=True, known_hosts=known)
    assert answer.status_code == 201, answer.text
    credentials = answer.json()["credentials"]
    assert credentials["kind"] == "ssh-key"
    assert credentials["ssh_public_key"].startswith("ssh-ed25519 AAAA")
    assert credentials["ssh_key_fingerprint"].startswith("SHA256:")
    assert "PRIVATE" not in answer.text
    # No sync while the key is not on the host yet (as `repo add --generate-ssh-key`).
    assert answer.json()["sync_requested"] is False
    assert "deploy key" in answer.json()["sync_error"]


async def test_rotation_by_put_and_404_for_another_apps_repository(
    client: httpx.AsyncClient,
) -> None:
    app, other = await onboard(client), await onboard(client)
    known, _ = host_line()
    created = await add(client, app["token"], generate_ssh_key=True, known_hosts=known)
    rid = created.json()["repository_id"]
    first = created.json()["credentials"]["ssh_key_fingerprint"]
    path = f"/api/repositories/{rid}/credentials"
    new_key = generate_deploy_key("new")
    rotated = await client.put(
        path, json={"ssh_private_key": new_key.private_key}, headers=bearer(app["token"])
    )
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["credentials"]["ssh_key_fingerprint"] == new_key.fingerprint != first
    assert rotated.json()["sync_requested"] is False  # no Temporal here; the key is saved
    assert "PRIVATE" not in rotated.text

    stranger = await client.put(
        path, json={"generate_ssh_key": True}, headers=bearer(other["token"])
    )
    assert stranger.status_code == 404 and "error" in stranger.json()
    unknown = await client.put(
        "/api/repositories/r_nope/credentials", json={"clear": True}, headers=bearer(app["token"])
    )
    assert unknown.status_code == 404

    # Host keys alone rotate the pinned keys and keep the deploy key.
    known2, fingerprint2 = host_line()
    hosts = await client.put(path, json={"known_hosts": known2}, headers=bearer(app["token"]))
    assert hosts.json()["credentials"]["host_key_fingerprints"] == [fingerprint2]
    assert hosts.json()["credentials"]["ssh_key_fingerprint"] == new_key.fingerprint

    # The operator rotates any repository; clear drops everything.
    cleared = await client.put(
        f"/admin/api/repositories/{rid}/credentials", json={"clear": True}, headers=admin()
    )
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["data"]["credentials"]["kind"] == "none"
    one = await client.get(f"/api/repositories/{rid}", headers=bearer(app["token"]))
    assert one.json()["credentials"]["kind"] == "none"
    refused = await put_credentials(
        client, f"/admin/api/repositories/{rid}", app["token"], {"clear": True}
    )
    assert refused.status_code == 401


async def test_bad_key_text_and_mixed_kinds_are_400_with_an_error(
    client: httpx.AsyncClient,
) -> None:
    app = await onboard(client)
    known, _ = host_line()
    garbled = "-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0LWJ1dC1icm9rZW4=\n"
    bad = await add(client, app["token"], ssh_private_key=garbled, known_hosts=known)
    assert bad.status_code == 400 and "ssh_private_key" in bad.json()["error"]
    assert "c2VjcmV0" not in bad.text
    no_hosts = await add(client, app["token"], generate_ssh_key=True)
    assert no_hosts.status_code == 400 and "known_hosts" in no_hosts.json()["error"]
    assert "--" not in no_hosts.json()["error"]  # the API's words, not the CLI's
    both_keys = await add(
        client, app["token"], generate_ssh_key=True, ssh_private_key=garbled, known_hosts=known
    )
    assert both_keys.status_code == 400
    assert "ssh_private_key or generate_ssh_key" in both_keys.json()["error"]
    bad_app = await client.post(
        "/api/repositories",
        json={
            "url": HTTPS_REPO,
            "github_app_id": "12",
            "github_installation_id": "34",
            "github_app_private_key": "-----BEGIN RSA PRIVATE KEY-----\nxx\n",
        },
        headers=bearer(app["token"]),
    )
    assert bad_app.status_code == 400 and "github_app_private_key" in bad_app.json()["error"]
    too_long = await add(client, app["token"], ssh_private_key="x" * (16 * 1024 + 1))
    assert too_long.status_code == 400 and "error" in too_long.json()
    mixed = await add(
        client, app["token"], generate_ssh_key=True, known_hosts=known, github_app_id="1"
    )
    assert mixed.status_code == 400 and "error" in mixed.json()
    listed = await client.get("/api/repositories?live=false", headers=bearer(app["token"]))
    assert listed.json()["data"] == []  # nothing was stored


async def test_a_github_app_shows_its_ids(client: httpx.AsyncClient) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        .decode()
    )
    app = await onboard(client)
    answer = await client.post(
        "/api/repositories",
        json={
            "url": HTTPS_REPO,
            "github_app_id": "123",
            "github_installation_id": "456",
            "github_app_private_key": pem,
        },
        headers=bearer(app["token"]),
    )
    assert answer.status_code == 201, answer.text
    credentials = answer.json()["credentials"]
    assert credentials == {
        "kind": "github-app",
        "host_key_fingerprints": [],
        "github_app_id": "123",
        "github_installation_id": "456",
    }
    assert pem.split("\n")[1] not in answer.text


async def test_a_token_through_put_and_what_put_refuses(client: httpx.AsyncClient) -> None:
    app = await onboard(client)
    created = await client.post(
        "/api/repositories", json={"url": HTTPS_REPO}, headers=bearer(app["token"])
    )
    rid = created.json()["repository_id"]
    assert created.json()["credentials"]["kind"] == "none"
    put = await put_credentials(
        client, f"/api/repositories/{rid}", app["token"], {"token": "glpat-secret-token-value"}
    )
    assert put.status_code == 200, put.text
    assert put.json()["credentials"]["kind"] == "token"
    assert "glpat-secret-token-value" not in put.text
    empty = await put_credentials(client, f"/api/repositories/{rid}", app["token"], {})
    assert empty.status_code == 400 and "nothing to change" in empty.json()["error"]
    both = await put_credentials(
        client, f"/api/repositories/{rid}", app["token"], {"clear": True, "token": "x"}
    )
    assert both.status_code == 400 and "clear" in both.json()["error"]
    unknown = await put_credentials(
        client, f"/api/repositories/{rid}", app["token"], {"scan_host_keys": True}
    )
    assert unknown.status_code == 400


async def test_credentials_on_a_watched_repository_keep_its_paths(
    client: httpx.AsyncClient,
) -> None:
    app = await onboard(client)
    known, fingerprint = host_line()
    first = await add(client, app["token"], paths=["docs/**"])
    assert first.status_code == 201
    again = await add(client, app["token"], generate_ssh_key=True, known_hosts=known)
    assert again.status_code == 200, again.text
    assert again.json()["paths"] == ["docs/**"]
    assert again.json()["credentials"]["host_key_fingerprints"] == [fingerprint]
