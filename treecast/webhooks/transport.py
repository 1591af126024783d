"""The HTTP side of delivery: an SSRF-guarded keep-alive client and one signed POST.

`WebhookClient` posts through httpcore's connection pool (httpx parses the URLs).
The guard sits in the network backend, below the pool: it asks the network policy
(`treecast.netpolicy.addresses_to_dial`) for the vetted addresses of the host and
connects to the very address it vetted. A DNS answer that changes between the
check and the connect (DNS rebinding) therefore cannot reach an internal
address. TLS still uses the hostname for SNI and certificate checks, because
httpcore passes the origin's host to `start_tls`, not the address we dialled.

httpcore's timeouts bound each socket operation, not a request: a receiver that
trickles its answer a byte at a time would hold a request forever. The guarded
streams therefore also enforce a total deadline per request (see
`request_deadline`), which `post_webhook` sets to its `timeout`.
"""

from __future__ import annotations

import contextlib
import functools
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpcore
import httpx

from models.delivery import DeliveryErrorType
from treecast.config import Settings
from treecast.netpolicy import Blocked, Resolver, Unresolved, addresses_to_dial
from treecast.redact import redact
from treecast.webhooks.signing import redaction_terms

RESPONSE_EXCERPT_BYTES = 2048
# Read at most this much of a response: enough for the excerpt while keeping the
# connection reusable for ordinary small answers, without trusting a huge body.
_RESPONSE_READ_LIMIT = 64 * 1024
MAX_RETRY_AFTER_SECONDS = 3600.0


# Large request bodies are written in pieces of this size, so the deadline is checked
# between pieces even when the receiver reads our request slowly.
_WRITE_PIECE = 64 * 1024


class BlockedAddressError(httpcore.ConnectError):
    """The target resolves to an address webhooks may not reach."""


# The deadline of the request this thread is sending. The sync pool performs the whole
# request (connect, write, read) on the calling thread, so a thread-local reaches the
# network streams without threading it through httpcore.
_local = threading.local()


@contextlib.contextmanager
def request_deadline(seconds: float) -> Iterator[None]:
    """Within the block, every guarded socket operation of this thread ends `seconds` from now.

    Each read, write, connect and TLS handshake gets at most the time left, and
    one started after the deadline times out at once, so a request that is
    trickled (or never answered) gives up at the deadline as a whole.
    """
    previous = getattr(_local, "deadline", None)
    _local.deadline = time.monotonic() + seconds
    try:
        yield
    finally:
        _local.deadline = previous


@contextlib.contextmanager
def while_waiting(callback: Callable[[], None] | None) -> Iterator[None]:
    """Within the block, `callback` runs once, when this thread first waits for an answer
    (the first read of a guarded socket, i.e. once the request is written). The time it
    takes is added to the request's deadline: it is ours, not the app's."""
    previous = getattr(_local, "on_read", None)
    _local.on_read = callback
    try:
        yield
    finally:
        _local.on_read = previous


def _time_left(timeout: float | None, expired: type[Exception]) -> float | None:
    """`timeout` capped by this thread's request deadline; raises `expired` once it passed."""
    deadline: float | None = getattr(_local, "deadline", None)
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise expired("the request deadline passed")
    return left if timeout is None else min(timeout, left)


class DeadlineStream(httpcore.NetworkStream):
    """A network stream whose operations respect the thread's request deadline.

    Small writes are held and sent together before the first read: h11 hands over a
    request's head and its body separately, and two sends of one small request wake the
    receiver twice (and cost our kernel a second pass through loopback's TCP stack).
    """

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner
        self._held = b""  # written, not yet sent (at most `_WRITE_PIECE` bytes)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        """One read, given at most the time left before the deadline."""
        if self._held:
            held, self._held = self._held, b""
            # As httpcore does when a write fails: the app may have answered and closed
            # early; the read below gets that answer, or the broken connection.
            with contextlib.suppress(httpcore.WriteError):
                self._inner.write(held, _time_left(timeout, httpcore.WriteTimeout))
        waiting = getattr(_local, "on_read", None)
        if waiting is not None:
            _local.on_read = None
            started = time.monotonic()
            try:
                waiting()
            finally:
                if getattr(_local, "deadline", None) is not None:
                    _local.deadline += time.monotonic() - started
        return self._inner.read(max_bytes, _time_left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        """Hold small writes (see the class); send larger ones in pieces, so a receiver
        that reads slowly cannot outlast the deadline."""
        if len(self._held) + len(buffer) <= _WRITE_PIECE:
            self._held += buffer
            return
        first = _WRITE_PIECE - len(self._held)
        piece, self._held = self._held + buffer[:first], b""
        self._inner.write(piece, _time_left(timeout, httpcore.WriteTimeout))
        for at in range(first, len(buffer), _WRITE_PIECE):
            piece = buffer[at : at + _WRITE_PIECE]
            self._inner.write(piece, _time_left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        """Close the underlying stream (anything held is dropped with the connection)."""
        self._held = b""
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        """The TLS handshake, within the deadline; the TLS stream is guarded too."""
        left = _time_left(timeout, httpcore.ConnectTimeout)
        return DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, left))

    def get_extra_info(self, info: str) -> Any:
        """Delegate (the pool asks whether an idle connection was closed by the peer)."""
        return self._inner.get_extra_info(info)


