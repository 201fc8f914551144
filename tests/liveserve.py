"""What ``provisioner serve`` runs, in the test process: the provisioning service, TFTP and
the device HTTP app (optionally with the REST API mounted, as ``serve`` does) on free loopback
ports. Shared by the serving, security and SIP end-to-end tests.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livehttp import LiveServer

from provisioner.serving.http import DeviceHttpApp
from provisioner.serving.stack import build_service, tftp_service


@dataclass
class Stack:
    inventory: Any
    service: Any
    tftp_port: int
    http_port: int
    tftp_root: Path
    rest: Any = None  # the REST API's application, when mounted

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def settle(self) -> None:
        """Make the server take every store change so far now (it follows them on its own
        within a fraction of a second; tests that are not about that timing call this)."""
        self.service.refresh()


@contextlib.contextmanager
def serve_stack(inventory: Any, tftp_root: Path, *, api: bool = False) -> Iterator[Stack]:
    service = build_service(inventory, tftp_root)
    rest = None
    if api:
        from provisioner.api.app import create_app

        rest = create_app(inventory.settings, inventory)
    tftp = tftp_service(service, "127.0.0.1", 0)
    tftp_port = tftp.start()
    try:
        with LiveServer(DeviceHttpApp(service, rest)) as server:
            yield Stack(inventory, service, tftp_port, server.port, tftp_root, rest)
    finally:
        tftp.stop()
        service.close()
