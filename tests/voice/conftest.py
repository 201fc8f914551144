"""Fixtures of the resync tests: a stand-in registrar (``fakeregistrar``)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest
from fakeregistrar import FakeRegistrar, Policy


@pytest.fixture
def registrar() -> Iterator[Callable[[Policy], FakeRegistrar]]:
    """``registrar(policy)`` starts one on 127.0.0.1 (a free port); stopped after the test."""
    started: list[tuple[FakeRegistrar, threading.Thread]] = []

    def start(policy: Policy) -> FakeRegistrar:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.2)
        fake = FakeRegistrar(sock, policy)

        t = threading.Thread(target=fake.serve, daemon=True)
        t.start()
        started.append((fake, t))
        return fake

    yield start
    for fake, t in started:
        fake._stop = True
        t.join(2)
        fake.sock.close()
