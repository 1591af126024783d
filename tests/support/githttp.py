"""Real git remotes over HTTP for tests: git-http-backend behind Basic auth, and a silent server."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.support.lfsserver import LfsStore

HTTP_BACKEND = (
    Path(
        subprocess.run(["git", "--exec-path"], capture_output=True, check=True)
        .stdout.decode()
        .strip()
    )
    / "git-http-backend"
)


class GitHttpServer:
    """Serves the bare repositories under `root` with smart HTTP, requiring Basic auth.

    `token` None serves without auth. Every Authorization header seen is kept in
    `auth_headers` so a test can check what git actually sent. `tokens` are more passwords
    accepted beside `token`: add one to let another client in, discard one to revoke it.
    """

    def __init__(
        self,
        root: Path,
        token: str | None,
        *,
        redirect_to: str | None = None,
        truncate_packs: bool = False,
        keep_alive: bool = False,
        reuse_listings: float = 0.0,
        lfs: LfsStore | None = None,
    ) -> None:
        self.root = root
        self.token = token
        self.tokens: set[str] = set()
        # Passwords that may not read some repositories: password -> path prefixes (a
        # token scoped to other repositories, as a forge's fine-grained tokens are).
        self.scoped_out: dict[str, set[str]] = {}
        self.auth_headers: list[str] = []
        self.asked: list[tuple[str, str]] = []  # (path, password) of each Basic auth request
        # Every request answered with a 301 to this base URL (another server).
        self.redirect_to = redirect_to
        # Packs cut off half-way, as a dropped connection would.
        self.truncate_packs = truncate_packs
        # (method, path, Git-Protocol header) of every request, in order.
        self.requests: list[tuple[str, str, str]] = []
        # For benchmarks whose paths all name one repository: a ref listing (a POST
        # without `want`) is answered from the last real one for this many seconds.
        self.reuse_listings = reuse_listings
        # A Git LFS server on the same host and port (`.../info/lfs/...`), as forges do.
        self.lfs = lfs
        # Body bytes answered to git (packs and listings): what a fetch cost on the wire.
        self.bytes_sent = 0
        listings: dict[bytes, tuple[float, bytes]] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.1 keeps connections open between requests (every answer has a length).
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _authorised(self) -> bool:
                header = self.headers.get("Authorization")
                if header:
                    server.auth_headers.append(header)
                if server.token is None and not server.tokens:
                    return True
                if not header or not header.startswith("Basic "):
                    return False
                user_pass = base64.b64decode(header[len("Basic ") :]).decode()
                password = user_pass.partition(":")[2]
                server.asked.append((self.path, password))
                if any(self.path.startswith(p) for p in server.scoped_out.get(password, ())):
                    return False
                return password == server.token or password in server.tokens

            def _serve(self) -> None:
                server.requests.append(
                    (self.command, self.path, self.headers.get("Git-Protocol", ""))
                )
                if server.redirect_to is not None:
                    server.auth_headers.extend(self.headers.get_all("Authorization") or [])
                    self.send_response(301)
                    self.send_header("Location", server.redirect_to + self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if not self._authorised():
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="git"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                path, _, query = self.path.partition("?")
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if server.lfs is not None and server.lfs.handles(path):
                    server.lfs.answer(self, f"http://127.0.0.1:{server.port}", body)
                    return
                env = {
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "GIT_PROJECT_ROOT": str(server.root),
                    "GIT_HTTP_EXPORT_ALL": "1",
                    "PATH_INFO": path,
                    "QUERY_STRING": query,
                    "REQUEST_METHOD": self.command,
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(len(body)),
                    "REMOTE_USER": "git",
                    "REMOTE_ADDR": "127.0.0.1",
                }
                if self.headers.get("Content-Encoding"):
                    env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
                if self.headers.get("Git-Protocol"):
                    env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
                listing = self.command == "POST" and b"want " not in body
                kept = listings.get(body) if listing and server.reuse_listings else None
                if kept is not None and time.monotonic() - kept[0] < server.reuse_listings:
                    out = kept[1]
                else:
                    out = subprocess.run(
                        [str(HTTP_BACKEND)], input=body, env=env, capture_output=True, check=False
                    ).stdout
                    if listing and server.reuse_listings:
                        listings[body] = (time.monotonic(), out)
                head, _, content = out.partition(b"\r\n\r\n")
                status = 200
                headers: list[tuple[str, str]] = []
                for line in head.decode(errors="replace").split("\r\n"):
                    name, _, value = line.partition(":")
                    if name.lower() == "status":
                        status = int(value.strip().split()[0])
                    elif name:
                        headers.append((name, value.strip()))
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                if server.truncate_packs and b"want " in body:  # a fetch, not a listing
                    self.wfile.write(content[: len(content) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(content)
                server.bytes_sent += len(content)

            do_GET = _serve
            do_POST = _serve
            do_PUT = _serve

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def url(self, name: str) -> str:
        """The http:// URL of the bare repository `root/name`."""
        return f"http://127.0.0.1:{self.port}/{name}"


@contextmanager
def git_http_server(root: Path, token: str | None, **options: Any) -> Iterator[GitHttpServer]:
    """A running `GitHttpServer` for the duration of the block."""
    server = GitHttpServer(root, token, **options)
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


@contextmanager
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers (for timeouts)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()
