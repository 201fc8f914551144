"""Orders in the store: apply documents (idempotent, one transaction each), bind, export.

``apply`` works like ``kubectl apply``: the document is the desired state of its order. What the
document does not manage is kept: a MAC a technician bound at the appointment stays bound when
the NOC re-applies a document that still says the device is planned.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from provisioner.catalog import MODELS, PLANS, terminal_quota
from provisioner.documents.document import Device as DocDevice
from provisioner.documents.document import OrderDocument, normalize_mac
from provisioner.documents.rules import device_ids, handset_model
from provisioner.errors import (
    BindRefused,
    DeviceUnknown,
    OrderConflict,
    OrderRejected,
    OrderUnknown,
)
from provisioner.settings import Settings
from provisioner.store import audit, vault
from provisioner.store.db import Database
from provisioner.store.models import (
    Customer,
    Device,
    Extension,
    Number,
    Order,
    SecretRow,
    Site,
    Terminal,
)

# Which secrets each kind of owner carries (generated when the order does not give them).
DEVICE_SECRETS: dict[str, tuple[str, ...]] = {
    "phone": ("admin_password", "provisioning_password"),
    "dect_base": ("admin_password", "provisioning_password"),
    "switch": ("admin_password", "snmp_community", "snmp_auth_key", "snmp_priv_key"),
    "iad": ("admin_password", "provisioning_password"),
    "ont": ("ploam_password",),
}
EXTENSION_SECRETS = ("sip_password",)
SITE_SECRETS = ("pppoe_password",)


@dataclass
class ApplyResult:
    order_id: str
    status: str  # created | updated | unchanged
    changes: list[str] = field(default_factory=list)


class OrdersService:
    """The store's order operations. One instance per process; thread-safe."""

    def __init__(self, settings: Settings, db: Database | None = None):
        self.settings = settings
        self.db = db or Database(settings)
        self._vault: vault.Vault | None = None
        self._vault_lock = threading.Lock()

    @property
    def vault(self) -> vault.Vault:
        # The key is read (or created) only when a secret is needed: validate never touches it.
        with self._vault_lock:
            if self._vault is None:
                self._vault = vault.Vault(self.settings)
            return self._vault

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
        with self.db.write() as session:
            order = _lock_order(session, doc.order)
            created = order is None
            if expect == "new" and order is not None:
                raise OrderConflict(f"order {doc.order}: exists")
            if expect == "active":
                if order is None:
                    raise OrderUnknown(f"order {doc.order}: not in the store")
                if order.state != "active":
                    raise OrderConflict(f"order {doc.order}: is {order.state}; kept for audit only")
            _check_identities(session, doc)
            sync = _Sync(session, self.vault, doc, order, source, rename_customer)
            sync.run()
            if not sync.changes:
                # Nothing differs: leave even the audit log as it is (a true no-op).
                return ApplyResult(doc.order, "unchanged")
            _check_store_rules(session, sync.order)
            audit.record(
                session,
                actor,
                "order.created" if created else "order.updated",
                order_id=doc.order,
                source=source,
                changes=sync.changes,
            )
            return ApplyResult(doc.order, "created" if created else "updated", sync.changes)

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

    # ------------------------------------------------------------------ read

    def get(self, session: Session, order_id: str) -> Order:
        order = session.scalar(select(Order).where(Order.order_id == order_id))
        if order is None:
            raise OrderUnknown(f"order {order_id}: not in the store")
        return order

    def list_orders(self, session: Session) -> list[Order]:
        return list(session.scalars(select(Order).order_by(Order.order_id)))

    def secret(self, session: Session, order: Order, owner: str, name: str) -> str:
        row = session.scalar(
            select(SecretRow).where(
                SecretRow.order_pk == order.id, SecretRow.owner == owner, SecretRow.name == name
            )
        )
        if row is None:
            raise DeviceUnknown(f"order {order.order_id}: no secret {name} for {owner}")
        return self.vault.decrypt(row.ciphertext)

    def find_device(self, session: Session, mac: str) -> Device:
        norm = normalize_mac(mac)
        dev = session.scalar(select(Device).where(Device.mac == norm))
        if dev is None:
            raise DeviceUnknown(f"MAC {norm}: no device with this MAC in the store")
        return dev

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
    ) -> str:
        """Tie the box in hand to a planned device; returns the device id.

        With ``extension``: the terminal of that extension, created (of ``model``) when the
        order has none, within the offer's terminal limit. Checked and written in one
        serialised transaction, so concurrent binds can never pass the limit together.
        """
        actor = actor or audit.default_actor()
        if (mac is None) == (serial is None):
            raise BindRefused(f"order {order_id}: give exactly one of --mac or --serial")
        if (extension is None) == (device_id is None):
            raise BindRefused(f"order {order_id}: give exactly one of --extension or --device")
        identity = normalize_mac(mac) if mac is not None else str(serial)
        column = Device.mac if mac is not None else Device.serial
        try:
            with self.db.write() as session:
                order = _lock_order(session, order_id)
                if order is None:
                    raise OrderUnknown(f"order {order_id}: not in the store")
                if order.state != "active":
                    raise BindRefused(f"order {order_id}: is {order.state}")
                other = session.scalar(select(Device).where(column == identity))
                if extension is not None:
                    dev = self._terminal_device(session, order, extension, model, other)
                else:
                    dev = _device_by_id(order, str(device_id))
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
                    return dev.device_id
                if current:
                    raise BindRefused(f"{where}: already bound to {current}; unbind it first")
                if mac is not None:
                    dev.mac = identity
                else:
                    dev.serial = identity
                dev.identity_source = "bind"
                session.flush()
                audit.record(
                    session,
                    actor,
                    "device.bound",
                    order_id=order_id,
                    device=dev.device_id,
                    identity=identity,
                    extension=extension,
                )
                return dev.device_id
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
            _put_secret(session, self.vault, order, f"device:{device_id}", name, None)
        session.flush()
        return dev

    def unbind(
        self,
        order_id: str,
        *,
        mac: str | None = None,
        device_id: str | None = None,
        actor: str = "",
    ) -> str:
        """Make a device planned again (a terminal a bind created is removed with its box)."""
        actor = actor or audit.default_actor()
        if (mac is None) == (device_id is None):
            raise BindRefused(f"order {order_id}: give exactly one of --mac or --device")
        with self.db.write() as session:
            order = _lock_order(session, order_id)
            if order is None:
                raise OrderUnknown(f"order {order_id}: not in the store")
            if mac is not None:
                norm = normalize_mac(mac)
                dev = next((d for d in order.devices if d.mac == norm), None)
                if dev is None:
                    raise DeviceUnknown(f"order {order_id}: no device with MAC {norm}")
            else:
                dev = _device_by_id(order, str(device_id))
            was = dev.mac or dev.serial
            if not was:
                raise BindRefused(f"order {order_id}: device {dev.device_id} is not bound")
            if dev.origin == "bind":
                # A phone the technician added at the appointment goes with its box
                # (delete-orphan removes the row and its terminal).
                order.devices.remove(dev)
                session.flush()
                _drop_secrets(session, order, f"device:{dev.device_id}")
            else:
                dev.mac = None
                dev.serial = None
                dev.identity_source = "document"
            audit.record(
                session,
                actor,
                "device.unbound",
                order_id=order_id,
                device=dev.device_id,
                identity=was,
            )
            return dev.device_id

    def swap(self, order_id: str, old: str, new: str, *, actor: str = "") -> str:
        """Put a new box in place of the bound one (RMA); returns the device id.

        The device keeps its place in the order: extension, switch port, secrets and the
        enrollment window. The old box loses everything it had (its source binding, its last
        fetch, its pinned host key: see :mod:`provisioner.store.changes`), so it can fetch
        nothing more, and the new box fetches inside the same window without a re-arm.
        """
        actor = actor or audit.default_actor()
        old_mac, new_mac = normalize_mac(old), normalize_mac(new)
        try:
            with self.db.write() as session:
                order = _lock_order(session, order_id)
                if order is None:
                    raise OrderUnknown(f"order {order_id}: not in the store")
                if order.state != "active":
                    raise BindRefused(f"order {order_id}: is {order.state}")
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
                session.flush()
                audit.record(
                    session,
                    actor,
                    "device.swapped",
                    order_id=order_id,
                    device=dev.device_id,
                    old_mac=old_mac,
                    new_mac=new_mac,
                )
                return dev.device_id
        except IntegrityError:
            raise BindRefused(f"MAC {new_mac}: taken by a concurrent change; retry") from None

    def cancel(self, order_id: str, *, actor: str = "") -> bool:
        """Cancel an order (rows are kept for audit); False when it already was cancelled.

        From the commit on, no server answers for its devices.
        """
        actor = actor or audit.default_actor()
        with self.db.write() as session:
            order = _lock_order(session, order_id)
            if order is None:
                raise OrderUnknown(f"order {order_id}: not in the store")
            if order.state == "cancelled":
                return False
            was = order.state
            order.state = "cancelled"
            audit.record(session, actor, "order.cancelled", order_id=order_id, was=was)
            return True

    # ------------------------------------------------------------------ export

    def export(self, session: Session, order_id: str) -> dict[str, Any]:
        """The order as a document that re-applies to the same state; secrets left out."""
        order = self.get(session, order_id)
        return export_order(order)


