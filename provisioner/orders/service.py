"""Orders in the store: apply documents (idempotent, one transaction each), bind, export.

``apply`` works like ``kubectl apply``: the document is the desired state of its order. What the
document does not manage is kept: a MAC a technician bound at the appointment stays bound when
the NOC re-applies a document that still says the device is planned.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from provisioner.catalog import DEVICE_SECRETS, MODELS, PLANS, terminal_quota
from provisioner.documents.document import OrderDocument, normalize_mac
from provisioner.errors import (
    BindRefused,
    DeviceUnknown,
    OrderConflict,
    OrderRejected,
    OrderUnknown,
)
from provisioner.orders import enrollment
from provisioner.orders.publish import Published, Publisher
from provisioner.orders.reads import OrderQuery, OrderReads
from provisioner.orders.status import DeviceStatus, device_status
from provisioner.orders.sync import (
    OrderSync,
    check_identities,
    check_store_rules,
    device_by_id,
    drop_secrets,
    lock_order,
    put_secret,
)
from provisioner.settings import Settings
from provisioner.store import audit, vault
from provisioner.store.changes import Touched, announce, next_generation
from provisioner.store.changes import touched as touched_by
from provisioner.store.db import Database
from provisioner.store.models import Device, DeviceState, Order, SecretRow, Terminal, utcnow

MAX_WINDOW_MINUTES = 7 * 24 * 60
SIP_SECRET = "sip_password"  # noqa: S105 - the name of a secret, not a value


@dataclass
class ApplyResult:
    order_id: str
    status: str  # created | updated | unchanged
    changes: list[str] = field(default_factory=list)
    touched: Touched = field(default_factory=Touched)


@dataclass(frozen=True)
class Written:
    """What a write to one device did: its order and id, and every device the write touched."""

    order_id: str
    device_id: str
    touched: Touched = field(default_factory=Touched)


@dataclass(frozen=True)
class Cancelled:
    order_id: str
    cancelled: bool  # False: it was cancelled already (nothing written)
    touched: Touched = field(default_factory=Touched)


@dataclass(frozen=True)
class Armed:
    order_id: str
    devices: list[str]  # device ids covered (bound or planned)
    expires_at: datetime
    touched: Touched = field(default_factory=Touched)


@dataclass(frozen=True)
class Rotated:
    order_id: str
    extensions: list[int]
    # Extensions whose password the order document gives: re-applying it restores that value.
    from_document: list[int] = field(default_factory=list)
    touched: Touched = field(default_factory=Touched)


def _locked_order(session: Session, order_id: str, *, active: bool = False) -> Order:
    """The order's row, locked for this write; ``active``: refused unless the order is."""
    order = lock_order(session, order_id)
    if order is None:
        raise OrderUnknown(f"order {order_id}: not in the store")
    if active and order.state != "active":
        raise BindRefused(f"order {order_id}: is {order.state}")
    return order


def _device_written(
    session: Session,
    touched: Touched,
    actor: str,
    action: str,
    order_id: str,
    dev: Device,
    **detail: object,
) -> Written:
    """Flush a write to one device (a conflict with a concurrent write raises here), audit it
    (``detail`` as the event's) and say what it touched."""
    session.flush()
    audit.record(session, actor, action, order_id=order_id, device=dev.device_id, **detail)
    return Written(order_id, dev.device_id, touched)


