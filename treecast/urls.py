"""Validation and normalisation of git URLs and webhook base URLs.

Every function raises `ValueError` with a one-line reason a person can act on.
Any registered app can register URLs, so every URL here is hostile input: the
address rules follow IANA's special-purpose address registries (the tables
below), addresses embedded in IPv6 transition prefixes are judged as the IPv4
address they reach, and DNS answers are waited for at most `DNS_TIMEOUT_SECONDS`.
"""

from __future__ import annotations

import ipaddress
import queue
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

MAX_URL_LENGTH = 2048
DNS_TIMEOUT_SECONDS = 5.0
# Lookups still running (a caller that gave up leaves its thread until libc returns):
# past this many, new lookups fail at once instead of piling up threads.
MAX_DNS_IN_FLIGHT = 16
DEFAULT_PORTS = {"https": 443, "http": 80, "ssh": 22, "git": 9418}

Resolver = Callable[[str, int], list[str]]

# user@host:path (scp-like ssh syntax)
_SCP_LIKE = re.compile(r"^(?P<user>[A-Za-z0-9._-]+)@(?P<host>[A-Za-z0-9.-]+):(?P<path>[^/].*)$")
_HOST = re.compile(
    r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


# -- addresses -------------------------------------------------------------------------

# IANA IPv4 Special-Purpose Address Registry (plus multicast), as
# (network, name, globally reachable). The most specific entry decides.
IPV4_SPECIAL: tuple[tuple[str, str, bool], ...] = (
    ("0.0.0.0/8", "this network", False),
    ("10.0.0.0/8", "private-use", False),
    ("100.64.0.0/10", "shared address space (carrier-grade NAT)", False),
    ("127.0.0.0/8", "loopback", False),
    ("169.254.0.0/16", "link-local", False),
    ("172.16.0.0/12", "private-use", False),
    ("192.0.0.0/24", "IETF protocol assignments", False),
    ("192.0.0.9/32", "port control protocol anycast", True),
    ("192.0.0.10/32", "TURN anycast", True),
    ("192.0.2.0/24", "documentation (TEST-NET-1)", False),
    ("192.31.196.0/24", "AS112-v4", True),
    ("192.52.193.0/24", "AMT", True),
    ("192.88.99.0/24", "deprecated 6to4 relay anycast", False),
    ("192.168.0.0/16", "private-use", False),
    ("192.175.48.0/24", "direct delegation AS112 service", True),
    ("198.18.0.0/15", "benchmarking", False),
    ("198.51.100.0/24", "documentation (TEST-NET-2)", False),
    ("203.0.113.0/24", "documentation (TEST-NET-3)", False),
    ("224.0.0.0/4", "multicast", False),
    ("240.0.0.0/4", "reserved", False),
    ("255.255.255.255/32", "limited broadcast", False),
)

# IANA IPv6 Special-Purpose Address Registry, plus site-local and multicast. The
# transition prefixes (IPv4-mapped and -compatible, NAT64, 6to4, Teredo) are judged
# by the IPv4 address they embed before this table is read; outside 2000::/3 (global
# unicast) everything is reserved.
IPV6_SPECIAL: tuple[tuple[str, str, bool], ...] = (
    ("::/128", "unspecified", False),
    ("::1/128", "loopback", False),
    ("64:ff9b:1::/48", "local-use IPv4/IPv6 translation", False),
    ("100::/64", "discard-only", False),
    ("100:0:0:1::/64", "dummy prefix", False),
    ("2001::/23", "IETF protocol assignments", False),
    ("2001:1::1/128", "port control protocol anycast", True),
    ("2001:1::2/128", "TURN anycast", True),
    ("2001:1::3/128", "DNS-SD service registration anycast", True),
    ("2001:2::/48", "benchmarking", False),
    ("2001:3::/32", "AMT", True),
    ("2001:4:112::/48", "AS112-v6", True),
    ("2001:10::/28", "deprecated ORCHID", False),
    ("2001:20::/28", "ORCHIDv2", True),
    ("2001:30::/28", "drone remote ID entity tags", True),
    ("2001:db8::/32", "documentation", False),
    ("2620:4f:8000::/48", "direct delegation AS112 service", True),
    ("3fff::/20", "documentation", False),
    ("5f00::/16", "segment routing (SRv6) SIDs", False),
    ("fc00::/7", "unique-local", False),
    ("fe80::/10", "link-local", False),
    ("fec0::/10", "deprecated site-local", False),
    ("ff00::/8", "multicast", False),
)

_V4_TABLE = sorted(
    ((ipaddress.IPv4Network(net), ok) for net, _name, ok in IPV4_SPECIAL),
    key=lambda entry: -entry[0].prefixlen,
)
_V6_TABLE = sorted(
    ((ipaddress.IPv6Network(net), ok) for net, _name, ok in IPV6_SPECIAL),
    key=lambda entry: -entry[0].prefixlen,
)
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_NAT64_LOCAL_96 = ipaddress.IPv6Network("64:ff9b:1::/96")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
_TEREDO = ipaddress.IPv6Network("2001::/32")


def _v4(data: bytes) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(data)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address] | None:
    """The IPv4 addresses an IPv6 transition address reaches (None: not one)."""
    raw = ip.packed
    if ip in _MAPPED or ip in _NAT64 or ip in _NAT64_LOCAL_96:
        return [_v4(raw[12:])]
    if ip in _NAT64_LOCAL:
        # Local-use NAT64 may embed at /48../64 too: ambiguous, so judged unreachable.
        return [ipaddress.IPv4Address("0.0.0.0")]
    if ip in _COMPATIBLE and int(ip) > 1:  # deprecated IPv4-compatible ::a.b.c.d
        return [_v4(raw[12:])]
    if ip in _SIX_TO_FOUR:
        return [_v4(raw[2:6])]
    if ip in _TEREDO:  # server, and the client (its last 32 bits, inverted)
        return [_v4(raw[4:8]), _v4(bytes(b ^ 0xFF for b in raw[12:]))]
    return None


