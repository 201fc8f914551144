"""Dependencies as ``Annotated`` aliases: the store, and one alias per permission."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Query, Request

from provisioner.api.auth import Principal, require
from provisioner.orders.service import OrdersService

if TYPE_CHECKING:
    from provisioner.render.engine import Renderer
    from provisioner.voice.resync import Resyncer


def get_inventory(request: Request) -> OrdersService:
    inventory: OrdersService = request.app.state.inventory
    return inventory


OrdersDep = Annotated[OrdersService, Depends(get_inventory)]


def renderer_of(request: Request) -> Renderer:
    """The app's renderer, built on first use (the engine loads drivers and templates once)."""
    renderer: Renderer | None = getattr(request.app.state, "renderer", None)
    if renderer is None:
        from provisioner.render.engine import Renderer

        renderer = Renderer(request.app.state.settings, request.app.state.inventory)
        request.app.state.renderer = renderer
    return renderer


def resyncer_of(request: Request) -> Resyncer:
    """The app's resyncer (registrar, port and timeout from the settings), built on first use."""
    resyncer: Resyncer | None = getattr(request.app.state, "resyncer", None)
    if resyncer is None:
        from provisioner.voice.resync import Resyncer

        resyncer = Resyncer(request.app.state.inventory)
        request.app.state.resyncer = resyncer
    return resyncer


OrdersRead = Annotated[Principal, Depends(require("orders:read"))]
OrdersWrite = Annotated[Principal, Depends(require("orders:write"))]
DevicesRead = Annotated[Principal, Depends(require("devices:read"))]
DevicesBind = Annotated[Principal, Depends(require("devices:bind"))]
DevicesArm = Annotated[Principal, Depends(require("devices:arm"))]
DevicesPush = Annotated[Principal, Depends(require("devices:push"))]
DevicesResync = Annotated[Principal, Depends(require("devices:resync"))]
AuditRead = Annotated[Principal, Depends(require("audit:read"))]
SecretsRead = Annotated[Principal, Depends(require("secrets:read"))]
BlocksLift = Annotated[Principal, Depends(require("blocks:lift"))]

# Page size is capped in the schema (a larger limit is refused with 422, not clamped).
PageLimit = Annotated[int, Query(ge=1, le=200, description="Items per page (at most 200).")]
PageOffset = Annotated[int, Query(ge=0, le=1_000_000, description="Items to skip.")]
