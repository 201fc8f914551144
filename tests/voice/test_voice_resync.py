"""Resync: which devices an order or a MAC names, one NOTIFY each (a DECT base once, as its
first handset's extension), the audit trail, the command, and the automatic resync after a
publish that changed a device's files (debounced: a burst of writes sends one NOTIFY)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from provisioner.cli.app import app
from provisioner.errors import DeviceUnknown, OrderUnknown, ResyncRefused
from provisioner.store.models import AuditEvent
from provisioner.voice.notify import Outcome
from provisioner.voice.resync import Resyncer, ResyncQueue, follow_publishes

ORDER = "WT-2026-000104"  # desk phones 200, 201; DECT base with handsets 202 (slot 1), 203
DESK, DESK2, DECT = "00:80:f0:20:00:01", "00:80:f0:20:00:02", "00:80:f0:20:10:01"
SWITCH = "b0:c5:54:10:00:01"
NUMBER = {200: "+390957001100", 201: "+390957001101", 202: "+390957001102",
          203: "+390957001103"}  # fmt: skip


def _ok(_n: int, _m: bytes) -> list[str]:
    return ["200 OK"]


def _resyncer(inv: Any, fake: Any) -> Resyncer:
    r = Resyncer(inv, deadline=1.0)
    r.registrar, r.port = "127.0.0.1", fake.port
    return r


def _events(inv: Any, action: str = "device.resync") -> list[dict[str, Any]]:
    with inv.db.read() as session:
        rows = session.scalars(select(AuditEvent).where(AuditEvent.action == action)).all()
        return [{"device": r.device, "actor": r.actor, **json.loads(r.detail)} for r in rows]


def test_an_order_tells_each_desk_phone_and_dect_base_once(
    sample_inventory: Any, registrar: Any
) -> None:
    fake = registrar(_ok)
    done = _resyncer(sample_inventory, fake).resync(ORDER, actor="noc-anna")
    assert [(r.target.mac, r.target.user, r.answer.outcome) for r in done] == [
        (DESK, NUMBER[200], Outcome.delivered),
        (DESK2, NUMBER[201], Outcome.delivered),
        (DECT, NUMBER[202], Outcome.delivered),  # the base, as its first handset; not 203
    ]
    assert sorted(fake.users()) == sorted([NUMBER[200], NUMBER[201], NUMBER[202]])
    events = _events(sample_inventory)
    assert [(e["device"], e["outcome"], e["status"], e["actor"]) for e in events] == [
        (r.target.device_id, "delivered", 200, "noc-anna") for r in done
    ]
    assert done[2].line() == f"{ORDER} dect-catania {DECT} {NUMBER[202]} delivered (200 OK)"


def test_a_mac_tells_that_device_only_and_a_missing_contact_is_reported(
    sample_inventory: Any, registrar: Any
) -> None:
    fake = registrar(lambda _n, _m: ["404 Not Found"])
    (r,) = _resyncer(sample_inventory, fake).resync("00-80-F0-20-10-01")
    assert (r.target.device_id, r.answer.outcome, r.ok) == ("dect-catania", "not-registered", False)
    assert _events(sample_inventory)[0]["outcome"] == "not-registered"


def test_what_cannot_be_resynced_is_refused_in_one_line(
    sample_inventory: Any, registrar: Any
) -> None:
    resyncer = _resyncer(sample_inventory, registrar(_ok))
    with pytest.raises(ResyncRefused, match="dlink-dgs-1100-08p takes no check-sync"):
        resyncer.resync(SWITCH)
    with pytest.raises(DeviceUnknown, match="MAC 00:80:f0:99:99:99: no device"):
        resyncer.resync("00:80:f0:99:99:99")
    with pytest.raises(OrderUnknown, match="WT-2026-999999: neither an order"):
        resyncer.resync("WT-2026-999999")
    with pytest.raises(OrderUnknown):  # a technician's token does not see other orders
        resyncer.resync(ORDER, visible=lambda o: o != ORDER)
    sample_inventory.cancel(ORDER, actor="test")
    with pytest.raises(ResyncRefused, match=f"order {ORDER}: is cancelled"):
        resyncer.resync(ORDER)
    with pytest.raises(ResyncRefused, match="the order is cancelled"):
        resyncer.resync(DESK)
    assert _events(sample_inventory) == []


def test_a_burst_of_writes_sends_one_notify_to_each_device_whose_file_changed(
    sample_inventory: Any, registrar: Any
) -> None:
    fake = registrar(_ok)
    queue = ResyncQueue(_resyncer(sample_inventory, fake), debounce=0.3)
    sample_inventory.on_published(queue.published)
    try:
        t0 = time.monotonic()
        sample_inventory.rotate(ORDER, [203], actor="test")  # slot 2 of the DECT base
        sample_inventory.rotate(ORDER, [203], actor="test")
        sample_inventory.rotate(ORDER, [201], actor="test")  # the second desk phone
        assert fake.got == []  # off the writer's path, after the debounce
        assert queue.drain(5)
        took = time.monotonic() - t0
    finally:
        queue.close()
    # One NOTIFY per device whose file changed: the base (as 202, its first slot) and 201.
    assert sorted(fake.users()) == sorted([NUMBER[202], NUMBER[201]])
    assert took < 2
    assert {e["why"] for e in _events(sample_inventory)} == {"published"}


def test_a_write_that_changes_no_served_file_sends_nothing(
    sample_inventory: Any, registrar: Any
) -> None:
    fake = registrar(_ok)
    queue = ResyncQueue(_resyncer(sample_inventory, fake), debounce=0.1)
    sample_inventory.on_published(queue.published)
    try:
        sample_inventory.arm(ORDER, 30, actor="test")  # a window, not a file
        sample_inventory.republish([ORDER])  # nothing differs
        time.sleep(0.3)
        assert queue.drain(2)
    finally:
        queue.close()
    assert fake.got == []


def test_the_setting_turns_the_automatic_resync_on(
    sample_inventory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert follow_publishes(sample_inventory) is None  # off by default
    from provisioner.orders.service import OrdersService
    from provisioner.settings import load_settings

    monkeypatch.setenv("PROVISIONER_RESYNC_AFTER_PUBLISH", "1")
    inv = OrdersService(load_settings())
    try:
        queue = follow_publishes(inv)
        assert queue is not None and queue.debounce == 0.5
        queue.close()
    finally:
        inv.db.dispose()


def test_the_command_prints_a_line_per_device_and_fails_unless_all_took_it(
    sample_inventory: Any, registrar: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = {NUMBER[200]: "200 OK", NUMBER[201]: "480 Temporarily Unavailable",
               NUMBER[202]: "200 OK"}  # fmt: skip
    fake = registrar(lambda _n, m: [answers[m.split(b" ")[1].decode()[4:].split("@")[0]]])
    monkeypatch.setenv("PROVISIONER_SIP_REGISTRAR", "127.0.0.1")
    monkeypatch.setenv("PROVISIONER_SIP_REGISTRAR_PORT", str(fake.port))
    runner = CliRunner()
    result = runner.invoke(app, ["resync", ORDER, "--actor", "tech-luca"])
    assert result.exit_code == 1, result.output
    assert result.output.splitlines() == [
        f"{ORDER} phone-200 {DESK} {NUMBER[200]} delivered (200 OK)",
        f"{ORDER} phone-201 {DESK2} {NUMBER[201]} not-registered (480 Temporarily Unavailable)",
        f"{ORDER} dect-catania {DECT} {NUMBER[202]} delivered (200 OK)",
    ]
    result = runner.invoke(app, ["resync", DECT])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["resync", SWITCH])
    assert result.exit_code == 1
    assert "error: order WT-2026-000104: device sw-catania: a dlink-dgs-1100-08p takes no " \
        "check-sync" in result.output  # fmt: skip


def test_an_export_in_the_same_second_still_moves_the_table_s_mtime(tmp_path: Any) -> None:
    """Kamailio's db_text (non-caching mode) reloads a table when its mtime, in whole
    seconds, changed: two exports within one second must still differ."""
    import os

    from provisioner.render.pbx import Subscriber, write_kamailio

    subs = [Subscriber("WT-1", 200, "+39095", "+39095", "127.0.0.1", "pw-1")]
    write_kamailio(subs, tmp_path)
    table = tmp_path / "subscriber"
    first = int(table.stat().st_mtime)
    os.utime(table, (first, first))
    write_kamailio([Subscriber("WT-1", 200, "+39095", "+39095", "127.0.0.1", "pw-2")], tmp_path)
    assert int(table.stat().st_mtime) > first
    assert "pw-2" in table.read_text()
    assert oct(table.stat().st_mode & 0o777) == "0o600"
