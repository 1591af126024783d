"""The guarded transport: SSRF refusals on the address actually dialled, no redirects."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpcore
import httpx
import pytest

from examples.receiver import Receiver
from models.delivery import DeliveryErrorType
from treecast.config import Settings
from treecast.webhooks.signing import signed_headers
from treecast.webhooks.transport import (
    DeadlineStream,
    GuardedBackend,
    WebhookClient,
    endpoint_url,
    make_client,
    parse_retry_after,
    post_webhook,
    while_waiting,
)

EMPTY_SHA = hashlib.sha256(b"").hexdigest()


def _post(client: WebhookClient, url: str, secret: str, event: str = "create") -> object:
    body = json.dumps({"file": {"path": "a.txt", "sha": EMPTY_SHA, "size": 0, "content": ""}})
    headers = signed_headers([secret], f"msg_{uuid.uuid4().hex}", event, body.encode())
    return post_webhook(
        client,
        url,
        body.encode(),
        headers,
        timeout=client.timeout,
        what=f"{event} a.txt",
    )


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "localhost", "10.0.0.8", "169.254.169.254"])
def test_private_targets_are_refused(settings: Settings, host: str) -> None:
    strict = settings.model_copy(update={"allow_private_urls": False})
    with make_client(strict, timeout=2.0) as client:
        outcome = post_webhook(
            client, f"http://{host}:9/create", b"{}", {}, timeout=2.0, what="create a.txt"
        )
    assert not outcome.ok
    assert outcome.error_type == DeliveryErrorType.BLOCKED_ADDRESS
    assert "TREECAST_ALLOW_PRIVATE_URLS" in (outcome.error or "")


def test_rebinding_name_is_checked_at_connect_time(
    settings: Settings, receiver: Receiver, receiver_secret: str
) -> None:
    # A public-looking name whose DNS answer is loopback at connect time.
    strict = settings.model_copy(update={"allow_private_urls": False})
    calls: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"]

    url = f"http://hooks.example.com:{receiver.port}/create"
    with make_client(strict, timeout=2.0, resolver=rebinding) as client:
        outcome = _post(client, url, receiver_secret)
    assert calls == ["hooks.example.com"]
    assert outcome.error_type == DeliveryErrorType.BLOCKED_ADDRESS  # type: ignore[attr-defined]
    assert receiver.requests == []


def test_mixed_public_and_private_answers_are_refused() -> None:
    backend = GuardedBackend(
        allow_private=False, resolver=lambda h, p: ["93.184.216.34", "10.1.2.3"]
    )
    with pytest.raises(httpcore.ConnectError, match=r"10\.1\.2\.3"):
        backend.connect_tcp("mixed.example.com", 443)


class _RecordingBackend(httpcore.NetworkBackend):
    """Stands in for the internet, which tests cannot reach: records what would be dialled."""

    def __init__(self) -> None:
        self.dialled: list[tuple[str, int]] = []

    def connect_tcp(self, host: str, port: int, *_: Any, **__: Any) -> httpcore.NetworkStream:
        self.dialled.append((host, port))
        raise httpcore.ConnectError("offline")


def test_public_name_is_dialled_by_its_vetted_address() -> None:
    inner = _RecordingBackend()
    backend = GuardedBackend(
        allow_private=False, resolver=lambda h, p: ["93.184.216.34"], inner=inner
    )
    with pytest.raises(httpcore.ConnectError):
        backend.connect_tcp("hooks.example.com", 443)
    assert inner.dialled == [("93.184.216.34", 443)]


def test_allowed_private_target_is_reached_with_keep_alive(
    settings: Settings, receiver: Receiver, receiver_secret: str
) -> None:
    with make_client(settings, timeout=2.0) as client:
        for _ in range(3):
            outcome = _post(client, receiver.url + "/create", receiver_secret)
            assert outcome.ok, outcome  # type: ignore[attr-defined]
        pool = client._pool
        assert len(pool.connections) == 1  # one connection reused


def test_redirects_are_not_followed(
    settings: Settings, receiver: Receiver, receiver_secret: str
) -> None:
    receiver.fail_next(302, headers={"location": "http://169.254.169.254/latest"})
    with make_client(settings, timeout=2.0) as client:
        outcome = _post(client, receiver.url + "/create", receiver_secret)
    assert not outcome.ok and outcome.status == 302  # type: ignore[attr-defined]
    assert "redirects are not followed" in outcome.error  # type: ignore[attr-defined]
    assert len(receiver.requests) == 1


def test_failures_are_classified(
    settings: Settings, receiver: Receiver, receiver_secret: str
) -> None:
    url = receiver.url + "/create"
    with make_client(settings, timeout=0.5) as client:
        receiver.fail_next(503, headers={"retry-after": "7"}, body=b"busy " * 1000)
        busy = _post(client, url, receiver_secret)
        assert busy.status == 503 and busy.retry_after == 7.0  # type: ignore[attr-defined]
        assert busy.excerpt is not None and len(busy.excerpt) == 2048  # type: ignore[attr-defined]
        receiver.fail_next(410)
        assert _post(client, url, receiver_secret).error_type == DeliveryErrorType.GONE  # type: ignore[attr-defined]
        receiver.drop_next()
        dropped = _post(client, url, receiver_secret)
        assert dropped.error_type == DeliveryErrorType.TRANSPORT  # type: ignore[attr-defined]
        receiver.delay_next(1.5)
        slow = _post(client, url, receiver_secret)
        assert slow.error_type == DeliveryErrorType.TRANSPORT  # type: ignore[attr-defined]
        assert "did not answer within" in slow.error  # type: ignore[attr-defined]
        assert _post(client, url, receiver_secret).ok  # type: ignore[attr-defined]


def test_endpoint_url_and_retry_after() -> None:
    assert endpoint_url("https://a.example/hooks/", "create") == "https://a.example/hooks/create"
    assert endpoint_url("https://a.example", "delete") == "https://a.example/delete"
    now = datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:30 GMT", now) == 30.0
    assert parse_retry_after("999999") == 3600.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_a_slow_resolver_counts_against_the_request_deadline(settings: Settings) -> None:
    # A name server that takes 3 s must not make a 1 s request take 3 s (it did: the
    # lookup ran outside the deadline, and the error then said "within 1 s").
    def slow(host: str, port: int) -> list[str]:
        time.sleep(3)
        return ["127.0.0.1"]

    started = time.monotonic()
    with make_client(settings, timeout=1.0, resolver=slow) as client:
        outcome = post_webhook(
            client, "http://slow.test:9/create", b"{}", {}, timeout=1.0, what="x"
        )
    assert time.monotonic() - started < 2.0
    assert not outcome.ok and outcome.error_type == "WebhookTransportError"


def _capture_requests(send: Callable[[str], None]) -> list[bytes]:
    """The raw bytes of each request `send(url)` makes to a loopback listener that
    answers every request 200 on one keep-alive connection."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    seen: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    piece = conn.recv(65536)
                    if not piece:
                        return
                    buffer += piece
                head, _, rest = buffer.partition(b"\r\n\r\n")
                length = int(re.search(rb"(?im)^content-length: *(\d+)", head)[1])  # type: ignore[index]
                while len(rest) < length:
                    rest += conn.recv(65536)
                seen.append(head.replace(str(port).encode(), b"PORT") + b"\r\n\r\n" + rest[:length])
                buffer = rest[length:]
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        send(f"http://127.0.0.1:{port}/create")
    finally:
        listener.close()
        thread.join(timeout=5)
    return seen


