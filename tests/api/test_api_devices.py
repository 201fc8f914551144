"""Devices over the API: bind within the offer's limits (409 past them), unbind, swap, read."""

from __future__ import annotations

from apistore import OTHER, OWN, RACE, RACE_QUOTA, Store
from fastapi.testclient import TestClient

PHONE = "alcatel-temporis-ip150"


def _bind(client: TestClient, store: Store, role: str, order: str, **body: object):  # type: ignore[no-untyped-def]
    return client.post(f"/api/v1/orders/{order}/bind", json=body, headers=store.headers(role))


def test_bind_up_to_the_terminal_limit_then_409(client: TestClient, store: Store) -> None:
    for i in range(RACE_QUOTA):
        r = _bind(
            client,
            store,
            "noc",
            RACE,
            mac=f"02:00:00:00:01:{i:02x}",
            extension=300 + i,
            model=PHONE,
        )
        assert r.status_code == 200, r.text
        assert r.json() == {
            "order": RACE,
            "device": f"phone-{300 + i}",
            "identity": f"02:00:00:00:01:{i:02x}",
            "state": "bound",
        }
    over = _bind(client, store, "noc", RACE, mac="02:00:00:00:01:99", extension=310, model=PHONE)
    assert over.status_code == 409
    assert over.headers["content-type"] == "application/problem+json"
    assert "at most 5" in over.json()["detail"]


def test_bind_conflicts_are_409(client: TestClient, store: Store) -> None:
    ok = _bind(client, store, "noc", RACE, mac="02:00:00:00:02:01", extension=300, model=PHONE)
    assert ok.status_code == 200
    # The same box again on the same extension is a no-op, not an error.
    same = _bind(client, store, "noc", RACE, mac="02:00:00:00:02:01", extension=300)
    assert same.status_code == 200
    taken_ext = _bind(client, store, "noc", RACE, mac="02:00:00:00:02:02", extension=300)
    assert taken_ext.status_code == 409
    mac_in_use = _bind(
        client, store, "noc", RACE, mac=store.macs[OTHER][0], extension=301, model=PHONE
    )
    assert mac_in_use.status_code == 409
    assert OTHER in mac_in_use.json()["detail"]


def test_bind_unknown_order_or_device_is_404(client: TestClient, store: Store) -> None:
    r = _bind(client, store, "noc", "WT-0000-NOPE", mac="02:00:00:00:03:01", extension=1)
    assert r.status_code == 404
    r = _bind(client, store, "noc", RACE, mac="02:00:00:00:03:01", device="nope")
    assert r.status_code == 404


def test_bind_body_needs_exactly_one_of_each(client: TestClient, store: Store) -> None:
    for body in (
        {"extension": 300},
        {"mac": "02:00:00:00:04:01", "serial": "ALCL00000001", "extension": 300},
        {"mac": "02:00:00:00:04:01"},
        {"mac": "02:00:00:00:04:01", "extension": 300, "device": "iad-milano"},
        {"mac": "01:00:5e:00:00:01", "extension": 300},  # multicast
        {"mac": "00:00:00:00:00:00", "extension": 300},
        {"mac": "02:00:00:00:04:01", "extension": 300, "extra": 1},
        {"mac": "02:00:00:00:04:01", "extension": True},  # JSON true is not extension 1
    ):
        r = client.post(f"/api/v1/orders/{RACE}/bind", json=body, headers=store.headers("noc"))
        assert r.status_code == 422, body


