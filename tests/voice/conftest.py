"""Fixtures of the resync tests: a stand-in registrar (``tests/fakeregistrar.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import fakeregistrar
import pytest
from fakeregistrar import FakeRegistrar, Policy


@pytest.fixture
def registrar() -> Iterator[Callable[[Policy], FakeRegistrar]]:
    """``registrar(policy)`` starts one on 127.0.0.1 (a free port); stopped after the test."""
    started: list[FakeRegistrar] = []

    def start(policy: Policy) -> FakeRegistrar:
        fake = fakeregistrar.start(policy)
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fakeregistrar.stop(fake)
