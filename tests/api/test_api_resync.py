"""Resync over the API and on the technician page: per-device outcomes, roles, refusals, and
the checklist and event stream showing the resync and the fetch that follows it."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import anyio
import fakeregistrar
import pytest
from apistore import OTHER, OWN, Store
from fastapi import FastAPI
from fastapi.testclient import TestClient

from provisioner.api import tokens
from provisioner.api.routes.events import follow
from provisioner.store.models import DeviceState, utcnow
from provisioner.voice.resync import Resyncer

DESK, DECT, SWITCH = "00:80:f0:20:00:01", "00:80:f0:20:10:01", "b0:c5:54:10:00:01"


@pytest.fixture
def fake(app: FastAPI, store: Store) -> Iterator[Any]:
    """A registrar whose devices all take the NOTIFY; the app's resyncer sends to it."""
    registrar = fakeregistrar.start(lambda _n, _m: ["200 OK"])
    resyncer = Resyncer(store.inventory, deadline=1.0)
    resyncer.registrar, resyncer.port = "127.0.0.1", registrar.port
    app.state.resyncer = resyncer
    yield registrar
    fakeregistrar.stop(registrar)


def test_noc_resyncs_an_order_and_gets_each_device_s_outcome(
    client: TestClient, store: Store, fake: Any
) -> None:
    r = client.post(f"/api/v1/orders/{OWN}/resync", headers=store.headers("noc"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert [(i["device"], i["outcome"], i["status"]) for i in body["items"]] == [
        ("phone-200", "delivered", 200),
        ("phone-201", "delivered", 200),
        ("dect-catania", "delivered", 200),
    ]
    assert body["delivered"] == 3
    assert len(fake.users()) == 3
    audit = client.get(f"/api/v1/audit?order={OWN}", headers=store.headers("noc")).json()
    resyncs = [e for e in audit["items"] if e["action"] == "device.resync"]
    assert sorted(e["device"] for e in resyncs) == ["dect-catania", "phone-200", "phone-201"]
    assert {e["actor"] for e in resyncs} == {"api:t-noc"}
    assert {e["detail"]["outcome"] for e in resyncs} == {"delivered"}


def test_a_technician_resyncs_devices_of_their_orders_only(
    client: TestClient, store: Store, fake: Any
) -> None:
    tech = store.headers("technician")
    r = client.post(f"/api/v1/devices/{DECT}/resync", headers=tech)
    assert r.status_code == 200, r.text
    assert [i["user"] for i in r.json()["items"]] == ["+390957001102"]  # slot 1: one NOTIFY
    assert client.post(f"/api/v1/orders/{OTHER}/resync", headers=tech).status_code == 404
    other_mac = store.macs[OTHER][0]
    assert client.post(f"/api/v1/devices/{other_mac}/resync", headers=tech).status_code == 404
    viewer = store.headers("viewer")
    assert client.post(f"/api/v1/orders/{OWN}/resync", headers=viewer).status_code == 403
    assert len(fake.users()) == 1


def test_a_switch_or_a_cancelled_order_is_refused_with_409(
    client: TestClient, store: Store, fake: Any
) -> None:
    noc = store.headers("noc")
    r = client.post(f"/api/v1/devices/{SWITCH}/resync", headers=noc)
    assert r.status_code == 409 and "takes no check-sync" in r.text
    store.inventory.cancel(OWN, actor="test")
    r = client.post(f"/api/v1/orders/{OWN}/resync", headers=noc)
    assert r.status_code == 409 and "cancelled" in r.text
    assert fake.got == []


def test_without_a_registrar_the_outcome_is_a_timeout_not_an_error(
    client: TestClient, store: Store
) -> None:
    # The store's settings name a loopback port where nothing listens (apistore.TEST_SIP).
    r = client.post(f"/api/v1/devices/{DESK}/resync", headers=store.headers("noc"))
    assert r.status_code == 200
    (item,) = r.json()["items"]
    assert item["outcome"] in ("timeout", "failed") and item["status"] is None


def test_the_device_status_shows_the_last_resync(
    client: TestClient, store: Store, fake: Any
) -> None:
    client.post(f"/api/v1/devices/{DESK}/resync", headers=store.headers("noc"))
    st = client.get(f"/api/v1/devices/{DESK}/status", headers=store.headers("viewer")).json()
    assert st["last_resync_outcome"] == "delivered"
    assert st["last_resync_at"] is not None


def _fetched(store: Store, device_id: str, seconds_later: float = 1.0) -> None:
    """What the serving layer's recorder stores for a fetch (the e2e test does it for real)."""
    with store.inventory.db.write() as session:
        order = store.inventory.get(session, OWN)
        dev = next(d for d in order.devices if d.device_id == device_id)
        state = session.get(DeviceState, dev.id) or DeviceState(device_pk=dev.id, fetches=0)
        state.last_at = utcnow() + timedelta(seconds=seconds_later)
        state.last_file = "0080f0201001.cfg"
        state.last_source = "127.0.0.1"
        state.fetches = (state.fetches or 0) + 1
        session.add(state)


def test_the_technician_page_sends_a_resync_and_shows_the_fetch_that_follows(
    client: TestClient, store: Store, fake: Any
) -> None:
    link = tokens.issue(store.inventory, "technician", name="mario", orders=[OWN],
                        expires="2h", link=True).text  # fmt: skip
    assert (
        client.post("/tech/login", data={"code": link}, follow_redirects=False).status_code == 303
    )
    page = client.get(f"/tech/orders/{OWN}").text
    csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', page).group(1)  # type: ignore[union-attr]
    assert f'name="mac" value="{DECT}"' in page  # a resync button on the phones' cards
    assert f'name="mac" value="{SWITCH}"' not in page  # none on the switch's
    r = client.post(f"/tech/orders/{OWN}/resync", data={"csrf": csrf, "mac": DECT},
                    follow_redirects=True)  # fmt: skip
    assert r.status_code == 200
    assert "dect-catania: resync delivered (200 OK)" in r.text
    card = _card(client.get(f"/tech/orders/{OWN}/checklist").text, "dect-catania")
    assert "resync sent at" in card and "waiting for it to fetch again" in card
    _fetched(store, "dect-catania")
    card = _card(client.get(f"/tech/orders/{OWN}/checklist").text, "dect-catania")
    assert re.search(r"resync sent at [0-9:]+ \(delivered\), fetched again at [0-9:]+", card)
    # A forged post (no CSRF token) sends nothing.
    before = len(fake.got)
    forged = client.post(f"/tech/orders/{OWN}/resync", data={"mac": DECT},
                         follow_redirects=False)  # fmt: skip
    assert forged.status_code == 403 and len(fake.got) == before


def _card(html: str, device: str) -> str:
    start = html.index(f'id="dev-{device}"')
    return html[start : html.index("</li>", start)]


def test_the_event_stream_carries_the_resync_and_the_re_fetch(
    store: Store, fake: Any, app: FastAPI
) -> None:
    inv = store.inventory
    resyncer = app.state.resyncer
    seen: list[dict[str, Any]] = []

    async def watch() -> None:
        stop = anyio.Event()
        async for ev in follow(inv, OWN, stop, poll=0.05, seconds=3):
            import json

            data = json.loads(ev["data"])
            seen.append({"event": ev["event"], **data})
            if ev["event"] == "snapshot" and len(seen) == 1:
                threading.Thread(target=_resync_then_fetch, args=(resyncer, store)).start()
            if ev["event"] == "device" and data.get("last_fetch_at"):
                return

    anyio.run(watch)
    dect = [e for e in seen if e["event"] == "device" and e["device"] == "dect-catania"]
    assert dect, seen
    assert dect[0]["last_resync_outcome"] == "delivered"
    assert dect[-1]["last_fetch_at"] is not None


def _resync_then_fetch(resyncer: Resyncer, store: Store) -> None:
    import time

    resyncer.resync(DECT, actor="test")
    time.sleep(0.3)
    _fetched(store, "dect-catania")
