"""The audit log tells what devices really got, and a flood cannot grow it: a TFTP transfer is
audited as served when its last block is acknowledged and as abandoned when the client goes
away; static files (firmware) and refusals are coalesced into one row per source, action and
minute, however many requests came.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from provisioner.orders.service import OrdersService
from provisioner.serving.stack import build_service, tftp_service
from provisioner.store.models import AuditEvent

FIRMWARE = "IP701G.img"
CURL = shutil.which("curl")
FLOOD = 2000


@pytest.fixture
def tftp(sample_inventory: OrdersService, tmp_path: Path) -> Iterator[tuple[object, int]]:
    root = tmp_path / "tftp_root"
    root.mkdir()
    (root / FIRMWARE).write_bytes(b"\x7fFIRMWARE" * 300)  # 2,700 bytes: six blocks
    service = build_service(sample_inventory, root)
    # Short retransmission so an abandoned transfer ends within the test (1 s x 2).
    server = tftp_service(service, "127.0.0.1", 0, timeout=1.0, retries=2)
    port = server.start()
    try:
        yield service, port
    finally:
        server.stop()
        service.close()


def _rows(inv: OrdersService, *actions: str) -> list[AuditEvent]:
    with inv.db.read() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.action.in_(actions))))


def _requests(rows: list[AuditEvent]) -> int:
    return sum(json.loads(r.detail)["requests"] for r in rows)


def test_a_flood_of_unacknowledged_requests_leaves_a_row_or_two_not_thousands(
    tftp: tuple[object, int], sample_inventory: OrdersService
) -> None:
    service, port = tftp
    socks = []
    try:
        for _ in range(FLOOD):  # each RRQ from its own port, never acknowledged
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            s.sendto(b"\x00\x01" + FIRMWARE.encode() + b"\x00octet\x00", ("127.0.0.1", port))
            socks.append(s)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            service.flush()  # type: ignore[attr-defined]
            if _requests(_rows(sample_inventory, "static.abandoned")) >= FLOOD:
                break
            time.sleep(0.5)
    finally:
        for s in socks:
            s.close()
    abandoned = _rows(sample_inventory, "static.abandoned")
    assert _requests(abandoned) == FLOOD
    assert len(abandoned) <= 2  # one per minute (the flood may straddle a minute)
    assert _rows(sample_inventory, "static.served", "file.served") == []  # nothing was served


@pytest.mark.skipif(not CURL, reason="needs curl (apt-get install curl)")
def test_completed_transfers_are_audited_served_once_per_source_and_minute(
    tftp: tuple[object, int], sample_inventory: OrdersService
) -> None:
    service, port = tftp
    assert CURL
    for _ in range(5):
        got = subprocess.run([CURL, "-s", f"tftp://127.0.0.1:{port}/{FIRMWARE}"],
                             capture_output=True, timeout=30, check=False)  # fmt: skip
        assert got.returncode == 0 and got.stdout == b"\x7fFIRMWARE" * 300
    service.flush()  # type: ignore[attr-defined]
    served = _rows(sample_inventory, "static.served")
    assert _requests(served) == 5 and len(served) <= 2
    detail = json.loads(served[0].detail)
    assert detail["source"] == "127.0.0.1" and FIRMWARE in detail["files"]


@pytest.mark.skipif(not CURL, reason="needs curl (apt-get install curl)")
def test_a_device_file_is_audited_when_its_transfer_completes(
    tftp: tuple[object, int], sample_inventory: OrdersService
) -> None:
    service, port = tftp
    assert CURL
    sample_inventory.arm("WT-2026-000123", 30, actor="test")
    # A client that asks and walks away: the transfer is abandoned, not served.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.sendto(b"\x00\x010080f0000001.cfg\x00octet\x00", ("127.0.0.1", port))
        s.settimeout(5)
        assert s.recvfrom(600)[0][:2] == b"\x00\x03"  # the first block came
    time.sleep(2.5)  # 1 s x 2 retransmissions, then the server gives up
    ok = subprocess.run([CURL, "-s", f"tftp://127.0.0.1:{port}/0080f0000001.cfg"],
                        capture_output=True, timeout=30, check=False)  # fmt: skip
    assert ok.returncode == 0 and ok.stdout
    service.flush()  # type: ignore[attr-defined]
    actions = [r.action for r in _rows(sample_inventory, "file.served", "file.abandoned")]
    assert actions == ["file.abandoned", "file.served"]


def test_refusals_of_a_known_device_are_coalesced(
    tftp: tuple[object, int], sample_inventory: OrdersService
) -> None:
    service, _ = tftp
    for _ in range(500):  # the window is closed: every fetch is refused
        assert service.fetch("0080f0000001.cfg", "127.0.0.5", "http").outcome == "not_found"  # type: ignore[attr-defined]
    service.flush()  # type: ignore[attr-defined]
    refused = _rows(sample_inventory, "file.refused")
    assert _requests(refused) == 500 and len(refused) <= 2
    assert {r.device for r in refused} == {"phone-200"}


def test_a_device_fetching_its_file_in_a_loop_adds_to_one_row_per_minute(
    tftp: tuple[object, int], sample_inventory: OrdersService
) -> None:
    service, _ = tftp
    sample_inventory.arm("WT-2026-000123", 30, actor="test")
    for i in range(500):  # a phone in a reboot loop, or a client with its own credentials
        assert service.fetch("0080f0000001.cfg", "127.0.0.5", "http").outcome == "served"  # type: ignore[attr-defined]
        if i % 100 == 0:
            service.flush()  # type: ignore[attr-defined]  # across several batches
    assert service.fetch("0080f0000002.cfg", "127.0.0.6", "http").outcome == "served"  # type: ignore[attr-defined]
    service.flush()  # type: ignore[attr-defined]
    served = _rows(sample_inventory, "file.served")
    loop = [r for r in served if r.device == "phone-200"]
    # One row a minute (two if the loop ran across a minute's end), with every request in it.
    assert 1 <= len(loop) <= 2 and sum(json.loads(r.detail).get("requests", 1) for r in loop) == 500
    detail = json.loads(loop[0].detail)
    assert detail["file"] == "0080f0000001.cfg" and detail["source"] == "127.0.0.5"
    assert len(detail["sha256"]) == 64
    other = [json.loads(r.detail) for r in served if r.device == "phone-201"]
    assert [d["file"] for d in other] == ["0080f0000002.cfg"] and "requests" not in other[0]
