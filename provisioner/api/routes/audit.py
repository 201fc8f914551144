"""The audit log, newest first, filtered."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BeforeValidator
from sqlalchemy import select

from provisioner.api import schemas, views
from provisioner.api.deps import AuditRead, OrdersDep, PageLimit, PageOffset
from provisioner.store.models import AuditEvent

router = APIRouter(tags=["audit"])


_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def _iso_only(value: object) -> object:
    # Pydantic would also take a bare number as a Unix time; the schema promises RFC 3339.
    if isinstance(value, str) and not _ISO.match(value):
        raise ValueError("must be an RFC 3339 date-time like 2026-11-22T08:00:00Z")
    return value


When = Annotated[datetime | None, BeforeValidator(_iso_only)]


def _utc_naive(value: datetime) -> datetime:
    # Stored in UTC without an offset (SQLite); compare like with like.
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None)


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
    stmt = select(AuditEvent).order_by(AuditEvent.id.desc())
    if order:
        stmt = stmt.where(AuditEvent.order_id == order)
    if device:
        stmt = stmt.where(AuditEvent.device == device)
    if actor:
        stmt = stmt.where(AuditEvent.actor == actor)
    if since:
        stmt = stmt.where(AuditEvent.at >= _utc_naive(since))
    if until:
        stmt = stmt.where(AuditEvent.at < _utc_naive(until))
    if principal.scoped:
        stmt = stmt.where(AuditEvent.order_id.in_(sorted(principal.token.orders)))
    with inv.db.read() as session:
        rows = session.scalars(stmt.offset(offset).limit(limit)).all()
        items = [views.audit_public(e) for e in rows]
    return schemas.AuditPage(items=items, limit=limit, offset=offset)
