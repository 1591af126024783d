"""A Docora client app for tests, written from Docora's wire contract alone
(docs: /work/shared/reference/docora-spec.md sections 3.1 to 3.3), not from Treecast's code.

It accepts `POST {base}/create|update|delete|sync_failed`, and for every request checks:

- `X-Docora-App-Id` is the app's id, `X-Docora-Timestamp` whole Unix seconds within 300 s;
- `X-Docora-Signature` is `sha256=` + hex HMAC-SHA256 of `"{timestamp}.{raw body}"` keyed
  with the UTF-8 bytes of the client_auth_key (compared in constant time);
- the body is compact JSON that re-serialises byte for byte (`JSON.stringify` parity),
  with Docora's keys in Docora's order;
- for whole files, `sha` is the SHA-256 of the decoded content and `size` its length.

A request failing any check is answered 401 (signature) or 400 (shape) and recorded in
`problems`; the others are answered 200 and recorded in `received`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ENDPOINTS = ("create", "update", "delete", "sync_failed")
REPOSITORY_KEYS = ["repository_id", "github_url", "owner", "name"]
TOP_KEYS = {
    "create": ["repository", "file", "commit_sha", "timestamp"],
    "update": ["repository", "file", "previous_sha", "commit_sha", "timestamp"],
    "delete": ["repository", "file", "commit_sha", "timestamp"],
    "sync_failed": [
        "event",
        "repository",
        "error",
        "circuit_breaker",
        "retry_count",
        "timestamp",
    ],
}
SIGNATURE_WINDOW = 300


@dataclass
class DocoraRequest:
    """One accepted request."""

    endpoint: str
    headers: dict[str, str]
    body: bytes
    payload: dict[str, Any]


def expected_signature(client_auth_key: str, timestamp: str, body: bytes) -> str:
    """Section 3.2: `sha256=` + hex(HMAC_SHA256(key, "{timestamp}.{body}"))."""
    message = timestamp.encode() + b"." + body
    return "sha256=" + hmac.new(client_auth_key.encode(), message, hashlib.sha256).hexdigest()


def _shape_problem(endpoint: str, payload: dict[str, Any]) -> str | None:
    if list(payload) != TOP_KEYS[endpoint]:
        return f"keys {list(payload)} are not Docora's {TOP_KEYS[endpoint]}"
    if list(payload["repository"]) != REPOSITORY_KEYS:
        return f"repository keys {list(payload['repository'])}"
    file: dict[str, Any] = payload.get("file") or {}
    if endpoint == "delete":
        if list(file) != ["path", "sha"]:
            return f"delete file keys {list(file)}"
    elif endpoint in ("create", "update"):
        keys = ["path", "sha", "size", "content"]
        if "content_encoding" in file:
            keys.append("content_encoding")
        if "chunk" in file:
            keys.append("chunk")
        if list(file) != keys:
            return f"file keys {list(file)}"
        if "chunk" not in file:
            raw = (
                base64.b64decode(file["content"])
                if file.get("content_encoding") == "base64"
                else file["content"].encode("utf-8")
            )
            if hashlib.sha256(raw).hexdigest() != file["sha"] or len(raw) != file["size"]:
                return f"{file['path']}: sha or size does not match the content"
    return None


class DocoraReceiver:
    """A threaded HTTP server on 127.0.0.1 playing one Docora client app."""

    def __init__(self, app_id: str, client_auth_key: str) -> None:
        self.app_id = app_id
        self.client_auth_key = client_auth_key
        self.received: list[DocoraRequest] = []
        self.problems: list[str] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status, problem = receiver.check(self.path, dict(self.headers.items()), body)
                if problem is not None:
                    with receiver._lock:
                        receiver.problems.append(f"{self.path}: {problem}")
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    @property
    def url(self) -> str:
        """The base URL to register."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks"

    def start(self) -> DocoraReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def check(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str | None]:
        """(HTTP status, problem) for one request."""
        lower = {k.lower(): v for k, v in headers.items()}
        endpoint = path.rsplit("/", 1)[-1]
        if not path.startswith("/hooks/") or endpoint not in ENDPOINTS:
            return 404, f"unknown endpoint {path}"
        if lower.get("x-docora-app-id") != self.app_id:
            return 401, "X-Docora-App-Id is not this app's id"
        timestamp = lower.get("x-docora-timestamp", "")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > SIGNATURE_WINDOW:
            return 401, "X-Docora-Timestamp missing or outside the 300 s window"
        given = lower.get("x-docora-signature", "")
        if not hmac.compare_digest(
            given, expected_signature(self.client_auth_key, timestamp, body)
        ):
            return 401, "X-Docora-Signature does not verify"
        if not lower.get("content-type", "").startswith("application/json"):
            return 400, "not application/json"
        try:
            payload = json.loads(body)
        except ValueError:
            return 400, "body is not JSON"
        again = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        if again != body:
            return 400, "body does not re-serialise to the same bytes (not compact Docora JSON)"
        problem = _shape_problem(endpoint, payload)
        if problem is not None:
            return 400, problem
        with self._lock:
            self.received.append(DocoraRequest(endpoint, lower, body, payload))
        return 200, None