def test_technician_binds_on_own_order_only(client: TestClient, store: Store) -> None:
    own = client.get(f"/api/v1/orders/{OWN}", headers=store.headers("technician")).json()
    bound = next(d for d in own["devices"] if d["mac"] and d["kind"] == "phone")
    un = client.post(
        f"/api/v1/orders/{OWN}/unbind",
        json={"device": bound["id"]},
        headers=store.headers("technician"),
    )
    assert un.status_code == 200 and un.json()["state"] == "planned"
    again = _bind(client, store, "technician", OWN, mac=bound["mac"], device=bound["id"])
    assert again.status_code == 200
    other = _bind(client, store, "technician", RACE, mac="02:00:00:00:05:01", extension=300)
    assert other.status_code == 404
    events = client.get(
        "/api/v1/audit", params={"order": OWN, "limit": 2}, headers=store.headers("admin")
    ).json()["items"]
    assert [e["action"] for e in events] == ["device.bound", "device.unbound"]
    assert {e["actor"] for e in events} == {"api:t-technician"}


def test_unbind_of_a_bind_created_terminal_removes_it(client: TestClient, store: Store) -> None:
    _bind(client, store, "noc", RACE, mac="02:00:00:00:06:01", extension=300, model=PHONE)
    r = client.post(
        f"/api/v1/orders/{RACE}/unbind",
        json={"mac": "02-00-00-00-06-01"},
        headers=store.headers("noc"),
    )
    assert r.status_code == 200 and r.json()["device"] == "phone-300"
    got = client.get("/api/v1/devices/02:00:00:00:06:01", headers=store.headers("noc"))
    assert got.status_code == 404
    again = client.post(
        f"/api/v1/orders/{RACE}/unbind", json={"device": "iad-milano"}, headers=store.headers("noc")
    )
    assert again.status_code == 409  # planned already


def test_read_device_in_any_mac_spelling(client: TestClient, store: Store) -> None:
    mac = store.macs[OTHER][0]
    digits = mac.replace(":", "")
    for spelling in (
        mac,
        mac.upper(),
        mac.replace(":", "-"),
        digits,
        f"{digits[:4]}.{digits[4:8]}.{digits[8:]}",
    ):
        r = client.get(f"/api/v1/devices/{spelling}", headers=store.headers("viewer"))
        assert r.status_code == 200, spelling
        assert r.json()["mac"] == mac and r.json()["order"] == OTHER
    status = client.get(f"/api/v1/devices/{mac}/status", headers=store.headers("viewer")).json()
    assert status["state"] == "bound" and status["last_fetch_at"] is None
    assert (
        client.get(f"/api/v1/devices/{mac}", headers=store.headers("technician")).status_code == 404
    )
    assert (
        client.get("/api/v1/devices/02:00:00:00:00:ff", headers=store.headers("viewer")).status_code
        == 404
    )
    assert (
        client.get("/api/v1/devices/not-a-mac", headers=store.headers("viewer")).status_code == 422
    )


