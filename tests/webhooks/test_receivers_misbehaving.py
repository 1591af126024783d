"""Receivers that misbehave on the wire: raw-socket servers on 127.0.0.1.

Each server speaks (or fails to speak) HTTP by hand, so the test controls every
byte and every pause: a response trickled a byte at a time (slowloris-style),
one that never stops (an enormous body or enormous headers), invalid HTTP, a
receiver that stops reading our request, and redirects towards another
listener that must never be contacted. Every case must end within the
per-request deadline (`timeout`, plus a small margin) with a recorded error.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlmodel import select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.delivery import DeliveryActivities
from models.delivery import DeliverInput, DeliveryErrorType
from models.tables import DeliveryAttempt, Watch
from tests.support.gitrepos import WorkRepo
from tests.support.receiver_fixture import register
from treecast.config import Settings
from treecast.crypto import generate_webhook_secret
from treecast.db import session_scope
from treecast.webhooks.transport import PostOutcome, make_client, post_webhook

Behaviour = Callable[[socket.socket, threading.Event], None]

TIMEOUT = 1.0  # the per-request deadline every test uses
MARGIN = 1.0  # scheduling slack on a loaded 2-core machine


@dataclass
class RawServer:
    """A listener on 127.0.0.1 that runs `behaviour(conn, stop)` on every accepted connection.

    Behaviours wait on `stop` rather than sleeping, so the server ends with the test.
    """

    behaviour: Behaviour
    port: int = 0
    connections: int = 0
    request_bytes: list[int] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def read_request_head(conn: socket.socket) -> bytes:
    """Read up to the end of the request headers (what a real server reads first)."""
    data = b""
    conn.settimeout(5)
    while b"\r\n\r\n" not in data:
        piece = conn.recv(4096)
        if not piece:
            break
        data += piece
    return data


def read_request(conn: socket.socket) -> bytes:
    """Read the whole request (headers and a Content-Length body)."""
    data = read_request_head(conn)
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        piece = conn.recv(65536)
        if not piece:
            break
        body += piece
    return head + b"\r\n\r\n" + body


@contextlib.contextmanager
def raw_server(behaviour: Behaviour) -> Iterator[RawServer]:
    """Serve `behaviour` on a free loopback port until the block ends."""
    server = RawServer(behaviour)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.05)
    server.port = int(listener.getsockname()[1])
    threads: list[threading.Thread] = []
    conns: list[socket.socket] = []

    def serve(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            behaviour(conn, server.stop)

    def accept() -> None:
        while not server.stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            server.connections += 1
            conns.append(conn)
            thread = threading.Thread(target=serve, args=(conn,), daemon=True)
            thread.start()
            threads.append(thread)

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield server
    finally:
        server.stop.set()
        acceptor.join()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.close()
        listener.close()
        for thread in threads:
            thread.join(timeout=5)


def trickle(data: bytes, every: float, *, read: bool = True) -> Behaviour:
    """Answer with `data`, one byte every `every` seconds (each read is within any timeout)."""

    def behave(conn: socket.socket, stop: threading.Event) -> None:
        if read:
            read_request(conn)
        for byte in data:
            conn.sendall(bytes([byte]))
            if stop.wait(every):
                return

    return behave


def post(settings: Settings, url: str, timeout: float = TIMEOUT) -> tuple[PostOutcome, float]:
    """One webhook POST through the guarded client; returns the outcome and wall seconds."""
    body = b'{"file": {"path": "a.txt"}}'
    started = time.monotonic()
    with make_client(settings, timeout=timeout) as client:
        outcome = post_webhook(
            client,
            url + "/create",
            body,
            {"content-type": "application/json"},
            timeout=timeout,
            what="create a.txt",
        )
    return outcome, time.monotonic() - started


# -- slow answers ----------------------------------------------------------------------


def test_a_status_line_trickled_byte_by_byte_is_cut_at_the_deadline(settings: Settings) -> None:
    answer = b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * 200 + b"\r\n\r\n"
    with raw_server(trickle(answer, 0.05)) as server:
        outcome, seconds = post(settings, server.url)  # the whole answer would take 11 s
    assert seconds < TIMEOUT + MARGIN
    assert not outcome.ok and outcome.status is None
    assert outcome.error_type == DeliveryErrorType.TRANSPORT
    assert outcome.error == f"create a.txt: the app did not answer within {TIMEOUT:g} s"


def test_a_body_trickled_after_the_status_keeps_the_status(settings: Settings) -> None:
    # The status is the answer; a body that never finishes is cut at the deadline.
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"

    def behave(conn: socket.socket, stop: threading.Event) -> None:
        read_request(conn)
        conn.sendall(head)
        trickle(b"ok" * 1000, 0.05, read=False)(conn, stop)

    with raw_server(behave) as server:
        outcome, seconds = post(settings, server.url)
    assert seconds < TIMEOUT + MARGIN
    assert outcome.ok and outcome.status == 200
    assert outcome.excerpt is not None and outcome.excerpt.startswith("okok")


def test_a_receiver_that_never_answers_is_cut_at_the_deadline(settings: Settings) -> None:
    def behave(conn: socket.socket, stop: threading.Event) -> None:
        read_request(conn)
        stop.wait(20)

    with raw_server(behave) as server:
        outcome, seconds = post(settings, server.url)
    assert seconds < TIMEOUT + MARGIN
    assert outcome.error_type == DeliveryErrorType.TRANSPORT and outcome.status is None


def test_a_receiver_that_stops_reading_our_request_is_cut_at_the_deadline(
    settings: Settings,
) -> None:
    # It reads the headers, then never reads the (large) body: our writes block.
    def behave(conn: socket.socket, stop: threading.Event) -> None:
        read_request_head(conn)
        stop.wait(20)

    body = b"x" * (64 << 20)  # far more than the loopback socket buffers hold
    with raw_server(behave) as server, make_client(settings, timeout=TIMEOUT) as client:
        started = time.monotonic()
        outcome = post_webhook(
            client, server.url + "/create", body, {}, timeout=TIMEOUT, what="create big.bin"
        )
        seconds = time.monotonic() - started
    assert seconds < TIMEOUT + MARGIN
    assert outcome.error_type == DeliveryErrorType.TRANSPORT and outcome.status is None


# -- enormous answers ------------------------------------------------------------------


def endless(head: bytes, piece: bytes) -> Behaviour:
    """Answer `head`, then send `piece` forever (until the client hangs up)."""

    def behave(conn: socket.socket, stop: threading.Event) -> None:
        read_request(conn)
        conn.sendall(head)
        while not stop.is_set():
            conn.sendall(piece)

    return behave


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 10000000000\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",  # body until EOF
    ],
    ids=["content-length-10GB", "chunked-forever", "until-eof"],
)
def test_an_enormous_body_is_read_only_for_its_excerpt(settings: Settings, head: bytes) -> None:
    chunked = b"chunked" in head
    piece = b"4000\r\n" + b"z" * 0x4000 + b"\r\n" if chunked else b"z" * 65536
    with raw_server(endless(head, piece)) as server:
        outcome, seconds = post(settings, server.url)
    assert seconds < TIMEOUT + MARGIN
    assert outcome.excerpt == "z" * 2048
    status = int(head.split()[1])
    assert outcome.status == status and outcome.ok == (status == 200)


def test_enormous_headers_are_a_protocol_error(settings: Settings) -> None:
    head = b"HTTP/1.1 200 OK\r\nX-Huge: "
    with raw_server(endless(head, b"h" * 65536)) as server:
        outcome, seconds = post(settings, server.url)
    assert seconds < TIMEOUT + MARGIN
    assert not outcome.ok and outcome.error_type == DeliveryErrorType.TRANSPORT
    assert outcome.error is not None and outcome.error.startswith("create a.txt: ")
    assert len(outcome.error) < 300


# -- invalid HTTP ----------------------------------------------------------------------


def answer(data: bytes, *, close: bool = True) -> Behaviour:
    def behave(conn: socket.socket, stop: threading.Event) -> None:
        read_request(conn)
        conn.sendall(data)
        if close:
            conn.shutdown(socket.SHUT_WR)
        stop.wait(20)

    return behave


@pytest.mark.parametrize(
    "data",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"HTTP/1.1 abc Nope\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header Line\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(32),  # a TLS hello
        b"",  # accepted, then closed without a byte
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",  # body cut short
    ],
    ids=["ssh-banner", "bad-status", "bad-length", "bad-header", "tls", "empty", "truncated"],
)
def test_invalid_http_is_a_transport_error(settings: Settings, data: bytes) -> None:
    with raw_server(answer(data)) as server:
        outcome, seconds = post(settings, server.url)
    assert seconds < TIMEOUT + MARGIN
    if data.endswith(b"short"):
        # The status arrived before the body broke off: that is the app's answer.
        assert outcome.ok and outcome.status == 200 and outcome.excerpt == "short"
        return
    assert not outcome.ok and outcome.status is None
    assert outcome.error_type == DeliveryErrorType.TRANSPORT
    assert outcome.error is not None and outcome.error.startswith("create a.txt: ")
    assert "\n" not in outcome.error and len(outcome.error) < 300


# -- redirects -------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_never_followed(settings: Settings, status: int) -> None:
    with raw_server(answer(b"")) as elsewhere:
        location = f"{elsewhere.url}/create"
        data = (
            f"HTTP/1.1 {status} Moved\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        with raw_server(answer(data, close=False)) as server:
            outcome, seconds = post(settings, server.url)
        assert elsewhere.connections == 0
    assert seconds < TIMEOUT + MARGIN
    assert outcome.status == status and outcome.error_type == DeliveryErrorType.HTTP_STATUS
    assert outcome.error == (
        f"create a.txt: the app answered HTTP {status} "
        "(redirects are not followed; fix the base URL)"
    )


# -- through the activity: a recorded error on the watch -------------------------------


def test_a_trickling_receiver_fails_a_delivery_in_bounded_time(
    settings: Settings, tmp_path: Path
) -> None:
    repo = WorkRepo(tmp_path / "repo")
    repo.write("a.txt", "a\n")
    commit = repo.commit()
    fast = settings.model_copy(update={"file_timeout_seconds": TIMEOUT})
    with raw_server(trickle(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 100, 0.05)) as server:
        app_id, repository_id = register(fast, server.url, [generate_webhook_secret()], repo.url)
        started = time.monotonic()
        with pytest.raises(ApplicationError) as failure:
            ActivityEnvironment().run(
                DeliveryActivities(fast).deliver_changes,
                DeliverInput(app_id, repository_id, commit),
            )
        seconds = time.monotonic() - started
    assert seconds < TIMEOUT + 3 * MARGIN  # includes the git fetch into the cache
    assert failure.value.type == DeliveryErrorType.TRANSPORT
    assert not failure.value.non_retryable
    with session_scope(fast.database_url) as session:
        watch = session.get(Watch, (app_id, repository_id))
        assert watch is not None
        assert watch.last_error == f"create a.txt: the app did not answer within {TIMEOUT:g} s"
        assert watch.last_error_type == DeliveryErrorType.TRANSPORT
        attempts = session.exec(select(DeliveryAttempt)).all()
        assert [(a.path, a.http_status) for a in attempts] == [("a.txt", None)]
        assert attempts[0].duration_ms < (TIMEOUT + MARGIN) * 1000
