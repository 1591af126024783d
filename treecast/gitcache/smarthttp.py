"""`ls-refs` over git's smart HTTP protocol (version 2), without starting git.

A remote check asks one question of each repository every poll interval. Starting
`git ls-remote` for it costs ~4.5 ms of CPU (git and its upload-pack): at 10,000
repositories a minute, most of a core. Over http(s) the same question is one small
POST on a kept-alive connection, `command=ls-refs` with the ref prefixes wanted,
answered with pkt-lines naming each ref's object (and its peeled commit). A general
HTTP client spends ~1.5 ms of Python per request on it; `RefClient` writes the
request and reads the answer itself on asyncio streams, for a fraction of that.

Guarded as the webhook transport is, by the same network policy
(`treecast.netpolicy.addresses_to_dial`): the host is resolved by us under a deadline,
every address is vetted (unless TREECAST_ALLOW_PRIVATE_URLS) before we connect to it,
TLS is verified with the shared context, no proxy from the environment, no
redirect followed. Answers are bounded (`MAX_RESPONSE`). A server that does not
speak version 2 (or answers anything unexpected) gives `None`: ask git instead.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from models.git import GitErrorType
from treecast.gitcache.command import Credentials
from treecast.gitcache.errors import GitError
from treecast.netpolicy import Blocked, Resolver, Unresolved, addresses_to_dial, ip_literal

MAX_RESPONSE = 1 << 20  # a listing of a few refs; anything bigger is refused
MAX_HEAD = 32 << 10  # status line and headers
AGENT = "git/treecast"


def pkt_line(text: str) -> bytes:
    """One pkt-line: four hex digits of length (itself included), then the data."""
    data = text.encode()
    return f"{len(data) + 4:04x}".encode() + data


def ls_refs_request(prefixes: list[str]) -> bytes:
    """The body of a version-2 `ls-refs` command for refs starting with `prefixes`."""
    body = [pkt_line("command=ls-refs\n"), pkt_line(f"agent={AGENT}\n"), b"0001"]
    body += [pkt_line("peel\n"), pkt_line("symrefs\n")]
    body += [pkt_line(f"ref-prefix {prefix}\n") for prefix in prefixes]
    return b"".join(body) + b"0000"


def parse_ls_refs(data: bytes, *, symrefs: bool = False) -> list[tuple[str, str]]:
    """(object id, name) rows of an `ls-refs` answer; a peeled tag adds (commit, name^{});
    `symrefs`: a symbolic ref adds ("ref: " and its target, name).

    Raises ValueError on anything that is not a well-formed answer."""
    rows: list[tuple[str, str]] = []
    at = 0
    while True:
        if at + 4 > len(data):
            raise ValueError("the answer ends before its flush packet")
        length = int(data[at : at + 4], 16)
        if length == 0:
            return rows
        if length < 5 or at + length > len(data):
            raise ValueError("a malformed pkt-line")
        line = data[at + 4 : at + length].decode("ascii", errors="strict").rstrip("\n")
        at += length
        oid, _, rest = line.partition(" ")
        name, *attributes = rest.split(" ")
        if not name:
            raise ValueError("a ref line without a name")
        rows.append((oid, name))
        for attribute in attributes:
            if attribute.startswith("peeled:"):
                rows.append((attribute[len("peeled:") :], name + "^{}"))
            elif symrefs and attribute.startswith("symref-target:"):
                # As `git ls-remote --symref` shows it: ("ref: refs/heads/main", "HEAD").
                rows.append(("ref: " + attribute[len("symref-target:") :], name))


class _Unusable(Exception):
    """The answer is not one we read: the caller asks git instead."""


class _Stale(Exception):
    """A kept-alive connection the server had closed: try once on a new one."""


@dataclass
class _Answer:
    status: int
    content_type: str
    body: bytes
    reusable: bool


async def _read_answer(reader: asyncio.StreamReader) -> _Answer:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise _Stale from None
        raise _Unusable("the connection closed mid-answer") from None
    except asyncio.LimitOverrunError:
        raise _Unusable("the answer's headers are too long") from None
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    try:
        status = int(rest[:3])
    except ValueError:
        raise _Unusable("not an HTTP answer") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    reusable = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    body = bytearray()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip() or b"x", 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers
                break
            if len(body) + size > MAX_RESPONSE:
                raise _Unusable("the answer is too big")
            body += (await reader.readexactly(size + 2))[:-2]
    elif "content-length" in headers:
        length = int(headers["content-length"])
        if not 0 <= length <= MAX_RESPONSE:
            raise _Unusable("the answer is too big")
        body += await reader.readexactly(length)
    else:
        reusable = False
        body += await reader.read(MAX_RESPONSE + 1)
        if len(body) > MAX_RESPONSE:
            raise _Unusable("the answer is too big")
    return _Answer(status, headers.get("content-type", ""), bytes(body), reusable)


@dataclass
class RefClient:
    """Kept-alive smart-HTTP connections for a sweep's `ls-refs` requests (one event loop)."""

    allow_private: bool
    ssl_context: ssl.SSLContext
    resolver: Resolver | None = None  # None: the system's
    # Kept-alive connections per host: as many as requests in flight, or every wave of
    # checks beyond it opens (and closes) connections again.
    idle_per_host: int = 32
    _idle: dict[tuple[str, str, int], list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = (
        field(default_factory=dict)
    )

    async def _connect(
        self, scheme: str, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        vet = functools.partial(
            addresses_to_dial, host, port, allow_private=self.allow_private, resolver=self.resolver
        )
        try:
            if ip_literal(host) is not None:
                addresses = vet()  # nothing to look up: no thread
            else:
                addresses = await asyncio.get_running_loop().run_in_executor(None, vet)
        except Unresolved as unresolved:
            raise GitError(GitErrorType.NETWORK, str(unresolved)) from None
        except Blocked as blocked:
            raise GitError(GitErrorType.URL_REFUSED, str(blocked)) from None
        tls = self.ssl_context if scheme == "https" else None
        failure: OSError | None = None
        for address in addresses:
            try:
                return await asyncio.open_connection(
                    address,
                    port,
                    ssl=tls,
                    server_hostname=host.strip("[]") if tls else None,
                    limit=MAX_HEAD,
                )
            except OSError as exc:
                failure = exc
        raise GitError(GitErrorType.NETWORK, f"could not connect to {host}: {failure}")

    async def ls_refs(
        self,
        url: str,
        credentials: Credentials | None,
        patterns: list[str],
        timeout: float,
        *,
        symrefs: bool = False,
    ) -> list[tuple[str, str]] | None:
        """The refs among `patterns` (exact names; `name^{}` for a peeled tag) on the remote
        at `url`, or None when it does not answer as protocol version 2 does (ask git).
        `symrefs`: with the target of each symbolic ref among them (`parse_ls_refs`).

        Raises a classified `GitError` as git's own errors are."""
        parts = urlsplit(url)
        scheme, host = parts.scheme.lower(), parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        netloc = parts.netloc.rpartition("@")[2]
        path = (parts.path.rstrip("/") or "") + "/git-upload-pack"
        body = ls_refs_request(sorted({p.removesuffix("^{}") for p in patterns}))
        auth = f"{credentials.header()}\r\n" if credentials is not None else ""
        request = (
            f"POST {path} HTTP/1.1\r\nHost: {netloc}\r\nUser-Agent: {AGENT}\r\n"
            "Content-Type: application/x-git-upload-pack-request\r\n"
            "Accept: application/x-git-upload-pack-result\r\nGit-Protocol: version=2\r\n"
            f"{auth}Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        key = (scheme, host, port)
        try:
            async with asyncio.timeout(timeout):
                answer = await self._exchange(key, request)
        except TimeoutError:
            raise GitError(
                GitErrorType.TIMEOUT, f"the remote did not answer in {timeout:g} s"
            ) from None
        except _Unusable:
            return None
        if answer.status in (401, 403):
            raise GitError(
                GitErrorType.AUTHENTICATION_FAILED, f"the remote answered {answer.status}"
            )
        if answer.status == 404:
            raise GitError(GitErrorType.REPOSITORY_NOT_FOUND, "the remote answered 404")
        if answer.status != 200 or "x-git-upload-pack-result" not in answer.content_type:
            return None  # a redirect, an old or dumb server: git knows what to do
        try:
            rows = parse_ls_refs(answer.body, symrefs=symrefs)
        except ValueError:
            return None  # e.g. a version-0 advertisement: the server ignored Git-Protocol
        wanted = set(patterns)
        return [(oid, name) for oid, name in rows if name in wanted]

    async def _exchange(self, key: tuple[str, str, int], request: bytes) -> _Answer:
        for fresh in (False, True):
            idle = self._idle.get(key)
            if idle and not fresh:
                reader, writer = idle.pop()
            else:
                reader, writer = await self._connect(*key)
            try:
                writer.write(request)
                await writer.drain()
                answer = await _read_answer(reader)
            except _Stale:
                writer.close()
                continue
            except (
                OSError,
                ValueError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
            ) as exc:
                writer.close()
                if isinstance(exc, OSError):
                    raise GitError(GitErrorType.NETWORK, f"the connection failed: {exc}") from None
                raise _Unusable(str(exc)) from None
            except BaseException:
                writer.close()  # cancelled or timed out mid-answer: never reused
                raise
            pool = self._idle.setdefault(key, [])
            # Only after a clean 200: a server that refused us may not have read our body.
            if answer.reusable and answer.status == 200 and len(pool) < self.idle_per_host:
                pool.append((reader, writer))
            else:
                writer.close()
            return answer
        raise GitError(GitErrorType.NETWORK, "the remote closed the connection twice")

    def close(self) -> None:
        """Close every kept-alive connection."""
        for pool in self._idle.values():
            for _, writer in pool:
                writer.close()
        self._idle.clear()
