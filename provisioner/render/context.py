"""Plain data views of one order, built from the store's rows and secrets.

Templates never see ORM rows or the secret book: a driver picks from :class:`OrderView`
(no secrets) and :class:`SecretBook` what one device needs, and hands the templates only
that. Building a view is the only place that touches the store; everything after it is
pure and can be fed hand-made views (tests, the benchmark).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload, selectinload

from provisioner.catalog import PLANS
from provisioner.errors import RenderError
from provisioner.store.models import Device, Order, SecretRow

V = TypeVar("V")


@dataclass(frozen=True)
class SiteView:
    id: str
    address: str
    connectivity: str  # adsl | fttc | ftth | fwa
    pppoe_username: str


@dataclass(frozen=True)
class ExtensionView:
    short: int
    number: str
    type: str  # standard | premium | operator
    name: str
    site: str  # site id
    email: str = ""
    mobile: str = ""
    conferences: tuple[str, ...] = ()


@dataclass(frozen=True)
class TerminalView:
    """One terminal of a device: a desk phone (slot 0) or a DECT handset slot (1..n)."""

    slot: int
    model: str
    extension: ExtensionView


@dataclass(frozen=True)
class DeviceView:
    device_id: str
    model: str
    site: SiteView | None = None
    mac: str = ""  # stored spelling 00:80:f0:00:00:01; empty while planned
    serial: str = ""
    switch: str | None = None  # device id of the switch it hangs on
    port: int | None = None
    # Effective FAX/POS ports of an IAD, in port order ("fax" | "pos").
    fax_pos: tuple[str, ...] = ()
    terminals: tuple[TerminalView, ...] = ()

    @property
    def mac12(self) -> str:
        """The MAC as devices spell it in file names: lowercase, no separators."""
        return self.mac.replace(":", "")

    @property
    def bound(self) -> bool:
        return bool(self.mac or self.serial)

    def needed_site(self, what: str) -> SiteView:
        """Its site, which ``what`` (the family, "an IAD") cannot be configured without."""
        if self.site is None:
            raise RenderError(f"device {self.device_id}: {what} needs its site")
        return self.site


@dataclass(frozen=True)
class OrderView:
    """One order as plain data. Holds no secret: safe to hand to a template."""

    order_id: str
    customer_name: str
    customer_vat: str
    plan: str
    lines: int
    options: Mapping[str, Any]
    sites: tuple[SiteView, ...]
    extensions: tuple[ExtensionView, ...]
    devices: tuple[DeviceView, ...]

    @property
    def analog_only(self) -> bool:
        """Single-extension plans: the Premium extension is the analog phone on FXS port 1."""
        plan = PLANS.get(self.plan)
        return bool(plan and plan.analog_only)

    def device(self, device_id: str) -> DeviceView:
        return self._named(self.devices, lambda d: d.device_id, device_id, "device")

    def site(self, site_id: str) -> SiteView:
        return self._named(self.sites, lambda s: s.id, site_id, "site")

    def _named(self, items: tuple[V, ...], key: Callable[[V], str], wanted: str, what: str) -> V:
        """The item whose ``key`` is ``wanted``; the error names the ones the order has."""
        for item in items:
            if key(item) == wanted:
                return item
        known = ", ".join(key(i) for i in items)
        raise RenderError(f"order {self.order_id}: no {what} {wanted} ({what}s: {known})")

    def on_switch(self, switch_id: str) -> list[DeviceView]:
        """Devices plugged into a port of ``switch_id``, by port."""
        found = [d for d in self.devices if d.switch == switch_id and d.port is not None]
        return sorted(found, key=lambda d: d.port or 0)


@dataclass(frozen=True)
class SecretBook:
    """Every secret of one order: (owner, name) -> value. Never given to templates."""

    order_id: str
    values: Mapping[tuple[str, str], str] = field(default_factory=dict)

    def get(self, owner: str, name: str) -> str:
        try:
            return self.values[(owner, name)]
        except KeyError:
            raise RenderError(f"order {self.order_id}: no secret {name} for {owner}") from None

    def items(self) -> Iterator[tuple[tuple[str, str], str]]:
        return iter(self.values.items())


def effective_fax_pos(order: Order) -> dict[str, tuple[str, ...]]:
    """FAX/POS ports per IAD device id.

    When no IAD declares ``fax_pos``, the first site's IAD takes ``options.fax_pos`` ports
    of "fax" (the rule the validator applies, DESIGN.md §2).
    """
    iads = [d for d in order.devices if d.model == "iad"]
    declared = {d.device_id: tuple(x for x in (d.fax_pos or "").split(",") if x) for d in iads}
    if any(d.fax_pos is not None for d in iads):
        return declared
    count = int(json.loads(order.options or "{}").get("fax_pos", 0) or 0)
    out: dict[str, tuple[str, ...]] = {d.device_id: () for d in iads}
    first_pk = order.sites[0].id if order.sites else None
    first = next((d for d in iads if d.site_pk is not None and d.site_pk == first_pk), None)
    if first is None and iads:
        first = iads[0]
    if first is not None and count:
        out[first.device_id] = ("fax",) * count
    return out


def build_order_view(order: Order) -> OrderView:
    """The plain view of an ORM order (read inside an open session)."""
    sites = {
        s.id: SiteView(s.site_id, s.address, s.connectivity, s.pppoe_username) for s in order.sites
    }
    # Rows are joined through primary keys here, not relationships: one query per table
    # (see load_order) instead of one per row.
    site_ids = {s.id: s.site_id for s in order.sites}
    exts = {
        e.id: ExtensionView(
            short=e.short,
            number=e.number,
            type=e.type,
            name=e.name,
            site=site_ids[e.site_pk],
            email=e.email or "",
            mobile=e.mobile or "",
            conferences=tuple(c for c in e.conference.split(",") if c),
        )
        for e in order.extensions
    }
    fax = effective_fax_pos(order)
    device_ids = {d.id: d.device_id for d in order.devices}
    devices = []
    for d in order.devices:
        devices.append(
            DeviceView(
                device_id=d.device_id,
                model=d.model,
                site=sites.get(d.site_pk) if d.site_pk is not None else None,
                mac=d.mac or "",
                serial=d.serial or "",
                switch=device_ids.get(d.switch_pk) if d.switch_pk is not None else None,
                port=d.port,
                fax_pos=fax.get(d.device_id, ()),
                terminals=tuple(
                    TerminalView(t.slot, t.model, exts[t.extension_pk])
                    for t in sorted(d.terminals, key=lambda t: t.slot)
                ),
            )
        )
    return OrderView(
        order_id=order.order_id,
        customer_name=order.customer.name,
        customer_vat=order.customer.vat,
        plan=order.plan,
        lines=order.lines,
        options=json.loads(order.options or "{}"),
        sites=tuple(sites[s.id] for s in order.sites),
        extensions=tuple(exts[e.id] for e in order.extensions),
        devices=tuple(devices),
    )


def load_order(session: Session, order_pk: int) -> Order:
    """An order with everything a view needs, in one query per table."""
    order = session.scalar(
        select(Order)
        .where(Order.id == order_pk)
        .options(
            joinedload(Order.customer),
            selectinload(Order.sites),
            selectinload(Order.extensions),
            selectinload(Order.devices).selectinload(Device.terminals),
        )
    )
    if order is None:
        raise RenderError(f"order #{order_pk}: not in the store")
    return order


def load_secrets(session: Session, order: Order, decrypt: Any) -> SecretBook:
    """Every secret of ``order``, decrypted with ``decrypt(ciphertext) -> str``; one query."""
    rows = session.scalars(select(SecretRow).where(SecretRow.order_pk == order.id))
    return SecretBook(order.order_id, {(r.owner, r.name): decrypt(r.ciphertext) for r in rows})
