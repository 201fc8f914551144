"""An ASGI app under a real uvicorn on 127.0.0.1 (a free port), in a thread of the test process.

Shared by the serving, REST API, push-job and SIP end-to-end tests (importable from any test
directory: pytest puts ``tests/`` on ``sys.path`` for the root conftest). The server is
configured like every listener of the product (``provisioner.serving.httpserver``), limits included.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any


class LiveServer:
    """``with LiveServer(app) as server:`` then ``server.url`` / ``server.port``.

    ``settings`` (default: the defaults) gives the HTTP limits and the trusted proxies;
    ``options`` go to uvicorn's configuration (``ssl_certfile``, ...).
    """

    def __init__(self, app: Any, settings: Any = None, **options: Any):
        import uvicorn

        from provisioner.serving.httpserver import server_config
        from provisioner.settings import Settings

        # IPPROTO_TCP, as uvicorn's own sockets: asyncio sets TCP_NODELAY only on those, and
        # without it every keep-alive answer written in two parts waits ~40 ms (Nagle).
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        config = server_config(app, settings or Settings(), **{"lifespan": "off", **options})
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
