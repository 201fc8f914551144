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

from provisioner.documents.document import normalize_mac
from provisioner.errors import DeviceUnknown, OrderUnknown
from provisioner.orders.export import export_order
from provisioner.orders.status import DeviceStatus, State, fingerprint, statuses
from provisioner.store import audit
from provisioner.store.access import Store
from provisioner.store.audit import AuditQuery
from provisioner.store.filters import where_equal, where_in
from provisioner.store.models import (
    AuditEvent,
    Customer,
    Device,
    Extension,
    Order,
    SecretRow,
    Site,
    SourceBlock,
    Terminal,
    utcnow,
)
from provisioner.store.push_models import PushResultRow

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
class Page(Generic[T]):
    items: list[T]
    total: int


@dataclass(frozen=True)
class DeviceQuery:
    """Filters of the fleet's device listing (all optional)."""

    state: State | None = None
    order_id: str | None = None
    site: str | None = None
    model: str | None = None
    only: frozenset[str] | None = None  # order ids a scoped caller may see


@dataclass(frozen=True)
class SiteInfo:
    site_id: str
    address: str
    connectivity: str


@dataclass(frozen=True)
class FreeExtension:
    """An extension no terminal serves yet: a phone may be bound to it (with its model)."""

    short: int
    name: str
    type: str
    site: str


@dataclass(frozen=True)
class OrderStatus:
    """One order as the install appointment sees it: every device's state in one read."""

    order_id: str
    customer: str
    vat: str
    plan: str
    state: str  # active | cancelled
    sites: list[SiteInfo]
    devices: list[DeviceStatus]
    free: list[FreeExtension]
    blocks: dict[str, datetime]  # sources of this order's devices blocked now -> until

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.devices:
            out[d.state.value] = out.get(d.state.value, 0) + 1
        return out


@dataclass(frozen=True)
class PushJobSummary:
    """A push job as stored: when, on which order, how many devices ended how."""

    job_id: str
    order_id: str
    started_at: datetime
    finished_at: datetime
    results: dict[str, int]
    devices: list[str]


