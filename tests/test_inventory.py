"""The store: idempotent apply, export round trip, refused orders change nothing, binds that
race stay within the offer's limits (SQLite and PostgreSQL), secrets never in clear."""

from __future__ import annotations

import copy
import logging
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pgstore import fresh_database
from sqlalchemy import func, select
from typer.testing import CliRunner

from provisioner.cli.app import app
from provisioner.documents.validate import check_text
from provisioner.errors import BindRefused, OrderRejected
from provisioner.orders.service import OrdersService
from provisioner.settings import load_settings
from provisioner.store.models import AuditEvent, Device, Terminal

SAMPLES = Path("inventory/orders")


def _dump(db_path: Path) -> list[str]:
    """Every row of every table, as SQL text: 'the store's content'."""
    con = sqlite3.connect(db_path)
    try:
        return list(con.iterdump())
    finally:
        con.close()


def _db_file(home: Path) -> Path:
    return home / "provisioner.db"


def _run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def test_apply_twice_second_is_no_change_and_store_identical(home: Path) -> None:
    first = _run("apply", str(SAMPLES))
    assert first.exit_code == 0, first.output
    assert "created" in first.output
    before = _dump(_db_file(home))
    second = _run("apply", str(SAMPLES))
    assert second.exit_code == 0, second.output
    n = len(list(SAMPLES.glob("*.yaml")))
    assert second.output.count("unchanged (no change)") == n
    assert _dump(_db_file(home)) == before


def test_export_then_apply_is_a_no_op(home: Path, tmp_path: Path) -> None:
    assert _run("apply", str(SAMPLES)).exit_code == 0
    # A technician's bind must survive the round trip too.
    bound = _run("bind", "WT-2026-000123", "--mac", "00:80:f0:00:00:a9", "--extension", "209")
    assert bound.exit_code == 0, bound.output
    before = _dump(_db_file(home))
    for order in ("WT-2026-000101", "WT-2026-000104", "WT-2026-000123"):
        out = tmp_path / f"{order}.yaml"
        exported = _run("export", order, "--out", str(out))
        assert exported.exit_code == 0, exported.output
        assert check_text(out.read_text(), str(out)).ok
        again = _run("apply", str(out))
        assert again.exit_code == 0, again.output
        assert "unchanged (no change)" in again.output
    assert _dump(_db_file(home)) == before


def test_changed_document_updates_and_audits(inventory: OrdersService) -> None:
    text = (SAMPLES / "WT-2026-000104.yaml").read_text()
    doc = check_text(text).document
    assert doc is not None
    inventory.apply(doc, actor="test")
    data = yaml.safe_load(text)
    # Remove extension 203 and the DECT handset serving it; unbind the IP150 by dropping its MAC.
    data["extensions"] = [e for e in data["extensions"] if e["short"] != 203]
    data["devices"][4]["handsets"] = data["devices"][4]["handsets"][:1]
    del data["devices"][3]["mac"]
    changed = check_text(yaml.safe_dump(data, sort_keys=False))
    assert changed.ok, changed.lines()
    assert changed.document is not None
    result = inventory.apply(changed.document, actor="noc-anna")
    assert result.status == "updated"
    joined = "\n".join(result.changes)
    assert "extension 203 removed" in joined
    assert "unbound (mac removed from the document)" in joined
    with inventory.db.read() as s:
        order = inventory.get(s, "WT-2026-000104")
        assert 203 not in [e.short for e in order.extensions]
        phone = next(d for d in order.devices if d.device_id == "phone-201")
        assert phone.mac is None
        events = s.scalars(select(AuditEvent).where(AuditEvent.order_id == "WT-2026-000104")).all()
        assert [e.action for e in events] == ["order.created", "order.updated"]
        assert events[-1].actor == "noc-anna"
        assert "extension 203 removed" in events[-1].detail


