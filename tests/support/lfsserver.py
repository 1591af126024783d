"""A Git LFS server for tests: the Batch API (`basic` transfer) and its object URLs,
served beside `git http-backend` by `tests.support.githttp.GitHttpServer(lfs=...)`.

Small, but spoken to by the real `git-lfs` client (Debian's) in the tests, which pushes
objects to it and pulls them from it: what Treecast fetches is what git-lfs would.
`LfsStore.answers` lets a test make the server lie (another href, other bytes).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

MEDIA_TYPE = "application/vnd.git-lfs+json"
_OBJECT = re.compile(r"^/(?P<repo>.+?)/info/lfs/objects/(?P<oid>[0-9a-f]{64})$")
_BATCH = re.compile(r"^/(?P<repo>.+?)/info/lfs/objects/batch$")


@dataclass
class LfsStore:
    """Objects by oid on disk; `href_for` and `serve` may be replaced by a test."""

    root: Path
    requests: list[tuple[str, str]] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)  # each request's
    # oid → the href a download action names (None: the server's own object URL).
    href_for: Callable[[str, str], str] | None = None
    # oid → the bytes served instead of the stored object.
    serve: dict[str, bytes] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def path(self, oid: str) -> Path:
        return self.root / oid

    def handles(self, path: str) -> bool:
        return "/info/lfs/" in path

    def answer(self, handler: BaseHTTPRequestHandler, base: str, body: bytes) -> None:
        """Answer one LFS request on `handler` (`base`: http://host:port)."""
        path = handler.path.partition("?")[0]
        self.requests.append((handler.command, path))
        self.authorizations.append(handler.headers.get("Authorization"))
        batch = _BATCH.match(path)
        single = _OBJECT.match(path)
        if handler.command == "POST" and batch:
            request = json.loads(body or b"{}")
            objects = []
            for item in request.get("objects", []):
                oid, size = item["oid"], item["size"]
                href = f"{base}/{batch['repo']}/info/lfs/objects/{oid}"
                present = self.path(oid).exists() or oid in self.serve
                if request.get("operation") == "upload":
                    entry = {"oid": oid, "size": size}
                    if not present:
                        entry["actions"] = {"upload": {"href": href}}
                    objects.append(entry)
                elif present:
                    if self.href_for is not None:
                        href = self.href_for(oid, href)
                    objects.append(
                        {"oid": oid, "size": size, "actions": {"download": {"href": href}}}
                    )
                else:
                    objects.append(
                        {"oid": oid, "size": size,
                         "error": {"code": 404, "message": "Object does not exist"}}
                    )  # fmt: skip
            self._send(handler, 200, json.dumps({"transfer": "basic", "objects": objects}).encode())
        elif handler.command == "GET" and single:
            oid = single["oid"]
            data = self.serve.get(oid)
            if data is None and self.path(oid).exists():
                data = self.path(oid).read_bytes()
            if data is None:
                self._send(handler, 404, b'{"message": "not found"}')
            else:
                self._send(handler, 200, data, "application/octet-stream")
        elif handler.command == "PUT" and single:
            oid = single["oid"]
            if hashlib.sha256(body).hexdigest() != oid:
                self._send(handler, 422, b'{"message": "hash mismatch"}')
                return
            self.root.mkdir(parents=True, exist_ok=True)
            self.path(oid).write_bytes(body)
            self._send(handler, 200, b"")
        else:
            self._send(handler, 404, b'{"message": "not found"}')

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler, status: int, body: bytes, kind: str = MEDIA_TYPE
    ) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
