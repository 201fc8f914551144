"""Store rows to response bodies. Reads only what may be shown: no secret row is touched."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import object_session

from provisioner.api import schemas
from provisioner.catalog import MODELS
from provisioner.store.models import AuditEvent, Device, DeviceState, Order


def device_state(dev: Device) -> schemas.DeviceState:
    return schemas.DeviceState.bound if (dev.mac or dev.serial) else schemas.DeviceState.planned


def device_public(dev: Device) -> schemas.DevicePublic:
    model = MODELS.get(dev.model)
    return schemas.DevicePublic(
        id=dev.device_id,
        model=dev.model,
        kind=model.kind if model else "unknown",
        site=dev.site.site_id if dev.site else None,
        mac=dev.mac,
        serial=dev.serial,
        state=device_state(dev),
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
    """Planned or bound, with its last fetch and push (read in the service's session)."""
    return schemas.DeviceStatus(
        order=dev.order.order_id,
        device=dev.device_id,
        model=dev.model,
        mac=dev.mac,
        state=device_state(dev),
        **last_events(dev),
    )


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
        devices=[device_public(d) for d in order.devices],
        updated_at=order.updated_at,
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


# Audit actions the serving and push code record (see audit.py); the status route reads them.
FETCH_ACTIONS = ("file.served",)
PUSH_PREFIX = "push."


def last_events(dev: Device) -> dict[str, Any]:
    """Last fetch and last push of ``dev`` from the audit log (None while never recorded)."""
    session = object_session(dev)
    assert session is not None, "read inside the orders service's session"
    names = [n for n in (dev.device_id, dev.mac) if n]
    base = select(AuditEvent).where(
        AuditEvent.order_id == dev.order.order_id, AuditEvent.device.in_(names)
    )
    fetch = session.scalar(
        base.where(AuditEvent.action.in_(FETCH_ACTIONS)).order_by(AuditEvent.id.desc()).limit(1)
    )
    push = session.scalar(
        base.where(AuditEvent.action.startswith(PUSH_PREFIX))
        .order_by(AuditEvent.id.desc())
        .limit(1)
    )
    out: dict[str, Any] = {
        "last_fetch_at": fetch.at if fetch else None,
        "last_push_at": push.at if push else None,
        "last_push_result": push.action.removeprefix(PUSH_PREFIX) if push else None,
    }
    # The serving layer keeps each device's last fetch in device_state.
    state = session.get(DeviceState, dev.id)
    if state is not None:
        out["last_fetch_at"] = state.last_at or out["last_fetch_at"]
        out["last_fetch_file"] = state.last_file
        out["last_fetch_source"] = state.last_source
        out["bound_source"] = state.bound_source
        out["fetches"] = state.fetches or 0
    return out
