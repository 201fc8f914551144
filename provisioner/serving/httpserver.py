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

The device path skips ASGI: when the app has a ``reply(method, path, headers, source)``
(:class:`~provisioner.serving.http.DeviceHttpApp`) and can answer in memory, a bodiless
``GET``/``HEAD`` is answered from the parser's callback, with no request-response cycle, task
or ASGI messages per request (a boot storm is thousands of those per second). Everything else
(the API, a request with a body, one pipelined behind an ASGI response, a peer that is a
trusted proxy, the first seconds before the index is loaded) takes uvicorn's ASGI path.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.protocols.utils import get_remote_addr
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
    """A uvicorn configuration that carries the limits to the protocol instances, and the
    device app's in-memory answer for the fast path."""

    def __init__(
        self, app: Any, limits: HttpLimits, proxies: list[str] | None = None, **kwargs: Any
    ):
        super().__init__(app, **kwargs)
        self.limits = limits
        self.proxies = [ipaddress.ip_network(p, strict=False) for p in proxies or []]
        # The device app (DeviceHttpApp: ``service``, ``is_api``, ``reply``), or None.
        self.device: Any = app if callable(getattr(app, "reply", None)) else None

    def trusted(self, host: str) -> bool:
        """``host`` is one of the trusted proxies (its requests carry the real source)."""
        if not self.proxies or not host:
            return False
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(addr in net for net in self.proxies)


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
        self._fast = config.device if isinstance(config, ServerConfig) else None
        self._fast_answered = False  # this message was answered by the fast path
        self.source = ""  # the TCP peer's address (the fast path's request source)
        # The fast path's keep-alive timer: one per connection, re-armed only when it fires
        # (uvicorn's is cancelled and made anew for every request).
        self._idle_since: float | None = None  # None: a request is under way
        self._idle_timer: asyncio.TimerHandle | None = None

    # -------------------------------------------------------------- connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self._fast is not None and isinstance(self.config, ServerConfig):
            peer = get_remote_addr(transport)
            if peer is None or self.config.trusted(peer[0]):
                self._fast = None  # a proxy's requests name their source in headers: ASGI
            else:
                self.source = peer[0]
        if len(self.connections) > self.limits.max_connections:
            self._refuse(503, "too many connections; retry later\n", b"retry-after: 1\r\n")
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._idle_since = None
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
        if self._fast is not None and self._answer_now():
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._fast_answered:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._fast_answered:
            self._fast_answered = False
            self._idle_since = self.loop.time()
            if self._idle_timer is None and not self.transport.is_closing():
                self._idle_timer = self.loop.call_later(
                    self.limits.keepalive_timeout, self._idle_timeout
                )
        else:
            super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0
        self._head_fields = 0

    # -------------------------------------------------------------- the device fast path

    def _answer_now(self) -> bool:
        """Answer a device's GET/HEAD here, without ASGI; False leaves it to uvicorn."""
        fast = self._fast
        parser = self.parser
        assert fast is not None
        if (
            (self.cycle is not None and not self.cycle.response_complete)  # pipelined
            or self.flow.write_paused
            or self.expect_100_continue
            or parser.should_upgrade()
            or not fast.service.loaded
        ):
            return False
        method = parser.get_method()
        if method != b"GET" and method != b"HEAD":
            return False
        raw = httptools.parse_url(self.url).path
        path = raw.decode("ascii")
        if "%" in path:
            path = unquote(path)
        if fast.is_api(path):
            return False
        headers = dict(self.headers)
        if b"content-length" in headers or b"transfer-encoding" in headers:
            return False  # a body to read first: uvicorn's path
        status, fields, body = fast.reply(method.decode(), path, headers, self.source)
        keep_alive = parser.get_http_version() != "1.0" and parser.should_keep_alive()
        out = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            out += [name, b": ", value, b"\r\n"]
        out += [b"content-length: %d\r\n" % len(body)]
        for name, value in fields:
            out += [name, b": ", value, b"\r\n"]
        if not keep_alive:
            out.append(b"connection: close\r\n")
        out.append(b"\r\n")
        if method == b"GET":
            out.append(body)
        self.transport.write(b"".join(out))
        self.server_state.total_requests += 1
        self._fast_answered = True
        if not keep_alive:
            self.transport.close()
        return True

    # -------------------------------------------------------------- timers and refusals

    def _idle_timeout(self) -> None:
        """The fast path's keep-alive timer: close a connection idle for the whole timeout
        since its last fast answer, else look again when it could be."""
        self._idle_timer = None
        if self.transport.is_closing():
            return
        timeout = self.limits.keepalive_timeout
        idle = None if self._idle_since is None else self.loop.time() - self._idle_since
        if idle is not None and idle >= timeout:
            self.transport.close()
            return
        # Busy (a request under way: its own timers run) or idle for less than the timeout.
        wait = timeout if idle is None else timeout - idle
        self._idle_timer = self.loop.call_later(wait, self._idle_timeout)

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
    return ServerConfig(app, HttpLimits.from_settings(settings), proxies, **options)
