"""Liveness, readiness and metrics: public on purpose (probes and scrapers carry no token)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from provisioner.api import schemas
from provisioner.api.deps import OrdersDep
from provisioner.metrics import CONTENT_TYPE, METRICS

router = APIRouter(tags=["health"])
# An empty security list marks an operation public in OpenAPI.
PUBLIC: dict[str, Any] = {"security": []}


@router.get("/healthz", response_model=schemas.Health, summary="Liveness", openapi_extra=PUBLIC)
def healthz() -> schemas.Health:
    """200 whenever the process answers."""
    return schemas.Health(status="ok")


@router.get(
    "/readyz",
    response_model=schemas.Health,
    summary="Readiness: the store answers",
    openapi_extra=PUBLIC,
    responses={503: {"model": schemas.Health, "description": "The store is not reachable."}},
)
def readyz(inv: OrdersDep) -> JSONResponse | schemas.Health:
    if not inv.ready():
        return JSONResponse({"status": "store unreachable"}, status_code=503)
    return schemas.Health(status="ok")


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    openapi_extra=PUBLIC,
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def metrics(request: Request, inv: OrdersDep) -> PlainTextResponse:
    """The process's counters, and gauges of the fleet as the store has it (every server
    shows the same fleet gauges: aggregate them with ``max``, not ``sum``)."""
    return PlainTextResponse(METRICS.render() + _fleet(request, inv), media_type=CONTENT_TYPE)


FLEET_SECONDS = 5.0  # a scrape reads the store at most this often


class _Fleet:
    """Gauges from one :meth:`OrdersService.fleet` reading (a prometheus_client collector)."""

    def __init__(self, fleet: Any):
        self.fleet = fleet

    def collect(self) -> Any:
        f = self.fleet
        devices = GaugeMetricFamily(
            "provisioner_fleet_devices",
            "Devices of active orders by state (planned, bound, armed, fetched, refused, "
            "blocked, pushing, verified, failed) and model.",
            labels=("state", "model"),
        )
        for (state, model), n in sorted(f.devices.items()):
            devices.add_metric((state, model), n)
        yield devices
        yield GaugeMetricFamily(
            "provisioner_fleet_fetches", "Fetches of device files recorded in the store.", f.fetches
        )
        yield GaugeMetricFamily(
            "provisioner_fleet_refusals",
            "Refused fetches of known devices' files recorded in the store.",
            f.refusals,
        )
        yield GaugeMetricFamily(
            "provisioner_fleet_blocked_sources",
            "Sources blocked by the sweep guard now.",
            f.blocks,
        )
        pushes = GaugeMetricFamily(
            "provisioner_fleet_push_results",
            "Stored push results by outcome (ok, no change, failed, rolled back, dry-run).",
            labels=("result",),
        )
        for result, n in sorted(f.pushes.items()):
            pushes.add_metric((result,), n)
        yield pushes


def _fleet(request: Request, inv: Any) -> bytes:
    cached = getattr(request.app.state, "fleet_metrics", None)
    now = time.monotonic()
    if cached is not None and now - cached[0] < FLEET_SECONDS:
        return bytes(cached[1])
    try:
        fleet = inv.fleet()
    except Exception:  # the store is down: the counters still go out; /readyz says why
        return b""
    registry = CollectorRegistry()
    registry.register(_Fleet(fleet))
    text = generate_latest(registry)
    request.app.state.fleet_metrics = (now, text)
    return text
