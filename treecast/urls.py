"""Validation and normalisation of git URLs and webhook base URLs.

Every function raises `ValueError` with a one-line reason a person can act on.
Any registered app can register URLs, so every URL here is hostile input; where a
URL may lead is judged by the network policy (`treecast.netpolicy`): its address
rules and its DNS lookups under a deadline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

# The network policy as URL vetting uses it (the `as` names are re-exported: callers
# knew them from here).
from treecast.netpolicy import DNS_TIMEOUT_SECONDS as DNS_TIMEOUT_SECONDS
from treecast.netpolicy import IPV4_SPECIAL as IPV4_SPECIAL
from treecast.netpolicy import IPV6_SPECIAL as IPV6_SPECIAL
from treecast.netpolicy import MAX_DNS_IN_FLIGHT as MAX_DNS_IN_FLIGHT
from treecast.netpolicy import Resolver as Resolver
from treecast.netpolicy import (
    blocked_address,
    embedded_ipv4,
    ip_literal,
    is_localhost,
    private_refusal,
)
from treecast.netpolicy import is_blocked_address as is_blocked_address
from treecast.netpolicy import resolve_addresses as resolve_addresses

_embedded_ipv4 = embedded_ipv4  # the name the address tests know

MAX_URL_LENGTH = 2048
DEFAULT_PORTS = {"https": 443, "http": 80, "ssh": 22, "git": 9418}

# user@host:path (scp-like ssh syntax)
_SCP_LIKE = re.compile(r"^(?P<user>[A-Za-z0-9._-]+)@(?P<host>[A-Za-z0-9.-]+):(?P<path>[^/].*)$")
_HOST = re.compile(
    r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


# -- syntax ------------------------------------------------------------------------------


def _check_length(url: str) -> None:
    if not url or not url.strip():
        raise ValueError("the URL is empty")
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise ValueError("the URL contains spaces or control characters")


def _valid_host(host: str) -> bool:
    return bool(host) and (ip_literal(host) is not None or bool(_HOST.match(host)))


_NUMERIC_LABEL = re.compile(r"[0-9]+|0[xX][0-9A-Fa-f]*")
_CANONICAL_IPV4 = re.compile(r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
                             r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])")  # fmt: skip


def _check_ipv4_form(host: str, what: str) -> None:
    """Refuse hosts a URL parser reads as IPv4 but not in canonical dotted-quad form.

    `010.8.8.8`, `1.2.3.04`, `0x7f.1`, `127.1` and `2130706433` are IPv4 to
    browsers and libc (octal, hex, fewer parts), are refused by httpx, and hide
    the address from a person reading the URL.
    """
    if ":" in host:  # an IPv6 literal (may end in a dotted IPv4 part)
        return
    labels = host.split(".")
    if labels and labels[-1] == "" and len(labels) > 1:
        labels = labels[:-1]  # one trailing dot: still "ends in a number"
    if not labels or not _NUMERIC_LABEL.fullmatch(labels[-1]):
        return
    if not _CANONICAL_IPV4.fullmatch(host):
        raise ValueError(
            f"the {what} host {host!r} is not a canonical IPv4 address "
            "(write four decimal numbers without leading zeros, e.g. 192.0.2.1)"
        )


def _split_git_url(url: str, *, allow_git: bool) -> tuple[str, str, str, int | None, str, str]:
    """(scheme, user, host, port, path, netloc-without-user) of a git URL, checked."""
    _check_length(url)
    url = url.strip()
    option = _option_like(url)
    if option is not None:
        raise ValueError(
            f"the git URL's user or host {option[:40]!r} starts with '-' "
            "(ssh would read it as an option)"
        )
    scp = _SCP_LIKE.match(url)
    if scp:
        url = f"ssh://{scp['user']}@{scp['host']}/{scp['path']}"
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    schemes = (
        ("https", "http", "ssh", "file", "git") if allow_git else ("https", "http", "ssh", "file")
    )
    if scheme not in schemes:
        raise ValueError(
            f"unsupported git URL scheme {parts.scheme + ':' if parts.scheme else '(none)'}; "
            f"use https://, ssh://, git@host:path{', git://' if allow_git else ''} or file://"
        )
    if parts.query or parts.fragment:
        raise ValueError("a git URL must not have a query or fragment")
    path = parts.path
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError("a file:// URL must name a local path (file:///path/to/repo)")
        if not path.startswith("/") or path == "/":
            raise ValueError("a file:// URL needs an absolute path (file:///path/to/repo)")
        return scheme, "", "", None, re.sub("/+", "/", path).rstrip("/"), ""
    if parts.password is not None or (parts.username and scheme != "ssh"):
        raise ValueError("credentials do not belong in the URL; pass a token with --token-env")
    host = (parts.hostname or "").lower()
    if not _valid_host(host):
        raise ValueError("the git URL has no valid host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the git URL has an invalid port") from None
    path = re.sub("/+", "/", path).rstrip("/")
    if path.endswith(".git"):
        path = path[: -len(".git")]
    if not path.strip("/"):
        raise ValueError("the git URL has no repository path")
    shown = f"[{host}]" if ":" in host else host  # IPv6 literals keep their brackets
    netloc = shown if port is None else f"{shown}:{port}"
    return scheme, parts.username or "", host, port, path, netloc


def normalise_git_url(url: str) -> str:
    """The canonical form of a git URL, so one repository is registered once.

    Accepts https://, http://, ssh://, scp-like `git@host:owner/name` and
    file://. Lower-cases scheme and host, drops a trailing `.git` and `/`, and
    refuses credentials in the URL (use `--token-env`) and ssh users or hosts
    starting with `-`. Registration from untrusted callers should use
    `vet_git_url`, which also checks where it leads.
    """
    scheme, user, _host, _port, path, netloc = _split_git_url(url, allow_git=False)
    return _join_git_url(scheme, user, netloc, path)


def _join_git_url(scheme: str, user: str, netloc: str, path: str) -> str:
    if scheme == "file":
        return f"file://{path}"
    if scheme == "ssh" and user:
        netloc = f"{user}@{netloc}"
    return urlunsplit((scheme, netloc, path, "", ""))


def owner_and_name(normalised_url: str) -> tuple[str, str]:
    """`owner` and `name` of a repository for webhook payloads (last two path segments)."""
    path = urlsplit(normalised_url).path.strip("/")
    segments = [s for s in path.split("/") if s]
    name = segments[-1] if segments else ""
    owner = segments[-2] if len(segments) > 1 else ""
    return owner, name


# -- webhook base URLs ------------------------------------------------------------------


def validate_base_url(url: str, *, allow_private: bool, resolve: bool = True) -> str:
    """Check a webhook base URL and return it without a trailing slash.

    http(s) only, no credentials, no query or fragment, a host in a form the
    webhook sender (httpx) can parse; unless `allow_private`, the host must not
    be (or resolve to) an address `is_blocked_address` refuses. The delivery
    transport re-checks the address it actually connects to.
    """
    _check_length(url)
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("the base URL must start with http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise ValueError("the base URL must not contain credentials")
    if parts.query or parts.fragment:
        raise ValueError("the base URL must not have a query or fragment")
    host = (parts.hostname or "").lower()
    if not _valid_host(host):
        raise ValueError("the base URL has no valid host")
    _check_ipv4_form(host, "base URL")
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        raise ValueError("the base URL has an invalid port") from None
    if parts.port == 0:
        raise ValueError("the base URL has an invalid port")
    if not allow_private:
        literal = ip_literal(host)
        addresses = [literal] if literal is not None else []
        if literal is None and is_localhost(host):
            raise ValueError(
                "the base URL points to localhost (set TREECAST_ALLOW_PRIVATE_URLS=1 for local testing)"
            )
        if literal is None and resolve:
            # A name that does not resolve now is accepted: the delivery transport
            # checks the address it actually connects to, every time.
            try:
                addresses = resolve_addresses(host, port, DNS_TIMEOUT_SECONDS)
            except ValueError:
                addresses = []
        blocked = blocked_address(addresses)
        if blocked is not None:
            raise ValueError(private_refusal("the base URL", blocked))
    base = urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"), "", ""))
    _check_sender_can_parse(base)
    return base


def _check_sender_can_parse(base: str) -> None:
    """What the sender will build (`endpoint_url`) must parse, or every delivery fails."""
    try:
        httpx.URL(base)
        httpx.URL(base + "/create")
    except (httpx.InvalidURL, ValueError, UnicodeError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"the base URL cannot be used by the webhook sender: {detail}") from None


# -- git URLs -------------------------------------------------------------------------

_SSH_USER = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]*")


@dataclass(frozen=True, slots=True)
class VettedGitUrl:
    """A git URL that passed `vet_git_url`, and where it leads."""

    url: str  # normalised (the registry's key)
    scheme: str  # https, http, ssh, git or file
    host: str  # "" for file://
    port: int | None  # the effective port (None for file://)
    addresses: tuple[str, ...]  # what the host resolved to at vetting (empty when not looked up)
    unresolved: str | None = None  # why the host could not be resolved now (None: it was)


def _option_like(url: str) -> str | None:
    """The user or host of an ssh URL when it starts with `-` (after %-decoding, as git does)."""
    scp = re.match(r"^(?:(?P<user>[^@/:]*)@)?(?P<host>[^@/:]*):", url)
    candidates: list[str] = []
    if scp and "://" not in url:
        candidates += [scp["user"] or "", scp["host"] or ""]
    else:
        netloc = urlsplit(url).netloc
        user, _, hostport = netloc.rpartition("@")
        candidates += [user, hostport]
    for value in candidates:
        if unquote(value).startswith("-"):
            return value
    return None


def vet_git_url(
    url: str,
    *,
    allow_private: bool,
    allow_file: bool,
    token: bool,
    allow_insecure: bool,
    resolve: Resolver = resolve_addresses,
) -> VettedGitUrl:
    """Check a git URL an untrusted caller registers; return it normalised with its addresses.

    Refuses, each with a one-line reason: what `normalise_git_url` refuses;
    file:// unless `allow_file` (it reads the worker's own disk); a token over
    http:// or git:// unless `allow_insecure` (it would cross the network in
    clear text); an ssh user or host starting with `-` (ssh would take it as an
    option: `-oProxyCommand=...`); a non-canonical IPv4 host; and, unless
    `allow_private`, a host that is or resolves (`resolve`, under a deadline) to
    an address `is_blocked_address` refuses. git itself resolves the name again
    when it fetches: pin `addresses` where the transport allows it.
    """
    scheme, user, host, port, path, netloc = _split_git_url(url, allow_git=True)
    normalised = _join_git_url(scheme, user, netloc, path)
    if scheme == "file":
        if not allow_file:
            raise ValueError(
                "file:// git URLs read the worker's own disk "
                "(set TREECAST_ALLOW_FILE_URLS=1 to allow them)"
            )
        return VettedGitUrl(normalised, scheme, "", None, ())
    if scheme == "ssh" and user and not _SSH_USER.fullmatch(user):
        raise ValueError(
            "the ssh user name may only contain letters, digits, '.', '_' and '-' "
            "(and must not start with '-')"
        )
    if token and scheme in ("http", "git") and not allow_insecure:
        raise ValueError(
            f"a token over {scheme}:// would cross the network unencrypted; use https:// "
            "(or set TREECAST_ALLOW_INSECURE_TRANSPORT=1 on a trusted network)"
        )
    _check_ipv4_form(host, "git URL")
    effective_port = port if port is not None else DEFAULT_PORTS[scheme]
    literal = ip_literal(host)
    addresses: tuple[str, ...] = (literal,) if literal is not None else ()
    if allow_private:
        return VettedGitUrl(normalised, scheme, host, effective_port, addresses)
    if not addresses:
        if is_localhost(host):
            raise ValueError(
                "the git URL points to localhost (set TREECAST_ALLOW_PRIVATE_URLS=1 to allow it)"
            )
        unresolved: str | None
        try:
            addresses = tuple(resolve(host, effective_port))
        except (ValueError, OSError) as exc:
            unresolved = str(exc)
        else:
            unresolved = None if addresses else f"the host {host!r} does not resolve"
        if unresolved is not None:
            # Accepted, as webhooks are: every fetch vets the host again and refuses to
            # run git until it resolves to addresses that pass (treecast.gitcache.pinning).
            return VettedGitUrl(normalised, scheme, host, effective_port, (), unresolved)
    blocked = blocked_address(addresses)
    if blocked is not None:
        raise ValueError(private_refusal(f"the git URL's host {host}", blocked))
    return VettedGitUrl(normalised, scheme, host, effective_port, addresses)