class GuardedBackend(httpcore.NetworkBackend):
    """A sync network backend that only connects to public addresses it resolved itself."""

    def __init__(
        self,
        *,
        allow_private: bool,
        resolver: Resolver | None = None,
        inner: httpcore.NetworkBackend | None = None,
    ) -> None:
        self._allow_private = allow_private
        self._resolver = resolver  # None: the system's
        self._inner = inner if inner is not None else httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        """Resolve (within the request's deadline), refuse blocked addresses, then connect
        to a vetted address."""
        try:
            addresses = addresses_to_dial(
                host,
                port,
                allow_private=self._allow_private,
                timeout=_time_left(timeout, httpcore.ConnectTimeout),
                resolver=self._resolver,
            )
        except Blocked as blocked:
            raise BlockedAddressError(str(blocked)) from None
        except Unresolved as unresolved:
            failed = httpcore.ConnectTimeout if unresolved.timed_out else httpcore.ConnectError
            raise failed(str(unresolved)) from None
        last_error: Exception | None = None
        for address in addresses:
            try:
                stream = self._inner.connect_tcp(
                    address,
                    port,
                    timeout=_time_left(timeout, httpcore.ConnectTimeout),
                    local_address=local_address,
                    socket_options=socket_options,
                )
                return DeadlineStream(stream)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        assert last_error is not None
        raise last_error

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        """Unix sockets are never a webhook target."""
        raise BlockedAddressError("webhooks cannot be delivered to a unix socket")

    def sleep(self, seconds: float) -> None:
        """Delegate (used by httpcore's connect retries)."""
        self._inner.sleep(seconds)


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """One TLS context per process: loading the CA bundle took ~100 ms, once per client."""
    return httpx.create_ssl_context(trust_env=False)


# The headers httpx.Client adds to each request (its defaults, with the user agent
# replaced by ours), sent explicitly so the wire stays what it was with a Client:
# Host first, then these, the request's own, and Content-Length last.
_CLIENT_HEADERS = (
    (b"Accept", b"*/*"),
    (b"Accept-Encoding", b"gzip, deflate"),
    (b"Connection", b"keep-alive"),
)


class WebhookClient:
    """A guarded keep-alive connection pool for one activity run (a context manager).

    Requests go to httpcore's pool directly, not through an `httpx.Client`: its
    per-request work (merging default headers and cookies, the auth and redirect
    machinery, a cookie jar filled from every answer, the request and response models)
    cost ~0.3 ms of CPU a request, a quarter of a loopback round trip, and a webhook
    needs none of it. Redirects are never followed, no cookie is ever sent, no proxy is
    taken from the environment. URLs are still parsed and checked by `httpx.URL`.
    """

    def __init__(self, settings: Settings, *, timeout: float, resolver: Resolver | None) -> None:
        self.timeout = timeout  # seconds per request, unless a post says otherwise
        self._pool = httpcore.ConnectionPool(
            ssl_context=shared_ssl_context(),
            max_connections=4,
            max_keepalive_connections=4,
            network_backend=GuardedBackend(
                allow_private=settings.allow_private_urls, resolver=resolver
            ),
        )

    def __enter__(self) -> WebhookClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every connection of the pool."""
        self._pool.close()

    @contextlib.contextmanager
    def post(
        self, url: str | httpx.URL, body: bytes, headers: dict[str, str], timeout: float
    ) -> Iterator[httpcore.Response]:
        """POST `body`; the answer's body is streamed within the block.

        Raises `httpx.InvalidURL` for a URL that does not parse and httpcore's
        exceptions for everything else (see `post_webhook`)."""
        if not isinstance(url, httpx.URL):
            url = httpx.URL(url)
        request = httpcore.Request(
            b"POST",
            httpcore.URL(
                scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
            ),
            headers=[
                (b"Host", url.netloc),
                *_CLIENT_HEADERS,
                *[(name.encode("ascii"), value.encode("ascii")) for name, value in headers.items()],
                (b"Content-Length", str(len(body)).encode("ascii")),
            ],
            content=body,
            extensions={"timeout": dict.fromkeys(("connect", "read", "write", "pool"), timeout)},
        )
        response = self._pool.handle_request(request)
        try:
            yield response
        finally:
            response.close()


def make_client(
    settings: Settings, *, timeout: float, resolver: Resolver | None = None
) -> WebhookClient:
    """One keep-alive client for one activity run: guarded, no redirects, no proxies from env."""
    return WebhookClient(settings, timeout=timeout, resolver=resolver)


def endpoint_url(base_url: str, event: str) -> str:
    """`{base_url}/{event}` without a double slash when the base URL ends in `/`."""
    return base_url.rstrip("/") + "/" + event


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP-date), capped."""
    if not value:
        return None
    value = value.strip()
    seconds: float
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


