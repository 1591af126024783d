"""GitHub App installation tokens against a local stand-in of GitHub's one endpoint
(`POST /app/installations/{id}/access_tokens`, a real HTTP server on 127.0.0.1), over the
tests' git HTTP server with its token check."""

from __future__ import annotations

import base64
import json
import logging
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.git import GitActivities
from models.git import GitErrorType, SnapshotInput, SnapshotResult
from tests.support.githttp import GitHttpServer, git_http_server
from tests.support.gitrepos import WorkRepo, git
from tests.support.registering import offline
from treecast.config import Settings
from treecast.credentials import github_app
from treecast.credentials.github_app import GitHubApp, installation_token
from treecast.gitcache.errors import GitError
from treecast.service.access import AccessRefused
from treecast.service.core import TreecastService, run
from treecast.service.credentials import CredentialSpec
from treecast.service.errors import UserError
from treecast.service.results import Watched

APP_ID = "424242"
INSTALLATION = "7001"
REVOKED = "7666"


def app_credentials(key: rsa.RSAPrivateKey, installation: str = INSTALLATION) -> CredentialSpec:
    """What a watch bound to the GitHub App `APP_ID` is registered with."""
    return CredentialSpec(
        github_app_id=APP_ID, github_installation_id=installation, github_app_private_key=pem(key)
    )


def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


@dataclass
class FakeGitHub:
    """GitHub's token endpoint: checks the JWT with the app's public key, mints tokens."""

    public_key: rsa.RSAPublicKey
    git_server: GitHttpServer | None = None
    lifetime: float = 3600.0
    minted: list[dict[str, Any]] = field(default_factory=list)  # claims of each mint
    refused: list[str] = field(default_factory=list)
    revoked: set[str] = field(default_factory=lambda: {REVOKED})
    url: str = ""

    def verify(self, header: str) -> dict[str, Any] | None:
        if not header.startswith("Bearer "):
            return None
        head, claims, signature = header[len("Bearer ") :].split(".")
        try:
            self.public_key.verify(
                _unb64(signature),
                f"{head}.{claims}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except InvalidSignature:
            return None
        decoded: dict[str, Any] = json.loads(_unb64(claims))
        decoded["_header"] = json.loads(_unb64(head))
        return decoded


@pytest.fixture
def app_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,  # GitHub hands out PKCS#1; both are read
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture
def github(app_key: rsa.RSAPrivateKey) -> Iterator[FakeGitHub]:
    fake = FakeGitHub(app_key.public_key())
    github_app.forget_tokens()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            # Served under /api/v3, as GitHub Enterprise Server does.
            parts = self.path.removeprefix("/api/v3").strip("/").split("/")
            if (
                len(parts) != 4
                or parts[:2] != ["app", "installations"]
                or parts[3] != ("access_tokens")
            ):
                self._answer(404, {"message": "Not Found"})
                return
            claims = fake.verify(self.headers.get("Authorization", ""))
            if claims is None:
                fake.refused.append("bad jwt")
                self._answer(401, {"message": "A JSON web token could not be decoded"})
                return
            if parts[2] in fake.revoked:
                fake.refused.append(parts[2])
                self._answer(404, {"message": "Not Found"})
                return
            fake.minted.append(claims)
            token = "ghs_" + secrets.token_urlsafe(24)
            if fake.git_server is not None:
                fake.git_server.token = token  # what the git host now accepts
            expires = datetime.now(UTC) + timedelta(seconds=fake.lifetime)
            self._answer(
                201,
                {"token": token, "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ")},
            )

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{httpd.server_address[1]}/api/v3"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        httpd.shutdown()
        httpd.server_close()
        github_app.forget_tokens()


@pytest.fixture
def origin(tmp_path: Path) -> WorkRepo:
    work = WorkRepo(tmp_path / "root" / "handbook")
    work.commit_files({"README.md": "app-only readme\n"})
    return work


def register(service: TreecastService, url: str, spec: CredentialSpec) -> Watched:
    """The repository, watched by a new app with `spec` (checked against the host); no
    sync is asked for (`offline`)."""
    app = run(service.apps.add("reader", "https://example.com/hooks"))
    return run(service.watches.watch(app.app_id, url=url, credentials=spec))