@dataclass(frozen=True)
class Fleet:
    """What the metrics gauges show of the whole store."""

    devices: dict[tuple[str, str], int]  # (state, model) -> devices of active orders
    fetches: int
    refusals: int
    blocks: int
    pushes: dict[str, int]  # stored push results by result


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
        stmt = where_equal(
            stmt, {Customer.vat: query.vat, Order.plan: query.plan, Order.state: query.state}
        )
        if query.site:
            stmt = stmt.where(Order.sites.any(Site.site_id == query.site))
        stmt = where_in(stmt, Order.order_id, query.only)
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

    def read_status(self, order_id: str, *, visible: Visible = _everyone) -> OrderStatus:
        """Every device of the order with its state (:mod:`provisioner.orders.status`)."""
        if not visible(order_id):
            raise OrderUnknown(f"order {order_id}: not in the store")
        with self.db.read() as session:
            order = self.get(session, order_id)
            devices = statuses(session, list(order.devices))
            served = set(session.scalars(
                select(Terminal.extension_pk).where(Terminal.order_pk == order.id)
            ))  # fmt: skip
            sources = {
                s for d in devices for s in (d.bound_source, d.last_source, d.last_refused_source)
            }
            blocks = {
                src: until
                for src, until in session.execute(
                    select(SourceBlock.source, SourceBlock.until).where(
                        SourceBlock.lifted_at.is_(None), SourceBlock.until > utcnow()
                    )
                )
                if src in sources
            }
            return OrderStatus(
                order.order_id,
                order.customer.name,
                order.customer.vat,
                order.plan,
                order.state,
                [SiteInfo(s.site_id, s.address, s.connectivity) for s in order.sites],
                devices,
                [
                    FreeExtension(e.short, e.name, e.type, e.site.site_id)
                    for e in order.extensions
                    if e.id not in served
                ],
                blocks,
            )

    def watch_key(self, order_id: str) -> tuple[int, ...]:
        """A value that changes whenever a device of the order changes state (cheap: the
        live stream asks it once a second)."""
        with self.db.read() as session:
            return fingerprint(session, self.get(session, order_id))

    def read_devices(
        self, query: DeviceQuery, limit: int = 0, offset: int = 0
    ) -> Page[DeviceStatus]:
        """Devices of the store by order and position, filtered; ``limit`` 0 means all."""
        stmt = select(Device).join(Order, Device.order_pk == Order.id)
        stmt = where_equal(stmt, {Order.order_id: query.order_id, Device.model: query.model})
        stmt = where_in(stmt, Order.order_id, query.only)
        if query.site:
            # A terminal's site is its extension's.
            on_site = Site.site_id == query.site
            stmt = stmt.where(
                Device.site.has(on_site)
                | Device.terminals.any(Terminal.extension.has(Extension.site.has(on_site)))
            )
        stmt = stmt.order_by(Order.order_id, Device.position)
        with self.db.read() as session:
            if query.state is None:
                total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
                page = stmt.offset(offset)
                if limit:
                    page = page.limit(limit)
                return Page(statuses(session, list(session.scalars(page))), total)
            # The state is computed, not stored: judge every candidate, then page.
            found = [
                d for d in statuses(session, list(session.scalars(stmt))) if d.state == query.state
            ]
            end = offset + limit if limit else None
            return Page(found[offset:end], len(found))

    def resolve_device(self, name: str, order_id: str | None = None) -> tuple[str, str, str]:
        """(order id, device id, MAC or serial) of the device ``name`` names: a MAC in any
        usual spelling, or a device id (of ``order_id``, else of any one active order). An
        unknown name is refused with the device ids that would do."""
        with self.db.read() as session:
            try:
                mac = normalize_mac(name)
            except ValueError:
                mac = None
            if mac is not None:
                dev = session.scalar(select(Device).where(Device.mac == mac))
                if dev is not None and (order_id is None or dev.order.order_id == order_id):
                    return dev.order.order_id, dev.device_id, dev.mac or ""
                raise DeviceUnknown(f"MAC {mac}: no device with this MAC in the store")
            stmt = (
                select(Device)
                .join(Order, Device.order_pk == Order.id)
                .where(Device.device_id == name)
            )
            if order_id:
                stmt = stmt.where(Order.order_id == order_id)
            else:
                stmt = stmt.where(Order.state == "active")
            found = list(session.scalars(stmt))
            if len(found) == 1:
                dev = found[0]
                return dev.order.order_id, dev.device_id, dev.mac or dev.serial or ""
            if len(found) > 1:
                where = ", ".join(sorted(f"{d.order.order_id}/{d.device_id}" for d in found))
                raise DeviceUnknown(f"device {name}: in several orders ({where}); give its MAC")
            if order_id:
                order = self.get(session, order_id)
                ids = ", ".join(d.device_id for d in order.devices)
                raise DeviceUnknown(f"order {order_id}: no device {name} (devices: {ids})")
            raise DeviceUnknown(f"{name}: neither a MAC address nor a device id of an active order")

    def read_push_jobs(
        self,
        *,
        order_id: str | None = None,
        only: frozenset[str] | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Page[PushJobSummary]:
        """Stored push jobs, newest first (from their per-device results)."""
        stmt = (
            select(
                PushResultRow.job_id,
                Order.order_id,
                func.min(PushResultRow.started_at),
                func.max(PushResultRow.ended_at),
                func.max(PushResultRow.id).label("last"),
            )
            .join(Device, PushResultRow.device_pk == Device.id)
            .join(Order, Device.order_pk == Order.id)
            .group_by(PushResultRow.job_id, Order.order_id)
        )
        stmt = where_in(where_equal(stmt, {Order.order_id: order_id}), Order.order_id, only)
        with self.db.read() as session:
            total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
            rows = session.execute(
                stmt.order_by(func.max(PushResultRow.id).desc()).offset(offset).limit(limit)
            ).all()
            jobs = [r[0] for r in rows]
            details: dict[str, list[tuple[str, str]]] = {}
            for job, result, device in session.execute(
                select(PushResultRow.job_id, PushResultRow.result, Device.device_id)
                .join(Device, PushResultRow.device_pk == Device.id)
                .where(PushResultRow.job_id.in_(jobs))
                .order_by(PushResultRow.id)
            ):
                details.setdefault(job, []).append((result, device))
            items = []
            for job, order, started, ended, _ in rows:
                results: dict[str, int] = {}
                for result, _device in details.get(job, []):
                    results[result] = results.get(result, 0) + 1
                items.append(
                    PushJobSummary(
                        job, order, started, ended, results, [d for _, d in details.get(job, [])]
                    )
                )
            return Page(items, total)

    def fleet(self) -> Fleet:
        """Counts for the fleet gauges: devices of active orders by state and model, fetches
        and refusals recorded, blocks in force, stored push results by result."""
        with self.db.read() as session:
            devices = list(
                session.scalars(
                    select(Device)
                    .join(Order, Device.order_pk == Order.id)
                    .where(Order.state == "active")
                )
            )
            by: dict[tuple[str, str], int] = {}
            fetches = refusals = 0
            for d in statuses(session, devices):
                key = (d.state.value, d.model)
                by[key] = by.get(key, 0) + 1
                fetches += d.fetches
                refusals += d.refusals
            blocks = session.scalar(
                select(func.count()).where(
                    SourceBlock.lifted_at.is_(None), SourceBlock.until > utcnow()
                )
            )
            pushes = dict(
                session.execute(
                    select(PushResultRow.result, func.count()).group_by(PushResultRow.result)
                ).all()
            )
            return Fleet(by, fetches, refusals, blocks or 0, {k: int(v) for k, v in pushes.items()})

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

    def count_audit(self, query: AuditQuery) -> int:
        """How many audit events match ``query`` (the ``total`` of a page)."""
        with self.db.read() as session:
            return audit.count(session, query)

    def read_audit(
        self, query: AuditQuery, view: Callable[[AuditEvent], T], limit: int, offset: int
    ) -> Sequence[T]:
        """Audit events, newest first, as ``view`` shows them."""
        with self.db.read() as session:
            return [view(e) for e in audit.query(session, query, limit, offset)]

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