# What can go wrong in the pool (httpx raised the same errors under the same names).
_TRANSPORT_ERRORS = (
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.TimeoutException,
    httpcore.ProxyError,
    httpcore.UnsupportedProtocol,
)


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    """A response header's value (several joined by ", ", as httpx did), or None."""
    values = [value.decode("latin-1") for key, value in headers if key.lower() == name]
    return ", ".join(values) if values else None


@dataclass
class PostOutcome:
    """What one POST to an app produced."""

    ok: bool  # a 2xx answer
    status: int | None  # HTTP status, None when no answer arrived
    duration_ms: float
    excerpt: str | None = None  # first 2 KiB of the response body, redacted
    error_type: str | None = None  # a DeliveryErrorType value when not ok
    error: str | None = None  # one redacted line when not ok
    retry_after: float | None = None  # seconds, from Retry-After on 429/503


def post_webhook(
    client: WebhookClient,
    url: str | httpx.URL,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout: float,
    what: str,
    secrets: Iterable[str] = (),
) -> PostOutcome:
    """POST one signed body; never raises for HTTP or network failures (see `PostOutcome`).

    `what` names the message in errors (e.g. `create docs/a.md`); the URL is left
    out of errors because a base URL may embed a token.
    """
    secret_list = redaction_terms(list(secrets))
    started = time.perf_counter()

    def elapsed() -> float:
        return (time.perf_counter() - started) * 1000.0

    def failed(error_type: str, error: str) -> PostOutcome:
        """No answer to count: the request did not reach the app or its status never came."""
        return PostOutcome(
            ok=False, status=None, duration_ms=elapsed(), error_type=error_type, error=error
        )

    received = bytearray()
    try:
        with request_deadline(timeout), client.post(url, body, headers, timeout) as answer:
            status = answer.status
            retry_header = _header(answer.headers, b"retry-after")
            try:
                for piece in answer.stream:  # type: ignore[union-attr]
                    received += piece
                    if len(received) >= _RESPONSE_READ_LIMIT:
                        break
            except _TRANSPORT_ERRORS:
                # The status is the app's answer; the body is only kept as an excerpt, so
                # one that trickles past the deadline or breaks off is cut where it stands.
                pass
    except httpcore.TimeoutException:
        return failed(
            DeliveryErrorType.TRANSPORT, f"{what}: the app did not answer within {timeout:g} s"
        )
    except (httpx.InvalidURL, httpcore.UnsupportedProtocol) as exc:
        # Registration refuses such URLs; one stored before it did must not crash the try.
        return failed(
            DeliveryErrorType.TRANSPORT,
            redact(f"{what}: the app's base URL cannot be used: {exc}", secret_list),
        )
    except BlockedAddressError as exc:
        return failed(DeliveryErrorType.BLOCKED_ADDRESS, redact(f"{what}: {exc}", secret_list))
    except _TRANSPORT_ERRORS as exc:
        reason = str(exc) or type(exc).__name__
        return failed(
            DeliveryErrorType.TRANSPORT,
            redact(f"{what}: {type(exc).__name__}: {reason}", secret_list),
        )
    excerpt = redact(
        bytes(received[:RESPONSE_EXCERPT_BYTES]).decode("utf-8", errors="replace"), secret_list
    )
    if 200 <= status < 300:
        return PostOutcome(ok=True, status=status, duration_ms=elapsed(), excerpt=excerpt)
    retry_after = parse_retry_after(retry_header) if status in (429, 503) else None
    if status == 410:
        error_type = DeliveryErrorType.GONE
        message = f"{what}: the app answered 410 Gone; its watch is disabled until watched again"
    else:
        error_type = DeliveryErrorType.HTTP_STATUS
        hint = " (redirects are not followed; fix the base URL)" if 300 <= status < 400 else ""
        message = f"{what}: the app answered HTTP {status}{hint}"
    return PostOutcome(
        ok=False,
        status=status,
        duration_ms=elapsed(),
        excerpt=excerpt,
        error_type=error_type,
        error=redact(message, secret_list),
        retry_after=retry_after,
    )