def snapshot(settings: Settings, repository_id: str) -> SnapshotResult:
    result = ActivityEnvironment().run(
        GitActivities(settings).snapshot_repository, SnapshotInput(repository_id)
    )
    assert isinstance(result, SnapshotResult)
    return result


@contextmanager
def bound_repository(
    settings: Settings, github: FakeGitHub, origin: WorkRepo, key: rsa.RSAPrivateKey
) -> Iterator[tuple[Settings, GitHttpServer, TreecastService, Watched]]:
    """`origin` behind a git server that takes only the tokens `github` mints, watched with
    the app's credentials: the settings (pointing at `github`), server, service and watch."""
    settings = settings.model_copy(update={"github_api_url": github.url})
    with git_http_server(origin.remote.parent.parent, token="not-yet-minted") as server:
        github.git_server = server
        service = offline(settings)
        yield (
            settings,
            server,
            service,
            register(service, server.url("handbook/remote.git"), app_credentials(key)),
        )


@pytest.fixture
def app(github: FakeGitHub, app_key: rsa.RSAPrivateKey) -> GitHubApp:
    """The app `APP_ID`'s installation `INSTALLATION`, minting from `github`."""
    return GitHubApp(github.url, APP_ID, INSTALLATION, github_app.load_app_key(pem(app_key)))


def test_the_jwt_verifies_and_carries_the_claims(github: FakeGitHub, app: GitHubApp) -> None:
    now = time.time()
    token = installation_token(app, now=lambda: now)
    assert token.token.startswith("ghs_") and "ghs_" not in repr(token)
    [claims] = github.minted
    assert claims["_header"] == {"alg": "RS256", "typ": "JWT"}
    assert claims["iss"] == int(APP_ID)
    assert claims["iat"] == int(now) - 60 and claims["exp"] == int(now) + 9 * 60


def test_a_token_is_reused_until_near_expiry_then_minted_again(
    github: FakeGitHub, app: GitHubApp
) -> None:
    start = time.time()
    first = installation_token(app, now=lambda: start)
    assert installation_token(app, now=lambda: start + 60) is first
    # 10 minutes left of its hour: still reused (a sync started with it can finish).
    assert installation_token(app, now=lambda: start + 3000) is first
    assert len(github.minted) == 1
    # 4 minutes left: a new one.
    second = installation_token(app, now=lambda: start + 3360)
    assert second.token != first.token and len(github.minted) == 2
    # Another installation of the same app has its own token.
    other = replace(app, installation_id="7002")
    assert installation_token(other, now=lambda: start).token not in (first.token, second.token)