# ---------------------------------------------------------------------- helpers


def _lock_order(session: Session, order_id: str) -> Order | None:
    # FOR UPDATE serialises writers of one order on PostgreSQL; SQLite's BEGIN IMMEDIATE
    # has already serialised every writer.
    return session.scalar(select(Order).where(Order.order_id == order_id).with_for_update())


def _check_identities(session: Session, doc: OrderDocument) -> None:
    """A MAC or serial in the document must not be another order's box."""
    problems = []
    for i, dd in enumerate(doc.devices):
        for attr in ("mac", "serial"):
            value = getattr(dd, attr)
            if not value:
                continue
            other = session.scalar(select(Device).where(getattr(Device, attr) == value))
            if other is not None and other.order.order_id != doc.order:
                problems.append(
                    f"{doc.order}: devices[{i}].{attr}: {value} is already device "
                    f"{other.device_id} of order {other.order.order_id} (one box, one device)"
                )
    if problems:
        raise OrderRejected(problems)


def _device_by_id(order: Order, device_id: str) -> Device:
    dev = next((d for d in order.devices if d.device_id == device_id), None)
    if dev is None:
        known = ", ".join(d.device_id for d in order.devices)
        raise DeviceUnknown(f"order {order.order_id}: no device {device_id} (devices: {known})")
    return dev


