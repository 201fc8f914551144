"""The list of push jobs (``GET /push-jobs``), from their stored results."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from provisioner.api import schemas, views
from provisioner.api.deps import DevicesRead, OrdersDep, PageLimit, PageOffset

router = APIRouter(tags=["push"])


@router.get("/push-jobs", response_model=schemas.PushJobPage, summary="List push jobs")
def list_push_jobs(
    principal: DevicesRead,
    inv: OrdersDep,
    order: Annotated[
        str | None,
        Query(max_length=64, pattern=schemas.ORDER_ID_PATTERN, description="Order id."),
    ] = None,
    limit: PageLimit = 50,
    offset: PageOffset = 0,
) -> schemas.PushJobPage:
    """Jobs that stored a result, newest first, with their devices and results. Running
    jobs appear once their first device is done; ``GET /push-jobs/{id}`` follows one. A
    technician sees the jobs of the token's orders."""
    page = inv.read_push_jobs(
        order_id=order,
        only=principal.visible_orders,
        limit=limit,
        offset=offset,
    )
    return schemas.PushJobPage(
        items=[views.push_job_summary(j) for j in page.items],
        total=page.total,
        limit=limit,
        offset=offset,
    )
