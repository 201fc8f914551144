"""Zero-touch serving with real clients on loopback: curl (tftp://, http://), tftp-hpa.

The security model of DESIGN.md §5: enrollment windows, binding to the first source,
per-device credentials, identical answers for unknown and refused names, sweep blocking.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from liveserve import Stack, serve_stack
from sqlalchemy import select

from provisioner.orders.service import OrdersService
from provisioner.render.engine import Renderer
from provisioner.serving.stack import build_service
from provisioner.store.models import AuditEvent

PHONE_MAC = "00:80:f0:00:00:01"  # phone-200 of WT-2026-000123
PHONE_FILE = "0080f0000001.cfg"
OTHER_MAC = "00:80:f0:00:00:02"
OTHER_FILE = "0080f0000002.cfg"
CURL = shutil.which("curl")
TFTP = shutil.which("tftp")


@pytest.fixture
def served(sample_inventory: OrdersService, tmp_path: Path) -> Iterator[Stack]:
    root = tmp_path / "tftp_root"
    root.mkdir()
    (root / "IP701G.img").write_bytes(b"\x7fFIRMWARE" * 1000)
    with serve_stack(sample_inventory, root) as stack:
        yield stack


def _render(inv: OrdersService, mac: str, name: str) -> bytes:
    return Renderer(inv.settings, inv).files_for_mac(mac)[name]


def _curl(url: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    assert CURL, "curl is installed by the test command"
    return subprocess.run([CURL, "-s", "--max-time", "10", *args, url], capture_output=True,
                          timeout=30, check=False)  # fmt: skip


@pytest.mark.skipif(not CURL or not TFTP, reason="needs curl and tftp-hpa (apt-get install)")
def test_armed_device_gets_exactly_the_rendered_bytes(served: Stack, tmp_path: Path) -> None:
    inv = served.inventory
    expected = _render(inv, PHONE_MAC, PHONE_FILE)
    assert b"[ account ]" in expected or b"account" in expected
    inv.arm("WT-2026-000123", 30, actor="test")
    got = _curl(f"tftp://127.0.0.1:{served.tftp_port}/{PHONE_FILE}")
    assert got.returncode == 0, got.stderr
    assert got.stdout == expected
    out = tmp_path / "hpa.cfg"
    hpa = subprocess.run([str(TFTP), "127.0.0.1", str(served.tftp_port), "-m", "binary", "-c",
                          "get", PHONE_FILE, str(out)], capture_output=True, timeout=30,
                         check=False)  # fmt: skip
    assert out.read_bytes() == expected, hpa.stdout + hpa.stderr
    http = _curl(f"{served.http}/{PHONE_FILE}", "-D", "-", "-o", str(tmp_path / "h.cfg"))
    assert b"200" in http.stdout.splitlines()[0]
    assert (tmp_path / "h.cfg").read_bytes() == expected
    etag = next(
        ln.split(b":", 1)[1].strip() for ln in http.stdout.splitlines()
        if ln.lower().startswith(b"etag:")
    )  # fmt: skip
    again = _curl(f"{served.http}/{PHONE_FILE}", "-o", "/dev/null", "-w", "%{http_code}",
                  "-H", f"If-None-Match: {etag.decode()}")  # fmt: skip
    assert again.stdout == b"304"
    served.service.flush()
    rows = {r.device_id: r for r in inv.status("WT-2026-000123")}
    assert rows["phone-200"].state == "fetched"
    assert rows["phone-200"].bound_source == "127.0.0.1"
    assert rows["phone-200"].last_hash == hashlib.sha256(expected).hexdigest()
    assert rows["phone-201"].state == "armed"


def test_unknown_and_unarmed_known_get_the_same_answer(served: Stack) -> None:
    with httpx.Client(base_url=served.http) as c:
        unknown = c.get("/0080f0abcdef.cfg")
        known = c.get(f"/{PHONE_FILE}")  # known MAC, no window, no credentials
    assert (unknown.status_code, unknown.content) == (known.status_code, known.content)
    assert known.status_code == 401
    assert "basic" in known.headers["www-authenticate"].lower()
    tftp_unknown = _tftp_error(served.tftp_port, "0080f0abcdef.cfg")
    tftp_known = _tftp_error(served.tftp_port, PHONE_FILE)
    assert tftp_unknown == tftp_known
    assert tftp_known[:4] == b"\x00\x05\x00\x01"


def _tftp_error(port: int, name: str) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(b"\x00\x01" + name.encode() + b"\x00octet\x00", ("127.0.0.1", port))
        data, _ = s.recvfrom(2048)
        return data


def test_credentials_from_the_first_file_allow_later_fetches(served: Stack) -> None:
    inv = served.inventory
    with inv.db.read() as s:
        order = inv.get(s, "WT-2026-000123")
        password = inv.secret(s, order, "device:phone-200", "provisioning_password")
    user = PHONE_FILE.removesuffix(".cfg")
    expected = _render(inv, PHONE_MAC, PHONE_FILE)
    assert password.encode() in expected, "the phone's own file installs its credentials"
    with httpx.Client(base_url=served.http) as c:
        ok = c.get(f"/{PHONE_FILE}", auth=(user, password))
        assert ok.status_code == 200 and ok.content == expected
        # Device A's credentials cannot fetch device B's file.
        other = c.get(f"/{OTHER_FILE}", auth=(user, password))
        assert other.status_code == 401
        wrong = c.get(f"/{PHONE_FILE}", auth=(user, "not-the-password"))
        assert wrong.status_code == 401


def test_second_claimant_is_refused_and_audited(served: Stack) -> None:
    inv = served.inventory
    inv.arm(PHONE_MAC, 30, actor="test")
    first = served.service.fetch(PHONE_FILE, "127.0.0.10", "http")
    assert first.outcome == "served"
    second = served.service.fetch(PHONE_FILE, "127.0.0.11", "http")
    assert second.outcome == "not_found"
    # The first box keeps working; after a re-arm a replacement box may claim it.
    assert served.service.fetch(PHONE_FILE, "127.0.0.10", "http").outcome == "served"
    inv.arm(PHONE_MAC, 30, actor="test")
    served.settle()
    assert served.service.fetch(PHONE_FILE, "127.0.0.11", "http").outcome == "served"
    served.service.flush()
    with inv.db.read() as s:
        rows = list(s.scalars(select(AuditEvent).where(AuditEvent.device == "phone-200")))
    assert "file.claim-refused" in [r.action for r in rows]
    # Three fetches: 127.0.0.10 twice (one row a minute, counting both), 127.0.0.11 once.
    served = [json.loads(r.detail) for r in rows if r.action == "file.served"]
    assert sorted(d["source"] for d in served) in (
        ["127.0.0.10", "127.0.0.11"],
        ["127.0.0.10", "127.0.0.10", "127.0.0.11"],  # the first two fell in two minutes
    )
    assert sum(d.get("requests", 1) for d in served) == 3


def test_sweep_is_blocked_while_a_real_device_is_served(served: Stack) -> None:
    inv = served.inventory
    inv.arm("WT-2026-000123", 30, actor="test")
    answers: list[int] = []

    async def sweep() -> None:
        # One source asks for 1,000 names in the phones' OUI.
        async with httpx.AsyncClient(base_url=served.http) as c:
            for i in range(1000):
                r = await c.get(f"/0080f0{0x100000 + i:06x}.cfg")
                answers.append(r.status_code)

    asyncio.run(sweep())
    limit = inv.settings.sweep_max_misses
    first_block = answers.index(429)
    assert first_block <= limit + 1, answers[: limit + 5]
    assert set(answers[first_block:]) == {429}
    # TFTP refuses the same source too ...
    assert served.service.fetch(PHONE_FILE, "127.0.0.1", "tftp").outcome == "blocked"
    # ... while a real device from another source still gets its file.
    real = served.service.fetch(PHONE_FILE, "127.0.0.2", "tftp")
    assert real.outcome == "served"
    assert real.data == _render(inv, PHONE_MAC, PHONE_FILE)
    served.service.flush()
    with inv.db.read() as s:
        blocked = s.scalars(select(AuditEvent).where(AuditEvent.action == "source.blocked")).all()
    assert len(blocked) == 1
    assert '"source": "127.0.0.1"' in blocked[0].detail


def test_static_firmware_served_and_traversal_refused(served: Stack, tmp_path: Path) -> None:
    canary = tmp_path / "canary.txt"
    canary.write_bytes(b"CANARY-outside-root")
    (served.tftp_root / "link").symlink_to(canary)
    fw = served.service.fetch("IP701G.img", "127.0.0.3", "tftp")
    assert fw.outcome == "served" and fw.data.startswith(b"\x7fFIRMWARE")
    with httpx.Client(base_url=served.http) as c:
        assert c.get("/IP701G.img").content == fw.data
        for name in ("../canary.txt", "link", "..%2fcanary.txt", "%2e%2e/canary.txt"):
            r = c.get("/" + name)
            assert b"CANARY" not in r.content
            assert r.status_code in (401, 404)


def test_firmware_copied_in_after_phones_asked_for_it_is_served_within_seconds(
    served: Stack,
) -> None:
    # Phones ask for their firmware at every boot; misses are remembered for a moment only.
    assert served.service.fetch("IP150-new.rom", "127.0.0.3", "http").outcome == "not_found"
    (served.tftp_root / "IP150-new.rom").write_bytes(b"\x7fNEWFIRMWARE")
    deadline = time.monotonic() + 5
    while served.service.fetch("IP150-new.rom", "127.0.0.3", "http").outcome != "served":
        assert time.monotonic() < deadline, "a firmware file copied in was not served in 5 s"
        time.sleep(0.1)
    (served.tftp_root / "IP150-new.rom").unlink()
    assert served.service.fetch("IP150-new.rom", "127.0.0.3", "http").outcome == "not_found"


def test_200_concurrent_fetches_of_distinct_devices(sample_inventory: OrdersService,
                                                    tmp_path: Path) -> None:  # fmt: skip
    """200 phones of a generated order fetch at once over TFTP and over HTTP: byte-identical."""
    import yaml

    from provisioner.documents.validate import check_text

    exts = [{"number": f"+3902{5550000 + i}", "short": 1000 + i, "type": "standard",
             "name": f"Ext {i}", "site": "hq"} for i in range(32)]  # fmt: skip
    inv = sample_inventory
    macs = []
    for o in range(7):
        doc = {
            "order": f"WT-LOAD-{o:04d}",
            "customer": {"name": "Carico S.r.l.", "vat": "IT05550000003"},
            "plan": "office_maxi", "lines": 8,
            "numbers": {"gnr": [{"first": "+39025550000", "last": "+39025550099"}]},
            "sites": [{"id": "hq", "address": "Via Carico 1, Milano", "connectivity": "fttc"}],
            "extensions": exts,
            "devices": [{"model": "iad", "site": "hq"}] + [
                {"model": "alcatel-temporis-ip150", "extension": 1000 + i,
                 "mac": f"00:80:f1:{o:02x}:00:{i:02x}"} for i in range(32)
            ],
        }  # fmt: skip
        checked = check_text(yaml.safe_dump(doc))
        assert checked.document is not None, checked.lines()
        inv.apply(checked.document)
        inv.arm(doc["order"], 30)
        macs += [f"00:80:f1:{o:02x}:00:{i:02x}" for i in range(32)]
    macs = macs[:200]
    renderer = Renderer(inv.settings, inv)
    rendered = {}
    for o in range(7):
        rendered.update(renderer.render_order(f"WT-LOAD-{o:04d}"))
    expected = {m: rendered[m.replace(":", "") + ".cfg"].data for m in macs}
    with serve_stack(inv, tmp_path) as stack:
        port = stack.tftp_port

        # Each device from its own source address (127.0.1.x): the first fetch binds it.
        def get(i_mac: tuple[int, str]) -> bool:
            i, mac = i_mac
            src = f"127.0.1.{i % 250 + 1}" if i < 250 else "127.0.2.1"
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((src, 0))
                s.settimeout(1.0)
                name = mac.replace(":", "") + ".cfg"
                server: tuple[str, int] = ("127.0.0.1", port)
                last = b"\x00\x01" + name.encode() + b"\x00octet\x00"
                s.sendto(last, server)
                data = b""
                block, retries = 1, 0
                while True:
                    try:
                        pkt, addr = s.recvfrom(600)
                    except TimeoutError:
                        # Like a real device: resend the last packet, a few times.
                        retries += 1
                        assert retries <= 8, f"{mac}: no answer"
                        s.sendto(last, server)
                        continue
                    assert pkt[:2] == b"\x00\x03", pkt
                    server = addr
                    last = b"\x00\x04" + pkt[2:4]
                    s.sendto(last, addr)
                    if int.from_bytes(pkt[2:4], "big") != block:
                        continue  # a retransmission of a block we have
                    data += pkt[4:]
                    block += 1
                    if len(pkt) - 4 < 512:
                        return data == expected[mac]

        with concurrent.futures.ThreadPoolExecutor(200) as pool:
            results = list(pool.map(get, enumerate(macs)))
        assert all(results) and len(results) == 200
        # HTTP, by credentials, 200 at once.
        creds = {}
        with inv.db.read() as s:
            for o in range(7):
                order = inv.get(s, f"WT-LOAD-{o:04d}")
                for d in order.devices:
                    if d.mac in expected:
                        creds[d.mac] = inv.secret(s, order, f"device:{d.device_id}",
                                                  "provisioning_password")  # fmt: skip

        async def http_all(port: int) -> list[bool]:
            limits = httpx.Limits(max_connections=200)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits,
                                         timeout=30) as c:  # fmt: skip

                async def one(mac: str) -> bool:
                    user = mac.replace(":", "")
                    auth = "Basic " + base64.b64encode(f"{user}:{creds[mac]}".encode()).decode()
                    r = await c.get(f"/{user}.cfg", headers={"authorization": auth})
                    return r.status_code == 200 and r.content == expected[mac]

                return list(await asyncio.gather(*(one(m) for m in macs)))

        assert all(asyncio.run(http_all(stack.http_port)))


def test_canary_secret_only_in_the_authorised_fetch(sample_inventory: OrdersService,
                                                    tmp_path: Path) -> None:  # fmt: skip
    """A planted secret is in the file the armed device fetches, and nowhere else: not in
    refused answers, not in the audit log (the whole suite's logs are checked in conftest)."""
    import uuid

    import yaml

    from provisioner.documents.validate import check_text

    inv = sample_inventory
    canary = f"CANARY-{uuid.uuid4().hex}"
    data = yaml.safe_load(Path("inventory/orders/WT-2026-000104.yaml").read_text())
    data["extensions"][0]["sip_password"] = canary  # extension 200: phone-200's account
    doc = check_text(yaml.safe_dump(data)).document
    assert doc is not None
    assert inv.apply(doc).status == "updated"
    service = build_service(inv, tmp_path)
    try:
        name = "0080f0200001.cfg"
        refused = service.fetch(name, "127.0.0.5", "http")
        assert refused.outcome == "not_found" and canary.encode() not in refused.data
        inv.arm("WT-2026-000104", 5)
        service.refresh()
        ok = service.fetch(name, "127.0.0.5", "tftp")
        assert ok.outcome == "served" and canary.encode() in ok.data
        other = service.fetch("0080f0200002.cfg", "127.0.0.6", "tftp")
        assert other.outcome == "served" and canary.encode() not in other.data
        service.flush()
    finally:
        service.close()
    with inv.db.read() as s:
        details = " ".join(e.detail for e in s.scalars(select(AuditEvent)))
    assert canary not in details


def test_warm_cache_and_only_changed_orders_are_reloaded(sample_inventory: OrdersService,
                                                        tmp_path: Path) -> None:  # fmt: skip
    inv = sample_inventory
    service = build_service(inv, tmp_path)

    def entry(mac: str) -> object:
        return service.index._loaded[service.index._identities[mac]][mac]

    try:
        assert service.warm() == 5  # six sample orders; WT-2026-000102 has no box bound yet
        before = {mac: entry(mac) for mac in (PHONE_MAC, "00:80:f0:20:00:01")}
        inv.arm("WT-2026-000104", 5)  # a write to one order ...
        service.refresh()  # (the follower thread may have been first)
        assert service.fetch("0080f0200001.cfg", "127.0.0.9", "tftp").outcome == "served"
        # ... reloads that order (now armed) and keeps the others' rendered files.
        assert entry(PHONE_MAC) is before[PHONE_MAC]
        assert entry("00:80:f0:20:00:01") is not before["00:80:f0:20:00:01"]
    finally:
        service.close()