def _put_secret(
    session: Session, v: vault.Vault, order: Order, owner: str, name: str, given: str | None
) -> str | None:
    """Ensure a secret exists; returns a change note, or None when nothing changed."""
    row = session.scalar(
        select(SecretRow).where(
            SecretRow.order_pk == order.id, SecretRow.owner == owner, SecretRow.name == name
        )
    )
    if row is None:
        value = given if given is not None else vault.generate(name)
        source = "document" if given is not None else "generated"
        session.add(
            SecretRow(
                order_pk=order.id,
                owner=owner,
                name=name,
                ciphertext=v.encrypt(value),
                source=source,
            )
        )
        return f"{owner} {name} {source}"
    if given is not None and v.decrypt(row.ciphertext) != given:
        row.ciphertext = v.encrypt(given)
        row.source = "document"
        row.updated_at = _now()
        return f"{owner} {name} changed"
    return None


def _drop_secrets(session: Session, order: Order, owner: str) -> None:
    for row in session.scalars(
        select(SecretRow).where(SecretRow.order_pk == order.id, SecretRow.owner == owner)
    ):
        session.delete(row)


def _now() -> Any:
    from provisioner.store.models import utcnow

    return utcnow()


def _options_json(doc: OrderDocument) -> str:
    return json.dumps(doc.options.model_dump(), sort_keys=True)


