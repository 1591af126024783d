"""Git LFS objects for the files a watch with `lfs` receives: fetched once per worker,
verified, kept by oid.

The remote's LFS Batch API (`{endpoint}/objects/batch`, the `basic` transfer) is asked
for download actions, and each object is streamed to a file beside the others
(`<data dir>/lfs/ab/cd/<oid>`), hashed as it comes and checked against its pointer's
SHA-256 and size before it is kept: a delivery never sees a wrong byte, and memory
stays at one read buffer whatever the size. N apps cost one download (a lock per oid).

Every URL here is hostile (the repository's `.lfsconfig`, the server's `href`s): only
http(s), connected through the webhook transport's guarded backend (no private or
loopback address unless `TREECAST_ALLOW_PRIVATE_URLS`, vetted at connect time, so
redirects cannot reach them either); the repository's credentials are sent only to its
own host, and to a server's `href` only the headers that server chose.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx

from treecast.config import Settings
from treecast.gitcache.command import Credentials
from treecast.gitcache.lfs import Pointer
from treecast.gitcache.repository import RemoteAccess
from treecast.redact import redact
from treecast.webhooks.transport import GuardedBackend, request_deadline, shared_ssl_context

MEDIA_TYPE = "application/vnd.git-lfs+json"
MAX_BATCH_ANSWER_BYTES = 4 << 20  # a Batch API answer larger than this is refused
BATCH_SIZE = 100  # objects per Batch API request
MAX_REDIRECTS = 3
_PIECE = 1 << 20


class LfsRefused(Exception):
    """An object that cannot be delivered; the message is the watch's status line."""


def store_dir(settings: Settings) -> Path:
    """Where this worker keeps LFS objects."""
    return settings.data_dir / "lfs"


def object_path(settings: Settings, oid: str) -> Path:
    """The file an object is kept in once verified."""
    return store_dir(settings) / oid[:2] / oid[2:4] / oid


@contextlib.contextmanager
def _oid_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _same_host(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.scheme, pa.hostname, pa.port) == (pb.scheme, pb.hostname, pb.port)


