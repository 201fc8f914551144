"""An order as a document again (``provisioner export``, ``GET``): re-applies to the same state."""

from __future__ import annotations

import json
from typing import Any

from provisioner.catalog import MODELS
from provisioner.store.models import Device, Order


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
