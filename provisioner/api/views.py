"""Store rows to response bodies. Reads only what may be shown: no secret row is touched."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy.orm import object_session

from provisioner.api import schemas
from provisioner.catalog import MODELS
from provisioner.orders.reads import OrderStatus, PushJobSummary
from provisioner.orders.status import DeviceStatus, statuses
from provisioner.serving.blocks import Block
from provisioner.store.models import AuditEvent, Device, Order

M = TypeVar("M", bound=BaseModel)


def _public(model: type[M], source: object, /, **given: Any) -> M:
    """``model`` with the fields ``given``; every other field is ``source``'s attribute of
    the same name."""
    same = {name: getattr(source, name) for name in model.model_fields if name not in given}
    return model(**same, **given)


def device_state(dev: Device) -> schemas.DeviceState:
    """The device's state in the shared vocabulary (read in the service's session)."""
    session = object_session(dev)
    assert session is not None, "read inside the orders service's session"
    return statuses(session, [dev])[0].state


def device_public(dev: Device, state: schemas.DeviceState | None = None) -> schemas.DevicePublic:
    model = MODELS.get(dev.model)
    return schemas.DevicePublic(
        id=dev.device_id,
        model=dev.model,
        kind=model.kind if model else "unknown",
        site=dev.site.site_id if dev.site else None,
        mac=dev.mac,
        serial=dev.serial,
        state=state or device_state(dev),
        extensions=[t.extension.short for t in dev.terminals],
        switch=dev.switch.device_id if dev.switch else None,
        port=dev.port,
        handsets=[
            schemas.HandsetPublic(slot=t.slot, extension=t.extension.short, model=t.model)
            for t in dev.terminals
            if t.slot > 0
        ],
    )


def device_detail(dev: Device) -> schemas.DeviceDetail:
    return schemas.DeviceDetail(
        **device_public(dev).model_dump(),
        order=dev.order.order_id,
        order_state=schemas.OrderState(dev.order.state),
    )


def device_ref(dev: Device) -> tuple[str, str, str]:
    """(order id, device id, MAC) of a device."""
    return dev.order.order_id, dev.device_id, dev.mac or ""


def device_status(dev: Device) -> schemas.DeviceStatus:
    """Its state, last fetch and last push (read in the service's session)."""
    session = object_session(dev)
    assert session is not None, "read inside the orders service's session"
    return status_public(statuses(session, [dev])[0])


def _order_head(order: Order) -> dict[str, Any]:
    """The fields an order's summary and its full view name otherwise than the store (the
    others, plan, lines and updated_at, are the order's own)."""
    return {
        "order": order.order_id,
        "customer": schemas.CustomerPublic(name=order.customer.name, vat=order.customer.vat),
        "state": schemas.OrderState(order.state),
    }


def order_summary(order: Order) -> schemas.OrderSummary:
    return _public(
        schemas.OrderSummary,
        order,
        **_order_head(order),
        sites=len(order.sites),
        extensions=len(order.extensions),
        devices=len(order.devices),
        bound=sum(1 for d in order.devices if d.mac or d.serial),
    )


def order_public(order: Order) -> schemas.OrderPublic:
    terminal_of: dict[int, str] = {}
    for d in order.devices:
        for t in d.terminals:
            terminal_of[t.extension_pk] = d.device_id
    numbers = schemas.NumbersPublic()
    groups: dict[int, list[str]] = {}
    for n in order.numbers:
        if n.kind == "single":
            numbers.single.append(n.number)
        elif n.kind == "gnr":
            numbers.gnr.append(schemas.GnrPublic(first=n.number, last=n.last or n.number))
        else:
            groups.setdefault(n.grp, []).append(n.number)
    numbers.isdn_groups = [groups[k] for k in sorted(groups)]
    return _public(
        schemas.OrderPublic,
        order,
        **_order_head(order),
        options=json.loads(order.options),
        numbers=numbers,
        sites=[_public(schemas.SitePublic, s, id=s.site_id) for s in order.sites],
        extensions=[
            _public(
                schemas.ExtensionPublic,
                e,
                site=e.site.site_id,
                conference=[c for c in e.conference.split(",") if c],
                terminal=terminal_of.get(e.id),
            )
            for e in order.extensions
        ],
        devices=_devices_public(order),
    )


def _devices_public(order: Order) -> list[schemas.DevicePublic]:
    session = object_session(order)
    assert session is not None, "read inside the orders service's session"
    states = statuses(session, list(order.devices))
    return [device_public(d, st.state) for d, st in zip(order.devices, states, strict=True)]


def status_public(st: DeviceStatus) -> schemas.DeviceStatus:
    """One device's status (from :mod:`provisioner.orders.status`) as the API shows it."""
    return _public(
        schemas.DeviceStatus,
        st,
        order=st.order_id,
        device=st.device_id,
        mac=st.identity if st.identity_kind == "mac" and st.identity else None,
        serial=st.identity if st.identity_kind == "serial" and st.identity else None,
        terminals=[_public(schemas.TerminalPublic, t) for t in st.terminals],
        last_fetch_at=st.last_at,
        last_fetch_file=st.last_file,
        last_fetch_source=st.last_source,
        last_push_at=st.push_at,
        last_push_result=st.push_result,
        last_push_job=st.push_job,
        last_push_error=st.push_error,
        last_resync_at=st.resync_at,
        last_resync_outcome=st.resync_outcome,
    )


def order_status_public(o: OrderStatus) -> schemas.OrderStatusPublic:
    return schemas.OrderStatusPublic(
        order=o.order_id,
        customer=schemas.CustomerPublic(name=o.customer, vat=o.vat),
        plan=o.plan,
        state=schemas.OrderState(o.state),
        counts=o.counts(),
        sites=[_public(schemas.SitePlace, s, id=s.site_id) for s in o.sites],
        devices=[status_public(d) for d in o.devices],
        free_extensions=[_public(schemas.FreeExtensionPublic, e) for e in o.free],
        blocked_sources=o.blocks,
    )


def push_job_summary(j: PushJobSummary) -> schemas.PushJobSummaryPublic:
    return _public(
        schemas.PushJobSummaryPublic, j, id=j.job_id, order=j.order_id, summary=j.results
    )


def audit_public(event: AuditEvent) -> schemas.AuditEventPublic:
    try:
        detail = json.loads(event.detail) if event.detail else {}
    except ValueError:
        detail = {"raw": event.detail}
    if not isinstance(detail, dict):
        detail = {"value": detail}
    return _public(schemas.AuditEventPublic, event, order=event.order_id, detail=detail)


def block_public(block: Block) -> schemas.BlockPublic:
    return _public(schemas.BlockPublic, block, unknown_names=block.names)
