"""The API the serving layer calls: files_for_mac, lookup, render_order."""

from __future__ import annotations

import time

from sqlalchemy import select

from provisioner.render.engine import Renderer
from provisioner.store.models import Order


def test_files_for_mac_is_what_the_device_fetches(renderer: Renderer) -> None:
    files = renderer.files_for_mac("00-80-F0-00-00-01")
    assert sorted(files) == ["0080f0000001.cfg", "phonebook-0080f0000001.xml"]
    assert all(isinstance(v, bytes) for v in files.values())
    iad = renderer.files_for_mac("00:1d:73:a0:00:01")
    assert list(iad) == ["001d73a00001.cfg"]  # the push-only .cli is never fetched
    assert renderer.files_for_mac("00:80:f0:99:99:99") == {}
    assert renderer.files_for_mac("b0:c5:54:00:00:01") == {}  # a switch fetches nothing


def test_lookup_names_the_device(renderer: Renderer) -> None:
    found = renderer.lookup("0080f0000001.cfg")
    assert found is not None
    key, data = found
    assert (key.order_id, key.device_id, key.mac) == (
        "WT-2026-000123",
        "phone-200",
        "00:80:f0:00:00:01",
    )
    assert data == renderer.files_for_mac("00:80:f0:00:00:01")["0080f0000001.cfg"]
    assert renderer.lookup("/phonebook-0080f0000001.xml") is not None  # TFTP's leading /
    for nobody in (
        "0080f0999999.cfg",  # unknown MAC
        "0080F0000001.cfg",  # not how the phone spells it
        "iad-milano.cli",  # pushed, never served
        "sw-milano.setplan.yaml",
        "../etc/passwd",
        "0180f0000001.cfg",  # multicast: no device's
        "",
    ):
        assert renderer.lookup(nobody) is None, nobody


def test_cancelled_order_serves_nothing(renderer: Renderer, sample_inventory) -> None:  # type: ignore[no-untyped-def]
    with sample_inventory.db.write() as s:
        order = s.scalar(select(Order).where(Order.order_id == "WT-2026-000123"))
        order.state = "cancelled"
    assert renderer.files_for_mac("00:80:f0:00:00:01") == {}
    assert renderer.lookup("0080f0000001.cfg") is None
    assert renderer.render_order("WT-2026-000123")  # the NOC can still look


def test_render_order_files(renderer: Renderer) -> None:
    files = renderer.render_order("WT-2026-000123")
    f = files["0080f0000002.cfg"]
    assert (f.name, f.device_id, f.mac) == ("0080f0000002.cfg", "phone-201", "00:80:f0:00:00:02")
    assert len(f.secrets) == 3  # SIP, provisioning and admin password
    assert all(s.encode() in f.data for s in f.secrets)
    assert b"********" in f.masked()
    assert not files["phonebook-0080f0000002.xml"].secrets


def test_largest_sample_order_renders_well_under_a_second(renderer: Renderer) -> None:
    renderer.render_order("WT-2026-000123")  # warm: templates compiled once per process
    start = time.perf_counter()
    renderer.render_order("WT-2026-000123")
    # Generous bound (shared CI machines); measured ~0.07 s. The benchmark is lab/bench_render.py.
    assert time.perf_counter() - start < 1.0


def test_push_payload_is_what_the_pusher_applies(renderer: Renderer) -> None:
    method, f = renderer.push_payload("WT-2026-000123", "sw-roma") or ("", None)
    assert method == "snmp" and f is not None and f.name == "sw-roma.setplan.yaml"
    method, f = renderer.push_payload("WT-2026-000102", "iad-torino") or ("", None)
    assert method == "ssh" and f is not None and f.name == "iad-torino.cli"  # planned: no MAC
    assert f.data.startswith(b"set ")
    assert renderer.push_payload("WT-2026-000123", "phone-200") is None