def check_url(url: str, what: str) -> str:
    """`url` when it is an http(s) URL without credentials; LfsRefused otherwise."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, UnicodeError):
        raise LfsRefused(f"{what} {url[:100]!r} is not a usable URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise LfsRefused(f"{what} {url[:100]!r} is not an http(s) URL; refused")
    if parsed.userinfo:
        raise LfsRefused(f"{what} carries credentials in its URL; refused")
    return url


@dataclass(repr=False)
class LfsFetcher:
    """Fetches the objects of one repository's pointers (one per delivery run)."""

    settings: Settings
    access: RemoteAccess
    endpoint: str  # the LFS server's base URL ({url}.git/info/lfs or .lfsconfig's)
    # The guarded network backend (tests hand one whose inner backend stays on loopback).
    backend: httpcore.NetworkBackend | None = None
    # Headers the remote asked for (an ssh remote's `git-lfs-authenticate` answer).
    headers: dict[str, str] | None = None

    def __repr__(self) -> str:
        return f"LfsFetcher({self.endpoint!r})"

    def __post_init__(self) -> None:
        self._pool: httpcore.ConnectionPool | None = None
        self.secrets = [*self.access.secrets(), *(self.headers or {}).values()]

    def close(self) -> None:
        """Close the connections."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _client(self) -> httpcore.ConnectionPool:
        if self._pool is None:
            self._pool = httpcore.ConnectionPool(
                ssl_context=shared_ssl_context(),
                max_connections=2,
                network_backend=self.backend
                or GuardedBackend(allow_private=self.settings.allow_private_urls),
            )
        return self._pool

    def _auth(self, url: str) -> dict[str, str]:
        """The repository's token, for its own host only (and never over plain http
        unless insecure transport is allowed)."""
        credentials = self.access.credentials
        if not isinstance(credentials, Credentials) or not _same_host(url, self.access.url):
            return {}
        if url.startswith("http://") and not self.settings.allow_insecure_transport:
            return {}
        pair = f"{credentials.username}:{credentials.token}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode()}

    def _send(
        self, method: str, url: str, headers: dict[str, str], body: bytes = b""
    ) -> httpcore.Response:
        target = httpx.URL(url)
        request = httpcore.Request(
            method.encode(),
            httpcore.URL(
                scheme=target.raw_scheme,
                host=target.raw_host,
                port=target.port,
                target=target.raw_path,
            ),
            headers=[
                (b"Host", target.netloc),
                *[(k.encode(), v.encode()) for k, v in headers.items()],
                *([(b"Content-Length", str(len(body)).encode())] if body else []),
            ],
            content=body,
            extensions={
                "timeout": dict.fromkeys(
                    ("connect", "read", "write", "pool"), self.settings.git_timeout_seconds
                )
            },
        )
        return self._client().handle_request(request)

    def _fail(self, what: str, error: BaseException | str) -> LfsRefused:
        return LfsRefused(redact(f"{what}: {error}", self.secrets)[:500])

    # -- the Batch API

    def download_actions(self, pointers: list[Pointer]) -> dict[str, tuple[str, dict[str, str]]]:
        """oid → (href, headers) of each object the server will hand out; the objects it
        refuses are left out, their reasons in `refused`."""
        self.refused: dict[str, str] = {}
        actions: dict[str, tuple[str, dict[str, str]]] = {}
        url = check_url(self.endpoint.rstrip("/") + "/objects/batch", "the LFS server")
        for start in range(0, len(pointers), BATCH_SIZE):
            batch = pointers[start : start + BATCH_SIZE]
            body = json.dumps(
                {
                    "operation": "download",
                    "transfers": ["basic"],
                    "objects": [{"oid": p.oid, "size": p.size} for p in batch],
                    "hash_algo": "sha256",
                }
            ).encode()
            headers = {
                "Accept": MEDIA_TYPE,
                "Content-Type": MEDIA_TYPE,
                **self._auth(url),
                **(self.headers or {}),
            }
            try:
                with request_deadline(self.settings.git_timeout_seconds):
                    response = self._send("POST", url, headers, body)
                    try:
                        answer = _read_limited(response, MAX_BATCH_ANSWER_BYTES)
                    finally:
                        response.close()
            except (httpcore.NetworkError, httpcore.TimeoutException, OSError) as error:
                raise self._fail("the LFS server could not be reached", error) from None
            if response.status != 200:
                raise self._fail(
                    "the LFS server refused the batch request", f"HTTP {response.status}"
                )
            try:
                objects = json.loads(answer).get("objects") or []
            except (ValueError, AttributeError):
                raise self._fail("the LFS server's answer", "not JSON") from None
            for item in objects if isinstance(objects, list) else []:
                self._action(item, actions)
        return actions

    def _action(self, item: object, actions: dict[str, tuple[str, dict[str, str]]]) -> None:
        if not isinstance(item, dict) or not isinstance(item.get("oid"), str):
            return
        oid = item["oid"]
        error = item.get("error")
        if isinstance(error, dict):
            self.refused[oid] = (
                f"the LFS server has no such object ({error.get('code')}: "
                f"{str(error.get('message'))[:200]})"
            )
            return
        download = (item.get("actions") or {}).get("download")
        if not isinstance(download, dict) or not isinstance(download.get("href"), str):
            self.refused[oid] = "the LFS server gave no download for it"
            return
        header = download.get("header") or {}
        clean = {
            str(k): str(v)
            for k, v in (header.items() if isinstance(header, dict) else [])
            if "\n" not in str(k) + str(v) and "\r" not in str(k) + str(v)
        }
        actions[oid] = (download["href"], clean)

    # -- objects

    def fetch(self, pointer: Pointer, href: str, headers: dict[str, str]) -> Path:
        """Download one object to the store, verified (LfsRefused otherwise)."""
        final = object_path(self.settings, pointer.oid)
        with _oid_lock(final):
            if final.exists():
                return final
            tmp = Path(tempfile.mkstemp(prefix=".tmp-", dir=final.parent)[1])
            try:
                self._download(pointer, href, headers, tmp)
                os.replace(tmp, final)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
        return final

    def _download(self, pointer: Pointer, href: str, headers: dict[str, str], into: Path) -> None:
        # A total deadline that grows with the size (at least 1 MiB/s), not a stalled socket.
        deadline = self.settings.git_timeout_seconds + pointer.size / (1 << 20)
        url = check_url(href, "the LFS download")
        sent = dict(headers)
        try:
            with request_deadline(deadline):
                for _ in range(MAX_REDIRECTS + 1):
                    response = self._send("GET", url, sent)
                    try:
                        if response.status in (301, 302, 303, 307, 308):
                            location = _header(response, b"location")
                            if not location:
                                raise self._fail("the LFS download", "a redirect to nowhere")
                            target = check_url(urljoin(url, location), "the LFS redirect")
                            if not _same_host(target, url):
                                sent = {}  # the server's headers were meant for its host
                            url = target
                            continue
                        if response.status != 200:
                            raise self._fail("the LFS download failed", f"HTTP {response.status}")
                        _save_verified(response, pointer, into)
                        return
                    finally:
                        response.close()
        except (httpcore.NetworkError, httpcore.TimeoutException, OSError) as error:
            raise self._fail("the LFS download failed", error) from None
        raise self._fail("the LFS download", f"more than {MAX_REDIRECTS} redirects")


def _header(response: httpcore.Response, name: bytes) -> str | None:
    for key, value in response.headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _read_limited(response: httpcore.Response, limit: int) -> bytes:
    body = bytearray()
    for piece in response.iter_stream():
        body += piece
        if len(body) > limit:
            raise OSError(f"the answer is larger than {limit} bytes")
    return bytes(body)


def _save_verified(response: httpcore.Response, pointer: Pointer, into: Path) -> None:
    """Stream the body to `into`, refusing more bytes than the pointer's size and any
    content whose SHA-256 is not its oid."""
    digest = hashlib.sha256()
    size = 0
    with into.open("wb") as out:
        for piece in response.iter_stream():
            size += len(piece)
            if size > pointer.size:
                raise LfsRefused(
                    f"the LFS object is larger than its pointer's {pointer.size} bytes; "
                    "not delivered"
                )
            digest.update(piece)
            out.write(piece)
    if size != pointer.size or digest.hexdigest() != pointer.oid:
        raise LfsRefused(
            f"the LFS object does not match its pointer (got {size} bytes, sha256 "
            f"{digest.hexdigest()[:12]}…); not delivered"
        )
