"""Request limits as one ASGI middleware: a token bucket per client address and per
bearer token (429), then a body-size cap (413) enforced before the app reads the body.

Buckets live in this process's memory (bounded), on purpose: each API process allows
the rate (docs/operations.md has the arithmetic for N replicas). `/health` and `/ready`
are exempt so probes keep answering while a client floods another route.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from treecast.config import Settings
from treecast.service import tokens

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

EXEMPT = frozenset({"/health", "/ready"})
MAX_KEYS = 50_000


class TokenBuckets:
    """`rate` requests per second with bursts of `burst`, per key; least recent keys are
    forgotten beyond MAX_KEYS (a forgotten key starts full, which only ever allows more)."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self._clock = rate, float(burst), clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        """0 when a request may go now (and count it), else seconds until it may."""
        now = self._clock()
        level, then = self._buckets.get(key, (self.burst, now))
        level = min(self.burst, level + (now - then) * self.rate)
        if level < 1:
            self._buckets[key] = (level, now)
            self._buckets.move_to_end(key)
            return (1 - level) / self.rate
        self._buckets[key] = (level - 1, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > MAX_KEYS:
            self._buckets.popitem(last=False)
        return 0.0


def _token_key(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            raw = value.decode("latin-1")
            token = raw[7:].strip() if raw[:7].lower() == "bearer " else raw
            token_id = tokens.token_id_of(token)
            # Unknown shapes (the admin token, garbage) share a bucket per value.
            return "t:" + (token_id or hashlib.sha256(token.encode()).hexdigest()[:16])
    return None


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return -1
    return None


async def _answer(send: Send, status: int, message: str, headers: list[Any] | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Limits:
    """The middleware (`app.add_middleware(Limits, settings=...)`)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.buckets = TokenBuckets(settings.api_rate_per_second, settings.api_rate_burst)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in EXEMPT:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        keys = ["a:" + (client[0] if client else "unknown")]
        token_key = _token_key(scope)
        if token_key:
            keys.append(token_key)
        wait = max(self.buckets.take(key) for key in keys)
        if wait > 0:
            await _answer(
                send,
                429,
                f"too many requests; try again in {math.ceil(wait)} s",
                [(b"retry-after", str(math.ceil(wait)).encode())],
            )
            return
        path = str(scope.get("path", ""))
        streamed = path.startswith("/api/repositories/") and path.endswith("/reconcile")
        limit = (
            self.settings.api_max_hook_bytes
            if path.startswith("/hooks/")
            else self.settings.api_reconcile_max_bytes
            if streamed
            else self.settings.api_max_body_bytes
        )
        too_large = f"the request body is larger than {limit} bytes"
        declared = _content_length(scope)
        if declared is not None and (declared < 0 or declared > limit):
            await _answer(send, 413, too_large, [(b"connection", b"close")])
            return
        if streamed:
            # What an app holds may run to megabytes: the route spools it, counting.
            await self.app(scope, receive, send)
            return
        # Read the body here, counting, so nothing past the limit is ever buffered.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away: nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _answer(send, 413, too_large, [(b"connection", b"close")])
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