class _Sync:
    """Brings one order's rows to what its document says, writing only what differs."""

    def __init__(
        self,
        session: Session,
        v: vault.Vault,
        doc: OrderDocument,
        order: Order | None,
        source: str,
        rename_customer: bool = False,
    ):
        self.session = session
        self.vault = v
        self.doc = doc
        self.order: Order = order  # type: ignore[assignment]
        self.existing = order is not None
        self.source = source
        self.rename_customer = rename_customer
        self.changes: list[str] = []

    def _set(self, obj: Any, attr: str, value: Any, label: str) -> None:
        if getattr(obj, attr) != value:
            if self.existing:
                self.changes.append(f"{label}: {attr} changed")
            setattr(obj, attr, value)

    def run(self) -> None:
        doc, s = self.doc, self.session
        customer = s.scalar(select(Customer).where(Customer.vat == doc.customer.vat))
        if customer is None:
            customer = Customer(vat=doc.customer.vat, name=doc.customer.name)
            s.add(customer)
            s.flush()
        elif customer.name != doc.customer.name:
            self._rename(customer)
        if not self.existing:
            self.order = Order(
                order_id=doc.order,
                customer=customer,
                plan=doc.plan,
                lines=doc.lines,
                options=_options_json(doc),
                state="active",
                source=self.source,
            )
            s.add(self.order)
            s.flush()
            self.changes.append(f"order {doc.order} created")
        else:
            o = self.order
            self._set(o, "customer_id", customer.id, "order")
            self._set(o, "plan", doc.plan, "order")
            self._set(o, "lines", doc.lines, "order")
            self._set(o, "options", _options_json(doc), "order")
            if o.state != "active":
                o.state = "active"
                self.changes.append(f"order {doc.order} re-activated")
        self._numbers()
        self._sites()
        self._extensions()
        self._devices()
        self._terminals()
        self._secrets()
        if self.changes and self.existing and self.source:
            self.order.source = self.source
        s.flush()

    def _rename(self, customer: Customer) -> None:
        """A customer's name changes through its own orders, or when an admin says so: an
        order naming a VAT must not rename the company behind another customer's orders."""
        own = self.existing and self.order.customer_id == customer.id
        if not own and not self.rename_customer:
            owners = list(
                self.session.scalars(
                    select(Order.order_id)
                    .where(Order.customer_id == customer.id)
                    .order_by(Order.order_id)
                )
            )
            if owners:
                named = ", ".join(owners[:3])
                if len(owners) > 3:
                    named += f" and {len(owners) - 3} more"
                where = "order" if len(owners) == 1 else "orders"
                raise OrderRejected(
                    [
                        f"{self.doc.order}: customer.name: customer {customer.vat} is "
                        f'"{customer.name}" in {where} {named}; only that customer\'s orders '
                        "or an admin may rename it"
                    ]
                )
        customer.name = self.doc.customer.name
        self.changes.append(f"customer {customer.vat}: name changed")

    def _numbers(self) -> None:
        want: list[tuple[str, int, str, str | None]] = []
        want += [("single", 0, n, None) for n in self.doc.numbers.single]
        want += [("gnr", 0, g.first, g.last) for g in self.doc.numbers.gnr]
        for gi, group in enumerate(self.doc.numbers.isdn_groups):
            want += [("isdn", gi, n, None) for n in group]
        have = [(n.kind, n.grp, n.number, n.last) for n in self.order.numbers]
        if have == want:
            return
        for n in list(self.order.numbers):
            self.order.numbers.remove(n)
        self.session.flush()
        for pos, (kind, grp, number, last) in enumerate(want):
            self.order.numbers.append(
                Number(kind=kind, grp=grp, position=pos, number=number, last=last)
            )
        if self.existing:
            self.changes.append("numbers changed")

    def _sites(self) -> None:
        by_id = {s.site_id: s for s in self.order.sites}
        wanted = {s.id for s in self.doc.sites}
        for pos, ds in enumerate(self.doc.sites):
            username = ds.pppoe_username or f"{self.doc.order.lower()}.{ds.id}@officesmart.example"
            row = by_id.get(ds.id)
            if row is None:
                row = Site(
                    site_id=ds.id,
                    position=pos,
                    address=ds.address,
                    connectivity=ds.connectivity,
                    pppoe_username=username,
                )
                self.order.sites.append(row)
                if self.existing:
                    self.changes.append(f"site {ds.id} added")
                continue
            label = f"site {ds.id}"
            self._set(row, "position", pos, label)
            self._set(row, "address", ds.address, label)
            self._set(row, "connectivity", ds.connectivity, label)
            if ds.pppoe_username:
                self._set(row, "pppoe_username", ds.pppoe_username, label)
        for sid, row in by_id.items():
            if sid not in wanted:
                self.order.sites.remove(row)
                self.changes.append(f"site {sid} removed")
        self.session.flush()

    def _extensions(self) -> None:
        sites = {s.site_id: s for s in self.order.sites}
        by_short = {e.short: e for e in self.order.extensions}
        wanted = {e.short for e in self.doc.extensions}
        for short, row in by_short.items():
            if short not in wanted:
                self.order.extensions.remove(row)
                _drop_secrets(self.session, self.order, f"extension:{short}")
                self.changes.append(f"extension {short} removed")
        self.session.flush()
        # Numbers are unique per order: park changed ones first so two extensions may swap.
        moving = [
            (by_short[e.short], e.number)
            for e in self.doc.extensions
            if e.short in by_short and by_short[e.short].number != e.number
        ]
        for parked, _ in moving:
            parked.number = f"~{parked.id}"
        self.session.flush()
        for parked, number in moving:
            parked.number = number
            self.changes.append(f"extension {parked.short}: number changed")
        for pos, de in enumerate(self.doc.extensions):
            conference = ",".join(de.conferences)
            found = by_short.get(de.short)
            if found is None:
                new = Extension(
                    site=sites[de.site],
                    position=pos,
                    number=de.number,
                    short=de.short,
                    type=de.type,
                    name=de.name,
                    email=de.email,
                    mobile=de.mobile,
                    conference=conference,
                )
                self.order.extensions.append(new)
                if self.existing:
                    self.changes.append(f"extension {de.short} added")
                continue
            row = found
            label = f"extension {de.short}"
            self._set(row, "site_pk", sites[de.site].id, label)
            self._set(row, "position", pos, label)
            self._set(row, "type", de.type, label)
            self._set(row, "name", de.name, label)
            self._set(row, "email", de.email, label)
            self._set(row, "mobile", de.mobile, label)
            self._set(row, "conference", conference, label)
        self.session.flush()

    def _devices(self) -> None:
        doc = self.doc
        ids = device_ids(doc)
        sites = {s.site_id: s for s in self.order.sites}
        by_id = {d.device_id: d for d in self.order.devices}
        ext_site = {e.short: e.site for e in doc.extensions}
        wanted = set(ids)
        for did, row in by_id.items():
            if did in wanted:
                continue
            # A device a technician added by bind stays while its extension does.
            if row.origin == "bind" and row.terminals:
                continue
            self.order.devices.remove(row)
            _drop_secrets(self.session, self.order, f"device:{did}")
            self.changes.append(f"device {did} removed")
        self.session.flush()
        # Release identities and switch ports that move, so swaps don't trip unique keys.
        plans: list[tuple[Device | None, DocDevice, str, int]] = []
        for pos, (did, dd) in enumerate(zip(ids, doc.devices, strict=True)):
            plans.append((by_id.get(did), dd, did, pos))
        for existing, dd, _, _ in plans:
            if existing is None:
                continue
            row = existing
            if dd.mac and row.mac != dd.mac:
                row.mac = None
            if dd.serial and row.serial != dd.serial:
                row.serial = None
            if (row.switch.device_id if row.switch else None, row.port) != (dd.switch, dd.port):
                row.switch_pk, row.port = None, None
        self.session.flush()
        rows: dict[str, Device] = {}
        for found, dd, did, pos in plans:
            site_id = dd.site
            if site_id is None and dd.extension is not None:
                site_id = ext_site.get(dd.extension)
            if site_id is None and dd.handsets:
                site_id = ext_site.get(dd.handsets[0].extension)
            site_pk = sites[site_id].id if site_id else None
            fax = ",".join(dd.fax_pos) if dd.fax_pos is not None else None
            if found is None:
                row = Device(
                    device_id=did,
                    position=pos,
                    model=dd.model,
                    site_pk=site_pk,
                    mac=dd.mac,
                    serial=dd.serial,
                    fax_pos=fax,
                    origin="document",
                    identity_source="document",
                )
                self.order.devices.append(row)
                if self.existing:
                    self.changes.append(f"device {did} added")
            else:
                row = found
                label = f"device {did}"
                self._set(row, "position", pos, label)
                self._set(row, "model", dd.model, label)
                self._set(row, "site_pk", site_pk, label)
                self._set(row, "fax_pos", fax, label)
                self._identity(row, "mac", dd.mac, label)
                self._identity(row, "serial", dd.serial, label)
            rows[did] = row
        self.session.flush()
        for found, dd, did, _ in plans:
            target = rows[did]
            switch_pk = rows[dd.switch].id if dd.switch else None
            if (target.switch_pk, target.port) != (switch_pk, dd.port):
                if found is not None:
                    self.changes.append(f"device {did}: switch port changed")
                target.switch_pk, target.port = switch_pk, dd.port
        self.session.flush()

    def _identity(self, row: Device, attr: str, given: str | None, label: str) -> None:
        current = getattr(row, attr)
        if given:
            if current != given:
                setattr(row, attr, given)
                row.identity_source = "document"
                self.changes.append(f"{label}: {attr} changed")
            return
        # The document does not name the box: keep a technician's bind, drop the document's.
        if current and row.identity_source == "document":
            setattr(row, attr, None)
            self.changes.append(f"{label}: unbound ({attr} removed from the document)")

    def _terminals(self) -> None:
        doc = self.doc
        ids = device_ids(doc)
        devices = {d.device_id: d for d in self.order.devices}
        exts = {e.short: e for e in self.order.extensions}
        want: dict[tuple[str, int], tuple[int, str]] = {}
        for did, dd in zip(ids, doc.devices, strict=True):
            kind = MODELS[dd.model].kind
            if kind == "phone" and dd.extension is not None:
                want[(did, 0)] = (dd.extension, dd.model)
            elif kind == "dect_base":
                for s, hs in enumerate(dd.handsets or []):
                    want[(did, s + 1)] = (hs.extension, handset_model(dd, s))
        current = self.session.scalars(
            select(Terminal).where(Terminal.order_pk == self.order.id)
        ).all()
        keep: set[tuple[str, int]] = set()
        for t in current:
            key = (t.device.device_id, t.slot)
            if t.device.origin == "bind" and key not in want:
                keep.add(key)
                continue
            if want.get(key) == (t.extension.short, t.model):
                keep.add(key)
                continue
            self.session.delete(t)
            if key in want:
                self.changes.append(
                    f"device {key[0]} slot {key[1]}: extension {t.extension.short} -> "
                    f"{want[key][0]}"
                )
            else:
                self.changes.append(f"device {key[0]} slot {key[1]}: unbound")
        self.session.flush()
        held = {t.extension.short: t.device.device_id for t in current if t in self.session
                and (t.device.device_id, t.slot) in keep}  # fmt: skip
        for key, (short, model) in want.items():
            if key in keep:
                continue
            if short in held:
                raise OrderRejected(
                    [
                        f"{self.doc.order}: devices: extension {short} already has terminal "
                        f"{held[short]} bound at the appointment (one terminal per extension; "
                        f"use id {held[short]} to adopt it)"
                    ]
                )
            dev = devices[key[0]]
            self.session.add(
                Terminal(
                    order_pk=self.order.id,
                    device_pk=dev.id,
                    slot=key[1],
                    extension_pk=exts[short].id,
                    model=model,
                )
            )
        self.session.flush()

    def _secrets(self) -> None:
        doc, order = self.doc, self.order
        want: set[tuple[str, str]] = set()

        def put(owner: str, name: str, given: str | None) -> None:
            want.add((owner, name))
            note = _put_secret(self.session, self.vault, order, owner, name, given)
            if note and self.existing:
                self.changes.append(note)

        for de in doc.extensions:
            put(f"extension:{de.short}", "sip_password", de.sip_password)
        for ds in doc.sites:
            put(f"site:{ds.id}", "pppoe_password", ds.pppoe_password)
        for did, dd in zip(device_ids(doc), doc.devices, strict=True):
            for name in DEVICE_SECRETS[MODELS[dd.model].kind]:
                put(f"device:{did}", name, getattr(dd, name, None))
        for dev in order.devices:
            if dev.origin == "bind":
                for name in DEVICE_SECRETS[MODELS[dev.model].kind]:
                    want.add((f"device:{dev.device_id}", name))
        for row in self.session.scalars(select(SecretRow).where(SecretRow.order_pk == order.id)):
            if (row.owner, row.name) not in want:
                self.session.delete(row)
        self.session.flush()


