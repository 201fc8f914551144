"""Store rows to response bodies. Reads only what may be shown: no secret row is touched."""

from __future__ import annotations

import json

from sqlalchemy.orm import object_session

from provisioner.api import schemas
from provisioner.catalog import MODELS
from provisioner.orders.reads import OrderStatus, PushJobSummary
from provisioner.orders.status import DeviceStatus, statuses
from provisioner.store.models import AuditEvent, Device, Order


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


def order_summary(order: Order) -> schemas.OrderSummary:
    return schemas.OrderSummary(
        order=order.order_id,
        customer=schemas.CustomerPublic(name=order.customer.name, vat=order.customer.vat),
        plan=order.plan,
        lines=order.lines,
        state=schemas.OrderState(order.state),
        sites=len(order.sites),
        extensions=len(order.extensions),
        devices=len(order.devices),
        bound=sum(1 for d in order.devices if d.mac or d.serial),
        updated_at=order.updated_at,
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
    return schemas.OrderPublic(
        order=order.order_id,
        customer=schemas.CustomerPublic(name=order.customer.name, vat=order.customer.vat),
        plan=order.plan,
        lines=order.lines,
        state=schemas.OrderState(order.state),
        options=json.loads(order.options),
        numbers=numbers,
        sites=[
            schemas.SitePublic(
                id=s.site_id,
                address=s.address,
                connectivity=s.connectivity,
                pppoe_username=s.pppoe_username,
            )
            for s in order.sites
        ],
        extensions=[
            schemas.ExtensionPublic(
                number=e.number,
                short=e.short,
                type=e.type,
                name=e.name,
                site=e.site.site_id,
                email=e.email,
                mobile=e.mobile,
                conference=[c for c in e.conference.split(",") if c],
                terminal=terminal_of.get(e.id),
            )
            for e in order.extensions
        ],
        devices=_devices_public(order),
        updated_at=order.updated_at,
    )


def _devices_public(order: Order) -> list[schemas.DevicePublic]:
    session = object_session(order)
    assert session is not None, "read inside the orders service's session"
    states = statuses(session, list(order.devices))
    return [device_public(d, st.state) for d, st in zip(order.devices, states, strict=True)]


def status_public(st: DeviceStatus) -> schemas.DeviceStatus:
    """One device's status (from :mod:`provisioner.orders.status`) as the API shows it."""
    return schemas.DeviceStatus(
        order=st.order_id,
        device=st.device_id,
        model=st.model,
        mac=st.identity if st.identity_kind == "mac" and st.identity else None,
        serial=st.identity if st.identity_kind == "serial" and st.identity else None,
        state=st.state,
        title=st.title,
        kind=st.kind,
        site=st.site,
        terminals=[
            schemas.TerminalPublic(slot=t.slot, extension=t.extension, name=t.name)
            for t in st.terminals
        ],
        switch=st.switch,
        port=st.port,
        window_until=st.window_until,
        refusals=st.refusals,
        last_refused_at=st.last_refused_at,
        last_refused_source=st.last_refused_source,
        blocked_until=st.blocked_until,
        last_fetch_at=st.last_at,
        last_fetch_file=st.last_file,
        last_fetch_source=st.last_source,
        bound_source=st.bound_source,
        fetches=st.fetches,
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
        sites=[
            schemas.SitePlace(id=s.site_id, address=s.address, connectivity=s.connectivity)
            for s in o.sites
        ],
        devices=[status_public(d) for d in o.devices],
        free_extensions=[
            schemas.FreeExtensionPublic(short=e.short, name=e.name, type=e.type, site=e.site)
            for e in o.free
        ],
        blocked_sources=o.blocks,
    )


def push_job_summary(j: PushJobSummary) -> schemas.PushJobSummaryPublic:
    return schemas.PushJobSummaryPublic(
        id=j.job_id,
        order=j.order_id,
        started_at=j.started_at,
        finished_at=j.finished_at,
        summary=j.results,
        devices=j.devices,
    )


def audit_public(event: AuditEvent) -> schemas.AuditEventPublic:
    try:
        detail = json.loads(event.detail) if event.detail else {}
    except ValueError:
        detail = {"raw": event.detail}
    if not isinstance(detail, dict):
        detail = {"value": detail}
    return schemas.AuditEventPublic(
        id=event.id,
        at=event.at,
        actor=event.actor,
        action=event.action,
        order=event.order_id,
        device=event.device,
        detail=detail,
    )
