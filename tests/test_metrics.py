"""One metrics registry for the whole server: what devices fetch over TFTP and HTTP, and the
sources the sweep guard blocks, show in the ``/metrics`` of the same ``serve``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from liveserve import Stack, serve_stack

from provisioner.orders.service import OrdersService

CURL = shutil.which("curl")
PHONE_FILE = "0080f0000001.cfg"  # phone-200 of WT-2026-000123
pytestmark = pytest.mark.skipif(not CURL, reason="needs curl")


@pytest.fixture
def served(sample_inventory: OrdersService, tmp_path: Path) -> Iterator[Stack]:
    root = tmp_path / "tftp_root"
    root.mkdir()
    with serve_stack(sample_inventory, root, api=True) as stack:
        yield stack


def _curl(*args: str) -> bytes:
    assert CURL
    done = subprocess.run([CURL, "-s", "--max-time", "10", *args], capture_output=True,
                          timeout=30, check=False)  # fmt: skip
    return done.stdout


def _scrape(stack: Stack) -> dict[str, float]:
    text = _curl(f"{stack.http}/metrics").decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def _grew(before: dict[str, float], after: dict[str, float], sample: str) -> float:
    return after.get(sample, 0.0) - before.get(sample, 0.0)


def test_files_served_over_tftp_and_http_are_counted_in_the_servers_metrics(
    served: Stack,
) -> None:
    served.inventory.arm("WT-2026-000123", 30, actor="test")
    before = _scrape(served)
    assert _curl(f"tftp://127.0.0.1:{served.tftp_port}/{PHONE_FILE}")
    assert _curl(f"{served.http}/{PHONE_FILE}")
    _curl(f"{served.http}/0080f0000fff.cfg")  # nobody's file
    after = _scrape(served)
    for protocol in ("tftp", "http"):
        assert _grew(before, after, f'provisioner_files_served_total{{protocol="{protocol}"}}') == 1
        fetches = f'provisioner_fetches_total{{protocol="{protocol}",result="served"}}'
        assert _grew(before, after, fetches) == 1
    missed = 'provisioner_fetches_total{protocol="http",result="not_found"}'
    assert _grew(before, after, missed) == 1


def test_a_sweeping_source_blocked_is_counted_once(served: Stack) -> None:
    limit = served.inventory.settings.sweep_max_misses
    before = _scrape(served)
    sweep = [f"{served.http}/0080f0{n:06x}.cfg" for n in range(0xA00, 0xA00 + limit + 5)]
    _curl("--interface", "127.0.0.7", *sweep)
    after = _scrape(served)
    assert _grew(before, after, 'provisioner_blocked_sources_total{protocol="http"}') == 1
    assert _grew(before, after, 'provisioner_fetches_total{protocol="http",result="blocked"}') >= 4


def test_serving_counts_its_fetches_without_loading_the_rest_api(home: Path) -> None:
    """``serve --no-api`` needs no API code: the registry is the product's, not the API's."""
    script = """
import sys
from pathlib import Path
from provisioner.metrics import METRICS
from provisioner.orders.service import OrdersService
from provisioner.serving.stack import build_service
from provisioner.settings import load_settings

service = build_service(OrdersService(load_settings()), Path(sys.argv[1]))
service.fetch("0080f0000fff.cfg", "127.0.0.1", "http")
service.close()
print(METRICS.value("provisioner_fetches_total", protocol="http", result="not_found"))
print(sorted(m for m in sys.modules if m.startswith(("provisioner.api", "fastapi"))))
"""
    done = subprocess.run([sys.executable, "-c", script, str(home)], capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["1.0", "[]"]
