"""Enrollment windows (DESIGN.md §5): who may fetch a device's files without credentials.

A technician or the NOC arms a device or a whole order for some minutes. Inside the window the
device gets its files; its first fetch binds it to the source address it came from, and a
second claimant from another address is refused (and audited) until the device is re-armed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioner.documents.document import normalize_mac
from provisioner.errors import BindRefused, DeviceUnknown, OrderUnknown
from provisioner.orders.service import OrdersService
from provisioner.store import audit
from provisioner.store.models import Device, DeviceState, Enrollment, Order, utcnow


@dataclass(frozen=True)
class Armed:
    order_id: str
    devices: list[str]  # device ids covered (bound or planned)
    expires_at: datetime


def arm(inv: OrdersService, target: str, minutes: int | None = None, actor: str = "") -> Armed:
    """Arm ``target`` (an order id or a device's MAC) for ``minutes`` (settings default)."""
    actor = actor or audit.default_actor()
    minutes = inv.settings.enrollment_minutes if minutes is None else minutes
    if not 1 <= minutes <= 7 * 24 * 60:
        raise BindRefused(f"--minutes {minutes}: must be 1 to 10080 (a week)")
    now = utcnow()
    expires = now + timedelta(minutes=minutes)
    with inv.db.write() as session:
        order, device = _resolve(session, target)
        if order.state != "active":
            raise BindRefused(f"order {order.order_id}: is {order.state}")
        devices = [device] if device else list(order.devices)
        if device is None:
            _upsert_window(session, order, None, now, expires, actor)
        for dev in devices:
            if device is not None:
                _upsert_window(session, order, dev, now, expires, actor)
            # Re-arming releases the source binding: the box may come back from elsewhere.
            state = session.get(DeviceState, dev.id)
            if state is not None and state.bound_source:
                state.bound_source = None
                state.bound_at = None
        audit.record(
            session,
            actor,
            "enrollment.armed",
            order_id=order.order_id,
            device=device.device_id if device else None,
            minutes=minutes,
        )
        return Armed(order.order_id, [d.device_id for d in devices], expires)


def _resolve(session: Session, target: str) -> tuple[Order, Device | None]:
    order = session.scalar(select(Order).where(Order.order_id == target).with_for_update())
    if order is not None:
        return order, None
    try:
        mac = normalize_mac(target)
    except ValueError:
        raise OrderUnknown(f"{target}: neither an order in the store nor a MAC address") from None
    dev = session.scalar(select(Device).where(Device.mac == mac))
    if dev is None:
        raise DeviceUnknown(f"MAC {mac}: no device with this MAC in the store")
    return dev.order, dev


def _upsert_window(
    session: Session,
    order: Order,
    device: Device | None,
    now: datetime,
    expires: datetime,
    actor: str,
) -> None:
    stmt = select(Enrollment).where(Enrollment.order_pk == order.id)
    stmt = stmt.where(
        Enrollment.device_pk == device.id if device else Enrollment.device_pk.is_(None)
    )
    row = session.scalar(stmt)
    if row is None:
        session.add(
            Enrollment(
                order_pk=order.id,
                device_pk=device.id if device else None,
                armed_at=now,
                expires_at=expires,
                armed_by=actor,
            )
        )
    else:
        row.armed_at, row.expires_at, row.armed_by = now, expires, actor
    session.flush()


def window_open(session: Session, device: Device, now: datetime | None = None) -> datetime | None:
    """When the device's window (its own or its order's) closes, or None if it is closed."""
    now = now or utcnow()
    rows = session.scalars(
        select(Enrollment).where(
            Enrollment.order_pk == device.order_pk,
            (Enrollment.device_pk == device.id) | Enrollment.device_pk.is_(None),
        )
    ).all()
    ends = [r.expires_at for r in rows]
    open_ends = [e for e in ends if e is not None and e > now]
    return max(open_ends) if open_ends else None


@dataclass(frozen=True)
class DeviceStatus:
    device_id: str
    model: str
    identity: str
    state: str  # planned | bound | armed | fetched
    window_until: datetime | None
    bound_source: str | None
    last_file: str | None
    last_hash: str | None
    last_at: datetime | None
    last_source: str | None
    last_user_agent: str | None
    refusals: int = 0  # fetches refused (window closed, another source, wrong credentials)
    last_refused_at: datetime | None = None
    last_refused_source: str | None = None


def status(inv: OrdersService, order_id: str) -> list[DeviceStatus]:
    """Per device of the order: planned / bound / armed / fetched, with its last fetch."""
    now = utcnow()
    out = []
    with inv.db.read() as session:
        order = inv.get(session, order_id)
        for dev in order.devices:
            st = session.get(DeviceState, dev.id)
            until = window_open(session, dev, now)
            identity = dev.mac or dev.serial or ""
            if not identity:
                state = "planned"
            elif st is not None and st.last_at is not None:
                state = "fetched"
            elif until is not None:
                state = "armed"
            else:
                state = "bound"
            out.append(
                DeviceStatus(
                    dev.device_id,
                    dev.model,
                    identity,
                    state,
                    until,
                    st.bound_source if st else None,
                    st.last_file if st else None,
                    st.last_hash if st else None,
                    st.last_at if st else None,
                    st.last_source if st else None,
                    st.last_user_agent if st else None,
                    st.refusals if st else 0,
                    st.last_refused_at if st else None,
                    st.last_refused_source if st else None,
                )
            )
    return out
