"""A rotated SIP password reaches running lab phones without a reboot (issue 16, part 3).

The chain, with real peers: our server (TFTP + HTTP, in-process), Kamailio (db_text in
non-caching mode, NOTIFY relayed only from the provisioner's address), and live lab phones
(``lab/livephone.py`` on ``lab/sipua.py``) that stay registered, take check-sync only from
their registrar, re-fetch with their per-device credentials and register again what changed.

    rotate -> pbx export (Kamailio reloads the table) -> NOTIFY check-sync -> re-fetch ->
    the old password gets 403, the phone is registered with the new one: < 5 s.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from provisioner.voice.notify import send_check_sync
from provisioner_lab.livephone import LivePhone, PhoneRack
from provisioner_lab.sip import Kamailio, SipAccount
from provisioner_lab.sipua import UserAgent

ORDER = "WT-2026-000104"  # desk phones 200, 201; DECT base: slot 1 = 202, slot 2 = 203
DESK, DESK2, DECT = "00:80:f0:20:00:01", "00:80:f0:20:00:02", "00:80:f0:20:10:01"
N202 = "+390957001102"
PROVISIONER = "127.0.0.2"  # where the NOTIFYs leave from: the one address Kamailio trusts
LIMIT = 5.0  # seconds, rotate to registered again (the bound)


@pytest.fixture(autouse=True)
def _resync_source(monkeypatch: pytest.MonkeyPatch) -> None:
    """Set before any settings are read (autouse fixtures come first)."""
    monkeypatch.setenv("PROVISIONER_RESYNC_SOURCE_ADDRESS", PROVISIONER)


@pytest.fixture
def kamailio(
    served: Any, sip_port: int, tmp_path: Path, cli: Callable[..., Any]
) -> Iterator[Kamailio]:
    db = tmp_path / "kamailio-db"
    cli("pbx", "export", "--all", "--format", "kamailio", "--out", str(db))
    kam = Kamailio(db, port=sip_port, workdir=tmp_path, trusted=PROVISIONER)
    kam.start()
    try:
        yield kam
    finally:
        kam.stop()


@pytest.fixture
def rack() -> Iterator[PhoneRack]:
    with PhoneRack() as r:
        yield r


def _boot(rack: PhoneRack, served: Any, mac: str) -> LivePhone:
    phone = LivePhone(mac, server="127.0.0.1", tftp_port=served.tftp_port,
                      http_port=served.http_port)  # fmt: skip
    rack.boot(phone, "tftp")
    assert phone.boot_results and all(r.ok for r in phone.boot_results), phone.boot_results
    return phone


def _slot1(phone: LivePhone) -> SipAccount:
    assert phone.file is not None
    a = next(a for a in phone.file.accounts if a.slot == 1)
    return SipAccount(a.user, a.host, a.password, f"{a.host}:{a.port}", a.auth_name)


def _register_once(rack: PhoneRack, acc: SipAccount) -> int | None:
    async def once() -> int | None:
        async with UserAgent([acc]) as ua:
            (result,) = await ua.register(3.0)
            if result.ok:
                await ua.unregister(2.0)
            return result.status

    return rack.run(once())


def _serving_follows(served: Any, mac: str, timeout: float = 3.0) -> None:
    """Wait until the server answers the device's new file: it follows the store on its own
    (every 0.25 s on SQLite), and a phone told to re-fetch sooner would get the old one."""
    from provisioner.render.engine import Renderer

    phone = LivePhone(mac)
    want = hashlib.sha256(Renderer(served.inventory.settings, served.inventory)
                          .files_for_mac(mac)[phone.filename]).hexdigest()  # fmt: skip
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        entry = served.service.index.lookup(phone.mac)
        if entry is not None and entry.files[phone.filename].sha256 == want:
            return
        time.sleep(0.01)
    raise AssertionError(f"{mac}: the server did not take the new file in {timeout} s")


def _registered_again(phone: LivePhone, resyncs: int) -> bool:
    return len(phone.resyncs) > resyncs and phone.resyncs[resyncs].done_at > 0


def test_a_rotated_password_reaches_a_running_phone_without_a_reboot(
    served: Any, kamailio: Kamailio, rack: PhoneRack, cli: Callable[..., Any]
) -> None:
    served.inventory.arm(ORDER, 30, actor="test")
    dect = _boot(rack, served, DECT)
    desk = _boot(rack, served, DESK)
    _boot(rack, served, DESK2)
    old = _slot1(dect)

    t0 = time.monotonic()
    cli("rotate", ORDER, "--extension", "202")
    cli("pbx", "export", "--all", "--format", "kamailio", "--out", str(kamailio.db_dir))
    _serving_follows(served, DECT)
    sent = cli("resync", ORDER, "--actor", "test")
    assert rack.wait(lambda: _registered_again(dect, 0) and desk.resyncs, LIMIT)
    took = dect.resyncs[0].done_at - t0

    # Every phone of the order was told, through the registrar, and took it.
    assert sent.output.count("delivered (200 OK)") == 3, sent.output
    r = dect.resyncs[0]
    assert r.via == "http+auth"  # with the credentials its first file installed
    assert r.changed == [f"{N202}@127.0.0.1"]  # the rotated handset only; 203 untouched
    assert r.registered, r.results
    new = _slot1(dect)
    assert new.password != old.password
    assert _register_once(rack, old) == 403  # the old password is refused...
    assert _register_once(rack, new) == 200  # ...the new one is the phone's now
    # The desk phone re-fetched too; its file did not change, so it registered nothing.
    assert rack.wait(lambda: desk.resyncs[0].done_at > 0, 2)
    assert desk.resyncs[0].via == "http+auth" and desk.resyncs[0].changed == []
    # And the phone is reachable at its (same) contact: another resync is delivered.
    again = cli("resync", DECT)
    assert "delivered (200 OK)" in again.output
    print(f"rotate -> registered again: {took:.3f} s")
    assert took < LIMIT


def test_with_the_setting_on_a_rotation_resyncs_the_phone_by_itself(
    served: Any,
    kamailio: Kamailio,
    rack: PhoneRack,
    cli: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    served.inventory.arm(ORDER, 30, actor="test")
    dect = _boot(rack, served, DECT)
    desk = _boot(rack, served, DESK)
    monkeypatch.setenv("PROVISIONER_RESYNC_AFTER_PUBLISH", "1")
    # The debounce must cover the server following the store (0.25 s polls on SQLite) and,
    # for a rotation, the export: 0.5 s by default; 1 s here, so a loaded CI machine holds.
    monkeypatch.setenv("PROVISIONER_RESYNC_DEBOUNCE_SECONDS", "1")
    t0 = time.monotonic()
    cli("rotate", ORDER, "--extension", "202")  # NOTIFY after the debounce...
    cli("pbx", "export", "--all", "--format", "kamailio", "--out", str(kamailio.db_dir))
    assert rack.wait(lambda: _registered_again(dect, 0), LIMIT)  # ...from the writer
    took = dect.resyncs[0].done_at - t0
    assert dect.resyncs[0].registered and dect.resyncs[0].changed == [f"{N202}@127.0.0.1"]
    time.sleep(0.5)
    assert desk.resyncs == []  # its files did not change: it was not told
    print(f"rotate (automatic resync) -> registered again: {took:.3f} s")
    assert took < LIMIT


def test_check_sync_is_taken_only_from_the_registrar(
    served: Any, kamailio: Kamailio, rack: PhoneRack
) -> None:
    served.inventory.arm(ORDER, 30, actor="test")
    dect = _boot(rack, served, DECT)
    # Straight to the phone from another address: the phone refuses it and fetches nothing.
    host, port = dect.address
    (direct,) = send_check_sync([N202], host, port, deadline=1.0, source=PROVISIONER)
    assert direct.status == 403
    # Through the registrar from an address it does not trust: the registrar refuses it.
    (untrusted,) = send_check_sync([N202], "127.0.0.1", kamailio.port, deadline=1.0)
    assert untrusted.status == 403
    # From the provisioner's address: relayed to the phone, which takes it.
    (relayed,) = send_check_sync([N202], "127.0.0.1", kamailio.port, source=PROVISIONER)
    assert relayed.status == 200
    assert rack.wait(lambda: dect.resyncs and dect.resyncs[-1].done_at > 0, 3)
    assert len(dect.resyncs) == 1 and dect.resyncs[0].changed == []  # nothing changed
    # A user with no contact: the registrar says so.
    (nobody,) = send_check_sync(["+390957001199"], "127.0.0.1", kamailio.port,
                                source=PROVISIONER)  # fmt: skip
    assert nobody.status == 404
