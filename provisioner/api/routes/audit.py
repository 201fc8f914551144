"""The audit log, newest first, filtered."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BeforeValidator

from provisioner.api import schemas, views
from provisioner.api.deps import AuditRead, OrdersDep, PageLimit, PageOffset
from provisioner.orders.reads import AuditQuery

router = APIRouter(tags=["audit"])


_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def _iso_only(value: object) -> object:
    # Pydantic would also take a bare number as a Unix time; the schema promises RFC 3339.
    if isinstance(value, str) and not _ISO.match(value):
        raise ValueError("must be an RFC 3339 date-time like 2026-11-22T08:00:00Z")
    return value


When = Annotated[datetime | None, BeforeValidator(_iso_only)]


@router.get("/audit", response_model=schemas.AuditPage, summary="Query the audit log")
def query_audit(
    principal: AuditRead,
    inv: OrdersDep,
    order: Annotated[str | None, Query(max_length=64, description="Order id.")] = None,
    device: Annotated[str | None, Query(max_length=64, description="Device id or MAC.")] = None,
    actor: Annotated[str | None, Query(max_length=100, description="e.g. api:noc-1")] = None,
    since: Annotated[When, Query(description="From this time (inclusive).")] = None,
    until: Annotated[When, Query(description="Before this time.")] = None,
    limit: PageLimit = 50,
    offset: PageOffset = 0,
) -> schemas.AuditPage:
    """A technician sees only the events of the orders on the token."""
    query = AuditQuery(
        order_id=order,
        device=device,
        actor=actor,
        since=since,
        until=until,
        only=principal.visible_orders,
    )
    items = list(inv.read_audit(query, views.audit_public, limit, offset))
    total = inv.count_audit(query)
    return schemas.AuditPage(items=items, total=total, limit=limit, offset=offset)