def test_a_repository_bound_to_an_app_syncs_with_minted_tokens(
    settings: Settings,
    github: FakeGitHub,
    app_key: rsa.RSAPrivateKey,
    origin: WorkRepo,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with bound_repository(settings, github, origin, app_key) as (settings, server, service, info):
        assert info.credentials.kind == "github-app" and info.credentials.token_expires_at is None
        result = snapshot(settings, info.repository_id)
        assert result.commit == git(origin.work, "rev-parse", "HEAD")
        token = server.token
        assert token is not None and token.startswith("ghs_")
        expected = "Basic " + base64.b64encode(f"x-access-token:{token}".encode()).decode()
        assert expected in server.auth_headers
        # The next sync reuses the cached token: nothing minted.
        snapshot(settings, info.repository_id)
        assert len(github.minted) == 1
    shown = run(service.repositories.get(info.repository_id)).credentials
    assert (shown.kind, shown.github_app_id, shown.github_installation_id) == (
        "github-app",
        APP_ID,
        INSTALLATION,
    )
    assert shown.token_expires_at is not None
    expires = datetime.fromisoformat(shown.token_expires_at)
    assert timedelta(minutes=55) < expires - datetime.now(UTC) <= timedelta(hours=1)
    assert token not in caplog.text and token not in json.dumps(
        [str(r.__dict__) for r in caplog.records]
    )
    stored = b"".join(p.read_bytes() for p in settings.data_dir.glob("treecast.db*"))
    assert token.encode() not in stored
    body = pem(app_key).splitlines()[1].encode()
    assert body not in stored  # the app's key is stored encrypted only


def test_a_revoked_installation_is_refused_at_watch_time(
    settings: Settings, github: FakeGitHub, app_key: rsa.RSAPrivateKey, origin: WorkRepo
) -> None:
    settings = settings.model_copy(update={"github_api_url": github.url})
    with git_http_server(origin.remote.parent.parent, token="never") as server:
        service = offline(settings)
        with pytest.raises(AccessRefused) as caught:
            register(
                service,
                server.url("handbook/remote.git"),
                app_credentials(app_key, REVOKED),
            )
    message = str(caught.value)
    assert GitErrorType.AUTHENTICATION_FAILED in message and "nothing was saved" in message
    assert f"installation {REVOKED}" in message and "404" in message and "removed" in message
    assert github.refused == [REVOKED] and server.auth_headers == []  # git never ran
    assert run(service.repositories.list()) == []


def test_a_wrong_app_key_is_refused_by_github(
    settings: Settings, github: FakeGitHub, origin: WorkRepo
) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    app = GitHubApp(github.url, APP_ID, INSTALLATION, github_app.load_app_key(pem(stranger)))
    with pytest.raises(GitError) as caught:
        installation_token(app)
    assert caught.value.type == GitErrorType.AUTHENTICATION_FAILED
    assert caught.value.non_retryable and "401" in caught.value.message


def test_an_unreachable_api_is_retried(app_key: rsa.RSAPrivateKey) -> None:
    from tests.conftest import free_port

    github_app.forget_tokens()
    app = GitHubApp(
        f"http://127.0.0.1:{free_port()}",
        APP_ID,
        INSTALLATION,
        github_app.load_app_key(pem(app_key)),
    )
    with pytest.raises(GitError) as caught:
        installation_token(app)
    assert caught.value.type == GitErrorType.NETWORK and not caught.value.non_retryable


@pytest.mark.usefixtures("hosts_accept_everyone")  # github.example is not reached
def test_app_bindings_are_checked(settings: Settings, app_key: rsa.RSAPrivateKey) -> None:
    service = offline(settings)
    url = "https://github.example/acme/handbook"
    with pytest.raises(UserError, match="needs github_app_id"):
        register(service, url, CredentialSpec(github_app_id=APP_ID))
    with pytest.raises(UserError, match="not a PEM private key"):
        register(
            service,
            url,
            CredentialSpec(
                github_app_id=APP_ID,
                github_installation_id=INSTALLATION,
                github_app_private_key="-----BEGIN RSA PRIVATE KEY-----\nnope\n",
            ),
        )
    with pytest.raises(UserError, match="https://"):
        register(
            service,
            "ssh://git@github.example/acme/handbook",
            app_credentials(app_key),
        )
    assert run(service.repositories.list()) == []
    # Rotation: a new installation id keeps the stored key.
    info = register(
        service,
        url,
        app_credentials(app_key),
    )
    rotated = run(
        service.watches.set_credentials(
            info.repository_id, CredentialSpec(github_installation_id="9")
        )
    )
    assert rotated.credentials.github_installation_id == "9"
    assert rotated.credentials.github_app_id == APP_ID
    token = run(
        service.watches.set_credentials(info.repository_id, CredentialSpec(token="glpat-abc"))
    )
    assert token.credentials.kind == "token" and token.credentials.github_app_id is None


def test_a_token_revoked_before_it_expires_is_minted_anew_and_says_why(
    settings: Settings, github: FakeGitHub, app_key: rsa.RSAPrivateKey, origin: WorkRepo
) -> None:
    with bound_repository(settings, github, origin, app_key) as (settings, server, _, info):
        snapshot(settings, info.repository_id)
        # The app is uninstalled: its token stops working at once, and minting answers 404.
        github.revoked.add(INSTALLATION)
        server.token = "revoked"
        with pytest.raises(ApplicationError) as git_refused:
            snapshot(settings, info.repository_id)  # git, with the cached token: 401
        assert git_refused.value.type == GitErrorType.AUTHENTICATION_FAILED
        with pytest.raises(ApplicationError) as mint_refused:
            snapshot(settings, info.repository_id)  # the token was dropped: minted, refused
    assert mint_refused.value.type == GitErrorType.AUTHENTICATION_FAILED
    assert mint_refused.value.non_retryable
    assert f"installation {INSTALLATION}" in mint_refused.value.message
    assert "404" in mint_refused.value.message
