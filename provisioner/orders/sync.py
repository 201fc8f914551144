"""``apply`` as a reconciler: bring one order's rows to what its document says, writing only
what differs (kubectl-apply semantics, see :meth:`OrdersService.apply`), and the helpers every
order write shares (row locks, secrets, identity checks).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from provisioner.catalog import DEVICE_SECRETS, MODELS, terminal_quota
from provisioner.documents.document import Device as DocDevice
from provisioner.documents.document import OrderDocument
from provisioner.documents.rules import device_ids, handset_model
from provisioner.errors import DeviceUnknown, OrderRejected
from provisioner.store import vault
from provisioner.store.models import (
    Customer,
    Device,
    Extension,
    Number,
    Order,
    SecretRow,
    Site,
    Terminal,
    utcnow,
)


def lock_order(session: Session, order_id: str) -> Order | None:
    # FOR UPDATE serialises writers of one order on PostgreSQL; SQLite's BEGIN IMMEDIATE
    # has already serialised every writer.
    return session.scalar(select(Order).where(Order.order_id == order_id).with_for_update())


def check_identities(session: Session, doc: OrderDocument) -> None:
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


def device_by_id(order: Order, device_id: str) -> Device:
    dev = next((d for d in order.devices if d.device_id == device_id), None)
    if dev is None:
        known = ", ".join(d.device_id for d in order.devices)
        raise DeviceUnknown(f"order {order.order_id}: no device {device_id} (devices: {known})")
    return dev


def put_secret(
    session: Session,
    v: vault.Vault,
    order: Order,
    owner: str,
    name: str,
    given: str | None,
    rows: dict[tuple[str, str], SecretRow] | None = None,
) -> str | None:
    """Ensure a secret exists; returns a change note, or None when nothing changed.

    ``rows``: the order's secret rows by (owner, name), when the caller loaded them all at
    once (an apply puts a hundred secrets: one query, not one per secret); kept current."""
    if rows is not None:
        row = rows.get((owner, name))
    else:
        row = session.scalar(
            select(SecretRow).where(
                SecretRow.order_pk == order.id, SecretRow.owner == owner, SecretRow.name == name
            )
        )
    if row is None:
        value = given if given is not None else vault.generate(name)
        source = "document" if given is not None else "generated"
        row = SecretRow(
            order_pk=order.id,
            owner=owner,
            name=name,
            ciphertext=v.encrypt(value),
            source=source,
        )
        session.add(row)
        if rows is not None:
            rows[(owner, name)] = row
        return f"{owner} {name} {source}"
    if given is not None and v.decrypt(row.ciphertext) != given:
        row.ciphertext = v.encrypt(given)
        row.source = "document"
        row.updated_at = utcnow()
        return f"{owner} {name} changed"
    return None


def drop_secrets(session: Session, order: Order, owner: str) -> None:
    for row in session.scalars(
        select(SecretRow).where(SecretRow.order_pk == order.id, SecretRow.owner == owner)
    ):
        session.delete(row)


def _options_json(doc: OrderDocument) -> str:
    return json.dumps(doc.options.model_dump(), sort_keys=True)


class OrderSync:
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

    def _update(self, row: Any, said: dict[str, Any], label: str) -> None:
        """Set each attribute of ``row`` to what the document says (``_set`` one by one)."""
        for attr, value in said.items():
            self._set(row, attr, value, label)

    def run(self) -> None:
        doc, s = self.doc, self.session
        customer = s.scalar(select(Customer).where(Customer.vat == doc.customer.vat))
        if customer is None:
            customer = Customer(vat=doc.customer.vat, name=doc.customer.name)
            s.add(customer)
            s.flush()
        elif customer.name != doc.customer.name:
            self._rename(customer)
        said = {"plan": doc.plan, "lines": doc.lines, "options": _options_json(doc)}
        if not self.existing:
            self.order = Order(
                order_id=doc.order, customer=customer, state="active", source=self.source, **said
            )
            s.add(self.order)
            s.flush()
            self.changes.append(f"order {doc.order} created")
        else:
            o = self.order
            self._update(o, {"customer_id": customer.id, **said}, "order")
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
            said = {"position": pos, "address": ds.address, "connectivity": ds.connectivity}
            row = by_id.get(ds.id)
            if row is None:
                self.order.sites.append(Site(site_id=ds.id, pppoe_username=username, **said))
                if self.existing:
                    self.changes.append(f"site {ds.id} added")
                continue
            if ds.pppoe_username:
                said["pppoe_username"] = ds.pppoe_username
            self._update(row, said, f"site {ds.id}")
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
                drop_secrets(self.session, self.order, f"extension:{short}")
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
            said = {
                "position": pos,
                "type": de.type,
                "name": de.name,
                "email": de.email,
                "mobile": de.mobile,
                "conference": ",".join(de.conferences),
            }
            found = by_short.get(de.short)
            if found is None:
                new = Extension(site=sites[de.site], number=de.number, short=de.short, **said)
                self.order.extensions.append(new)
                if self.existing:
                    self.changes.append(f"extension {de.short} added")
                continue
            self._update(found, {"site_pk": sites[de.site].id, **said}, f"extension {de.short}")
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
            drop_secrets(self.session, self.order, f"device:{did}")
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
            said = {"position": pos, "model": dd.model, "site_pk": site_pk, "fax_pos": fax}
            if found is None:
                row = Device(
                    device_id=did,
                    mac=dd.mac,
                    serial=dd.serial,
                    origin="document",
                    identity_source="document",
                    **said,
                )
                self.order.devices.append(row)
                if self.existing:
                    self.changes.append(f"device {did} added")
            else:
                row = found
                label = f"device {did}"
                self._update(row, said, label)
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
        with self.session.no_autoflush:
            rows = {
                (r.owner, r.name): r
                for r in self.session.scalars(
                    select(SecretRow).where(SecretRow.order_pk == order.id)
                )
            }

        def put(owner: str, name: str, given: str | None) -> None:
            want.add((owner, name))
            note = put_secret(self.session, self.vault, order, owner, name, given, rows)
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
        for key, row in rows.items():
            if key not in want:
                self.session.delete(row)
        self.session.flush()


def check_store_rules(session: Session, order: Order) -> None:
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
