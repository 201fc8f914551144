"""A source blocked for sweeping is told when to come back: ``Retry-After`` is the time left
on its block (the ``sweep_block_seconds`` setting for a fresh one), never a fixed number."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from liveserve import Stack, serve_stack

from provisioner.orders.service import OrdersService
from provisioner.settings import load_settings
from provisioner.store.models import SourceBlock, utcnow

CURL = shutil.which("curl")
BLOCK_SECONDS = 120
pytestmark = pytest.mark.skipif(not CURL, reason="needs curl")


@pytest.fixture
def stack(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    monkeypatch.setenv("PROVISIONER_SWEEP_BLOCK_SECONDS", str(BLOCK_SECONDS))
    inventory = OrdersService(load_settings())
    root = tmp_path / "tftp_root"
    root.mkdir()
    try:
        with serve_stack(inventory, root) as s:
            yield s
    finally:
        inventory.db.dispose()


def _answers(source: str, urls: list[str]) -> list[tuple[int, str]]:
    """(status, Retry-After) of each URL fetched by curl from ``source``."""
    assert CURL
    done = subprocess.run(
        [CURL, "-s", "--max-time", "10", "--interface", source,
         "-w", "%{http_code} %header{retry-after}\\n",
         *(arg for url in urls for arg in ("-o", "/dev/null", url))],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    out = []
    for line in done.stdout.splitlines():
        status, _, retry = line.partition(" ")
        out.append((int(status), retry.strip()))
    return out


def test_a_fresh_block_says_retry_after_the_block_setting(stack: Stack) -> None:
    limit = stack.inventory.settings.sweep_max_misses
    sweep = [f"{stack.http}/0080f0{n:06x}.cfg" for n in range(0xB00, 0xB00 + limit + 3)]
    answers = _answers("127.0.0.5", sweep)
    blocked = [retry for status, retry in answers if status == 429]
    assert len(blocked) >= 3, answers
    assert all(BLOCK_SECONDS - 10 < int(retry) <= BLOCK_SECONDS for retry in blocked), blocked


def test_a_block_made_by_another_server_says_the_time_left_on_it(stack: Stack) -> None:
    with stack.inventory.db.write() as s:
        now = utcnow()
        s.add(SourceBlock(source="127.0.0.6", blocked_at=now - timedelta(minutes=25),
                          until=now + timedelta(minutes=5), protocol="tftp", names=20))  # fmt: skip
    stack.settle()
    [(status, retry)] = _answers("127.0.0.6", [f"{stack.http}/0080f0000c01.cfg"])
    assert status == 429
    assert 280 < int(retry) <= 300
