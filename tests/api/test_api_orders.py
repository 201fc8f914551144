"""Orders over the API: the same rules as ``provisioner validate``, errors as problem+json."""

from __future__ import annotations

import json

import yaml
from apistore import OTHER, OWN, SAMPLES, Store
from fastapi.testclient import TestClient

from provisioner.documents.validate import check_text

YAML = {"content-type": "application/yaml"}


def _sample(order_id: str) -> str:
    return (SAMPLES / f"{order_id}.yaml").read_text()


def _new_order_text() -> str:
    """The OTHER sample as a new order with no boxes named (so no MAC clashes)."""
    doc = yaml.safe_load(_sample(OTHER))
    doc["order"] = "WT-2026-900001"
    for dev in doc["devices"]:
        dev.pop("mac", None)
        dev.pop("serial", None)
    return yaml.safe_dump(doc, sort_keys=False)


def test_create_yaml_then_read_back(client: TestClient, store: Store) -> None:
    h = {**store.headers("noc"), **YAML}
    r = client.post("/api/v1/orders", content=_new_order_text(), headers=h)
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "created" and r.json()["order"] == "WT-2026-900001"
    got = client.get("/api/v1/orders/WT-2026-900001", headers=store.headers("viewer")).json()
    assert got["state"] == "active"
    assert {d["state"] for d in got["devices"]} == {"planned"}
    again = client.post("/api/v1/orders", content=_new_order_text(), headers=h)
    assert again.status_code == 409  # POST creates; PUT replaces


def test_create_json_is_the_same_document(client: TestClient, store: Store) -> None:
    doc = yaml.safe_load(_new_order_text())
    r = client.post("/api/v1/orders", json=doc, headers=store.headers("admin"))
    assert r.status_code == 201, r.text
    got = client.get("/api/v1/orders/WT-2026-900001", headers=store.headers("admin")).json()
    assert len(got["extensions"]) == len(doc["extensions"])


def test_refused_document_lists_every_violation_with_lines(
    client: TestClient, store: Store
) -> None:
    doc = yaml.safe_load(_new_order_text())
    doc["plan"] = "office_platinum"
    doc["extensions"][0]["short"] = doc["extensions"][1]["short"]
    doc["bogus"] = 1
    text = yaml.safe_dump(doc, sort_keys=False)
    expected = check_text(text, "x")
    r = client.post("/api/v1/orders", content=text, headers={**store.headers("noc"), **YAML})
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["type"] == "urn:provisioner:problem:order-rejected"
    got = [(v["path"], v["message"], v["line"]) for v in body["violations"]]
    assert got == [(p.path, p.message, p.line) for p in expected.problems]
    assert {"plan", "bogus"} <= {v["path"] for v in body["violations"]}
    assert all(v["line"] for v in body["violations"])
    # JSON bodies keep the paths; their lines would point into our YAML, so none are given.
    rj = client.post("/api/v1/orders", json=doc, headers=store.headers("noc"))
    assert [(v["path"], v["message"]) for v in rj.json()["violations"]] == [g[:2] for g in got]
    assert all(v.get("line") is None for v in rj.json()["violations"])
    # Nothing was stored, and the refusal is in the audit log.
    assert (
        client.get("/api/v1/orders/WT-2026-900001", headers=store.headers("noc")).status_code == 404
    )
    events = client.get(
        "/api/v1/audit", params={"order": "WT-2026-900001"}, headers=store.headers("noc")
    ).json()["items"]
    assert events and {e["action"] for e in events} == {"order.refused"}


def test_offer_rule_violation_names_the_limit(client: TestClient, store: Store) -> None:
    doc = yaml.safe_load(_new_order_text())
    doc["lines"] = 99
    r = client.post("/api/v1/orders", json=doc, headers=store.headers("noc"))
    assert r.status_code == 422
    lines = [v for v in r.json()["violations"] if v["path"] == "lines"]
    assert lines and lines[0]["limit"]


