"""Liveness, readiness and metrics: public on purpose (probes and scrapers carry no token)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse

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
def metrics() -> PlainTextResponse:
    return PlainTextResponse(METRICS.render(), media_type=CONTENT_TYPE)
