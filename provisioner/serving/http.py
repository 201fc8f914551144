"""The device-facing HTTP server: a bare ASGI app, because it is the hot path of a boot storm.

``GET /<file>`` runs :meth:`ProvisioningService.fetch`; ``/api/...`` (and the technician
page, ``/tech/...``) is handed to the NOC REST API (FastAPI) when one is mounted. Answers:

- 200 with an ETag; 304 when ``If-None-Match`` carries it;
- 401 with a Basic challenge for a name shaped like a device file that we will not serve
  (unknown MAC, refused known MAC, wrong credentials: the same status and body for all);
- 404 for any other name; 429 for a blocked source; 405 for other methods.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from provisioner.serving.service import ProvisioningService

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_NOT_FOUND = b"not found\n"
_TYPES = {
    "cfg": b"text/plain; charset=utf-8",
    "txt": b"text/plain; charset=utf-8",
    "xml": b"application/xml",
    "json": b"application/json",
    "yaml": b"application/yaml",
}
_OCTETS = b"application/octet-stream"
_API_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/tech"})
_CHALLENGE = (b"www-authenticate", b'Basic realm="provisioning", charset="UTF-8"')


def _credentials(headers: dict[bytes, bytes]) -> tuple[str, str] | None:
    raw = headers.get(b"authorization")
    if not raw or raw[:6].lower() != b"basic ":
        return None
    try:
        user, _, password = base64.b64decode(raw[6:].strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return ("", "")  # malformed: treated as wrong credentials
    return user, password


class DeviceHttpApp:
    """ASGI app for devices; ``api`` (an ASGI app) takes every path under ``/api/``."""

    def __init__(self, service: ProvisioningService, api: ASGIApp | None = None, workers: int = 32):
        self.service = service
        self.api = api
        # Cache misses render and read the store: keep them off the event loop.
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="http-fetch")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            if self.api is not None:
                await self.api(scope, receive, send)  # the API owns start-up and shutdown
            else:
                await self._lifespan(receive, send)
            return
        if kind != "http":
            return
        path: str = scope["path"]
        if self.api is not None and self.is_api(path):
            await self.api(scope, receive, send)
            return
        method = scope["method"]
        headers = dict(scope["headers"])
        source = (scope.get("client") or ("", 0))[0]
        if self.service.loaded or method not in ("GET", "HEAD"):
            reply = self.reply(method, path, headers, source)  # in memory: on the loop
        else:  # the first seconds after start: a fetch may read its order from the store
            loop = asyncio.get_running_loop()
            reply = await loop.run_in_executor(
                self._pool, self.reply, method, path, headers, source
            )
        status, extra, body = reply
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-length", b"%d" % len(body)), *extra],
            }
        )
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    def is_api(self, path: str) -> bool:
        """The path belongs to the mounted API (never a device file)."""
        return self.api is not None and (path.startswith(("/api/", "/tech/")) or path in _API_PATHS)

    def reply(
        self, method: str, path: str, headers: dict[bytes, bytes], source: str
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """The answer to a device request: status, header fields (without content-length)
        and the body (sent without it for HEAD). ``path`` is decoded, ``headers`` lower-case.
        In memory once the service is :attr:`~ProvisioningService.loaded`; called on the
        event loop then, by the ASGI app and by the connection's fast path alike."""
        if method not in ("GET", "HEAD"):
            return 405, [(b"allow", b"GET, HEAD")], b"method not allowed\n"
        name = path[1:] if path.startswith("/") else path  # already percent-decoded
        answer = self.service.fetch(
            name,
            source,
            "http",
            credentials=_credentials(headers),
            user_agent=headers.get(b"user-agent", b"").decode("latin-1")[:200],
        )
        if answer.outcome == "served":
            etag = answer.etag.encode()
            extra = [(b"etag", etag), (b"cache-control", b"no-cache")]
            if headers.get(b"if-none-match") == etag:
                return 304, extra, b""
            ctype = _TYPES.get(name.rsplit(".", 1)[-1], _OCTETS)
            return 200, [(b"content-type", ctype), *extra], answer.data
        if answer.outcome == "blocked":
            return 429, [(b"retry-after", self._retry_after(source))], b"too many misses\n"
        if answer.challenge:
            return 401, [_CHALLENGE], _NOT_FOUND
        return 404, [], _NOT_FOUND

    def _retry_after(self, source: str) -> bytes:
        """Whole seconds until the source's block ends (the block's length if it just did)."""
        guard = self.service.guard
        wait = guard.remaining(source) or guard.policy.block_seconds
        return str(max(1, math.ceil(wait))).encode()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self._pool.shutdown(wait=False)
                await send({"type": "lifespan.shutdown.complete"})
                return
