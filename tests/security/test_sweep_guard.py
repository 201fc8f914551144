"""The sweep guard blocks MAC sweeps, never an office: 30 phones behind one NAT address boot
with their usual generic requests and all get their files; a sweep of 1,000 MAC names from
one address is blocked after at most 20 distinct unknown devices; a phone with its own
credentials is still served from a blocked address; blocks are listed and lifted by command.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from liveserve import Stack, serve_stack
from typer.testing import CliRunner

from provisioner.cli.app import app
from provisioner.documents.validate import check_text
from provisioner.orders.service import OrdersService
from provisioner.render.engine import Renderer
from provisioner_lab.phones import Phone

ORDER = "WT-2026-007030"
OFFICE = 30  # phones behind one address


def _office_order() -> str:
    """An Office Maxi whose 30 desk phones all sit behind the office router's address."""
    doc = {
        "order": ORDER,
        "customer": {"name": "Studio Trenta S.r.l.", "vat": "IT01234567897"},
        "plan": "office_maxi",
        "lines": 4,
        "numbers": {"gnr": [{"first": "+390510000100", "last": "+390510000199"}]},
        "sites": [{"id": "bologna", "address": "Via Indipendenza 1, Bologna BO",
                   "connectivity": "fttc"}],
        "extensions": [
            {"number": f"+3905100001{i:02d}", "short": 100 + i, "type": "standard",
             "name": f"Scrivania {i}", "site": "bologna"}
            for i in range(OFFICE)
        ],
        "devices": [{"model": "iad", "site": "bologna", "mac": "00:1d:73:d0:00:01"}]
        + [
            {"model": "alcatel-temporis-ip150", "mac": f"00:80:f0:d0:00:{i:02x}",
             "extension": 100 + i}
            for i in range(OFFICE)
        ],
    }  # fmt: skip
    return yaml.safe_dump(doc, sort_keys=False)


@pytest.fixture
def office(inventory: OrdersService, tmp_path: Path) -> Iterator[Stack]:
    checked = check_text(_office_order())
    assert checked.ok and checked.document is not None, checked.lines()
    inventory.apply(checked.document, actor="test")
    inventory.arm(ORDER, 60, actor="test")
    root = tmp_path / "tftp_root"
    root.mkdir()
    (root / "IP150.img").write_bytes(b"\x7fFIRMWARE" * 100)  # one model's firmware is there
    with serve_stack(inventory, root, api=True) as stack:
        yield stack


def _phones(stack: Stack) -> list[Phone]:
    return [
        Phone(f"00:80:f0:d0:00:{i:02x}", tftp_port=stack.tftp_port, http_port=stack.http_port,
              model="alcatel-temporis-ip150")
        for i in range(OFFICE)
    ]  # fmt: skip


def test_thirty_phones_behind_one_address_boot_with_their_generic_requests_and_are_served(
    office: Stack,
) -> None:
    renderer = Renderer(office.inventory.settings, office.inventory)
    phones = _phones(office)
    asked = 0
    for protocol in ("tftp", "http"):
        for phone in phones:
            phone.file = None  # a cold boot: no credentials yet, asks like a new box
            asked += len(phone.boot_names())
            assert phone.ask_generic(protocol) == ["IP150.img"]
            phone.fetch(protocol)
            assert phone.data == renderer.files_for_mac(phone.mac)[phone.filename]
    assert asked >= 2 * OFFICE * 3  # far past the 20 that would have blocked the office
    assert office.service.guard.blocked_sources() == []
    office.service.flush()
    rows = office.inventory.status(ORDER)
    assert sum(r.state == "fetched" for r in rows) == OFFICE


