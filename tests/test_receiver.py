"""The example receiver: verification, dedup, path safety, reassembly, and its command line."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from examples.receiver import Receiver
from tests.conftest import free_port
from tests.receiver_fixture import receiver, receiver_secret  # noqa: F401
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
    receiver: Receiver,  # noqa: F811
    receiver_secret: str,  # noqa: F811
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


def test_dedup_by_webhook_id(receiver: Receiver, receiver_secret: str) -> None:  # noqa: F811
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
    receiver: Receiver,  # noqa: F811
    receiver_secret: str,  # noqa: F811
    path: str,
) -> None:
    answer = post(receiver.url, receiver_secret, "create", create(path, b"x"))
    assert answer.status_code == 400
    assert receiver.files() == {}
    assert not (receiver.mirror.parent / "escape").exists()


def test_sha_mismatch_is_refused(receiver: Receiver, receiver_secret: str) -> None:  # noqa: F811
    payload = create("a", b"x")
    payload["file"]["sha"] = "0" * 64
    assert post(receiver.url, receiver_secret, "create", payload).status_code == 422
    assert receiver.files() == {}


def test_chunks_reassemble_in_order_only(receiver: Receiver, receiver_secret: str) -> None:  # noqa: F811
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


def test_command_line_mirrors_and_logs_notices(tmp_path: Path, receiver_secret: str) -> None:  # noqa: F811
    port = free_port()
    mirror = tmp_path / "mirror"
    proc = subprocess.Popen(
        [sys.executable, "-m", "examples.receiver", "--port", str(port), "--secret",
         receiver_secret, "--mirror", str(mirror)],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.PIPE,
        text=True,
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
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
    assert "sync_failed acme/docs: boom" in out
