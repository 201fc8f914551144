"""Request limits: body size (413) and a per-token rate limit (429).

The limits are settings (``PROVISIONER_API_RATE``, ``PROVISIONER_API_BURST``,
``PROVISIONER_API_MAX_BODY``); tests make their own :class:`ApiLimits`.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from provisioner.settings import Settings

MIB = 1024 * 1024


@dataclass(frozen=True)
class ApiLimits:
    """Rate (requests per second per token), burst, and the largest request body in bytes.

    The page size cap (200) is part of the API schema, not a setting.
    """

    rate: float = 20.0
    burst: int = 40
    max_body: int = MIB

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiLimits:
        """The limits the settings give (positive numbers: the settings check that)."""
        return cls(settings.api_rate, settings.api_burst, settings.api_max_body)


class RateLimiter:
    """Token buckets in memory, one per key (a token id, or a source that failed to log in).

    In memory on purpose: a limit per process is enough to stop one runaway script; with
    several servers each enforces its own share.
    """

    def __init__(self, rate: float, burst: int, max_keys: int = 10_000):
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[Hashable, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: Hashable) -> float:
        """Spend one request; returns 0 when allowed, else the seconds to wait."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            if len(self._buckets) > self.max_keys:
                # Bounded memory: forget full buckets (they would refill to burst anyway).
                self._buckets = {k: v for k, v in self._buckets.items() if v[0] < self.burst - 1}
            return (1.0 - tokens) / self.rate

    @staticmethod
    def retry_after(wait: float) -> str:
        return str(max(1, math.ceil(wait)))


class BodyLimitMiddleware:
    """Refuse bodies over ``max_body`` with 413, by Content-Length and by bytes received.

    The body is read here up to the limit and replayed to the app, so a chunked upload
    that lies about (or omits) its length is cut off at the limit, never buffered whole.
    """

    def __init__(self, app: ASGIApp, max_body: int):
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await self._refuse(send, 400, "Content-Length is not a number")
                    return
                if length > self.max_body:
                    await self._refuse(send, 413, self._too_large())
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_body:
                await self._refuse(send, 413, self._too_large())
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replay: list[Message] = [
            {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        ]

        async def replayed() -> Message:
            if replay:
                return replay.pop()
            return await receive()

        await self.app(scope, replayed, send)

    def _too_large(self) -> str:
        return f"request body over {self.max_body} bytes"

    async def _refuse(self, send: Send, status: int, detail: str) -> None:
        from provisioner.api.problems import problem

        response = problem(status, detail)
        await response(
            {"type": "http", "method": "POST", "headers": []},
            _no_receive,
            send,
        )


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