def test_a_sweep_of_a_thousand_macs_is_blocked_within_twenty_unknown_devices(
    office: Stack,
) -> None:
    limit = office.inventory.settings.sweep_max_misses
    assert limit == 20
    answers = []
    with httpx.Client(base_url=office.http) as c:
        for i in range(1000):
            answers.append(c.get(f"/0080f0e0{i:04x}.cfg").status_code)
    first_block = answers.index(429)
    assert first_block <= 20, answers[:25]  # the 21st name at the latest is blocked
    assert set(answers[:first_block]) == {401} and set(answers[first_block:]) == {429}
    # Asking again and again for one unknown name (a foreign phone's retries) is not a sweep.
    assert CliRunner().invoke(app, ["unblock", "127.0.0.1"]).exit_code == 0
    office.settle()
    with httpx.Client(base_url=office.http) as c:
        again = {c.get("/0080f0eeeeee.cfg").status_code for _ in range(100)}
    assert again == {401}


def test_a_phone_with_its_own_credentials_is_served_from_a_blocked_address(
    office: Stack,
) -> None:
    phone = _phones(office)[0]
    phone.fetch("http")  # installs its per-device credentials
    assert phone.file is not None and phone.file.prov_user
    with httpx.Client(base_url=office.http) as c:
        for i in range(30):
            c.get(f"/0080f0e0{i:04x}.cfg")
        assert c.get(f"/{phone.filename}").status_code == 429  # no credentials: blocked
    phone.fetch("http")  # with them: served
    renderer = Renderer(office.inventory.settings, office.inventory)
    assert phone.data == renderer.files_for_mac(phone.mac)[phone.filename]


def test_blocks_are_listed_shown_in_status_and_lifted_by_command_and_api(
    office: Stack,
) -> None:
    phone = _phones(office)[1]
    with httpx.Client(base_url=office.http) as c:
        for i in range(25):
            c.get(f"/0080f0e0{i:04x}.cfg")
        assert c.get(f"/{phone.filename}").status_code == 429
    office.service.flush()
    runner = CliRunner()
    listed = runner.invoke(app, ["blocks"])
    assert listed.exit_code == 0 and "127.0.0.1" in listed.output, listed.output
    shown = runner.invoke(app, ["status", ORDER])
    assert shown.exit_code == 0
    assert "source 127.0.0.1 is blocked" in shown.output, shown.output
    assert "provisioner unblock 127.0.0.1" in shown.output
    assert "(last from 127.0.0.1" in shown.output or "refused" in shown.output

    # The NOC lifts it through the API; every server answers the source again.
    from provisioner.store import tokens

    with office.inventory.db.write() as s:
        _, token = tokens.create(s, "noc", name="noc-test")
    auth = {"authorization": f"Bearer {token}"}
    with httpx.Client(base_url=office.http, headers=auth) as c:
        assert [b["source"] for b in c.get("/api/v1/blocks").json()["items"]] == ["127.0.0.1"]
        assert c.delete("/api/v1/blocks/127.0.0.1").status_code == 200
        assert c.delete("/api/v1/blocks/127.0.0.1").status_code == 404
    office.settle()
    assert office.service.guard.blocked_sources() == []
    phone.fetch("tftp")
    assert phone.data
    again = runner.invoke(app, ["unblock", "127.0.0.1"])
    assert again.exit_code == 1 and "not blocked" in again.output


def test_a_block_made_by_the_command_line_side_is_honoured_by_the_server(
    office: Stack, inventory: OrdersService
) -> None:
    """Blocks live in the store: a second server (here: the store itself) makes one, this
    server honours it at its next look, and lifts it when it is lifted."""
    from datetime import timedelta

    from provisioner.store.models import SourceBlock, utcnow

    with inventory.db.write() as s:
        now = utcnow()
        s.add(SourceBlock(source="127.0.0.9", blocked_at=now, until=now + timedelta(minutes=5),
                          protocol="tftp", names=20))  # fmt: skip
    office.settle()
    assert office.service.fetch("IP150.img", "127.0.0.9", "http").outcome == "blocked"
    result = CliRunner().invoke(app, ["unblock", "127.0.0.9"])
    assert result.exit_code == 0, result.output
    office.settle()
    assert office.service.fetch("IP150.img", "127.0.0.9", "http").outcome == "served"


@pytest.mark.skipif(not shutil.which("curl"), reason="needs curl")
def test_unblock_refuses_what_is_not_an_address(office: Stack) -> None:
    result = CliRunner().invoke(app, ["unblock", "not-an-ip"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == ["error: not-an-ip: not an IP address"]
