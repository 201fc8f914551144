"""Devices: read by MAC, status, files (masked preview), bind/unbind, swap (RMA), arm."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import AfterValidator, WithJsonSchema

from provisioner.api import schemas, views
from provisioner.api.auth import Principal
from provisioner.api.deps import (
    DevicesArm,
    DevicesBind,
    DevicesRead,
    OrdersDep,
    PageLimit,
    PageOffset,
    renderer_of,
)
from provisioner.api.problems import CONFLICT, NOT_FOUND
from provisioner.api.routes.orders import OrderId
from provisioner.api.schemas import MAC_SCHEMA, api_mac
from provisioner.errors import DeviceUnknown, OrderUnknown, RenderError
from provisioner.orders.reads import DeviceQuery
from provisioner.orders.service import OrdersService

router = APIRouter(tags=["devices"])

MacPath = Annotated[
    str,
    Path(description="MAC, any usual spelling."),
    AfterValidator(api_mac),
    WithJsonSchema(MAC_SCHEMA),
]


def _check_order_visible(principal: Principal, order_id: str) -> None:
    if not principal.sees(order_id):
        raise OrderUnknown(f"order {order_id}: not in the store")


@router.post(
    "/orders/{order_id}/bind",
    response_model=schemas.BindPublic,
    summary="Bind the box in hand to a planned device",
    responses={**NOT_FOUND, **CONFLICT},
)
def bind_device(
    principal: DevicesBind, inv: OrdersDep, order_id: OrderId, body: schemas.BindCreate
) -> schemas.BindPublic:
    """409 past the terminal limit, for a taken extension, or a MAC already in use."""
    _check_order_visible(principal, order_id)
    done = inv.bind(
        order_id,
        mac=body.mac,
        serial=body.serial,
        extension=body.extension,
        device_id=body.device,
        model=body.model,
        actor=principal.actor,
    )
    return schemas.BindPublic(
        order=order_id,
        device=done.device_id,
        identity=body.mac or body.serial,
        state=_state_of(inv, order_id, done.device_id),
    )


def _state_of(inv: OrdersService, order_id: str, device_id: str) -> schemas.DeviceState:
    found = inv.read_devices(DeviceQuery(order_id=order_id)).items
    return next(d.state for d in found if d.device_id == device_id)


@router.get(
    "/devices",
    response_model=schemas.DevicePage,
    summary="List devices of the fleet, by state, order, site or model",
)
def list_devices(
    principal: DevicesRead,
    inv: OrdersDep,
    response: Response,
    request: Request,
    limit: PageLimit = 50,
    offset: PageOffset = 0,
    state: Annotated[schemas.DeviceState | None, Query(description="Device state.")] = None,
    order: Annotated[
        str | None, Query(max_length=64, pattern=schemas.ORDER_ID_PATTERN, description="Order id.")
    ] = None,
    site: Annotated[str | None, Query(max_length=40, description="Site id.")] = None,
    model: Annotated[str | None, Query(max_length=40, description="Catalog model key.")] = None,
) -> schemas.DevicePage:
    """Devices by order and position. ``total`` counts every match; the ``Link`` header
    names the next and previous pages. A technician sees the devices of the token's orders."""
    query = DeviceQuery(
        state=state,
        order_id=order,
        site=site,
        model=model,
        only=principal.visible_orders,
    )
    page = inv.read_devices(query, limit, offset)
    links = []
    if offset + limit < page.total:
        links.append(_link(request, limit, offset + limit, "next"))
    if offset > 0:
        links.append(_link(request, limit, max(0, offset - limit), "prev"))
    if links:
        response.headers["Link"] = ", ".join(links)
    return schemas.DevicePage(
        items=[views.status_public(d) for d in page.items],
        total=page.total,
        limit=limit,
        offset=offset,
    )


def _link(request: Request, limit: int, offset: int, rel: str) -> str:
    url = request.url.include_query_params(limit=limit, offset=offset)
    return f'<{url.path}?{url.query}>; rel="{rel}"'


@router.post(
    "/orders/{order_id}/unbind",
    response_model=schemas.BindPublic,
    summary="Make a bound device planned again",
    responses={**NOT_FOUND, **CONFLICT},
)
def unbind_device(
    principal: DevicesBind, inv: OrdersDep, order_id: OrderId, body: schemas.UnbindCreate
) -> schemas.BindPublic:
    """A terminal that a bind created goes away with its box."""
    _check_order_visible(principal, order_id)
    done = inv.unbind(order_id, mac=body.mac, device_id=body.device, actor=principal.actor)
    return schemas.BindPublic(
        order=order_id, device=done.device_id, state=schemas.DeviceState.planned
    )


@router.get(
    "/devices/{mac}",
    response_model=schemas.DeviceDetail,
    summary="Read a device by MAC",
    responses=NOT_FOUND,
)
def get_device(principal: DevicesRead, inv: OrdersDep, mac: MacPath) -> schemas.DeviceDetail:
    return inv.read_device(mac, views.device_detail, visible=principal.sees)


@router.get(
    "/devices/{mac}/status",
    response_model=schemas.DeviceStatus,
    summary="A device's provisioning state",
    responses=NOT_FOUND,
)
def device_status(principal: DevicesRead, inv: OrdersDep, mac: MacPath) -> schemas.DeviceStatus:
    """Planned or bound; last fetch and push come from the audit log when recorded."""
    return inv.read_device(mac, views.device_status, visible=principal.sees)