def test_swap_moves_the_device_to_the_new_mac(client: TestClient, store: Store) -> None:
    h = store.headers("technician")
    own = client.get(f"/api/v1/orders/{OWN}", headers=h).json()
    phone = next(d for d in own["devices"] if d["mac"] and d["kind"] == "phone")
    old, new = phone["mac"], "02:00:00:00:07:01"
    r = client.post(f"/api/v1/devices/{old}/swap", json={"new_mac": "02-00-00-00-07-01"}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json() == {"order": OWN, "device": phone["id"], "old_mac": old, "new_mac": new}
    assert client.get(f"/api/v1/devices/{old}", headers=h).status_code == 404
    moved = client.get(f"/api/v1/devices/{new}", headers=h).json()
    assert moved["id"] == phone["id"] and moved["extensions"] == phone["extensions"]
    # Its secrets stay with the device: the new box gets the same configuration.
    secrets = client.get(f"/api/v1/orders/{OWN}/secrets", headers=store.headers("admin")).json()
    assert any(s["owner"] == f"device:{phone['id']}" for s in secrets["secrets"])
    events = client.get("/api/v1/audit", params={"order": OWN, "limit": 2}, headers=h).json()
    swapped = next(e for e in events["items"] if e["action"] == "device.swapped")
    assert swapped["detail"] == {"old_mac": old, "new_mac": new}
    # A MAC already in use, or another order's device, is refused.
    taken = client.post(
        f"/api/v1/devices/{new}/swap", json={"new_mac": store.macs[OTHER][0]}, headers=h
    )
    assert taken.status_code == 409
    foreign = client.post(
        f"/api/v1/devices/{store.macs[OTHER][0]}/swap",
        json={"new_mac": "02:00:00:00:07:02"},
        headers=h,
    )
    assert foreign.status_code == 404


def test_file_preview_masks_secrets_and_reveal_is_admin_only(
    client: TestClient, store: Store
) -> None:
    from apistore import CANARY

    phone_macs = [m for m in store.macs[OWN] if m.startswith("00:80:f0")]
    mac = phone_macs[0]
    listed = client.get(f"/api/v1/devices/{mac}/files", headers=store.headers("technician"))
    assert listed.status_code == 200
    names = [f["name"] for f in listed.json()["files"]]
    cfg = f"{mac.replace(':', '')}.cfg"
    assert cfg in names
    for role in ("viewer", "technician", "noc", "admin"):
        r = client.get(f"/api/v1/devices/{mac}/files/{cfg}", headers=store.headers(role))
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        assert CANARY not in r.text and "********" in r.text
    for role in ("viewer", "technician", "noc"):
        r = client.get(
            f"/api/v1/devices/{mac}/files/{cfg}",
            params={"reveal": True},
            headers=store.headers(role),
        )
        assert r.status_code == 403 and CANARY not in r.text
    shown = client.get(
        f"/api/v1/devices/{mac}/files/{cfg}",
        params={"reveal": True},
        headers=store.headers("admin"),
    )
    assert shown.status_code == 200 and CANARY in shown.text
    events = client.get(
        "/api/v1/audit", params={"order": OWN, "limit": 1}, headers=store.headers("admin")
    ).json()["items"]
    assert events[0]["action"] == "file.revealed" and events[0]["detail"] == {"file": cfg}
    assert (
        client.get(
            f"/api/v1/devices/{mac}/files/nope.cfg", headers=store.headers("admin")
        ).status_code
        == 404
    )
    other = store.macs[OTHER][0]
    r = client.get(f"/api/v1/devices/{other}/files", headers=store.headers("technician"))
    assert r.status_code == 404


def test_arm_order_and_device(client: TestClient, store: Store) -> None:
    h = store.headers("technician")
    r = client.post(f"/api/v1/orders/{OWN}/arm", json={"minutes": 30}, headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["order"] == OWN and len(body["devices"]) >= 3 and body["expires_at"]
    mac = store.macs[OWN][0]
    one = client.post(f"/api/v1/devices/{mac}/arm", headers=h)
    assert one.status_code == 200 and len(one.json()["devices"]) == 1
    assert client.post(f"/api/v1/orders/{OTHER}/arm", headers=h).status_code == 404
    assert client.post(f"/api/v1/devices/{store.macs[OTHER][0]}/arm", headers=h).status_code == 404
    too_long = client.post(f"/api/v1/orders/{OWN}/arm", json={"minutes": 20000}, headers=h)
    assert too_long.status_code == 422
    not_a_number = client.post(f"/api/v1/orders/{OWN}/arm", json={"minutes": True}, headers=h)
    assert not_a_number.status_code == 422 and "minutes" in not_a_number.text
    # The schema documents no null; a null is refused, not taken as "the default".
    null = client.post(f"/api/v1/devices/{mac}/arm", json={"minutes": None}, headers=h)
    assert null.status_code == 422 and "minutes: leave the key out" in null.text
    assert (
        client.post(f"/api/v1/orders/{OWN}/arm", headers=store.headers("viewer")).status_code == 403
    )
    actions = [
        e["action"]
        for e in client.get("/api/v1/audit", params={"order": OWN, "limit": 2}, headers=h).json()[
            "items"
        ]
    ]
    assert actions == ["enrollment.armed", "enrollment.armed"]
