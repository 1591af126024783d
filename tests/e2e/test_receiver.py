"""The example receiver: verification, dedup, path safety, reassembly, and its command line."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.receiver import Receiver
from tests.conftest import free_port
from tests.support.fuzzing import examples
from treecast.webhooks.signing import signed_headers


def post(url: str, secret: str, event: str, payload: dict[str, Any], **sign: Any) -> httpx.Response:
    body = json.dumps(payload).encode()
    msg_id = sign.pop("msg_id", f"msg_{uuid.uuid4().hex}")
    headers = signed_headers([secret], msg_id, event, body, **sign)
    return httpx.post(f"{url}/{event}", content=body, headers=headers, timeout=5)


def create(path: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {
        "file": {
            "path": path,
            "sha": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "content": base64.b64encode(data).decode(),
            "content_encoding": "base64",
            **extra,
        }
    }


def test_bad_signature_and_stale_timestamp_get_401(
    receiver: Receiver, receiver_secret: str
) -> None:
    from treecast.crypto import generate_webhook_secret

    wrong = post(receiver.url, generate_webhook_secret(), "create", create("a", b"x"))
    stale = post(
        receiver.url,
        receiver_secret,
        "create",
        create("a", b"x"),
        timestamp=int(time.time()) - 3600,
    )
    unsigned = httpx.post(receiver.url + "/create", content=b"{}", timeout=5)
    assert [wrong.status_code, stale.status_code, unsigned.status_code] == [401, 401, 401]
    assert receiver.files() == {} and receiver.requests == []
    assert post(receiver.url, receiver_secret, "nope", {}).status_code == 404


def test_dedup_by_webhook_id(receiver: Receiver, receiver_secret: str) -> None:
    assert post(
        receiver.url, receiver_secret, "create", create("a", b"1"), msg_id="msg_1"
    ).is_success
    # Same id, different content: acknowledged but not applied again.
    assert post(
        receiver.url, receiver_secret, "update", create("a", b"2"), msg_id="msg_1"
    ).is_success
    assert receiver.files() == {"a": b"1"}
    assert [r.duplicate for r in receiver.requests] == [False, True]


@pytest.mark.parametrize("path", ["../escape", "/etc/passwd", "a/../../b", "a//b", "./a", "a\0b"])
def test_paths_escaping_the_mirror_are_refused(
    receiver: Receiver, receiver_secret: str, path: str
) -> None:
    answer = post(receiver.url, receiver_secret, "create", create(path, b"x"))
    assert answer.status_code == 400
    assert receiver.files() == {}
    assert not (receiver.mirror.parent / "escape").exists()


def test_sha_mismatch_is_refused(receiver: Receiver, receiver_secret: str) -> None:
    payload = create("a", b"x")
    payload["file"]["sha"] = "0" * 64
    assert post(receiver.url, receiver_secret, "create", payload).status_code == 422
    assert receiver.files() == {}


def test_chunks_reassemble_in_order_only(receiver: Receiver, receiver_secret: str) -> None:
    data = os.urandom(3000)
    whole = hashlib.sha256(data).hexdigest()
    pieces = [data[i : i + 999] for i in range(0, len(data), 999)]  # 999 = 333 base64 quanta

    def chunk(index: int, transfer: str) -> dict[str, Any]:
        payload = create("big.bin", pieces[index])
        payload["file"].update(sha=whole, size=len(data))
        payload["file"]["chunk"] = {"id": transfer, "index": index, "total": len(pieces)}
        return payload

    assert post(receiver.url, receiver_secret, "create", chunk(1, "t1")).status_code == 409
    for index in range(len(pieces)):
        assert post(receiver.url, receiver_secret, "create", chunk(index, "t2")).is_success
    assert receiver.files() == {"big.bin": data}
    # delete removes the file and its now-empty folders
    post(receiver.url, receiver_secret, "create", create("d/e/f.txt", b"f"))
    post(receiver.url, receiver_secret, "delete", {"file": {"path": "d/e/f.txt", "sha": "s"}})
    assert not (receiver.mirror / "d").exists()


def ignore_sigint() -> None:
    """What a shell's background job gets: SIGINT ignored from the start."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# SIGINT is Ctrl-C (also in a job whose shell left it ignored), SIGTERM is `docker stop`.
