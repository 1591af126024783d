"""treecast.urls against hostile URLs: IANA address tables, forms the sender cannot parse,
git URL vetting, and DNS under a deadline. No network: resolvers are stand-ins."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.fuzzing import bounded
from treecast import urls
from treecast.urls import (
    IPV4_SPECIAL,
    IPV6_SPECIAL,
    MAX_DNS_IN_FLIGHT,
    is_blocked_address,
    normalise_git_url,
    resolve_addresses,
    validate_base_url,
    vet_git_url,
)

# -- a. addresses -------------------------------------------------------------------------

BLOCKED = [
    "127.0.0.1",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",
    "0.0.0.0",
    "192.0.0.8",
    "192.0.2.1",
    "192.88.99.1",  # deprecated 6to4 relay anycast
    "198.18.0.1",
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "::1",
    "::",
    "fe80::1",
    "fe80::1%eth0",
    "fc00::1",
    "fd12:3456::1",
    "fec0::1",  # site-local
    "ff02::1",
    "2001:db8::1",
    "3fff::1",  # documentation (RFC 9637)
    "5f00::1",
    "100::1",
    "4000::1",  # outside 2000::/3
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::127.0.0.1",  # IPv4-compatible
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b:1::a00:1",
    "64:ff9b:1:7f00:0:100::",  # local-use NAT64 at /48: ambiguous
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "2002:a9fe:a9fe::",
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
    "2001:0:a00:1:8000:63bf:f7f7:f7f7",  # Teredo via a private server
]

ALLOWED = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "192.0.0.9",  # PCP anycast: globally reachable per IANA
    "192.31.196.1",
    "2606:4700:4700::1111",
    "2a00:1450:4001::1",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
    "64:ff9b:1::808:808",
    "2002:808:808::1",  # 6to4 of 8.8.8.8
    "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # Teredo, client 8.8.8.8
    "2001:4:112::1",  # AS112-v6
]


@pytest.mark.parametrize("address", BLOCKED)
def test_refused_addresses(address: str) -> None:
    assert is_blocked_address(address), address


@pytest.mark.parametrize("address", ALLOWED)
def test_global_addresses_are_allowed(address: str) -> None:
    assert not is_blocked_address(address), address


def test_the_tables_are_valid_data() -> None:
    for table, kind in (
        (IPV4_SPECIAL, ipaddress.IPv4Network),
        (IPV6_SPECIAL, ipaddress.IPv6Network),
    ):
        assert len({net for net, _, _ in table}) == len(table)
        for net, name, reachable in table:
            assert isinstance(kind(net), kind) and name and isinstance(reachable, bool)


ipv4s = st.integers(min_value=0, max_value=2**32 - 1).map(ipaddress.IPv4Address)
ipv6s = st.integers(min_value=0, max_value=2**128 - 1).map(ipaddress.IPv6Address)


@bounded
@given(ipv4s)
def test_embedded_ipv4_is_judged_as_itself(v4: ipaddress.IPv4Address) -> None:
    n = int(v4)
    expected = is_blocked_address(str(v4))
    for v6 in (
        (0xFFFF << 32) | n,  # ::ffff:a.b.c.d
        (0x0064_FF9B << 96) | n,  # 64:ff9b::a.b.c.d
        (0x2002 << 112) | (n << 80),  # 2002:aabb:ccdd::
        # Teredo with a public server (8.8.8.8) and client = inverted bits
        (0x2001_0000 << 96) | (0x0808_0808 << 64) | (n ^ 0xFFFF_FFFF),
    ):
        assert is_blocked_address(str(ipaddress.IPv6Address(v6))) == expected, (v4, hex(v6))


@bounded
@given(ipv4s)
def test_ipv4_refuses_at_least_what_python_calls_private(v4: ipaddress.IPv4Address) -> None:
    if v4.is_private or v4.is_loopback or v4.is_link_local or v4.is_multicast or v4.is_reserved:
        assert is_blocked_address(str(v4))


@bounded
@given(ipv6s)
def test_ipv6_refuses_loopback_link_site_local_multicast(v6: ipaddress.IPv6Address) -> None:
    if v6.is_loopback or v6.is_link_local or v6.is_site_local or v6.is_multicast:
        assert is_blocked_address(str(v6))
    if v6 not in ipaddress.IPv6Network("2000::/3") and urls._embedded_ipv4(v6) is None:
        assert is_blocked_address(str(v6))


# -- b. base URLs the sender cannot parse ---------------------------------------------------

NON_CANONICAL = [
    "http://1.2.3.04/",
    "http://010.8.8.8/",
    "http://0x7f.1/",
    "http://0x7f000001/",
    "http://127.1/",
    "http://2130706433/",
    "http://1.2.3.4.5/",
    "https://08.8.8.8/hooks",
]


@pytest.mark.parametrize("url", NON_CANONICAL)
def test_non_canonical_ipv4_hosts_are_refused_in_one_line(url: str) -> None:
    # Today these register (with TREECAST_ALLOW_PRIVATE_URLS, or resolving to a public
    # address) and then every delivery fails with httpx.InvalidURL, or hides the address.
    with pytest.raises(ValueError, match="not a canonical IPv4 address") as info:
        validate_base_url(url, allow_private=True, resolve=False)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://192.0.2.1/", "http://192.0.2.1"),
        ("HTTPS://Example.COM/Hooks/", "https://example.com/Hooks"),
        ("http://[2606:4700::1]:8080/x", "http://[2606:4700::1]:8080/x"),
        ("http://10.0.0.255:81", "http://10.0.0.255:81"),
        ("http://1.2.3.4.example/", "http://1.2.3.4.example"),
    ],
)
def test_canonical_hosts_still_register(url: str, expected: str) -> None:
    assert validate_base_url(url, allow_private=True, resolve=False) == expected


def test_port_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid port"):
        validate_base_url("http://example.com:0/", allow_private=True, resolve=False)


def test_what_httpx_refuses_is_refused_at_registration(monkeypatch: pytest.MonkeyPatch) -> None:
    real = httpx.URL

    def picky(url: str, **kwargs: Any) -> httpx.URL:
        if "picky" in str(url):
            raise httpx.InvalidURL("Invalid URL component 'path'")
        return real(url, **kwargs)

    monkeypatch.setattr(httpx, "URL", picky)
    with pytest.raises(ValueError, match="cannot be used by the webhook sender: Invalid URL"):
        validate_base_url("http://example.com/picky", allow_private=True, resolve=False)


HOSTS = st.one_of(
    st.sampled_from(["example.com", "a.b-c.d", "xn--bcher-kva.example", "[::1]", "[2606:4700::1]"]),
    st.lists(st.integers(0, 300).map(str), min_size=1, max_size=5).map(".".join),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9.-]{0,20}", fullmatch=True),
)
PATHS = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="#?"), max_size=30
)


@bounded
@given(
    st.sampled_from(["http", "https", "HTTP"]),
    HOSTS,
    st.one_of(st.none(), st.integers(0, 70000)),
    PATHS,
)
def test_no_accepted_base_url_makes_the_sender_fail(
    scheme: str, host: str, port: int | None, path: str
) -> None:
    url = f"{scheme}://{host}{'' if port is None else f':{port}'}/{path}"
    try:
        base = validate_base_url(url, allow_private=True, resolve=False)
    except ValueError as exc:
        assert "\n" not in str(exc)
        return
    httpx.URL(base + "/create")  # must not raise
    httpx.URL(base + "/sync_failed")


# -- c. git URLs --------------------------------------------------------------------------


def fake_resolver(*answers: str) -> urls.Resolver:
    def resolve(host: str, port: int) -> list[str]:
        return list(answers)

    return resolve


def vet(url: str, **options: Any) -> urls.VettedGitUrl:
    defaults: dict[str, Any] = {
        "allow_private": False,
        "allow_file": False,
        "token": False,
        "allow_insecure": False,
        "resolve": fake_resolver("140.82.112.3"),
    }
    return vet_git_url(url, **{**defaults, **options})


@pytest.mark.parametrize(
    ("url", "normalised", "scheme", "port"),
    [
        ("https://github.com/acme/docs.git", "https://github.com/acme/docs", "https", 443),
        ("http://git.example.org:8080/a/b/", "http://git.example.org:8080/a/b", "http", 8080),
        ("ssh://git@github.com/acme/docs", "ssh://git@github.com/acme/docs", "ssh", 22),
        ("git@github.com:acme/docs.git", "ssh://git@github.com/acme/docs", "ssh", 22),
        ("git://git.kernel.org/pub/scm/git", "git://git.kernel.org/pub/scm/git", "git", 9418),
        ("git://example.org:9999/x", "git://example.org:9999/x", "git", 9999),
    ],
)
def test_public_git_urls_are_vetted(url: str, normalised: str, scheme: str, port: int) -> None:
    vetted = vet(url)
    assert (vetted.url, vetted.scheme, vetted.port) == (normalised, scheme, port)
    assert vetted.addresses == ("140.82.112.3",) and vetted.host


@pytest.mark.parametrize(
    ("url", "answers"),
    [
        ("https://internal.example/a/b", ["10.0.0.5"]),
        ("https://mixed.example/a/b", ["140.82.112.3", "127.0.0.1"]),
        ("https://metadata.example/a", ["169.254.169.254"]),
        ("ssh://git@six.example/a", ["2002:7f00:1::"]),
        ("git://nat64.example/a", ["64:ff9b::a00:1"]),
        ("https://127.0.0.1/a/b", []),
        ("https://[::ffff:10.0.0.1]/a/b", []),
        ("git://10.0.0.1/a", []),
        ("git@192.168.0.1:a/b", []),
    ],
)
def test_git_hosts_reaching_refused_addresses_are_refused(url: str, answers: list[str]) -> None:
    with pytest.raises(ValueError, match="TREECAST_ALLOW_PRIVATE_URLS=1") as info:
        vet(url, resolve=fake_resolver(*answers))
    assert "private or loopback address" in str(info.value) and "\n" not in str(info.value)
    assert vet(url, allow_private=True).url  # allowed when the operator says so


def test_localhost_git_urls_are_refused() -> None:
    with pytest.raises(ValueError, match=r"localhost.*TREECAST_ALLOW_PRIVATE_URLS=1"):
        vet("http://localhost:3000/a/b")


def test_file_urls_need_their_setting() -> None:
    with pytest.raises(ValueError, match="TREECAST_ALLOW_FILE_URLS=1"):
        vet("file:///srv/repos/a")
    vetted = vet("file:///srv/repos//a/", allow_file=True)
    assert (vetted.url, vetted.scheme, vetted.host, vetted.port) == (
        "file:///srv/repos/a",
        "file",
        "",
        None,
    )


@pytest.mark.parametrize("url", ["http://git.example.org/a/b", "git://git.example.org/a/b"])
def test_a_token_over_clear_text_needs_its_setting(url: str) -> None:
    with pytest.raises(ValueError, match="TREECAST_ALLOW_INSECURE_TRANSPORT=1"):
        vet(url, token=True)
    assert vet(url, token=True, allow_insecure=True).url == url
    assert vet(url, token=False).url == url
    assert vet("https://git.example.org/a/b", token=True).scheme == "https"


@pytest.mark.parametrize(
    "url",
    [
        "ssh://-oProxyCommand=touch@host/x",
        "-oProxyCommand@host:x",
        "ssh://%2DoProxyCommand=x@host/x",
        "git@-oProxyCommand=x:a/b",
        "ssh://-host/x",
        "ssh://git@-host/x",
    ],
)
def test_ssh_option_injection_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="'-'"):
        vet(url, allow_private=True)
    # normalise_git_url (what registration uses today) accepted the first two
    with pytest.raises(ValueError, match="'-'"):
        normalise_git_url(url)


def test_odd_ssh_user_names_are_refused() -> None:
    with pytest.raises(ValueError, match="ssh user name"):
        vet("ssh://us%65r=x@host/a", allow_private=True)


@pytest.mark.parametrize("url", ["https://0177.0.0.1/a", "git://0x7f.1/a", "ssh://git@127.1/a"])
def test_git_hosts_in_non_canonical_ipv4_form_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="canonical IPv4"):
        vet(url, allow_private=True)


def test_a_host_that_does_not_resolve_in_time_is_kept_unresolved() -> None:
    # Accepted like a webhook host that does not resolve yet; every fetch vets it again
    # and runs no git until it resolves (tests/hostile/test_hostile_urls_wiring.py).
    def slow(host: str, port: int) -> list[str]:
        raise ValueError(f"the host {host!r} did not resolve within 0.1 s")

    vetted = vet("https://slow.example/a", resolve=slow)
    assert vetted.addresses == () and "did not resolve within 0.1 s" in (vetted.unresolved or "")
    vetted = vet("https://empty.example/a", resolve=fake_resolver())
    assert vetted.addresses == () and "does not resolve" in (vetted.unresolved or "")


def test_unsupported_git_schemes_are_refused() -> None:
    for url in ["ext::sh -c touch% /tmp/x", "fd::3", "ftp://h/a", "data:,x"]:
        with pytest.raises(ValueError):
            vet(url, allow_private=True, allow_file=True)


NORMALISED = {
    "https://GitHub.com/Acme/Docs.git/": "https://github.com/Acme/Docs",
    "http://host:8080//a///b": "http://host:8080/a/b",
    "git@github.com:acme/docs.git": "ssh://git@github.com/acme/docs",
    "ssh://git@host:2222/a": "ssh://git@host:2222/a",
    "file:///srv//repo/": "file:///srv/repo",
    # was "https://2606:4700::1/a" (brackets dropped: not a URL git can use)
    "https://[2606:4700::1]/a": "https://[2606:4700::1]/a",
}


@pytest.mark.parametrize(("url", "expected"), NORMALISED.items())
def test_normalise_git_url_is_unchanged(url: str, expected: str) -> None:
    assert normalise_git_url(url) == expected
    with pytest.raises(ValueError, match="unsupported git URL scheme git:"):
        normalise_git_url("git://host/a")


@bounded
@given(st.text(min_size=1, max_size=20), st.sampled_from(["ssh://{}@host/a", "{}@host:a/b"]))
def test_an_accepted_ssh_user_never_looks_like_an_option(user: str, form: str) -> None:
    try:
        vetted = vet(form.format(user), allow_private=True)
    except ValueError as exc:
        assert "\n" not in str(exc)
        return
    accepted_user = urlsplit(vetted.url).username
    if accepted_user is not None:
        assert not accepted_user.startswith("-") and urls._SSH_USER.fullmatch(accepted_user)


# -- d. DNS under a deadline ------------------------------------------------------------


def test_resolution_gives_up_after_the_timeout() -> None:
    def hangs(*args: Any, **kwargs: Any) -> list[Any]:
        time.sleep(3)
        return []

    start = time.monotonic()
    with pytest.raises(ValueError, match=r"did not resolve within 0.2 s"):
        resolve_addresses("slow.example", 443, timeout=0.2, getaddrinfo=hangs)
    assert time.monotonic() - start < 1.0


def test_resolution_returns_every_address_once() -> None:
    def answers(host: str, port: int, **kwargs: Any) -> list[Any]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2606:2800::1", port, 0, 0)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
        ]

    assert resolve_addresses("x.example", 443, getaddrinfo=answers) == [
        "2606:2800::1",
        "93.184.216.34",
    ]


def test_resolution_failure_is_a_value_error() -> None:
    def fails(*args: Any, **kwargs: Any) -> list[Any]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(ValueError, match="does not resolve"):
        resolve_addresses("nope.example", 443, getaddrinfo=fails)


def test_hanging_lookups_are_bounded() -> None:
    release = threading.Event()

    def blocks(*args: Any, **kwargs: Any) -> list[Any]:
        release.wait(10)
        return []

    try:
        # (earlier tests may still hold a slot or two with their own hanging lookups)
        for _ in range(MAX_DNS_IN_FLIGHT + 1):
            try:
                resolve_addresses("hang.example", 443, timeout=0.01, getaddrinfo=blocks)
            except ValueError as exc:
                if "still hanging" in str(exc):
                    break
                assert "did not resolve within 0.01 s" in str(exc)
        else:
            pytest.fail(f"more than {MAX_DNS_IN_FLIGHT} lookups were left hanging")
        start = time.monotonic()
        with pytest.raises(ValueError, match="lookups are still hanging"):
            resolve_addresses("one-more.example", 443, timeout=5, getaddrinfo=blocks)
        assert time.monotonic() - start < 0.5
    finally:
        release.set()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the slots come back once libc returns
        try:
            resolve_addresses("x.example", 443, timeout=1, getaddrinfo=lambda *a, **k: [])
        except ValueError as exc:
            if "still hanging" not in str(exc):
                break
        time.sleep(0.05)
    else:
        pytest.fail("DNS slots were not released")


def test_validate_base_url_does_not_wait_for_a_hanging_resolver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def hangs(*args: Any, **kwargs: Any) -> list[Any]:
        time.sleep(3)
        return []

    monkeypatch.setattr(socket, "getaddrinfo", hangs)
    monkeypatch.setattr(urls, "DNS_TIMEOUT_SECONDS", 0.2)
    start = time.monotonic()
    # not resolvable now: accepted, as before (the transport checks at connect time)
    assert validate_base_url("https://hooks.example/x", allow_private=False) == (
        "https://hooks.example/x"
    )
    assert time.monotonic() - start < 1.0