def test_requests_are_on_the_wire_what_an_httpx_client_sends(settings: Settings) -> None:
    # The webhook client skips httpx.Client's per-request work; what the app receives
    # must not change: same request line, headers in the same order, same body.
    body = b'{"file":{"path":"a.txt"}}'
    headers = signed_headers(["whsec_" + "A" * 32], "msg_1", "create", body, timestamp=1)

    def ours(url: str) -> None:
        with make_client(settings, timeout=2.0) as client:
            for _ in range(2):
                assert post_webhook(client, url, body, headers, timeout=2.0, what="x").ok

    def reference(url: str) -> None:
        with httpx.Client(timeout=2.0, follow_redirects=False, trust_env=False) as client:
            for _ in range(2):
                client.post(url, content=body, headers=headers).raise_for_status()

    sent = _capture_requests(ours)
    assert len(sent) == 2 and sent[0] == sent[1]
    assert sent == _capture_requests(reference)
    assert sent[0].endswith(b"\r\n\r\n" + body)


class _FakeStream(httpcore.NetworkStream):
    """An inner stream that records what is sent and answers reads from a script."""

    def __init__(self, answer: bytes = b"HTTP/1.1 200 OK\r\n\r\n", fail_writes: bool = False):
        self.sent: list[bytes] = []
        self.answer = answer
        self.fail_writes = fail_writes

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        answer, self.answer = self.answer, b""
        return answer

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if self.fail_writes:
            raise httpcore.WriteError("broken pipe")
        self.sent.append(bytes(buffer))

    def close(self) -> None:
        pass


def test_a_small_request_leaves_in_one_send() -> None:
    # h11 hands over a request's head and body separately; two sends would wake the
    # receiver twice per request.
    inner = _FakeStream()
    stream = DeadlineStream(inner)
    stream.write(b"POST /create HTTP/1.1\r\n\r\n")
    stream.write(b"{}")
    stream.write(b"")
    assert inner.sent == []
    assert stream.read(65536) == b"HTTP/1.1 200 OK\r\n\r\n"
    assert inner.sent == [b"POST /create HTTP/1.1\r\n\r\n{}"]


def test_a_large_body_leaves_in_bounded_pieces() -> None:
    inner = _FakeStream()
    stream = DeadlineStream(inner)
    head, body = b"H" * 300, bytes(range(256)) * 1000  # 256,000 bytes
    stream.write(head)
    stream.write(body)
    assert b"".join(inner.sent) == head + body
    assert max(len(piece) for piece in inner.sent) <= 64 * 1024
    assert len(inner.sent) == 4  # head + the start of the body, then three more pieces
    stream.read(65536)
    assert b"".join(inner.sent) == head + body  # nothing was held back


def test_a_failed_held_write_still_reads_the_answer() -> None:
    # httpcore reads the answer after a failed write (an app may answer and close early);
    # a write held until the read behaves the same.
    inner = _FakeStream(answer=b"HTTP/1.1 413 Too Large\r\n\r\n", fail_writes=True)
    stream = DeadlineStream(inner)
    stream.write(b"POST /create HTTP/1.1\r\n\r\n{}")
    assert stream.read(65536).startswith(b"HTTP/1.1 413")


def test_time_spent_building_the_next_request_is_not_the_apps(
    settings: Settings, receiver: Receiver, receiver_secret: str
) -> None:
    # The delivery builds the next request while an answer is awaited (`while_waiting`);
    # a slow build must not make the app's answer count as late.
    def slow_build() -> None:
        time.sleep(0.6)

    body = json.dumps({"file": {"path": "a.txt", "sha": EMPTY_SHA, "size": 0, "content": ""}})
    headers = signed_headers([receiver_secret], "msg_build", "create", body.encode())
    with make_client(settings, timeout=0.5) as client, while_waiting(slow_build):
        outcome = post_webhook(
            client, receiver.url + "/create", body.encode(), headers, timeout=0.5, what="x"
        )
    assert outcome.ok, outcome