class OrdersService(OrderReads):
    """The one write path of the store's orders (DESIGN.md §4), and its reads.

    CLI, API, technician page and lab call it and hold no session of their own. Every write is
    one transaction and returns what it changed (its :class:`Touched`). One instance per
    process; thread-safe.
    """

    def __init__(self, settings: Settings, db: Database | None = None):
        super().__init__(settings, db)
        self._publisher: Publisher | None = None
        self._publisher_lock = threading.Lock()
        self._published_listeners: list[Callable[[set[tuple[str, str]]], None]] = []

    def on_published(self, listener: Callable[[set[tuple[str, str]]], None]) -> None:
        """Call ``listener`` after every committed write or republish that stored new served
        files, with the ``(order_id, device_id)`` whose files they were (resync after
        change). It runs on the writer's thread: it must only hand the work on."""
        self._published_listeners.append(listener)

    def _tell_published(self, devices: set[tuple[str, str]]) -> None:
        for listener in self._published_listeners if devices else ():
            listener(set(devices))

    # ------------------------------------------------------------------ apply

    def apply(
        self,
        doc: OrderDocument,
        *,
        source: str = "",
        actor: str = "",
        expect: Literal["new", "active"] | None = None,
        rename_customer: bool = False,
    ) -> ApplyResult:
        """Write one valid order in its own transaction. A refused order changes nothing.

        ``expect="new"`` refuses an order that exists; ``expect="active"`` one that does not
        exist (:class:`OrderUnknown`) or is cancelled. Both are checked inside the write
        transaction, so of two concurrent creates of one order exactly one wins.

        A stored customer (by VAT) is renamed only by one of its own orders; another order
        naming it differently is refused unless ``rename_customer`` (an admin's say-so).
        """
        actor = actor or audit.default_actor()
        try:
            return self._apply(doc, source, actor, expect, rename_customer)
        except IntegrityError:
            if expect == "new":  # PostgreSQL: a concurrent create inserted the same order id
                raise OrderConflict(f"order {doc.order}: exists") from None
            # A concurrent writer took a MAC or serial between our check and our write.
            raise OrderRejected(
                [f"{doc.order}: devices: a MAC or serial was taken by a concurrent change; retry"]
            ) from None

    def _apply(
        self,
        doc: OrderDocument,
        source: str,
        actor: str,
        expect: str | None,
        rename_customer: bool = False,
    ) -> ApplyResult:
        with self._writing() as (session, touched):
            order = lock_order(session, doc.order)
            created = order is None
            if expect == "new" and order is not None:
                raise OrderConflict(f"order {doc.order}: exists")
            if expect == "active":
                if order is None:
                    raise OrderUnknown(f"order {doc.order}: not in the store")
                if order.state != "active":
                    raise OrderConflict(f"order {doc.order}: is {order.state}; kept for audit only")
            check_identities(session, doc)
            sync = OrderSync(session, self.vault, doc, order, source, rename_customer)
            sync.run()
            if not sync.changes:
                # Nothing differs: leave even the audit log as it is (a true no-op).
                return ApplyResult(doc.order, "unchanged", touched=touched)
            check_store_rules(session, sync.order)
            audit.record(
                session,
                actor,
                "order.created" if created else "order.updated",
                order_id=doc.order,
                source=source,
                changes=sync.changes,
            )
            status = "created" if created else "updated"
            return ApplyResult(doc.order, status, sync.changes, touched)

    def record_refusal(
        self, order_id: str, source: str, problems: list[str], actor: str = ""
    ) -> None:
        """Audit a refused document (its problems, never its content)."""
        with self.db.write() as session:
            audit.record(
                session,
                actor or audit.default_actor(),
                "order.refused",
                order_id=order_id or None,
                source=source,
                problems=problems,
            )

    # ------------------------------------------------------------------ bind

    def bind(
        self,
        order_id: str,
        *,
        mac: str | None = None,
        serial: str | None = None,
        extension: int | None = None,
        device_id: str | None = None,
        model: str | None = None,
        actor: str = "",
    ) -> Written:
        """Tie the box in hand to a planned device.

        With ``extension``: the terminal of that extension, created (of ``model``) when the
        order has none, within the offer's terminal limit. Checked and written in one
        serialised transaction, so concurrent binds can never pass the limit together.
        """
        actor = actor or audit.default_actor()
        if (mac is None) == (serial is None):
            raise BindRefused(f"order {order_id}: give exactly one of a MAC or a serial")
        if (extension is None) == (device_id is None):
            raise BindRefused(f"order {order_id}: give exactly one of an extension or a device id")
        identity = normalize_mac(mac) if mac is not None else str(serial)
        column = Device.mac if mac is not None else Device.serial
        try:
            with self._writing() as (session, touched):
                order = _locked_order(session, order_id, active=True)
                other = session.scalar(select(Device).where(column == identity))
                if extension is not None:
                    dev = self._terminal_device(session, order, extension, model, other)
                else:
                    dev = device_by_id(order, str(device_id))
                where = f"order {order_id}: device {dev.device_id}"
                if other is not None and other.id != dev.id:
                    raise BindRefused(
                        f"{where}: {identity} is already device {other.device_id} "
                        f"of order {other.order.order_id}"
                    )
                kind = MODELS[dev.model].identity
                if (mac is not None and kind != "mac") or (serial is not None and kind != "serial"):
                    raise BindRefused(f"{where}: {dev.model} is identified by its {kind}")
                current = dev.mac if mac is not None else dev.serial
                if current == identity:
                    return Written(order_id, dev.device_id, touched)
                if current:
                    raise BindRefused(f"{where}: already bound to {current}; unbind it first")
                if mac is not None:
                    dev.mac = identity
                else:
                    dev.serial = identity
                dev.identity_source = "bind"
                return _device_written(
                    session,
                    touched,
                    actor,
                    "device.bound",
                    order_id,
                    dev,
                    identity=identity,
                    extension=extension,
                )
        except IntegrityError:
            # The store's own constraints caught a concurrent bind the checks could not see.
            raise BindRefused(
                f"order {order_id}: bind of {identity} conflicts with a concurrent change; retry"
            ) from None

    def _terminal_device(
        self,
        session: Session,
        order: Order,
        short: int,
        model: str | None,
        other: Device | None,
    ) -> Device:
        ext = next((e for e in order.extensions if e.short == short), None)
        if ext is None:
            raise BindRefused(f"order {order.order_id}: no extension {short}")
        term = session.scalar(select(Terminal).where(Terminal.extension_pk == ext.id))
        if term is not None:
            return term.device
        if other is not None and other.order_pk == order.id:
            raise BindRefused(
                f"order {order.order_id}: extension {short}: {other.mac} is already device "
                f"{other.device_id}"
            )
        plan = PLANS[order.plan]
        where = f"order {order.order_id}: extension {short}"
        if plan.analog_only:
            raise BindRefused(f"{where}: {plan.key} takes no IP phones (analog port 1)")
        if model is None:
            raise BindRefused(f"{where}: has no terminal yet; say which --model to create")
        if model not in MODELS or MODELS[model].kind != "phone":
            phones = ", ".join(k for k, m in MODELS.items() if m.kind == "phone")
            raise BindRefused(f"{where}: --model {model} is not a desk phone ({phones})")
        count = session.scalar(select(func.count(Terminal.id)).where(Terminal.order_pk == order.id))
        quota = terminal_quota([e.type for e in order.extensions])
        if (count or 0) >= quota:
            raise BindRefused(
                f"{where}: the order has {count} terminals already "
                f"(at most {quota}: one per standard/premium extension)"
            )
        device_id = f"phone-{short}"
        taken = {d.device_id for d in order.devices}
        n = 1
        while device_id in taken:
            n += 1
            device_id = f"phone-{short}-{n}"
        dev = Device(
            order_pk=order.id,
            device_id=device_id,
            position=max((d.position for d in order.devices), default=-1) + 1,
            model=model,
            site_pk=ext.site_pk,
            origin="bind",
            identity_source="bind",
        )
        session.add(dev)
        order.devices.append(dev)
        session.flush()
        session.add(
            Terminal(order_pk=order.id, device_pk=dev.id, slot=0, extension_pk=ext.id, model=model)
        )
        for name in DEVICE_SECRETS["phone"]:
            put_secret(session, self.vault, order, f"device:{device_id}", name, None)
        session.flush()
        return dev

    def unbind(
        self,
        order_id: str,
        *,
        mac: str | None = None,
        device_id: str | None = None,
        actor: str = "",
    ) -> Written:
        """Make a device planned again (a terminal a bind created is removed with its box).

        The box loses its source binding, last fetch and pinned host key with its MAC."""
        actor = actor or audit.default_actor()
        if (mac is None) == (device_id is None):
            raise BindRefused(f"order {order_id}: give exactly one of a MAC or a device id")
        with self._writing() as (session, touched):
            order = _locked_order(session, order_id)
            if mac is not None:
                norm = normalize_mac(mac)
                dev = next((d for d in order.devices if d.mac == norm), None)
                if dev is None:
                    raise DeviceUnknown(f"order {order_id}: no device with MAC {norm}")
            else:
                dev = device_by_id(order, str(device_id))
            was = dev.mac or dev.serial
            if not was:
                raise BindRefused(f"order {order_id}: device {dev.device_id} is not bound")
            if dev.origin == "bind":
                # A phone the technician added at the appointment goes with its box
                # (delete-orphan removes the row and its terminal).
                order.devices.remove(dev)
                session.flush()
                drop_secrets(session, order, f"device:{dev.device_id}")
            else:
                dev.mac = None
                dev.serial = None
                dev.identity_source = "document"
            return _device_written(
                session, touched, actor, "device.unbound", order_id, dev, identity=was
            )

    def swap(self, order_id: str, old: str, new: str, *, actor: str = "") -> Written:
        """Put a new box in place of the bound one (RMA).

        The device keeps its place in the order: extension, switch port, secrets and the
        enrollment window. The old box loses everything it had (its source binding, its last
        fetch, its pinned host key: see :mod:`provisioner.store.changes`), so it can fetch
        nothing more, and the new box fetches inside the same window without a re-arm.
        """
        actor = actor or audit.default_actor()
        old_mac, new_mac = normalize_mac(old), normalize_mac(new)
        try:
            with self._writing() as (session, touched):
                order = _locked_order(session, order_id, active=True)
                dev = next((d for d in order.devices if d.mac == old_mac), None)
                if dev is None:
                    raise DeviceUnknown(f"order {order_id}: no device with MAC {old_mac}")
                if new_mac == old_mac:
                    raise BindRefused(f"MAC {new_mac}: is already this device's MAC")
                other = session.scalar(select(Device).where(Device.mac == new_mac))
                if other is not None:
                    raise BindRefused(
                        f"MAC {new_mac}: is already device {other.device_id} of order "
                        f"{other.order.order_id}"
                    )
                dev.mac = new_mac
                dev.identity_source = "bind"
                return _device_written(
                    session,
                    touched,
                    actor,
                    "device.swapped",
                    order_id,
                    dev,
                    old_mac=old_mac,
                    new_mac=new_mac,
                )
        except IntegrityError:
            raise BindRefused(f"MAC {new_mac}: taken by a concurrent change; retry") from None

    def cancel(self, order_id: str, *, actor: str = "") -> Cancelled:
        """Cancel an order (rows are kept for audit); a second cancel writes nothing.

        From the commit on, no server answers for its devices.
        """
        actor = actor or audit.default_actor()
        with self._writing() as (session, touched):
            order = _locked_order(session, order_id)
            if order.state == "cancelled":
                return Cancelled(order_id, False, touched)
            was = order.state
            order.state = "cancelled"
            audit.record(session, actor, "order.cancelled", order_id=order_id, was=was)
            return Cancelled(order_id, True, touched)

    # ------------------------------------------------------------------ enrollment

    def arm(
        self,
        target: str,
        minutes: int | None = None,
        *,
        actor: str = "",
        only: Literal["order", "device"] | None = None,
    ) -> Armed:
        """Open an enrollment window on ``target`` (an order id or a device's MAC; ``only``
        one of them) for ``minutes`` (setting ``enrollment_minutes``). Re-arming releases
        source bindings: the box may come back from elsewhere."""
        actor = actor or audit.default_actor()
        minutes = self.settings.enrollment_minutes if minutes is None else minutes
        if not 1 <= minutes <= MAX_WINDOW_MINUTES:
            raise BindRefused(
                f"a window of {minutes} minutes: a window lasts 1 to {MAX_WINDOW_MINUTES} "
                "minutes (a week)"
            )
        now = utcnow()
        expires = now + timedelta(minutes=minutes)
        with self._writing() as (session, touched):
            order, device = enrollment.resolve_target(session, target, only)
            if order.state != "active":
                raise BindRefused(f"order {order.order_id}: is {order.state}")
            devices = [device] if device else list(order.devices)
            enrollment.open_window(session, order, device, now, expires, actor)
            for dev in devices:
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
            return Armed(order.order_id, [d.device_id for d in devices], expires, touched)

    def status(self, order_id: str) -> list[DeviceStatus]:
        """Per device of the order: planned / bound / armed / fetched, with its last fetch."""
        with self.db.read() as session:
            return device_status(session, self.get(session, order_id))

    # ------------------------------------------------------------------ secrets

    def rotate(
        self, order_id: str, extensions: Iterable[int] | None = None, *, actor: str = ""
    ) -> Rotated:
        """New SIP passwords for ``extensions`` of the order (all of them for None).

        Every rotated secret gets a new ciphertext and ``source="rotated"``, and each
        extension a ``secret.rotated`` audit event (never the value). Devices get the new
        password at their next fetch; the registrar after the next ``pbx export``.
        """
        actor = actor or audit.default_actor()
        with self._writing() as (session, touched):
            order = _locked_order(session, order_id, active=True)
            known = [e.short for e in order.extensions]
            wanted = known if extensions is None else list(dict.fromkeys(extensions))
            missing = [s for s in wanted if s not in known]
            if missing:
                raise BindRefused(
                    f"order {order_id}: no extension {', '.join(map(str, missing))} "
                    f"(extensions: {', '.join(map(str, known))})"
                )
            if not wanted:
                raise BindRefused(f"order {order_id}: has no extensions")
            rows = {
                r.owner: r
                for r in session.scalars(
                    select(SecretRow).where(
                        SecretRow.order_pk == order.id, SecretRow.name == SIP_SECRET
                    )
                )
            }
            now = utcnow()
            from_document = []
            for short in wanted:
                row = rows.get(f"extension:{short}")
                if row is None:
                    raise OrderUnknown(f"order {order_id}: extension {short} has no {SIP_SECRET}")
                if row.source == "document":
                    from_document.append(short)
                old = self.vault.decrypt(row.ciphertext)
                new = vault.generate(SIP_SECRET)
                while new == old:  # 131 bits: never in practice, but a rotation must change it
                    new = vault.generate(SIP_SECRET)
                row.ciphertext = self.vault.encrypt(new)
                row.source = "rotated"
                row.updated_at = now
                audit.record(
                    session,
                    actor,
                    "secret.rotated",
                    order_id=order_id,
                    extension=short,
                    owner=row.owner,
                    secret=SIP_SECRET,
                )
            return Rotated(order_id, wanted, from_document, touched)

    # ------------------------------------------------------------------ publishing

    @property
    def publisher(self) -> Publisher:
        """Renders what a write touched (built on first use: the engine loads templates)."""
        with self._publisher_lock:
            if self._publisher is None:
                from provisioner.render.engine import RenderEngine

                self._publisher = Publisher(self, RenderEngine(self.settings))
            return self._publisher

    def republish(
        self,
        order_ids: Iterable[str] | None = None,
        *,
        progress: Callable[[str, Published], None] | None = None,
    ) -> Published:
        """Render and publish the files of the given orders (every active order for None)
        again, after a template or model change: one transaction per order, and every server
        follows within a second. Orders whose files did not change are left as they are."""
        if order_ids is None:
            wanted = self.read_orders(OrderQuery(state="active"), lambda o: o.order_id).items
        else:
            wanted = list(order_ids)
        total = Published()
        for order_id in wanted:
            with self.db.write() as session:
                order = _locked_order(session, order_id)
                done = self.publisher.publish_order(session, order)
                if done.written or done.deleted:
                    order.generation = next_generation(session)  # servers reload it
                    announce(session)
            self._tell_published(done.devices)
            total += done
            if progress is not None:
                progress(order_id, done)
        return total

    @contextmanager
    def _writing(self) -> Iterator[tuple[Session, Touched]]:
        """One write transaction, and what it touched (complete once it has committed).

        Before it commits, what it touched is published (:mod:`provisioner.orders.publish`):
        the write and its files are one unit, and a file that does not render refuses both.
        """
        with self.db.write() as session:
            touched = touched_by(session)
            yield session, touched
            session.flush()
            done = self.publisher.publish(session, touched)
            if touched.orders or touched.windows:
                announce(session)
        self._tell_published(done.devices)
