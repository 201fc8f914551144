"""Enrollment windows (DESIGN.md §5): who may fetch a device's files without credentials.

A technician or the NOC arms a device or a whole order for some minutes
(:meth:`OrdersService.arm`). Inside the window the device gets its files; its first fetch binds
it to the source address it came from, and a second claimant from another address is refused
(and audited) until the device is re-armed. These are the window's rows and questions.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioner.documents.document import normalize_mac
from provisioner.errors import DeviceUnknown, OrderUnknown
from provisioner.store.models import Device, Enrollment, Order


def resolve_target(
    session: Session, target: str, only: Literal["order", "device"] | None = None
) -> tuple[Order, Device | None]:
    """The order (locked for the write) and, for a MAC, the device that ``target`` names;
    ``only`` takes ``target`` as that and nothing else."""
    if only != "device":
        order = session.scalar(select(Order).where(Order.order_id == target).with_for_update())
        if order is not None:
            return order, None
        if only == "order":
            raise OrderUnknown(f"order {target}: not in the store")
    try:
        mac = normalize_mac(target)
    except ValueError:
        raise OrderUnknown(f"{target}: neither an order in the store nor a MAC address") from None
    dev = session.scalar(select(Device).where(Device.mac == mac))
    if dev is None:
        raise DeviceUnknown(f"MAC {mac}: no device with this MAC in the store")
    return dev.order, dev


def open_window(
    session: Session,
    order: Order,
    device: Device | None,
    now: datetime,
    expires: datetime,
    actor: str,
) -> None:
    """Open (or move) the window of ``device``, or of the whole order for None."""
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
