"""Where each device of an order stands: planned, bound, armed, fetched (what the technician
and the NOC look at during an install)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from provisioner.orders.enrollment import window_open
from provisioner.store.models import DeviceState, Order, utcnow


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


def device_status(session: Session, order: Order) -> list[DeviceStatus]:
    """Per device of ``order``: its state and its last fetch (read in ``session``)."""
    now = utcnow()
    out = []
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
