"""Every HTTP listener's uvicorn configuration, with limits on what a client may make us hold.

uvicorn with httptools (the fast path) bounds neither the request head nor the time it takes
to arrive, and its ``limit_concurrency`` accepts and parses every connection before answering
503 on it. :class:`LimitedHttpToolsProtocol` adds, per connection:

- the request head (request line and header fields) may hold ``http_max_header_bytes`` bytes
  and ``http_max_headers`` fields: past either, 431 and close. The parser is never fed more
  than the byte limit of one head, so a huge header is refused after the limit, not buffered;
- the head must arrive within ``http_header_timeout`` seconds (from the connection for its
  first request, from its first byte for later ones): past it, 408 and close (a connection
  that sent nothing is closed without an answer);
- a kept-alive connection idle for ``http_keepalive_timeout`` seconds is closed (uvicorn's
  own timer, given our setting); bytes of a request body that was already answered (a 405,
  401 or 413 sent before the body was read) do not count as activity;
- past ``http_max_connections`` open connections, a new one gets 503 and is closed before
  anything of it is read.

A refusal is answered, then the connection is half-closed and whatever the client still
sends is read and dropped for a moment: closing with unread data would reset the connection
and the client might never see the answer. (TLS cannot half-close; asyncio's TLS shutdown
sends the answer and drains the connection itself.)

Forwarded headers (``X-Forwarded-For``/``-Proto``) are believed only from the proxies in the
``trusted_proxies`` setting; by default a request's source is its TCP peer.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from provisioner.settings import Settings

LINGER_SECONDS = 2.0  # how long a refused connection's leftovers are read and dropped


@dataclass(frozen=True)
class HttpLimits:
    """What one connection may make the server hold (see the settings of the same names)."""

    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    keepalive_timeout: float = 5.0
    max_connections: int = 2048

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(
            max_header_bytes=settings.http_max_header_bytes,
            max_headers=settings.http_max_headers,
            header_timeout=settings.http_header_timeout,
            keepalive_timeout=settings.http_keepalive_timeout,
            max_connections=settings.http_max_connections,
        )


class ServerConfig(uvicorn.Config):
    """A uvicorn configuration that carries the limits to the protocol instances."""

    def __init__(self, app: Any, limits: HttpLimits, **kwargs: Any):
        super().__init__(app, **kwargs)
        self.limits = limits


class _HeadRefused(Exception):
    """Raised inside a parser callback to stop parsing a head that broke a limit."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of :class:`HttpLimits`."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = config.limits if isinstance(config, ServerConfig) else HttpLimits()
        # uvicorn's keep-alive timer, in our (float) seconds.
        self.timeout_keep_alive = self.limits.keepalive_timeout  # type: ignore[assignment]
        self._in_head = True  # between a message's end (or the connection) and a head's end
        self._head_bytes = 0  # bytes fed to the parser since this head began
        self._head_fields = 0
        self._heads = 0  # heads completed on this connection
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_refusal = ""
        self._refused = False
        self._linger: asyncio.TimerHandle | None = None

    # -------------------------------------------------------------- connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse(503, "too many connections; retry later\n", b"retry-after: 1\r\n")
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head or self.cycle is None or not self.cycle.response_complete:
            # Once the answer is out, the rest of its request body is not activity: a client
            # trickling a body it was already answered for is idle, and times out as such.
            self._unset_keepalive_if_required()
        if self._refused:
            return  # lingering after a refusal: read and drop
        while data:
            if not self._in_head:
                self._feed(data)
                return
            if self._head_timer is None:
                self._arm_head_timer()
            # Feed no more than the head may still hold. A pipelined next head that arrives in
            # the same read as the end of this request is fed with it uncounted, so it may
            # pass the limit by at most one read of the transport: still bounded.
            room = max(0, self.limits.max_header_bytes - self._head_bytes)
            piece, data = data[:room], data[room:]
            self._head_bytes += len(piece)
            heads = self._heads
            if piece and not self._feed(piece):
                return
            if data and self._in_head and self._heads == heads:
                self._refuse_head("request head larger than the limit\n")
                return

    def _feed(self, data: bytes) -> bool:
        """Parse ``data``; False when the connection was answered and is closing."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self._head_refusal:
                self._refuse_head(self._head_refusal)
            else:
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
            return False
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        return not self.transport.is_closing()

    def _unsupported_upgrade_warning(self) -> None:
        # No route speaks WebSocket (ws="none"): an Upgrade request is answered as plain HTTP,
        # and a client must not write uvicorn's "install websockets" advice to our log at will.
        pass

    # -------------------------------------------------------------- parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:
            self._arm_head_timer()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_fields += 1
        if self._head_fields > self.limits.max_headers:
            self._head_refusal = "more header fields than the limit\n"
            raise _HeadRefused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._heads += 1
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0
        self._head_fields = 0

    # -------------------------------------------------------------- timers and refusals

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timeout)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._in_head:
            return
        if self.flow.read_paused or (self.cycle is not None and not self.cycle.response_complete):
            # A pipelined head waits on us (reading paused, a response under way): judge it
            # once the server reads again.
            self._arm_head_timer()
            return
        if self._head_bytes == 0:
            self.transport.close()  # nothing of a request arrived: just an idle connection
            return
        self._refuse(408, "the request head took too long\n")

    def _refuse_head(self, reason: str) -> None:
        self._refuse(431, reason)

    def _refuse(self, status: int, reason: str, extra: bytes = b"") -> None:
        if self._refused:
            return
        self._refused = True
        self._cancel_head_timer()
        self._unset_keepalive_if_required()
        if self.cycle is not None and not self.cycle.response_complete:
            # A response is under way on this connection: an answer would interleave with it.
            self.transport.close()
            return
        body = reason.encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(body),
            extra,
            b"connection: close\r\n\r\n",
            body,
        ]
        self.transport.write(b"".join(head))
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self._linger = self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()  # TLS: asyncio's TLS shutdown sends the answer first


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run the servers' coroutine on uvloop (libuv's event loop: the device path is a boot
    storm's hot path)."""
    import uvloop

    uvloop.run(main)


def server_config(
    app: Any, settings: Settings, host: str = "127.0.0.1", port: int = 0, **kwargs: Any
) -> ServerConfig:
    """The uvicorn configuration of one listener: our protocol, limits and proxy trust.

    ``kwargs`` go to :class:`uvicorn.Config` (``ssl_certfile``, ``lifespan``, ...).
    """
    proxies = settings.trusted_proxy_list
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "http": LimitedHttpToolsProtocol,
        "ws": "none",  # no route speaks WebSocket: an upgrade is not ours to accept
        "log_level": "warning",
        "access_log": False,
        "proxy_headers": bool(proxies),
        "forwarded_allow_ips": proxies or [],
        "timeout_keep_alive": math.ceil(settings.http_keepalive_timeout),
        **kwargs,
    }
    return ServerConfig(app, HttpLimits.from_settings(settings), **options)