def test_validate_only(client: TestClient, store: Store) -> None:
    h = {**store.headers("viewer"), **YAML}
    ok = client.post("/api/v1/orders/validate", content=_new_order_text(), headers=h)
    assert ok.status_code == 200 and ok.json() == {
        "valid": True,
        "order": "WT-2026-900001",
        "violations": [],
        "violations_total": 0,
    }
    bad = client.post("/api/v1/orders/validate", content="order: X\nplan: 3\n", headers=h)
    assert bad.status_code == 200 and bad.json()["valid"] is False
    assert {v["path"] for v in bad.json()["violations"]} >= {"plan", "customer"}
    assert client.get("/api/v1/orders/X", headers=h).status_code == 404  # nothing stored
    not_a_doc = client.post("/api/v1/orders/validate", content="- 1\n- 2\n", headers=h)
    assert not_a_doc.status_code == 422
    wrong_type = client.post(
        "/api/v1/orders/validate", content="x", headers={**h, "content-type": "text/plain"}
    )
    assert wrong_type.status_code == 415


def test_put_is_idempotent_and_keeps_binds(client: TestClient, store: Store) -> None:
    h = {**store.headers("noc"), **YAML}
    exported = client.get(f"/api/v1/orders/{OTHER}", headers=h).json()
    r = client.put(f"/api/v1/orders/{OTHER}", content=_sample(OTHER), headers=h)
    assert r.status_code == 200 and r.json()["status"] == "unchanged"
    doc = yaml.safe_load(_sample(OTHER))
    doc["customer"]["name"] = "Renamed S.r.l."
    r = client.put(f"/api/v1/orders/{OTHER}", json=doc, headers=store.headers("noc"))
    assert r.status_code == 200 and r.json()["status"] == "updated"
    after = client.get(f"/api/v1/orders/{OTHER}", headers=h).json()
    assert after["customer"]["name"] == "Renamed S.r.l."
    assert after["devices"] == exported["devices"]


def test_put_refuses_another_id_and_unknown_orders(client: TestClient, store: Store) -> None:
    h = {**store.headers("noc"), **YAML}
    r = client.put(f"/api/v1/orders/{OWN}", content=_sample(OTHER), headers=h)
    assert r.status_code == 422 and r.json()["violations"][0]["path"] == "order"
    r = client.put("/api/v1/orders/WT-2026-900001", content=_new_order_text(), headers=h)
    assert r.status_code == 404


def test_cancel_keeps_the_order_for_audit(client: TestClient, store: Store) -> None:
    h = store.headers("noc")
    r = client.post(f"/api/v1/orders/{OTHER}/cancel", headers=h)
    assert r.status_code == 200 and r.json() == {"order": OTHER, "state": "cancelled"}
    assert client.post(f"/api/v1/orders/{OTHER}/cancel", headers=h).status_code == 200
    got = client.get(f"/api/v1/orders/{OTHER}", headers=h).json()
    assert got["state"] == "cancelled" and got["devices"]
    listed = client.get("/api/v1/orders", params={"state": "cancelled"}, headers=h).json()
    assert [o["order"] for o in listed["items"]] == [OTHER]
    replaced = client.put(f"/api/v1/orders/{OTHER}", content=_sample(OTHER), headers={**h, **YAML})
    assert replaced.status_code == 409
    mac = store.macs[OTHER][0]
    swap = client.post(
        f"/api/v1/devices/{mac}/swap", json={"new_mac": "02:00:00:00:00:09"}, headers=h
    )
    assert swap.status_code == 409
    actions = [
        e["action"]
        for e in client.get("/api/v1/audit", params={"order": OTHER}, headers=h).json()["items"]
    ]
    assert actions.count("order.cancelled") == 1