@pytest.mark.parametrize(
    ("stop_signal", "inherited"),
    [(signal.SIGINT, None), (signal.SIGINT, ignore_sigint), (signal.SIGTERM, None)],
    ids=["ctrl-c", "ctrl-c-with-sigint-ignored", "sigterm"],
)
def test_command_line_mirrors_and_logs_notices(
    tmp_path: Path,
    receiver_secret: str,
    stop_signal: signal.Signals,
    inherited: Callable[[], None] | None,
) -> None:
    port = free_port()
    mirror = tmp_path / "mirror"
    proc = subprocess.Popen(
        [sys.executable, "-m", "examples.receiver", "--port", str(port), "--secret",
         receiver_secret, "--mirror", str(mirror)],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=inherited,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                answer = post(url, receiver_secret, "create", create("x/y.txt", b"hello"))
                break
            except httpx.ConnectError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert answer.is_success
        assert (mirror / "x/y.txt").read_bytes() == b"hello"
        notice = {"event": "sync_failed", "repository": {"owner": "acme", "name": "docs"},
                  "error": {"type": "GitError", "message": "boom"}}  # fmt: skip
        assert post(url, receiver_secret, "sync_failed", notice).is_success
    finally:
        proc.send_signal(stop_signal)
        out, _ = proc.communicate(timeout=10)
    assert "sync_failed acme/docs: boom" in out


# -- hostile input: .git paths, Content-Length, slow clients -----------------------------


@pytest.mark.parametrize(
    "path",
    [
        ".git/hooks/post-checkout",
        ".git/config",
        ".GIT/config",
        "sub/.Git/config",
        "git~1/config",
        ".git./config",
        ".git::$INDEX_ALLOCATION/config",
        ".g\u200cit/config",
        "a\\..\\..\\b",
        "..\\escape",
        "C:\\x",
    ],
)
def test_paths_a_file_system_reads_as_dotgit_are_refused(
    receiver: Receiver, receiver_secret: str, path: str
) -> None:
    # Before: the receiver wrote .git/hooks/post-checkout, .git/config and .GIT/config.
    answer = post(receiver.url, receiver_secret, "create", create(path, b"#!/bin/sh\necho owned\n"))
    assert answer.status_code == 400, path
    assert "refusing path" in answer.json()["error"]
    assert receiver.files() == {}
    assert not any(p.name.lower().startswith((".git", "git~")) for p in receiver.mirror.rglob("*"))


@pytest.mark.parametrize(
    "path",
    [
        "a b.txt",
        "with\nnewline",
        'quote\'s "x".md',
        "unicodé/名前.txt",
        ".gitignore",
        "back\\slash",
    ],
)
def test_unusual_but_safe_names_are_mirrored(
    receiver: Receiver, receiver_secret: str, path: str
) -> None:
    assert post(receiver.url, receiver_secret, "create", create(path, b"x")).is_success
    assert receiver.files() == {path: b"x"}


def test_a_path_that_is_not_a_string_is_refused(receiver: Receiver, receiver_secret: str) -> None:
    payload = create("a", b"x")
    payload["file"]["path"] = 7
    assert post(receiver.url, receiver_secret, "create", payload).status_code == 400


def test_the_receiver_and_treecast_agree_on_unsafe_paths() -> None:
    from examples import receiver as example
    from tests.base.test_paths import SAFE, UNSAFE
    from treecast.paths import unsafe_path_reason

    for path in [*SAFE, *UNSAFE]:
        assert example.unsafe_path_reason(path) == unsafe_path_reason(path), path


@settings(max_examples=examples(300), deadline=None)
@given(
    st.lists(
        st.sampled_from([*"ab./\\ :~\0", "git", "GIT", ".git", "\u200c", "\ufeff", "é", "\n"]),
        max_size=12,
    ).map("".join)
)
def test_the_receiver_and_treecast_agree_on_random_paths(path: str) -> None:
    from examples import receiver as example
    from treecast.paths import unsafe_path_reason

    assert example.unsafe_path_reason(path) == unsafe_path_reason(path)


def raw_request(port: int, data: bytes, *, wait: float = 3.0) -> bytes:
    """Send bytes, read until the receiver closes; fail if it is still silent after `wait`."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as conn:
        conn.sendall(data)
        chunks: list[bytes] = []
        while True:
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                pytest.fail(f"no answer within {wait} s (a handler thread is held)")
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def head(length_lines: str) -> bytes:
    return f"POST /create HTTP/1.1\r\nHost: x\r\n{length_lines}\r\n".encode()


@pytest.mark.parametrize(
    ("length_lines", "status", "reason"),
    [
        ("Content-Length: abc\r\n", 400, "is not a number"),
        ("Content-Length: -1\r\n", 400, "is not a number"),
        ("Content-Length: +5\r\n", 400, "is not a number"),
        ("Content-Length: 1e3\r\n", 400, "is not a number"),
        ("Content-Length: 5\r\nContent-Length: 6\r\n", 400, "conflicting"),
        ("", 411, "Content-Length is required"),
        ("Transfer-Encoding: chunked\r\n", 411, "Content-Length is required"),
        (f"Content-Length: {64 * 1024 * 1024 + 1}\r\n", 413, "larger than"),
        ("Content-Length: 99999999999999999999999\r\n", 400, "is not a number"),
    ],
)
def test_bad_content_length_is_one_line_and_frees_the_thread(
    receiver: Receiver,
    capfd: pytest.CaptureFixture[str],
    length_lines: str,
    status: int,
    reason: str,
) -> None:
    # Before: -1 read until the client gave up (a thread held), abc printed a traceback.
    answer = raw_request(receiver.port, head(length_lines))
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(f"HTTP/1.1 {status} ".encode()), answer
    body = rest.split(b"\r\n\r\n", 1)[1]
    assert b"\n" not in body and reason in json.loads(body)["error"]
    assert "Traceback" not in capfd.readouterr().err


def test_a_client_that_trickles_is_cut_at_the_deadline(
    tmp_path: Path, receiver_secret: str
) -> None:
    slow = Receiver([receiver_secret], tmp_path / "m", read_timeout=0.5, request_deadline=1.0)
    with slow, socket.create_connection(("127.0.0.1", slow.port), timeout=5) as conn:
        conn.sendall(head("Content-Length: 1000\r\n"))
        start = time.monotonic()
        closed = False
        while time.monotonic() - start < 4:
            try:
                conn.sendall(b"x")  # one byte every 0.2 s: never idle for 0.5 s
                conn.settimeout(0.2)
                if conn.recv(1024) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except OSError:  # reset by the receiver
                closed = True
                break
        assert closed, "the trickling client held its connection for 4 s"
        assert time.monotonic() - start < 2.5


def test_an_idle_connection_is_closed(tmp_path: Path, receiver_secret: str) -> None:
    idle = Receiver([receiver_secret], tmp_path / "m", read_timeout=0.3, request_deadline=5)
    with idle, socket.create_connection(("127.0.0.1", idle.port), timeout=3) as conn:
        start = time.monotonic()
        assert conn.recv(1024) == b""
        assert time.monotonic() - start < 2