def _check_store_rules(session: Session, order: Order) -> None:
    """Rules that depend on what the store holds beyond the document (technicians' binds)."""
    session.refresh(order)
    count = session.scalar(select(func.count(Terminal.id)).where(Terminal.order_pk == order.id))
    quota = terminal_quota([e.type for e in order.extensions])
    if (count or 0) > quota:
        raise OrderRejected(
            [
                f"{order.order_id}: devices: {count} terminals with the ones bound at the "
                f"appointment (at most {quota}: one per standard/premium extension)"
            ]
        )


# ---------------------------------------------------------------------- export


def export_order(order: Order) -> dict[str, Any]:
    """A document for ``order`` in the §2b shape, with every device's id; no secrets."""
    opts = json.loads(order.options)
    defaults = {
        "multisite": False,
        "multi_selection": False,
        "call_distributor_light": False,
        "efax": False,
        "fax_pos": 0,
    }
    options = {k: v for k, v in opts.items() if defaults.get(k) != v}
    numbers: dict[str, Any] = {}
    singles = [n.number for n in order.numbers if n.kind == "single"]
    gnr = [{"first": n.number, "last": n.last} for n in order.numbers if n.kind == "gnr"]
    groups: dict[int, list[str]] = {}
    for n in order.numbers:
        if n.kind == "isdn":
            groups.setdefault(n.grp, []).append(n.number)
    if singles:
        numbers["single"] = singles
    if gnr:
        numbers["gnr"] = gnr
    if groups:
        numbers["isdn_groups"] = [groups[k] for k in sorted(groups)]
    doc: dict[str, Any] = {
        "order": order.order_id,
        "customer": {"name": order.customer.name, "vat": order.customer.vat},
        "plan": order.plan,
        "lines": order.lines,
    }
    if options:
        doc["options"] = options
    doc["numbers"] = numbers
    doc["sites"] = [
        {
            "id": s.site_id,
            "address": s.address,
            "connectivity": s.connectivity,
            "pppoe_username": s.pppoe_username,
        }
        for s in order.sites
    ]
    exts = []
    for e in order.extensions:
        item: dict[str, Any] = {
            "number": e.number,
            "short": e.short,
            "type": e.type,
            "name": e.name,
            "site": e.site.site_id,
        }
        if e.email:
            item["email"] = e.email
        if e.mobile:
            item["mobile"] = e.mobile
        confs = [c for c in e.conference.split(",") if c]
        if confs:
            item["conference"] = confs[0] if len(confs) == 1 else confs
        exts.append(item)
    doc["extensions"] = exts
    doc["devices"] = [_export_device(d) for d in order.devices]
    return doc


def _export_device(d: Device) -> dict[str, Any]:
    kind = MODELS[d.model].kind
    item: dict[str, Any] = {"model": d.model, "id": d.device_id}
    if d.site is not None and kind not in ("phone",):
        item["site"] = d.site.site_id
    if d.mac:
        item["mac"] = d.mac
    if d.serial:
        item["serial"] = d.serial
    terms = list(d.terminals)
    if kind == "phone" and terms:
        item["extension"] = terms[0].extension.short
    if d.switch is not None:
        item["switch"] = d.switch.device_id
        item["port"] = d.port
    if kind == "dect_base":
        item["handsets"] = [
            {"extension": t.extension.short, "model": t.model} for t in terms if t.slot > 0
        ]
    if d.fax_pos is not None:
        item["fax_pos"] = [x for x in d.fax_pos.split(",") if x]
    return item