def test_list_pagination_filters_and_cap(client: TestClient, store: Store) -> None:
    h = store.headers("viewer")
    everything = client.get("/api/v1/orders", params={"limit": 200}, headers=h).json()
    ids = [o["order"] for o in everything["items"]]
    assert ids == sorted(ids) and everything["total"] == len(ids) >= 2
    pages = [
        o["order"]
        for off in range(0, len(ids), 2)
        for o in client.get("/api/v1/orders", params={"limit": 2, "offset": off}, headers=h).json()[
            "items"
        ]
    ]
    assert pages == ids
    other = client.get(f"/api/v1/orders/{OTHER}", headers=h).json()
    by_vat = client.get("/api/v1/orders", params={"vat": other["customer"]["vat"]}, headers=h)
    assert OTHER in [o["order"] for o in by_vat.json()["items"]]
    by_site = client.get("/api/v1/orders", params={"site": other["sites"][0]["id"]}, headers=h)
    assert OTHER in [o["order"] for o in by_site.json()["items"]]
    by_plan = client.get("/api/v1/orders", params={"plan": other["plan"]}, headers=h).json()
    assert {o["plan"] for o in by_plan["items"]} == {other["plan"]}
    assert client.get("/api/v1/orders", params={"plan": "nope"}, headers=h).json()["total"] == 0
    too_big = client.get("/api/v1/orders", params={"limit": 201}, headers=h)
    assert too_big.status_code == 422
    assert too_big.json()["violations"][0]["path"] == "query.limit"
    assert client.get("/api/v1/audit", params={"limit": 500}, headers=h).status_code == 422


def test_order_read_has_no_secrets(client: TestClient, store: Store) -> None:
    from apistore import CANARY

    for role in ("viewer", "technician", "noc"):
        r = client.get(f"/api/v1/orders/{OWN}", headers=store.headers(role))
        assert r.status_code == 200
        assert CANARY not in r.text
        assert "password" not in r.text and "snmp_community" not in r.text
    secrets = client.get(f"/api/v1/orders/{OWN}/secrets", headers=store.headers("admin"))
    assert secrets.status_code == 200 and CANARY in secrets.text  # the canaries are real
    for role in ("viewer", "technician", "noc"):
        r = client.get(f"/api/v1/orders/{OWN}/secrets", headers=store.headers(role))
        assert r.status_code == 403 and CANARY not in r.text


def test_body_over_one_mib_is_413(client: TestClient, store: Store) -> None:
    h = {**store.headers("noc"), **YAML}
    big = "# " + "x" * (2 * 1024 * 1024) + "\n"
    r = client.post("/api/v1/orders", content=big, headers=h)
    assert r.status_code == 413
    assert r.headers["content-type"] == "application/problem+json"

    def chunks():  # no Content-Length: the streamed size is what counts
        for _ in range(32):
            yield b"# " + b"x" * 65536 + b"\n"

    r = client.post("/api/v1/orders", content=chunks(), headers=h)
    assert r.status_code == 413
    # Just under the limit is read and judged on its content.
    near = "# " + "x" * (1024 * 1024 - 100) + "\n"
    assert client.post("/api/v1/orders/validate", content=near, headers=h).status_code == 422


def test_unsupported_media_type_is_415(client: TestClient, store: Store) -> None:
    r = client.post(
        "/api/v1/orders",
        content=json.dumps({"order": "x"}),
        headers={**store.headers("noc"), "content-type": "text/plain"},
    )
    assert r.status_code == 415


def test_a_refused_document_cannot_bloat_the_audit_log(client: TestClient, store: Store) -> None:
    doc = {"order": "X" * 100_000, "plan": "nope", "junk": ["y" * 1000] * 200}
    r = client.post("/api/v1/orders", json=doc, headers=store.headers("noc"))
    assert r.status_code == 422
    event = client.get("/api/v1/audit", params={"limit": 1}, headers=store.headers("noc")).json()
    refused = event["items"][0]
    assert refused["action"] == "order.refused" and refused["order"] is None
    assert len(str(refused["detail"])) < 50 * 320
