"""The NOC's fleet view (issue 15): devices by state, an order's status in one call, push jobs,
ETag/If-Match on orders, unknown query parameters refused, docs without a CDN, fleet gauges,
the audit's total, and the live event stream of an order."""

from __future__ import annotations

import json
import re
import threading
import time

from apistore import OTHER, OWN, SAMPLES, Store, stored_push_job
from fastapi.testclient import TestClient

STATES = {"planned", "bound", "armed", "fetched", "refused", "blocked", "pushing", "verified",
          "failed"}  # fmt: skip


def test_devices_can_be_listed_by_state_with_a_total_and_a_link_to_the_next_page(
    client: TestClient, store: Store
) -> None:
    noc = store.headers("noc")
    assert client.post(f"/api/v1/orders/{OWN}/arm", headers=noc, json={"minutes": 30}).is_success
    r = client.get("/api/v1/devices?state=armed&limit=2", headers=noc)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == 5  # the OWN order's bound devices, armed
    assert [d["state"] for d in body["items"]] == ["armed", "armed"]
    assert {d["order"] for d in body["items"]} == {OWN}
    assert 'rel="next"' in r.headers["link"] and "offset=2" in r.headers["link"]
    everything = client.get("/api/v1/devices?limit=200", headers=noc).json()
    assert everything["total"] > body["total"]
    assert {d["state"] for d in everything["items"]} <= STATES
    by_model = client.get("/api/v1/devices?model=iad&order=" + OTHER, headers=noc).json()
    assert by_model["total"] == 2 and {d["model"] for d in by_model["items"]} == {"iad"}
    roma = client.get(f"/api/v1/devices?order={OTHER}&site=roma", headers=noc).json()
    assert {d["site"] for d in roma["items"]} == {"roma"} and roma["total"] >= 5


def test_a_technician_lists_only_the_devices_of_the_token_s_orders(
    client: TestClient, store: Store
) -> None:
    r = client.get("/api/v1/devices?limit=200", headers=store.headers("technician"))
    assert r.status_code == 200
    assert {d["order"] for d in r.json()["items"]} == {OWN}


def test_an_order_s_status_names_every_device_s_state_in_one_call(
    client: TestClient, store: Store
) -> None:
    r = client.get(f"/api/v1/orders/{OTHER}/status", headers=store.headers("viewer"))
    assert r.status_code == 200, r.text
    body = r.json()
    devices = {d["device"]: d for d in body["devices"]}
    assert devices["phone-209"]["state"] == "planned"  # no MAC in the sample
    assert devices["phone-200"]["state"] == "bound"
    assert devices["phone-200"]["title"] == "Alcatel Temporis IP701G"
    assert devices["phone-200"]["terminals"][0]["extension"] == 200
    assert body["counts"]["planned"] >= 4
    assert sum(body["counts"].values()) == len(body["devices"])
    assert any(e["short"] for e in body["free_extensions"]) or body["free_extensions"] == []
    r = client.get(f"/api/v1/orders/{OTHER}/status", headers=store.headers("technician"))
    assert r.status_code == 404  # not on the technician's token


def test_push_jobs_are_listed_newest_first(client: TestClient, store: Store) -> None:
    first = stored_push_job(store.inventory, OWN)
    second = stored_push_job(store.inventory, OTHER)
    r = client.get("/api/v1/push-jobs", headers=store.headers("noc"))
    assert r.status_code == 200, r.text
    ids = [j["id"] for j in r.json()["items"]]
    assert ids[:2] == [second, first]
    assert r.json()["items"][0]["summary"] == {"dry-run": 4}
    mine = client.get("/api/v1/push-jobs", headers=store.headers("technician")).json()
    assert [j["id"] for j in mine["items"]] == [first]


