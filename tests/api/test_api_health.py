"""Probes and metrics: public, cheap, and in the Prometheus text format."""

from __future__ import annotations

import re

import pytest
from apistore import OWN, Store
from fastapi.testclient import TestClient
from sqlalchemy import create_engine

from provisioner.api.metrics import REGISTRY, Registry

SAMPLE_LINE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? -?[0-9.e+Inf]+$'
)


def test_healthz_and_readyz_need_no_token(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200


def test_readyz_is_503_when_the_store_is_unreachable(
    client: TestClient, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = create_engine("sqlite:////nonexistent-dir/provisioner.db")
    monkeypatch.setattr(store.inventory.db, "engine", gone)
    r = client.get("/readyz")
    assert r.status_code == 503
    assert client.get("/healthz").status_code == 200  # alive, just not ready


def _value(text: str, prefix: str) -> float:
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_requests_by_route_template(client: TestClient, store: Store) -> None:
    key = (
        "provisioner_api_requests_total"
        '{route="/api/v1/orders/{order_id}",method="GET",status="200"}'
    )
    before = _value(client.get("/metrics").text, key)
    for _ in range(3):
        assert (
            client.get(f"/api/v1/orders/{OWN}", headers=store.headers("viewer")).status_code == 200
        )
    client.get("/api/v1/orders/WT-0000-NOPE", headers=store.headers("viewer"))
    r = client.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert _value(text, key) == before + 3
    assert 'route="/api/v1/orders/{order_id}",method="GET",status="404"' in text
    assert "WT-0000-NOPE" not in text  # templates, not raw paths: bounded label values
    for line in text.splitlines():
        assert line.startswith("# ") or SAMPLE_LINE.match(line), line
    buckets = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("provisioner_api_request_duration_seconds_bucket{")
        and 'route="/api/v1/orders/{order_id}",method="GET",status="200"' in line
    ]
    assert buckets == sorted(buckets) and buckets[-1] >= 3  # cumulative, +Inf last


def test_shared_counters_for_serving_and_push(client: TestClient) -> None:
    before = REGISTRY.files_served.value(protocol="tftp")
    REGISTRY.files_served.inc(protocol="tftp")
    REGISTRY.blocked_sources.inc(protocol="http")
    REGISTRY.push_results.inc(result="ok")
    text = client.get("/metrics").text
    assert f'provisioner_files_served_total{{protocol="tftp"}} {int(before + 1)}' in text
    assert 'provisioner_blocked_sources_total{protocol="http"}' in text
    assert 'provisioner_push_results_total{result="ok"}' in text


def test_registry_refuses_conflicts_and_wrong_labels() -> None:
    reg = Registry()
    c = reg.counter("x_total", "x", ("a",))
    assert reg.counter("x_total", "x", ("a",)) is c
    with pytest.raises(ValueError, match="registered differently"):
        reg.counter("x_total", "x", ("b",))
    with pytest.raises(ValueError, match="labels"):
        c.inc(b="1")
    c.inc(a='quote"and\nnewline')
    assert 'x_total{a="quote\\"and\\nnewline"} 1' in reg.render()
