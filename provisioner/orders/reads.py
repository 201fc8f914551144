"""The read side of the orders service: what adapters show, read in one session they never see.

Every read takes the *view* that turns store rows into what the caller shows (an API schema, a
CLI table row), and runs it inside the read session, so lazy relationships load and nothing
leaks out of it (NetBox's habit: a view declares what it reads and how it is shown; the
session is not the view's business). ``visible`` narrows what a caller may know exists (a
technician's token): an order it may not see answers exactly like one that does not exist.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import func, select, text

from provisioner.errors import DeviceUnknown, OrderUnknown
from provisioner.orders.export import export_order
from provisioner.store import audit
from provisioner.store.access import Store
from provisioner.store.models import AuditEvent, Customer, Device, Order, SecretRow, Site

T = TypeVar("T")


def _everyone(_order_id: str) -> bool:
    return True


Visible = Callable[[str], bool]


@dataclass(frozen=True)
class OrderQuery:
    """Filters of an order listing (all optional); ``only`` limits it to these order ids."""

    vat: str | None = None
    plan: str | None = None
    state: str | None = None
    site: str | None = None
    only: frozenset[str] | None = None


@dataclass(frozen=True)
class AuditQuery:
    order_id: str | None = None
    device: str | None = None
    actor: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    only: frozenset[str] | None = None  # order ids a scoped caller may see


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    total: int


@dataclass(frozen=True)
class SecretValue:
    owner: str
    name: str
    value: str
    source: str


class OrderReads(Store):
    """Reads of the orders service (the base of :class:`OrdersService`)."""

    # ---------------------------------------------------------------- adapters' reads

    def read_order(
        self, order_id: str, view: Callable[[Order], T], *, visible: Visible = _everyone
    ) -> T:
        """``view`` of one order (404 as OrderUnknown when missing or not visible)."""
        if not visible(order_id):
            raise OrderUnknown(f"order {order_id}: not in the store")
        with self.db.read() as session:
            return view(self.get(session, order_id))

    def read_orders(
        self, query: OrderQuery, view: Callable[[Order], T], limit: int = 0, offset: int = 0
    ) -> Page[T]:
        """Orders by id matching ``query``; ``limit`` 0 means all of them."""
        stmt = select(Order).join(Customer, Order.customer_id == Customer.id)
        if query.vat:
            stmt = stmt.where(Customer.vat == query.vat)
        if query.plan:
            stmt = stmt.where(Order.plan == query.plan)
        if query.state:
            stmt = stmt.where(Order.state == query.state)
        if query.site:
            stmt = stmt.where(Order.sites.any(Site.site_id == query.site))
        if query.only is not None:
            stmt = stmt.where(Order.order_id.in_(sorted(query.only)))
        with self.db.read() as session:
            total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
            page = stmt.order_by(Order.order_id).offset(offset)
            if limit:
                page = page.limit(limit)
            return Page([view(o) for o in session.scalars(page)], total)

    def read_device(
        self, mac: str, view: Callable[[Device], T], *, visible: Visible = _everyone
    ) -> T:
        """``view`` of the device with this MAC (it may read more through the device's
        session, ``sqlalchemy.orm.object_session``)."""
        with self.db.read() as session:
            dev = self.find_device(session, mac)
            if not visible(dev.order.order_id):
                raise DeviceUnknown(f"MAC {dev.mac}: no device with this MAC in the store")
            return view(dev)

    def export(self, order_id: str) -> dict[str, Any]:
        """The order as a document that re-applies to the same state; secrets left out."""
        return self.read_order(order_id, export_order)

    def read_secrets(
        self, order_id: str, *, actor: str, visible: Visible = _everyone
    ) -> list[SecretValue]:
        """Every credential of the order, decrypted; the read is audited (never the values)."""
        if not visible(order_id):
            raise OrderUnknown(f"order {order_id}: not in the store")
        with self.db.read() as session:
            order = self.get(session, order_id)
            rows = session.scalars(
                select(SecretRow)
                .where(SecretRow.order_pk == order.id)
                .order_by(SecretRow.owner, SecretRow.name)
            ).all()
            values = [
                SecretValue(r.owner, r.name, self.vault.decrypt(r.ciphertext), r.source)
                for r in rows
            ]
        self.note(actor, "secrets.read", order_id=order_id, count=len(values))
        return values

    def read_audit(
        self, query: AuditQuery, view: Callable[[AuditEvent], T], limit: int, offset: int
    ) -> Sequence[T]:
        """Audit events, newest first, as ``view`` shows them."""
        with self.db.read() as session:
            rows = audit.query(
                session,
                order_id=query.order_id,
                device=query.device,
                actor=query.actor,
                since=query.since,
                until=query.until,
                orders=query.only,
                limit=limit,
                offset=offset,
            )
            return [view(e) for e in rows]

    def note(
        self,
        actor: str,
        action: str,
        *,
        order_id: str | None = None,
        device: str | None = None,
        **detail: Any,
    ) -> None:
        """Write one audit event that is not part of a change (a secret revealed, a read)."""
        with self.db.write() as session:
            audit.record(session, actor, action, order_id=order_id, device=device, **detail)

    def ready(self) -> bool:
        """Whether the store answers (readiness probes)."""
        try:
            with self.db.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception:  # any driver error means "not ready"; the detail is for the log
            return False
        return True