def test_refused_order_leaves_store_exactly_as_it_was(home: Path, tmp_path: Path) -> None:
    assert _run("apply", str(SAMPLES)).exit_code == 0
    before = _dump(_db_file(home))
    # Valid on its own, but it claims a MAC that is another order's phone: refused in the store.
    data = yaml.safe_load((SAMPLES / "WT-2026-000104.yaml").read_text())
    data["devices"][3]["mac"] = "00:80:f0:00:00:01"  # phone-200 of WT-2026-000123
    f = tmp_path / "clash.yaml"
    f.write_text(yaml.safe_dump(data, sort_keys=False))
    result = _run("apply", str(f))
    assert result.exit_code == 1
    assert "devices[3].mac: 00:80:f0:00:00:01 is already device phone-200" in result.output
    after = _dump(_db_file(home))
    # Only the refusal's own audit event was added.
    added = [row for row in after if row not in before]
    assert len(added) == 1 and "order.refused" in added[0], added
    assert [row for row in before if row not in after] == []


# ---------------------------------------------------------------------- binds that race

RACE_ORDER: dict[str, Any] = {
    "order": "WT-RACE-0001",
    "customer": {"name": "Gara S.p.A.", "vat": "IT01234567897"},
    "plan": "office_maxi",
    "lines": 3,
    "numbers": {"gnr": [{"first": "+390212340000", "last": "+390212340099"}]},
    "sites": [{"id": "hq", "address": "Via Po 1, Torino", "connectivity": "fttc"}],
    "extensions": [
        {"number": f"+3902123400{i:02d}", "short": 100 + i,
         "type": "standard" if i < 4 else "operator", "name": f"Ext {i}", "site": "hq"}
        for i in range(10)
    ],
    "devices": [{"model": "iad", "site": "hq"}],
}  # fmt: skip
RACE_QUOTA = 4  # four standard extensions, six operator stations


