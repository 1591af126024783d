"""The network policy: which addresses Treecast may connect to, and DNS under a deadline.

One place for the webhook transport (`treecast.webhooks.transport`), git URL vetting
(`treecast.urls`) and the smart-HTTP ref checks (`treecast.gitcache.smarthttp`). Every
name a registered app hands us is hostile: the address rules follow IANA's special-
purpose address registries (the tables below), addresses embedded in IPv6 transition
prefixes are judged as the IPv4 address they reach, a name is refused when any of its
addresses is, and DNS answers are waited for at most `DNS_TIMEOUT_SECONDS`.
"""

from __future__ import annotations

import ipaddress
import queue
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any

DNS_TIMEOUT_SECONDS = 5.0
# Lookups still running (a caller that gave up leaves its thread until libc returns):
# past this many, new lookups fail at once instead of piling up threads.
MAX_DNS_IN_FLIGHT = 16

# (host, port) -> the addresses it resolves to; may block (it runs under a deadline).
Resolver = Callable[[str, int], list[str]]


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


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address] | None:
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
    embedded = embedded_ipv4(ip)
    if embedded is not None:
        return any(_ipv4_blocked(v4) for v4 in embedded)
    for network, reachable in _V6_TABLE:
        if ip in network:
            return not reachable
    return ip not in _GLOBAL_UNICAST


def blocked_address(addresses: Iterable[str]) -> str | None:
    """The first of `addresses` Treecast must not connect to (None: every one may be).

    One blocked answer refuses the host: a name that mixes public and internal
    addresses is exactly what a rebinding attack looks like.
    """
    return next((address for address in addresses if is_blocked_address(address)), None)


def private_refusal(what: str, address: str) -> str:
    """The one line that refuses `what` for resolving to a blocked `address`."""
    return (
        f"{what} resolves to the private or loopback address {address} "
        "(set TREECAST_ALLOW_PRIVATE_URLS=1 to allow it)"
    )


def ip_literal(host: str) -> str | None:
    """The address a host names itself (`192.0.2.1`, `[2001:db8::1]`), or None for a name."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def is_localhost(host: str) -> bool:
    """`localhost` and its subdomains, which never leave the machine."""
    return host == "localhost" or host.endswith(".localhost")


# -- DNS under a deadline -------------------------------------------------------------


class Unresolved(ValueError):
    """A name that did not resolve (`timed_out`: not within the deadline)."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


_DNS_SLOTS = threading.BoundedSemaphore(MAX_DNS_IN_FLIGHT)


def _system(getaddrinfo: Callable[..., list[Any]]) -> Resolver:
    def resolve(host: str, port: int) -> list[str]:
        infos = getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return sorted({str(info[4][0]) for info in infos})

    return resolve


def resolve_addresses(
    host: str,
    port: int,
    timeout: float | None = None,
    *,
    resolver: Resolver | None = None,
    getaddrinfo: Callable[..., list[Any]] | None = None,
) -> list[str]:
    """Every address `host` resolves to, waiting at most `timeout` seconds (default:
    `DNS_TIMEOUT_SECONDS`); the system's resolver (each address once, sorted) unless
    `resolver` or `getaddrinfo` stands in for it.

    getaddrinfo cannot be interrupted, and a hostile name server can make it hang for
    many seconds: it runs in a daemon thread the caller stops waiting for. Raises
    `Unresolved` when the name does not resolve, does not resolve in time, or too many
    earlier lookups are still hanging (`MAX_DNS_IN_FLIGHT`).
    """
    if timeout is None:
        timeout = DNS_TIMEOUT_SECONDS
    lookup_with = resolver or _system(getaddrinfo or socket.getaddrinfo)
    if not _DNS_SLOTS.acquire(blocking=False):
        raise Unresolved(
            f"the host {host!r} was not looked up: {MAX_DNS_IN_FLIGHT} DNS lookups "
            "are still hanging; try again later"
        )
    answers: queue.SimpleQueue[list[str] | BaseException] = queue.SimpleQueue()

    def lookup() -> None:
        try:
            answers.put(lookup_with(host, port))
        except BaseException as exc:  # handed to the caller, who may be gone
            answers.put(exc)
        finally:
            _DNS_SLOTS.release()

    threading.Thread(target=lookup, name=f"dns {host[:40]}", daemon=True).start()
    try:
        answer = answers.get(timeout=timeout)
    except queue.Empty:
        raise Unresolved(
            f"the host {host!r} did not resolve within {timeout:g} s", timed_out=True
        ) from None
    if isinstance(answer, BaseException):
        raise Unresolved(f"the host {host!r} does not resolve ({answer})") from None
    if not answer:
        raise Unresolved(f"the host {host!r} does not resolve")
    return answer


# -- where a connection may go ----------------------------------------------------------


class Blocked(Exception):
    """A host that is, or resolves to, an address Treecast may not connect to."""


def addresses_to_dial(
    host: str,
    port: int,
    *,
    allow_private: bool,
    timeout: float | None = None,
    resolver: Resolver | None = None,
) -> list[str]:
    """The vetted addresses to connect to for `host` (itself when it is an address).

    The caller then connects to these very addresses, so a DNS answer that changes
    between the check and the connect (rebinding) cannot reach an internal address.
    Raises `Unresolved` (see `resolve_addresses`) and, unless `allow_private`,
    `Blocked` when any address is refused.
    """
    literal = ip_literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        addresses = resolve_addresses(host, port, timeout, resolver=resolver)
    blocked = None if allow_private else blocked_address(addresses)
    if blocked is not None:
        raise Blocked(f"refusing to connect to {host}: {private_refusal('it', blocked)}")
    return addresses
