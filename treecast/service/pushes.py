"""Push hooks from git hosts, without I/O: signatures, the repository URLs and ref of a
payload, and which watched refs a push moves (delivery ids seen: replay_guard.py).

A push is only a hint to sync now: its file lists are never used (GitLab truncates
them, and the ledger, not the payload, says what an app still needs).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from treecast.urls import normalise_git_url


class GitHost(StrEnum):
    """The git hosts whose push hooks Treecast understands."""

    GITHUB = "github"
    GITLAB = "gitlab"
    GITEA = "gitea"


# Keys of a payload's repository object that hold its URLs (GitHub, Gitea: repository;
# GitLab: project and repository).
URL_KEYS = ("clone_url", "ssh_url", "html_url", "git_http_url", "git_ssh_url", "web_url")
# A cheap pre-parse of the raw body, before its signature is known to be good: JSON
# string values of those keys, without escapes. Bounded in length and in number.
_URL_FIELD = re.compile(
    rb'"(' + b"|".join(k.encode() for k in URL_KEYS) + rb')"\s*:\s*"([^"\\]{1,2048})"'
)
MAX_CANDIDATE_URLS = 16


@dataclass(frozen=True)
class HookHeaders:
    """What a push receiver reads from the request headers."""

    host: GitHost
    event: str
    delivery_id: str | None
    signature: str | None  # a hex HMAC (GitHub: "sha256=<hex>") or GitLab's plain token


def read_headers(host: GitHost, headers: Mapping[str, str]) -> HookHeaders:
    """The event, delivery id and signature of a hook request (header names are lower case)."""
    if host == GitHost.GITLAB:
        return HookHeaders(
            host,
            headers.get("x-gitlab-event", ""),
            # The same on GitLab's retries of one delivery (17.4+), then the older ids.
            headers.get("idempotency-key")
            or headers.get("x-gitlab-event-uuid")
            or headers.get("x-gitlab-webhook-uuid"),
            headers.get("x-gitlab-token"),
        )
    if host == GitHost.GITEA:
        signature = headers.get("x-gitea-signature")
        if signature is None and headers.get("x-hub-signature-256"):
            signature = headers["x-hub-signature-256"]
        return HookHeaders(
            host,
            headers.get("x-gitea-event") or headers.get("x-github-event", ""),
            headers.get("x-gitea-delivery") or headers.get("x-github-delivery"),
            signature,
        )
    return HookHeaders(
        host,
        headers.get("x-github-event", ""),
        headers.get("x-github-delivery"),
        headers.get("x-hub-signature-256"),
    )


def sign(body: bytes, secret: str) -> str:
    """The hex HMAC-SHA256 of `body` (what GitHub and Gitea send, GitHub after "sha256=")."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(headers: HookHeaders, body: bytes, secret: str) -> bool:
    """Whether the hook request was made with `secret`, compared in constant time."""
    given = headers.signature or ""
    if headers.host == GitHost.GITLAB:
        return hmac.compare_digest(given.encode(), secret.encode())
    if given.startswith("sha256="):
        given = given[len("sha256=") :]
    elif headers.host == GitHost.GITHUB:
        return False
    return hmac.compare_digest(given.lower().encode(), sign(body, secret).encode())


def new_push_secret() -> str:
    """A new per-repository push secret (hex: every host accepts it)."""
    return secrets.token_hex(32)


def _normalised(urls: list[str]) -> list[str]:
    found: list[str] = []
    for url in urls:
        try:
            normal = normalise_git_url(url)
        except ValueError:
            continue
        if normal not in found:
            found.append(normal)
        if len(found) >= MAX_CANDIDATE_URLS:
            break
    return found


def candidate_urls(body: bytes) -> list[str]:
    """Normalised repository URLs named in a raw (not yet verified) payload, bounded."""
    raw = [m.group(2).decode("utf-8", "replace") for m in _URL_FIELD.finditer(body)]
    return _normalised(raw[: MAX_CANDIDATE_URLS * 4])


@dataclass
class Push:
    """A verified push: the repository's URLs, the ref it moved and the default branch."""

    urls: list[str] = field(default_factory=list)
    ref: str | None = None
    default_branch: str | None = None


def parse_push(body: bytes) -> Push:
    """The parts of a verified push payload Treecast uses; ValueError when it is not one."""
    try:
        payload: Any = json.loads(body)
    except (ValueError, RecursionError):
        raise ValueError("the push payload is not JSON") from None
    if not isinstance(payload, dict):
        raise ValueError("the push payload is not a JSON object")
    urls: list[str] = []
    default_branch: str | None = None
    for key in ("repository", "project"):
        section = payload.get(key)
        if not isinstance(section, dict):
            continue
        urls += [v for k, v in section.items() if k in URL_KEYS and isinstance(v, str)]
        branch = section.get("default_branch")
        if isinstance(branch, str) and branch and default_branch is None:
            default_branch = branch
    ref = payload.get("ref")
    return Push(_normalised(urls), ref if isinstance(ref, str) else None, default_branch)


def ref_matches(watched: str, pushed: str | None, default_branch: str | None) -> bool:
    """Whether a push of `pushed` (refs/heads/X or refs/tags/X) moves a repository watching
    `watched` ("" = the default branch). Unknown refs or default branches match: a needless
    sync costs one fetch, a missed one costs a poll interval."""
    if pushed is None:
        return True
    if not watched:
        return default_branch is None or pushed == f"refs/heads/{default_branch}"
    return pushed in (watched, f"refs/heads/{watched}", f"refs/tags/{watched}")


def is_ping(headers: HookHeaders) -> bool:
    """GitHub's (and Gitea's GitHub-compatible) hook test."""
    return headers.event == "ping"


def is_push(headers: HookHeaders) -> bool:
    """Events that move a ref (GitLab names them "Push Hook" and "Tag Push Hook")."""
    if headers.host == GitHost.GITLAB:
        return headers.event in ("Push Hook", "Tag Push Hook", "System Hook")
    return headers.event in ("push", "create")
