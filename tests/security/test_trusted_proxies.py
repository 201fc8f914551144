"""A request's source is its TCP peer unless that peer is a proxy listed in ``trusted_proxies``
(DESIGN.md §5, issue 11 item 8): a client cannot pick its own source with X-Forwarded-For to
dodge the sweep guard or to match a device bound to another address.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from livehttp import LiveServer
from typer.testing import CliRunner

from provisioner.cli.app import app as cli
from provisioner.orders.service import OrdersService
from provisioner.serving.http import DeviceHttpApp
from provisioner.serving.stack import build_service

ORDER = "WT-2026-000123"
PHONE_FILE = "0080f0000001.cfg"  # phone-200
FORGED = "10.9.9.9"


def _fetch_source(inventory: OrdersService, tmp_path: Path, trusted_proxies: str) -> str | None:
    """Arm the order, fetch the phone's file from 127.0.0.1 naming FORGED as the client, and
    return the source the device was bound to (the fetch path's view of who asked)."""
    settings = inventory.settings.model_copy(update={"trusted_proxies": trusted_proxies})
    root = tmp_path / "tftp_root"
    root.mkdir(exist_ok=True)
    service = build_service(inventory, root)
    try:
        inventory.arm(ORDER, 30, actor="test")
        with LiveServer(DeviceHttpApp(service), settings) as server:
            r = httpx.get(f"{server.url}/{PHONE_FILE}", headers={"X-Forwarded-For": FORGED})
        assert r.status_code == 200
        service.flush()
    finally:
        service.close()
    row = next(r for r in inventory.status(ORDER) if r.device_id == "phone-200")
    assert row.last_source == row.bound_source
    return row.bound_source


def test_by_default_x_forwarded_for_is_ignored(
    sample_inventory: OrdersService, tmp_path: Path
) -> None:
    assert sample_inventory.settings.trusted_proxies == ""
    assert _fetch_source(sample_inventory, tmp_path, "") == "127.0.0.1"


def test_a_proxy_not_on_the_list_is_not_believed(
    sample_inventory: OrdersService, tmp_path: Path
) -> None:
    assert _fetch_source(sample_inventory, tmp_path, "10.0.0.0/8, 192.0.2.1") == "127.0.0.1"


@pytest.mark.parametrize("trusted", ["127.0.0.1", "127.0.0.0/8"])
def test_a_listed_proxy_names_the_client(
    sample_inventory: OrdersService, tmp_path: Path, trusted: str
) -> None:
    assert _fetch_source(sample_inventory, tmp_path, trusted) == FORGED


@pytest.mark.parametrize("value", ["*", "proxy.example", "10.0.0.0/33"])
def test_a_trusted_proxy_that_is_not_an_address_is_refused_at_start(
    home: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("PROVISIONER_TRUSTED_PROXIES", value)
    result = CliRunner().invoke(cli, ["serve", "--host", "256.0.0.1"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"error: setting PROVISIONER_TRUSTED_PROXIES: {value!r} is not an address or network"
    ]
