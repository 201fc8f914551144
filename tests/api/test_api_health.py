"""Probes and metrics: public, cheap, and in the Prometheus text format."""

from __future__ import annotations

import re

import pytest
from apistore import OWN, Store
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine

from provisioner.metrics import METRICS, Metrics

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


def _samples(text: str, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    """The samples of ``name`` whose labels include ``labels`` (in any order)."""
    out = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                out.append((sample.labels, sample.value))
    return out


def _value(text: str, name: str, **labels: str) -> float:
    return sum(value for _, value in _samples(text, name, **labels))


def test_metrics_count_requests_by_route_template(client: TestClient, store: Store) -> None:
    name = "provisioner_api_requests_total"
    route = {"route": "/api/v1/orders/{order_id}", "method": "GET"}
    before = _value(client.get("/metrics").text, name, **route, status="200")
    for _ in range(3):
        assert (
            client.get(f"/api/v1/orders/{OWN}", headers=store.headers("viewer")).status_code == 200
        )
    client.get("/api/v1/orders/WT-0000-NOPE", headers=store.headers("viewer"))
    r = client.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert _value(text, name, **route, status="200") == before + 3
    assert _value(text, name, **route, status="404") >= 1
    assert "WT-0000-NOPE" not in text  # templates, not raw paths: bounded label values
    for line in text.splitlines():
        assert line.startswith("# ") or SAMPLE_LINE.match(line), line
    buckets = _samples(
        text, "provisioner_api_request_duration_seconds_bucket", **route, status="200"
    )
    bounds = [float(labels["le"]) for labels, _ in buckets]
    counts = [value for _, value in buckets]
    assert bounds == sorted(bounds) and bounds[-1] == float("inf")
    assert counts == sorted(counts) and counts[-1] >= 3  # cumulative, +Inf last


def test_shared_counters_for_serving_and_push(client: TestClient) -> None:
    before = METRICS.value("provisioner_files_served_total", protocol="tftp")
    METRICS.files_served.labels(protocol="tftp").inc()
    METRICS.blocked_sources.labels(protocol="http").inc()
    METRICS.push_results.labels(result="ok").inc()
    text = client.get("/metrics").text
    assert _value(text, "provisioner_files_served_total", protocol="tftp") == before + 1
    assert 'provisioner_blocked_sources_total{protocol="http"}' in text
    assert 'provisioner_push_results_total{result="ok"}' in text


def test_label_values_are_escaped_in_the_exposition() -> None:
    metrics = Metrics()  # a registry of its own: no clash with the process's
    metrics.files_served.labels(protocol='quote"and\nnewline').inc()
    text = metrics.render().decode()
    assert 'provisioner_files_served_total{protocol="quote\\"and\\nnewline"} 1.0' in text
    with pytest.raises(ValueError, match="label"):
        metrics.files_served.labels(result="ok")