@router.post(
    "/devices/{mac}/swap",
    response_model=schemas.SwapPublic,
    summary="Swap a box (RMA): the new MAC takes over the device",
    responses={**NOT_FOUND, **CONFLICT},
)
def swap_device(
    principal: DevicesBind, inv: OrdersDep, mac: MacPath, body: schemas.SwapCreate
) -> schemas.SwapPublic:
    """One write transaction: config, extension and secrets stay with the device; the old
    MAC stops matching anything, so the returned box can no longer fetch files."""
    order_id, _, old = inv.read_device(mac, views.device_ref, visible=principal.sees)
    done = inv.swap(order_id, old, body.new_mac, actor=principal.actor)
    return schemas.SwapPublic(
        order=order_id, device=done.device_id, old_mac=old, new_mac=body.new_mac
    )


FileName = Annotated[
    str,
    Path(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
        description="A file name from GET /devices/{mac}/files.",
        examples=["0080f0000001.cfg"],
    ),
]


def _rendered(
    request: Request, inv: OrdersService, principal: Principal, mac: str
) -> tuple[Any, dict[str, Any]]:
    """(DeviceKey, name -> RenderedFile) of a device this caller may see."""
    mac = inv.read_device(mac, views.device_ref, visible=principal.sees)[2]
    try:
        key, files = renderer_of(request).device_files(mac)
    except RenderError as exc:
        raise HTTPException(409, f"cannot render this device's files: {exc}") from None
    return key, files


@router.get(
    "/devices/{mac}/files",
    response_model=schemas.DeviceFiles,
    summary="The files rendered for a device",
    responses={**NOT_FOUND, **CONFLICT},
)
def list_files(
    principal: DevicesRead, inv: OrdersDep, request: Request, mac: MacPath
) -> schemas.DeviceFiles:
    """Names and formats of every file: fetched by the device, pushed, or shown."""
    key, files = _rendered(request, inv, principal, mac)
    return schemas.DeviceFiles(
        order=key.order_id,
        device=key.device_id,
        model=key.model,
        files=[
            schemas.DeviceFilePublic(
                name=f.name, format=f.format or "text", served=f.served, size=len(f.data)
            )
            for f in files.values()
        ],
    )


@router.get(
    "/devices/{mac}/files/{name}",
    summary="Preview a device's file (secrets masked)",
    response_class=PlainTextResponse,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        **NOT_FOUND,
        **CONFLICT,
    },
)
def preview_file(
    principal: DevicesRead,
    inv: OrdersDep,
    request: Request,
    mac: MacPath,
    name: FileName,
    reveal: Annotated[
        bool, Query(description="Show secrets too (needs secrets:read; audited).")
    ] = False,
) -> PlainTextResponse:
    """The file as the device would get it, every secret replaced by ``********``."""
    if reveal and "secrets:read" not in principal.permissions:
        raise HTTPException(403, f"role {principal.role} may not secrets:read")
    key, files = _rendered(request, inv, principal, mac)
    if name not in files:  # same answer as an unknown device: names are not an oracle
        raise DeviceUnknown(f"MAC {mac}: no file {name} for this device")
    f = files[name]
    if reveal:
        inv.note(principal.actor, "file.revealed", order_id=key.order_id, device=key.device_id,
                 file=name)  # fmt: skip
        data = f.data
    else:
        data = f.masked()
    return PlainTextResponse(data.decode("utf-8"), media_type="text/plain; charset=utf-8")


def _arm(
    inv: OrdersService,
    principal: Principal,
    target: str,
    body: schemas.ArmCreate | None,
    only: Literal["order", "device"],
) -> schemas.ArmedPublic:
    minutes = body.minutes if body else None
    armed = inv.arm(target, minutes, actor=principal.actor, only=only)
    expires = armed.expires_at
    assert expires is not None
    return schemas.ArmedPublic(order=armed.order_id, devices=armed.devices, expires_at=expires)


@router.post(
    "/orders/{order_id}/arm",
    response_model=schemas.ArmedPublic,
    summary="Open an enrollment window for every device of an order",
    responses={**NOT_FOUND, **CONFLICT},
)
def arm_order(
    principal: DevicesArm,
    inv: OrdersDep,
    order_id: OrderId,
    body: schemas.ArmCreate | None = None,
) -> schemas.ArmedPublic:
    """Devices of the order may fetch their files without credentials until it closes;
    re-arming releases their source-address binding."""
    _check_order_visible(principal, order_id)
    return _arm(inv, principal, order_id, body, "order")


@router.post(
    "/devices/{mac}/arm",
    response_model=schemas.ArmedPublic,
    summary="Open an enrollment window for one device",
    responses={**NOT_FOUND, **CONFLICT},
)
def arm_device(
    principal: DevicesArm,
    inv: OrdersDep,
    mac: MacPath,
    body: schemas.ArmCreate | None = None,
) -> schemas.ArmedPublic:
    norm = inv.read_device(mac, views.device_ref, visible=principal.sees)[2]
    return _arm(inv, principal, norm, body, "device")
