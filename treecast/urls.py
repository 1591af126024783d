"""Validation and normalisation of git URLs and webhook base URLs.

Every function raises `ValueError` with a one-line reason a person can act on.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit, urlunsplit

MAX_URL_LENGTH = 2048

# user@host:path (scp-like ssh syntax)
_SCP_LIKE = re.compile(r"^(?P<user>[A-Za-z0-9._-]+)@(?P<host>[A-Za-z0-9.-]+):(?P<path>[^/].*)$")
_HOST = re.compile(
    r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


def is_blocked_address(address: str) -> bool:
    """True for private, loopback, link-local, multicast, reserved or unspecified IPs (v4 and v6)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return bool(
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


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


def normalise_git_url(url: str) -> str:
    """The canonical form of a git URL, so one repository is registered once.

    Accepts https://, http://, ssh://, scp-like `git@host:owner/name` and
    file://. Lower-cases scheme and host, drops a trailing `.git` and `/`, and
    refuses credentials in the URL (use `--token-env`).
    """
    _check_length(url)
    url = url.strip()
    scp = _SCP_LIKE.match(url)
    if scp:
        url = f"ssh://{scp['user']}@{scp['host']}/{scp['path']}"
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http", "ssh", "file"):
        raise ValueError(
            f"unsupported git URL scheme {parts.scheme + ':' if parts.scheme else '(none)'}; "
            "use https://, ssh://, git@host:path or file://"
        )
    if parts.query or parts.fragment:
        raise ValueError("a git URL must not have a query or fragment")
    path = parts.path
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError("a file:// URL must name a local path (file:///path/to/repo)")
        if not path.startswith("/") or path == "/":
            raise ValueError("a file:// URL needs an absolute path (file:///path/to/repo)")
        path = re.sub("/+", "/", path).rstrip("/")
        return f"file://{path}"
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
    netloc = host if port is None else f"{host}:{port}"
    if scheme == "ssh" and parts.username:
        netloc = f"{parts.username}@{netloc}"
    return urlunsplit((scheme, netloc, path, "", ""))


def owner_and_name(normalised_url: str) -> tuple[str, str]:
    """`owner` and `name` of a repository for webhook payloads (last two path segments)."""
    path = urlsplit(normalised_url).path.strip("/")
    segments = [s for s in path.split("/") if s]
    name = segments[-1] if segments else ""
    owner = segments[-2] if len(segments) > 1 else ""
    return owner, name


def resolve_addresses(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (raises ValueError when it does not resolve)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise ValueError(f"the host {host!r} does not resolve") from None
    return sorted({str(info[4][0]) for info in infos})


def validate_base_url(url: str, *, allow_private: bool, resolve: bool = True) -> str:
    """Check a webhook base URL and return it without a trailing slash.

    http(s) only, no credentials, no query or fragment; unless `allow_private`,
    the host must not be (or resolve to) a private or loopback address. The
    delivery transport re-checks the address it actually connects to.
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
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        raise ValueError("the base URL has an invalid port") from None
    if not allow_private:
        literal = host.strip("[]")
        try:
            addresses = [str(ipaddress.ip_address(literal))]
        except ValueError:
            if host == "localhost" or host.endswith(".localhost"):
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
                raise ValueError(
                    f"the base URL resolves to the private or loopback address {address} "
                    "(set TREECAST_ALLOW_PRIVATE_URLS=1 to allow it)"
                )
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"), "", ""))
