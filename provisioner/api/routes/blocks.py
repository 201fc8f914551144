"""Sources the sweep guard blocked: list them, lift a block (DESIGN.md §5)."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from fastapi import APIRouter, Path

from provisioner.api import schemas, views
from provisioner.api.deps import BlocksLift, DevicesRead, OrdersDep
from provisioner.api.problems import NOT_FOUND
from provisioner.serving import blocks

router = APIRouter(prefix="/blocks", tags=["blocks"])

Source = Annotated[
    str, Path(max_length=45, description="The blocked IP address.", examples=["203.0.113.7"])
]


@router.get("", response_model=schemas.BlockList, summary="Sources blocked for sweeping")
def list_blocks(principal: DevicesRead, inv: OrdersDep) -> schemas.BlockList:
    """Every block in force: such a source gets no file, except with a device's credentials."""
    return schemas.BlockList(items=[views.block_public(b) for b in blocks.active(inv)])


@router.delete(
    "/{source}",
    response_model=schemas.Unblocked,
    summary="Lift the block of a source",
    responses=NOT_FOUND,
)
def unblock(principal: BlocksLift, inv: OrdersDep, source: Source) -> schemas.Unblocked:
    """Every server answers the source again within a second. Audited. 404 for a source
    that is not blocked (or not an address at all)."""
    blocks.lift(inv, source, principal.actor)
    return schemas.Unblocked(source=str(ipaddress.ip_address(source.strip())))
