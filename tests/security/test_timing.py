"""Timing does not tell real devices from unknown names: an unknown MAC, a known device bound
to another source (a refused claim) and a known device outside its window are decided in
memory and cost the same; the first probe after an order write costs what the others do
(nothing renders on the request path).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from liveserve import Stack, serve_stack

from provisioner.orders.service import OrdersService

BOUND_ELSEWHERE = "0080f0000002.cfg"  # phone-201 of WT-2026-000123, claimed by another box
UNARMED = "0080f0200001.cfg"  # a phone of WT-2026-000104, never armed
UNKNOWN = [f"0080f0ee00{i:02x}.cfg" for i in range(5)]  # five names no order has
TRIES = 200


@pytest.fixture
def stack(sample_inventory: OrdersService, tmp_path: Path) -> Iterator[Stack]:
    sample_inventory.arm("WT-2026-000123", 60, actor="test")
    root = tmp_path / "tftp_root"
    root.mkdir()
    with serve_stack(sample_inventory, root) as st:
        st.service.warm()
        # Another box (another source) fetched phone-201 first: it is bound there.
        assert st.service.fetch(BOUND_ELSEWHERE, "127.0.0.77", "http").outcome == "served"
        yield st


def _timed(c: httpx.Client, name: str) -> float:
    t = time.perf_counter()
    r = c.get(f"/{name}")
    elapsed = time.perf_counter() - t
    assert r.status_code == 401  # the same answer for all three
    return elapsed


def test_unknown_refused_and_unarmed_names_cost_the_same(stack: Stack) -> None:
    kinds = {"unknown": [], "refused-known": [], "unarmed-known": []}  # type: dict[str, list[float]]
    with httpx.Client(base_url=stack.http) as c:
        for name in (UNKNOWN[0], BOUND_ELSEWHERE, UNARMED):  # warm the connection and paths
            for _ in range(20):
                _timed(c, name)
        for i in range(TRIES):
            kinds["unknown"].append(_timed(c, UNKNOWN[i % len(UNKNOWN)]))
            kinds["refused-known"].append(_timed(c, BOUND_ELSEWHERE))
            kinds["unarmed-known"].append(_timed(c, UNARMED))
    medians = {k: statistics.median(v) for k, v in kinds.items()}
    low, high = min(medians.values()), max(medians.values())
    shown = ", ".join(f"{k} {v * 1000:.3f} ms" for k, v in medians.items())
    print(f"medians over {TRIES} interleaved tries: {shown}")  # pytest -s shows the figure
    assert high < low * 1.2, f"medians differ by more than 20 %: {shown}"
    # Nothing here is a sweep: five unknown names, asked again and again.
    assert stack.service.guard.blocked_sources() == []


def test_the_first_probe_after_an_order_write_costs_what_the_others_do(
    stack: Stack, sample_inventory: OrdersService
) -> None:
    steady: list[float] = []
    first: list[float] = []
    with httpx.Client(base_url=stack.http) as c:
        for _ in range(20):
            _timed(c, BOUND_ELSEWHERE)
        for _ in range(15):
            steady.extend(_timed(c, BOUND_ELSEWHERE) for _ in range(10))
            # A write to the probed device's order: the server reloads its published files.
            sample_inventory.rotate("WT-2026-000123", [205], actor="test")
            first.append(_timed(c, BOUND_ELSEWHERE))
            stack.settle()
    # Rendering this order on the request path would cost 20 ms and more (it did: 25 ms);
    # what is left is noise of the write that just ran in this same process: its garbage
    # collection and its threads hold the interpreter for a slice (5 ms by default). On a
    # busy machine that noise reached 4.6 ms (first 5.9 ms, steady 1.3 ms), so the bound
    # sits between it and a render.
    assert statistics.median(first) < statistics.median(steady) + 0.008, (
        f"first probes {statistics.median(first) * 1000:.3f} ms, "
        f"steady {statistics.median(steady) * 1000:.3f} ms"
    )
