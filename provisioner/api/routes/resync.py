"""Resync: tell an order's phones, or one device, to re-fetch their files (NOTIFY check-sync)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from provisioner.api import schemas
from provisioner.api.auth import Principal
from provisioner.api.deps import DevicesResync, resyncer_of
from provisioner.api.problems import CONFLICT, NOT_FOUND
from provisioner.api.routes.devices import MacPath
from provisioner.api.routes.orders import OrderId

router = APIRouter(tags=["devices"])


async def _resync(request: Request, principal: Principal, target: str) -> schemas.ResyncPublic:
    resyncer = resyncer_of(request)
    done = await run_in_threadpool(
        resyncer.resync, target, actor=principal.actor, visible=principal.sees
    )
    items = [
        schemas.ResyncedDevice(
            order=r.target.order_id,
            device=r.target.device_id,
            model=r.target.model,
            mac=r.target.mac,
            user=r.target.user,
            outcome=schemas.ResyncOutcome(str(r.answer.outcome)),
            status=r.answer.status,
            reason=r.answer.reason,
            seconds=round(r.answer.seconds, 3),
        )
        for r in done
    ]
    return schemas.ResyncPublic(items=items, delivered=sum(r.ok for r in done))


@router.post(
    "/orders/{order_id}/resync",
    response_model=schemas.ResyncPublic,
    summary="Tell the order's desk phones and DECT bases to re-fetch their files",
    responses={**NOT_FOUND, **CONFLICT},
)
async def resync_order(
    principal: DevicesResync, request: Request, order_id: OrderId
) -> schemas.ResyncPublic:
    """One SIP NOTIFY (``Event: check-sync``) per bound desk phone and DECT base, through the
    registrar, to the contact it registered; no reboot. The answer says, per device, whether
    it took it. 409 for a cancelled order or one with no phone bound. Audited."""
    return await _resync(request, principal, order_id)


@router.post(
    "/devices/{mac}/resync",
    response_model=schemas.ResyncPublic,
    summary="Tell one desk phone or DECT base to re-fetch its files",
    responses={**NOT_FOUND, **CONFLICT},
)
async def resync_device(
    principal: DevicesResync, request: Request, mac: MacPath
) -> schemas.ResyncPublic:
    """As for an order, for one device. 409 for a device that takes no check-sync (a switch,
    an IAD: they are pushed) or of a cancelled order."""
    return await _resync(request, principal, mac)