def _race(inv: OrdersService, calls: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    ok: list[str] = []
    refused: list[str] = []
    barrier = threading.Barrier(len(calls))
    lock = threading.Lock()

    def worker(kw: dict[str, Any]) -> None:
        barrier.wait()
        try:
            done = inv.bind("WT-RACE-0001", model="alcatel-temporis-ip150", actor="race", **kw)
            with lock:
                ok.append(done.device_id)
        except BindRefused as exc:
            with lock:
                refused.append(str(exc))

    threads = [threading.Thread(target=worker, args=(kw,)) for kw in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return ok, refused


def _check_race(inv: OrdersService) -> None:
    doc = check_text(yaml.safe_dump(RACE_ORDER)).document
    assert doc is not None
    inv.apply(doc, actor="test")
    # 10 technicians bind 10 phones to 10 different extensions at once: the quota is 4.
    calls = [{"mac": f"00:80:f0:ee:00:{i:02x}", "extension": 100 + i} for i in range(10)]
    ok, refused = _race(inv, calls)
    assert len(ok) == RACE_QUOTA, (ok, refused)
    assert len(refused) == 10 - RACE_QUOTA
    assert all("at most 4" in r or "concurrent" in r for r in refused), refused
    # 6 technicians bind 6 boxes to one free extension... none is free any more: all refused.
    with inv.db.read() as s:
        count = s.scalar(select(func.count(Terminal.id)))
        assert count == RACE_QUOTA
        per_ext = s.execute(
            select(Terminal.extension_pk, func.count()).group_by(Terminal.extension_pk)
        ).all()
        assert all(n == 1 for _, n in per_ext)
        macs = s.scalars(select(Device.mac).where(Device.mac.is_not(None))).all()
        assert len(macs) == RACE_QUOTA


def _check_same_extension_race(inv: OrdersService) -> None:
    doc = check_text(yaml.safe_dump(RACE_ORDER)).document
    assert doc is not None
    inv.apply(doc, actor="test")
    calls = [{"mac": f"00:80:f0:dd:00:{i:02x}", "extension": 100} for i in range(8)]
    ok, refused = _race(inv, calls)
    assert len(ok) == 1, (ok, refused)
    assert len(refused) == 7


def test_bind_race_sqlite(inventory: OrdersService) -> None:
    _check_race(inventory)


def test_bind_race_same_extension_sqlite(inventory: OrdersService) -> None:
    _check_same_extension_race(inventory)


@pytest.fixture
def pg_inventory(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[OrdersService]:
    with fresh_database() as url:
        monkeypatch.setenv("PROVISIONER_DATABASE_URL", url)
        inv = OrdersService(load_settings())
        try:
            yield inv
        finally:
            inv.db.dispose()


@pytest.mark.postgres
def test_bind_race_postgres(pg_inventory: OrdersService) -> None:
    assert not pg_inventory.db.is_sqlite
    _check_race(pg_inventory)


@pytest.mark.postgres
def test_bind_race_same_extension_postgres(pg_inventory: OrdersService) -> None:
    _check_same_extension_race(pg_inventory)


@pytest.mark.postgres
def test_apply_twice_postgres(pg_inventory: OrdersService) -> None:
    doc = check_text((SAMPLES / "WT-2026-000123.yaml").read_text()).document
    assert doc is not None
    assert pg_inventory.apply(doc).status == "created"
    assert pg_inventory.apply(doc).status == "unchanged"


# ---------------------------------------------------------------------- bind rules


def test_bind_refusals(sample_inventory: OrdersService) -> None:
    inv = sample_inventory
    with pytest.raises(BindRefused, match="already device phone-200 of order WT-2026-000123"):
        inv.bind("WT-2026-000123", mac="00:80:f0:00:00:01", extension=210)
    with pytest.raises(BindRefused, match="already bound to 00:80:f0:00:00:02; unbind it first"):
        inv.bind("WT-2026-000123", mac="00:80:f0:00:00:77", extension=201)
    with pytest.raises(BindRefused, match="office_one takes no IP phones"):
        inv.bind("WT-2026-000102", mac="00:80:f0:00:00:78", extension=11,
                 model="alcatel-temporis-ip150")  # fmt: skip
    with pytest.raises(BindRefused, match="is identified by its serial"):
        inv.bind("WT-2026-000123", mac="00:80:f0:00:00:79", device_id="ont-milano")
    first = inv.bind("WT-2026-000102", mac="0c:4c:39:00:00:99", device_id="iad-torino")
    assert first.device_id == "iad-torino"
    assert first.touched.devices("WT-2026-000102") == {"iad-torino"}  # what publishing gets
    # Binding the same box again is harmless (nothing written, nothing touched); unbinding
    # makes the device planned again.
    again = inv.bind("WT-2026-000102", mac="0C-4C-39-00-00-99", device_id="iad-torino")
    assert again.device_id == "iad-torino" and again.touched.orders == {}
    inv.unbind("WT-2026-000102", device_id="iad-torino")
    with inv.db.read() as s:
        dev = inv.get(s, "WT-2026-000102").devices[0]
        assert dev.mac is None


# ---------------------------------------------------------------------- secrets


def test_canary_secret_never_shown_logged_or_stored_in_clear(
    home: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    canary = f"CANARY-{uuid.uuid4().hex}"
    data = yaml.safe_load((SAMPLES / "WT-2026-000104.yaml").read_text())
    data["extensions"][1]["sip_password"] = canary + "-sip"
    data["sites"][0]["pppoe_password"] = canary + "-ppp"
    data["devices"][0]["admin_password"] = canary + "-adm"
    data["devices"][1]["snmp_community"] = canary + "-snmp"
    f = tmp_path / "canary.yaml"
    f.write_text(yaml.safe_dump(data, sort_keys=False))
    outputs = []
    with caplog.at_level(logging.DEBUG):
        for args in (
            ["validate", str(f)],
            ["apply", str(f)],
            ["apply", str(f)],
            ["orders"],
            ["show", "WT-2026-000104"],
            ["export", "WT-2026-000104"],
            ["bind", "WT-2026-000104", "--mac", "00:80:f0:20:00:09", "--extension", "204",
             "--model", "alcatel-temporis-ip150"],
        ):  # fmt: skip
            result = _run(*args)
            assert result.exit_code == 0, result.output
            outputs.append(result.output)
    assert "unchanged" in outputs[2]
    everything = "\n".join(outputs) + "\n".join(r.getMessage() for r in caplog.records)
    assert "CANARY" not in everything
    for path in home.rglob("*"):
        if path.is_file() and path.name != "secret.key":
            assert canary.encode() not in path.read_bytes(), path
    # ... and yet it is stored: the key decrypts it.
    inv = OrdersService(load_settings())
    with inv.db.read() as s:
        order = inv.get(s, "WT-2026-000104")
        assert inv.secret(s, order, "extension:201", "sip_password") == canary + "-sip"


def test_generated_secrets_are_strong_and_stable(sample_inventory: OrdersService) -> None:
    inv = sample_inventory
    with inv.db.read() as s:
        order = inv.get(s, "WT-2026-000123")
        first = inv.secret(s, order, "extension:201", "sip_password")
    assert len(first) >= 22 and first.isalnum()
    doc = check_text((SAMPLES / "WT-2026-000123.yaml").read_text()).document
    assert doc is not None
    assert inv.apply(doc).status == "unchanged"
    with inv.db.read() as s:
        order = inv.get(s, "WT-2026-000123")
        assert inv.secret(s, order, "extension:201", "sip_password") == first
        other = inv.secret(s, order, "extension:202", "sip_password")
    assert other != first


def test_secret_key_file_is_private(sample_inventory: OrdersService, home: Path) -> None:
    key = home / "secret.key"
    assert key.exists()
    assert key.stat().st_mode & 0o777 == 0o600
    assert (home / "provisioner.db").stat().st_mode & 0o077 == 0


def test_wrong_key_is_one_clear_error(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _run("apply", str(SAMPLES / "WT-2026-000104.yaml")).exit_code == 0
    from cryptography.fernet import Fernet

    monkeypatch.setenv("PROVISIONER_SECRET_KEY", Fernet.generate_key().decode())
    data = yaml.safe_load((SAMPLES / "WT-2026-000104.yaml").read_text())
    data["extensions"][1]["sip_password"] = "a-new-password-1"
    doc = check_text(yaml.safe_dump(data)).document
    assert doc is not None
    inv = OrdersService(load_settings())
    with pytest.raises(Exception, match="does not decrypt with this key"):
        inv.apply(doc)


def test_terminal_limit_counts_binds_on_reapply(sample_inventory: OrdersService) -> None:
    """A document adding a terminal on top of the ones bound at the appointment is refused."""
    inv = sample_inventory
    inv.bind("WT-2026-000104", mac="00:80:f0:20:00:0a", extension=204,
             model="alcatel-temporis-ip150")  # fmt: skip
    data = yaml.safe_load((SAMPLES / "WT-2026-000104.yaml").read_text())
    data2 = copy.deepcopy(data)
    data2["devices"].append({"model": "alcatel-temporis-ip150", "id": "desk-204", "extension": 204})
    doc = check_text(yaml.safe_dump(data2)).document
    assert doc is not None
    with pytest.raises(OrderRejected, match="extension 204 already has terminal phone-204"):
        inv.apply(doc)
    # The same phone under the id the bind gave it is what the store holds already.
    data2["devices"][-1]["id"] = "phone-204"
    doc = check_text(yaml.safe_dump(data2)).document
    assert doc is not None
    assert inv.apply(doc).status == "unchanged"
    with inv.db.read() as s:
        dev = inv.find_device(s, "00:80:f0:20:00:0a")
        assert dev.device_id == "phone-204"


def test_swapping_dect_handsets_keeps_the_base(sample_inventory: OrdersService) -> None:
    """Slots follow the document; the base (its MAC, its credentials) stays the same device."""
    inv = sample_inventory
    with inv.db.read() as s:
        order = inv.get(s, "WT-2026-000104")
        before = inv.secret(s, order, "device:dect-catania", "provisioning_password")
    data = yaml.safe_load((SAMPLES / "WT-2026-000104.yaml").read_text())
    hs = data["devices"][4]["handsets"]
    hs[0]["extension"], hs[1]["extension"] = hs[1]["extension"], hs[0]["extension"]
    doc = check_text(yaml.safe_dump(data, sort_keys=False)).document
    assert doc is not None
    result = inv.apply(doc)
    assert result.status == "updated"
    assert "device dect-catania slot 1: extension 202 -> 203" in result.changes
    with inv.db.read() as s:
        order = inv.get(s, "WT-2026-000104")
        base = next(d for d in order.devices if d.device_id == "dect-catania")
        assert [(t.slot, t.extension.short) for t in base.terminals] == [(1, 203), (2, 202)]
        assert inv.secret(s, order, "device:dect-catania", "provisioning_password") == before