def _ipv4_blocked(ip: ipaddress.IPv4Address) -> bool:
    for network, reachable in _V4_TABLE:
        if ip in network:
            return not reachable
    return False


def is_blocked_address(address: str) -> bool:
    """True when Treecast must not connect to `address` (IPv4 or IPv6, zone allowed).

    Judged by IANA's special-purpose registries (`IPV4_SPECIAL`, `IPV6_SPECIAL`):
    anything not globally reachable is refused (private, loopback, link-local,
    site-local, documentation, multicast, reserved...). IPv6 addresses that embed
    an IPv4 address (mapped, compatible, NAT64, 6to4, Teredo) are refused when that
    IPv4 address is, since connecting to them reaches it.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv4Address):
        return _ipv4_blocked(ip)
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        return any(_ipv4_blocked(v4) for v4 in embedded)
    for network, reachable in _V6_TABLE:
        if ip in network:
            return not reachable
    return ip not in _GLOBAL_UNICAST


# -- syntax ------------------------------------------------------------------------------


def _check_length(url: str) -> None:
    if not url or not url.strip():
        raise ValueError("the URL is empty")
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise ValueError("the URL contains spaces or control characters")


def _valid_host(host: str) -> bool:
    if not host:
        return False
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return bool(_HOST.match(host))


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


# -- DNS under a deadline -------------------------------------------------------------

_DNS_SLOTS = threading.BoundedSemaphore(MAX_DNS_IN_FLIGHT)


def resolve_addresses(
    host: str,
    port: int,
    timeout: float | None = None,
    *,
    getaddrinfo: Callable[..., list[Any]] | None = None,
) -> list[str]:
    """Every address `host` resolves to, waiting at most `timeout` seconds (default:
    `DNS_TIMEOUT_SECONDS`).

    getaddrinfo cannot be interrupted, and a hostile name server can make it hang
    for many seconds: it runs in a daemon thread the caller stops waiting for.
    Raises ValueError when the name does not resolve, does not resolve in time, or
    too many earlier lookups are still hanging (`MAX_DNS_IN_FLIGHT`).
    """
    if timeout is None:
        timeout = DNS_TIMEOUT_SECONDS
    if not _DNS_SLOTS.acquire(blocking=False):
        raise ValueError(
            f"the host {host!r} was not looked up: {MAX_DNS_IN_FLIGHT} DNS lookups "
            "are still hanging; try again later"
        )
    answers: queue.SimpleQueue[list[str] | BaseException] = queue.SimpleQueue()
    lookup_with = getaddrinfo or socket.getaddrinfo

    def lookup() -> None:
        try:
            infos = lookup_with(host, port, type=socket.SOCK_STREAM)
            answers.put(sorted({str(info[4][0]) for info in infos}))
        except BaseException as exc:  # handed to the caller, who may be gone
            answers.put(exc)
        finally:
            _DNS_SLOTS.release()

    threading.Thread(target=lookup, name=f"dns {host[:40]}", daemon=True).start()
    try:
        answer = answers.get(timeout=timeout)
    except queue.Empty:
        raise ValueError(f"the host {host!r} did not resolve within {timeout:g} s") from None
    if isinstance(answer, BaseException):
        raise ValueError(f"the host {host!r} does not resolve") from None
    if not answer:
        raise ValueError(f"the host {host!r} does not resolve")
    return answer


def _private_refusal(what: str, address: str) -> ValueError:
    return ValueError(
        f"{what} resolves to the private or loopback address {address} "
        "(set TREECAST_ALLOW_PRIVATE_URLS=1 to allow it)"
    )


def _is_localhost(host: str) -> bool:
    return host == "localhost" or host.endswith(".localhost")


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
        literal = host.strip("[]")
        try:
            addresses = [str(ipaddress.ip_address(literal))]
        except ValueError:
            if _is_localhost(host):
                raise ValueError(
                    "the base URL points to localhost (set TREECAST_ALLOW_PRIVATE_URLS=1 for local testing)"
                ) from None
            # A name that does not resolve now is accepted: the delivery transport
            # checks the address it actually connects to, every time.
            try:
                addresses = resolve_addresses(host, port) if resolve else []
            except ValueError:
                addresses = []
        for address in addresses:
            if is_blocked_address(address):
                raise _private_refusal("the base URL", address) from None
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
    literal = host.strip("[]")
    try:
        addresses: tuple[str, ...] = (str(ipaddress.ip_address(literal)),)
    except ValueError:
        addresses = ()
    if allow_private:
        return VettedGitUrl(normalised, scheme, host, effective_port, addresses)
    if not addresses:
        if _is_localhost(host):
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
    for address in addresses:
        if is_blocked_address(address):
            raise _private_refusal(f"the git URL's host {host}", address)
    return VettedGitUrl(normalised, scheme, host, effective_port, addresses)