def test_a_stale_if_match_gets_412_and_changes_nothing(client: TestClient, store: Store) -> None:
    noc = store.headers("noc")
    first = client.get(f"/api/v1/orders/{OTHER}", headers=noc)
    etag = first.headers["etag"]
    assert re.fullmatch(r'"g\d+"', etag)
    again = client.get(f"/api/v1/orders/{OTHER}", headers={**noc, "If-None-Match": etag})
    assert again.status_code == 304
    text = (SAMPLES / f"{OTHER}.yaml").read_text()
    changed = text.replace("name: Rossi Impianti S.r.l.", "name: Rossi Impianti S.p.A.")
    assert changed != text
    yaml_headers = {**noc, "Content-Type": "application/yaml"}
    ok = client.put(f"/api/v1/orders/{OTHER}", headers={**yaml_headers, "If-Match": etag},
                    content=changed)  # fmt: skip
    assert ok.status_code == 200, ok.text
    assert ok.headers["etag"] != etag
    # A second writer still holding the first version is refused, and the store keeps the
    # first writer's change.
    stale = client.put(f"/api/v1/orders/{OTHER}", headers={**yaml_headers, "If-Match": etag},
                       content=text)  # fmt: skip
    assert stale.status_code == 412, stale.text
    assert stale.headers["content-type"].startswith("application/problem+json")
    now = client.get(f"/api/v1/orders/{OTHER}", headers=noc).json()
    assert now["customer"]["name"] == "Rossi Impianti S.p.A."


def test_an_unknown_query_parameter_is_a_422_naming_it(client: TestClient, store: Store) -> None:
    r = client.get("/api/v1/orders?q=Rossi", headers=store.headers("noc"))
    assert r.status_code == 422
    violation = r.json()["violations"][0]
    assert violation["path"] == "query.q"
    assert "vat" in violation["message"]  # says what the route does take
    assert client.get("/api/v1/orders?vat=IT01234567897", headers=store.headers("noc")).is_success


def test_the_api_docs_load_every_asset_from_the_server_itself(client: TestClient) -> None:
    page = client.get("/api/v1/docs")
    assert page.status_code == 200
    refs = re.findall(r'(?:src|href)=["\']([^"\']+)["\']', page.text)
    assert refs and all(ref.startswith("/api/v1/") for ref in refs), refs
    assert "cdn" not in page.text.lower()
    for ref in refs:
        asset = client.get(ref)
        assert asset.status_code == 200 and len(asset.content) > 100, ref


def test_metrics_carry_fleet_gauges_by_state(client: TestClient, store: Store) -> None:
    stored_push_job(store.inventory, OWN)
    text = client.get("/metrics").text
    assert re.search(r'provisioner_fleet_devices\{model="iad",state="bound"\} [1-9]', text)
    assert re.search(r'provisioner_fleet_devices\{model="alcatel-temporis-ip150",'
                     r'state="planned"\} [1-9]', text)  # fmt: skip
    assert re.search(r'provisioner_fleet_push_results\{result="dry-run"\} [1-9]', text)
    for name in ("fetches", "refusals", "blocked_sources"):
        assert f"provisioner_fleet_{name} " in text


def test_the_audit_page_says_how_many_events_match(client: TestClient, store: Store) -> None:
    r = client.get(f"/api/v1/audit?order={OWN}&limit=1", headers=store.headers("noc"))
    assert r.status_code == 200
    body = r.json()
    assert len(body["items"]) == 1 and body["total"] >= 1
    everything = client.get(f"/api/v1/audit?order={OWN}&limit=200", headers=store.headers("noc"))
    assert everything.json()["total"] == len(everything.json()["items"])


def _events(text: str) -> list[tuple[str, dict[str, object]]]:
    out = []
    for block in text.split("\n\n"):
        name = next((ln[7:] for ln in block.splitlines() if ln.startswith("event: ")), None)
        data = next((ln[6:] for ln in block.splitlines() if ln.startswith("data: ")), None)
        if name and data:
            out.append((name, json.loads(data)))
    return out


def test_the_event_stream_sends_a_snapshot_then_each_device_that_changes(
    client: TestClient, store: Store
) -> None:
    def arm_soon() -> None:
        time.sleep(0.8)
        store.inventory.arm(OWN, 15, actor="test", only="order")

    threading.Thread(target=arm_soon).start()
    started = time.monotonic()
    r = client.get(f"/api/v1/events?order={OWN}&seconds=3", headers=store.headers("technician"))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = _events(r.text)
    assert events[0][0] == "snapshot"
    assert {d["state"] for d in events[0][1]["devices"]} == {"bound"}  # type: ignore[index]
    armed = [d for name, d in events[1:] if name == "device" and d["state"] == "armed"]
    assert len(armed) == 5, events
    assert time.monotonic() - started < 5
    other = client.get(f"/api/v1/events?order={OTHER}&seconds=1",
                       headers=store.headers("technician"))  # fmt: skip
    assert other.status_code == 404
