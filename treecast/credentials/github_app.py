"""GitHub App installation tokens: minted where git needs them, cached in this process.

A repository bound to a GitHub App stores the app id, the installation id and the app's
private key (encrypted). When git needs to reach the repository, `installation_token`
returns a token from this process's cache, or mints one: an RS256 JWT signed with the
app's key (`iat` now-60 s, `exp` now+9 min, `iss` the app id) is POSTed to
`{TREECAST_GITHUB_API_URL}/app/installations/{id}/access_tokens`, which answers with a
one-hour token. A token is reused until `REFRESH_MARGIN_SECONDS` before it expires, so a
sync that starts with it can finish with it. Tokens and JWTs never leave the process:
not in workflow history (the activities mint them themselves), logs or errors.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from models.git import GitErrorType
from treecast.gitcache.errors import GitError
from treecast.redact import redact

JWT_BACKDATE_SECONDS = 60  # GitHub's advice against clock drift
JWT_LIFETIME_SECONDS = 9 * 60  # GitHub allows at most 10 minutes
REFRESH_MARGIN_SECONDS = 5 * 60  # mint anew when less than this is left
REQUEST_TIMEOUT_SECONDS = 15.0
APP_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # a numeric app id or a client id (Iv1....)
INSTALLATION_ID = re.compile(r"^[0-9]{1,20}$")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def load_app_key(text: str) -> str:
    """The app's private key as PEM (PKCS#1 or PKCS#8, as GitHub hands it out); ValueError
    with one line when it is not an unencrypted RSA private key."""
    try:
        key = serialization.load_pem_private_key(text.strip().encode() + b"\n", password=None)
    except TypeError:
        raise ValueError(
            "the GitHub App key is encrypted; give the .pem GitHub generated"
        ) from None
    except ValueError:
        raise ValueError("the GitHub App key is not a PEM private key (the app's .pem)") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("a GitHub App key is an RSA private key")
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


def app_jwt(app_id: str, private_key_pem: str, now: float) -> str:
    """The RS256 JWT that authenticates as the app (`iss` = the app id)."""
    key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    header = {"alg": "RS256", "typ": "JWT"}
    issued = int(now)
    claims = {
        "iat": issued - JWT_BACKDATE_SECONDS,
        "exp": issued + JWT_LIFETIME_SECONDS,
        "iss": int(app_id) if app_id.isdigit() else app_id,
    }
    signing_input = ".".join(
        _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64url(signature)}"


@dataclass(frozen=True)
class GitHubApp:
    """A repository's GitHub App binding (the key decrypted, in memory only)."""

    api_url: str
    app_id: str
    installation_id: str
    private_key: str

    def __repr__(self) -> str:
        return f"GitHubApp(app {self.app_id}, installation {self.installation_id})"

    @property
    def cache_key(self) -> tuple[str, str, str]:
        return (self.api_url, self.app_id, self.installation_id)


@dataclass(frozen=True)
class InstallationToken:
    token: str
    expires_at: datetime

    def __repr__(self) -> str:
        return f"InstallationToken(***, expires_at={self.expires_at.isoformat()})"

    def fresh(self, now: float) -> bool:
        return self.expires_at.timestamp() - now > REFRESH_MARGIN_SECONDS


# Per worker process, keyed by API, app and installation.
_tokens: dict[tuple[str, str, str], InstallationToken] = {}
_locks: dict[tuple[str, str, str], threading.Lock] = {}
_locks_guard = threading.Lock()

Post = Callable[[str, dict[str, str]], httpx.Response]


def _post(url: str, headers: dict[str, str]) -> httpx.Response:
    with httpx.Client(timeout=REQUEST_TIMEOUT_SECONDS, follow_redirects=False) as client:
        return client.post(url, headers=headers)


def forget_tokens() -> None:
    """Drop every cached token (tests; a key rotation needs no call: tokens stay valid)."""
    with _locks_guard:
        _tokens.clear()


def forget_refused(token: str) -> None:
    """Drop a cached token git was refused with (the installation may have been removed
    before the token expired), so the next sync mints anew and says why."""
    with _locks_guard:
        for key, cached in list(_tokens.items()):
            if cached.token == token:
                del _tokens[key]


def installation_token(
    app: GitHubApp, *, now: Callable[[], float] = time.time, post: Post = _post
) -> InstallationToken:
    """A token for the app's installation: the cached one while fresh, else a new one.

    Raises a non-retryable AuthenticationFailed when GitHub refuses (the installation
    was removed or suspended, or the app id or key is wrong), a retryable
    GitNetworkError when it cannot be reached or answers 5xx/429.
    """
    key = app.cache_key
    with _locks_guard:
        lock = _locks.setdefault(key, threading.Lock())
    with lock:
        cached = _tokens.get(key)
        if cached is not None and cached.fresh(now()):
            return cached
        minted = _mint(app, now(), post)
        _tokens[key] = minted
        return minted


def _mint(app: GitHubApp, now: float, post: Post) -> InstallationToken:
    jwt = app_jwt(app.app_id, app.private_key, now)
    url = f"{app.api_url}/app/installations/{app.installation_id}/access_tokens"
    what = f"GitHub App {app.app_id} (installation {app.installation_id})"
    try:
        response = post(
            url,
            {
                "Authorization": f"Bearer {jwt}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
                "User-Agent": "treecast",
            },
        )
    except httpx.HTTPError as error:
        raise GitError(
            GitErrorType.NETWORK,
            f"{what}: could not mint an installation token: {app.api_url} did not answer "
            f"({type(error).__name__}); it will be retried",
        ) from None
    status = response.status_code
    if status == 201:
        try:
            body = response.json()
            token = str(body["token"])
            expires = datetime.fromisoformat(str(body["expires_at"]).replace("Z", "+00:00"))
        except (ValueError, KeyError, TypeError):
            raise GitError(
                GitErrorType.OTHER, f"{what}: {app.api_url} answered 201 without a token"
            ) from None
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        return InstallationToken(token, expires)
    reason = _github_message(response, [jwt])
    limited = status == 429 or (
        status == 403 and response.headers.get("x-ratelimit-remaining") == "0"
    )
    if limited or status >= 500:
        raise GitError(
            GitErrorType.NETWORK,
            f"{what}: GitHub answered {status} ({reason}) when minting a token; it will be retried",
        )
    if status in (401, 404):
        hint = (
            "the installation was removed (the app was uninstalled or lost access to the "
            "repository's owner), or the app id or key is wrong"
        )
    elif status == 403:
        hint = "the installation is suspended or the app lacks permission"
    else:
        hint = "GitHub refused the request"
    raise GitError(
        GitErrorType.AUTHENTICATION_FAILED,
        f"{what}: no installation token (GitHub answered {status}: {reason}): {hint}; "
        "reinstall the app or update the repository "
        "(starter.py repo set-credentials REPO_ID --github-...)",
    )


def _github_message(response: httpx.Response, secrets: list[str]) -> str:
    try:
        message = str(response.json().get("message", "")) or "no message"
    except (ValueError, AttributeError):
        message = "no message"
    message = "".join(c if c.isprintable() else " " for c in message)[:200]
    return redact(message, secrets)
