"""The offer's rules (DESIGN.md §2) as small pure functions over an :class:`OrderDocument`.

Each check returns :class:`Problem` objects naming the offending item by its path in the
document and the limit it breaks. :func:`check_order` runs them all, so a document reports
every violation at once, not only the first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from provisioner.catalog import (
    FAX_POS_MAX_PORTS,
    ISDN_GROUP_MAX,
    MODELS,
    OPTIONS,
    PLANS,
    TERMINAL_QUOTA_TYPES,
    terminal_quota,
)
from provisioner.documents.document import Device, OrderDocument
from provisioner.documents.problems import Problem, format_path

K = TypeVar("K")
V = TypeVar("V")

GNR_MAX_SIZE = 10000  # interp: the pages give no size; real GNR blocks are 10 to 10,000 numbers

Path = tuple[int | str, ...]


@dataclass(frozen=True)
class TerminalRef:
    """A terminal of the order: an IP phone, or one handset slot of a DECT base."""

    device_index: int
    slot: int | None  # 1-based handset slot on a DECT base; None for a desk phone
    extension: int  # short number
    model: str

    @property
    def path(self) -> Path:
        if self.slot is None:
            return ("devices", self.device_index, "extension")
        return ("devices", self.device_index, "handsets", self.slot - 1, "extension")


def handset_model(device: Device, slot_index: int) -> str:
    """Model of a DECT base's handset slot: the kit's own handset first, IP15s after."""
    handsets = device.handsets or []
    given = handsets[slot_index].model
    if given:
        return given
    if slot_index == 0:
        return MODELS[device.model].included_handset
    return "alcatel-ip15"


def terminals(doc: OrderDocument) -> list[TerminalRef]:
    out = []
    for i, dev in enumerate(doc.devices):
        kind = MODELS[dev.model].kind
        if kind == "phone" and dev.extension is not None:
            out.append(TerminalRef(i, None, dev.extension, dev.model))
        elif kind == "dect_base":
            for s, hs in enumerate(dev.handsets or []):
                out.append(TerminalRef(i, s + 1, hs.extension, handset_model(dev, s)))
    return out


def device_ids(doc: OrderDocument) -> list[str]:
    """Every device's id: the given one, or a stable one made from what the device is for."""
    ids: list[str] = []
    used = {d.id for d in doc.devices if d.id}
    ext_site = {e.short: e.site for e in doc.extensions}
    counters: Counter[str] = Counter()
    for dev in doc.devices:
        if dev.id:
            ids.append(dev.id)
            continue
        kind = MODELS[dev.model].kind
        if kind == "phone" and dev.extension is not None:
            base = f"phone-{dev.extension}"
        elif kind == "dect_base" and (dev.site or dev.handsets):
            # Named for its site, not a handset: swapping handsets must not make a new base.
            site = dev.site or ext_site.get(dev.handsets[0].extension if dev.handsets else 0)
            base = f"dect-{site}" if site else "dect"
        elif kind in ("iad", "ont", "switch") and dev.site:
            base = f"{kind}-{dev.site}"
        else:
            base = kind
        counters[base] += 1
        candidate = base if counters[base] == 1 else f"{base}-{counters[base]}"
        while candidate in used:
            counters[base] += 1
            candidate = f"{base}-{counters[base]}"
        used.add(candidate)
        ids.append(candidate)
    return ids


def _p(path: Path, message: str, limit: str = "", needs: tuple[str, ...] = ()) -> Problem:
    """A violation at ``path``. ``needs``: the top-level lists it judges as a whole (a count,
    or a reference into the list), so that it is not reported when the document had items of
    one of them left out for their shape (see document.WellShaped)."""
    return Problem(format_path(path), message, limit, needs=frozenset(needs))


def _seen_before(seen: dict[K, V], key: K, here: V) -> V | None:
    """Where ``key`` was seen first, when it is seen again; the first time, None (and
    ``here`` is remembered for the next)."""
    first = seen.setdefault(key, here)
    return None if first is here else first


# --------------------------------------------------------------------------- plan and sites


def check_plan(doc: OrderDocument) -> Iterator[Problem]:
    plan = PLANS[doc.plan]
    for i, site in enumerate(doc.sites):
        if site.connectivity not in plan.connectivity:
            yield _p(
                ("sites", i, "connectivity"),
                f"{site.connectivity} is not sold with {plan.key}",
                f"{plan.key}: {', '.join(plan.connectivity)}",
            )
    lo, hi = plan.lines_min, plan.lines_max
    for conn, (clo, chi) in plan.lines_by_connectivity.items():
        if any(s.connectivity == conn for s in doc.sites):
            lo, hi = clo, chi
            break
    if not lo <= doc.lines <= hi:
        span = str(lo) if lo == hi else f"{lo} to {hi}"
        yield _p(("lines",), f"{doc.lines} simultaneous calls", f"{plan.key}: {span}", ("sites",))
    n = len(doc.extensions)
    if not plan.extensions_min <= n <= plan.extensions_max:
        span = (
            f"exactly {plan.extensions_min}"
            if plan.extensions_min == plan.extensions_max
            else f"{plan.extensions_min} to {plan.extensions_max}"
        )
        yield _p(("extensions",), f"{n} extensions", f"{plan.key}: {span}", ("extensions",))
    for i, ext in enumerate(doc.extensions):
        if ext.type not in plan.extension_types:
            yield _p(
                ("extensions", i, "type"),
                f"{ext.type} extension not sold with {plan.key}",
                f"{plan.key}: {', '.join(plan.extension_types)} only",
            )


def check_sites(doc: OrderDocument) -> Iterator[Problem]:
    seen: dict[str, int] = {}
    for i, site in enumerate(doc.sites):
        if _seen_before(seen, site.id, i) is not None:
            yield _p(("sites", i, "id"), f"site {site.id} is listed twice", "site ids are unique")
    if len(doc.sites) > 1 and not doc.options.multisite:
        yield _p(
            ("options", "multisite"),
            f"{len(doc.sites)} sites without the multisite option",
            "multisite is required for more than one site",
        )


def check_options(doc: OrderDocument) -> Iterator[Problem]:
    plan = PLANS[doc.plan]
    opts = doc.options
    enabled = {
        "multi_selection": opts.multi_selection,
        "call_distributor_light": opts.call_distributor_light,
        "efax": opts.efax,
        "fax_pos": opts.fax_pos > 0,
        "multisite": opts.multisite,
    }
    for key, on in enabled.items():
        if on and key in plan.refused_options:
            yield _p(
                ("options", key),
                f"{OPTIONS[key].title} is not available with {plan.key}",
                f"not with {plan.key}",
            )
    if opts.fax_pos > FAX_POS_MAX_PORTS:
        yield _p(
            ("options", "fax_pos"),
            f"{opts.fax_pos} FAX/POS ports",
            f"at most {FAX_POS_MAX_PORTS}",
        )
    for i, ext in enumerate(doc.extensions):
        confs = ext.conferences
        path = ("extensions", i, "conference")
        if confs and ext.type != "premium":
            yield _p(path, f"conference on a {ext.type} extension", "Premium extensions only")
        if len(set(confs)) != len(confs):
            yield _p(path, "the same conference option twice", "one of each at most")
        if "my_conference_large" in confs and "my_conference_large" in plan.refused_options:
            yield _p(path, "My Conference Large is not available", f"not with {plan.key}")
        if {"my_conference", "my_conference_large"} <= set(confs):
            yield _p(
                path,
                "my_conference and my_conference_large together",
                "one conference option per extension",
            )
        if ext.mobile and ext.type != "premium":
            yield _p(
                ("extensions", i, "mobile"),
                f"mobile number on a {ext.type} extension",
                "Premium extensions only",
            )


# --------------------------------------------------------------------------- numbers


def _held_numbers(doc: OrderDocument) -> Iterator[tuple[Path, str]]:
    for i, num in enumerate(doc.numbers.single):
        yield ("numbers", "single", i), num
    for g, group in enumerate(doc.numbers.isdn_groups):
        for j, num in enumerate(group):
            yield ("numbers", "isdn_groups", g, j), num


def _gnr_contains(first: str, last: str, number: str) -> bool:
    return len(number) == len(first) and int(first) <= int(number) <= int(last)


def check_numbers(doc: OrderDocument) -> Iterator[Problem]:
    nums = doc.numbers
    ranges: list[tuple[int, str, str]] = []
    for r, gnr in enumerate(nums.gnr):
        path: Path = ("numbers", "gnr", r)
        if len(gnr.first) != len(gnr.last):
            yield _p(path, f"{gnr.first}..{gnr.last} ends differ in length", "one number block")
            continue
        size = int(gnr.last) - int(gnr.first) + 1
        if size < 2:
            yield _p(path, f"{gnr.first}..{gnr.last} is not a range", "first below last")
            continue
        if size > GNR_MAX_SIZE:
            yield _p(path, f"{size} numbers in one GNR range", f"at most {GNR_MAX_SIZE}")
            continue
        for r2, first2, last2 in ranges:
            if _gnr_contains(first2, last2, gnr.first) or _gnr_contains(
                gnr.first, gnr.last, first2
            ):
                yield _p(path, f"overlaps numbers.gnr[{r2}]", "a GNR range is held whole, once")
        ranges.append((r, gnr.first, gnr.last))
    for g, group in enumerate(nums.isdn_groups):
        yield from _check_isdn_group(g, group)
    seen: dict[str, Path] = {}
    for path, num in _held_numbers(doc):
        if (first_at := _seen_before(seen, num, path)) is not None:
            yield _p(path, f"{num} is listed twice", f"also at {format_path(first_at)}")
        for r, first, last in ranges:
            if _gnr_contains(first, last, num):
                yield _p(
                    path,
                    f"{num} is inside GNR range numbers.gnr[{r}]",
                    "a GNR range moves whole: list it once",
                )


def isdn_block(number: str) -> str:
    """The number block an ISDN multi-number group lies in (interp): every digit but the last
    two, so a group is at most 100 numbers apart, the same length, on one exchange."""
    return number[:-2]


def _check_isdn_group(g: int, group: list[str]) -> Iterator[Problem]:
    """An ISDN multi-number group: its progenitor (the number that names the group) and up to
    seven secondary numbers. The order lists the progenitor first, so a group always comes
    with it; what is left to check is the group's structure. The customer chooses which of
    its numbers serve extensions: the progenitor need not serve one (the seeds)."""
    path: Path = ("numbers", "isdn_groups", g)
    if not group:
        yield _p(path, "empty ISDN group", f"1 to {ISDN_GROUP_MAX} numbers, the progenitor first")
        return
    if len(group) > ISDN_GROUP_MAX:  # the document's cap says it first; kept for plain data
        yield _p(
            path,
            f"{len(group)} numbers in an ISDN multi-number group",
            f"at most {ISDN_GROUP_MAX}",
        )
    progenitor = group[0]
    for j, number in enumerate(group[1:], 1):
        if len(number) != len(progenitor) or isdn_block(number) != isdn_block(progenitor):
            yield _p(
                (*path, j),
                f"{number} is not in the block of progenitor {progenitor}",
                f"one group, one block: {isdn_block(progenitor)}xx",
            )


def number_source(doc: OrderDocument, number: str) -> tuple[str, int] | None:
    """Where the order holds ``number``: ("single"|"gnr"|"isdn", index) or None."""
    if number in doc.numbers.single:
        return ("single", doc.numbers.single.index(number))
    for r, gnr in enumerate(doc.numbers.gnr):
        if _gnr_contains(gnr.first, gnr.last, number):
            return ("gnr", r)
    for g, group in enumerate(doc.numbers.isdn_groups):
        if number in group:
            return ("isdn", g)
    return None


def check_extensions(doc: OrderDocument) -> Iterator[Problem]:
    site_ids = {s.id for s in doc.sites}
    shorts: dict[int, int] = {}
    numbers: dict[str, int] = {}
    for i, ext in enumerate(doc.extensions):
        if ext.site not in site_ids:
            yield _p(
                ("extensions", i, "site"), f"no site {ext.site} in this order", "sites", ("sites",)
            )
        if (first := _seen_before(shorts, ext.short, i)) is not None:
            yield _p(
                ("extensions", i, "short"),
                f"short number {ext.short} is also extensions[{first}]",
                "short numbers are unique in the order",
            )
        if (first := _seen_before(numbers, ext.number, i)) is not None:
            yield _p(
                ("extensions", i, "number"),
                f"{ext.number} already serves extensions[{first}]",
                "one number per extension",
            )
        source = number_source(doc, ext.number)
        if source is None:
            yield _p(
                ("extensions", i, "number"),
                f"{ext.number} is not a number this order holds",
                "numbers.single, numbers.gnr or numbers.isdn_groups",
                ("numbers",),
            )


# --------------------------------------------------------------------------- devices


_KEYS_BY_KIND: dict[str, set[str]] = {
    # Which optional device keys make sense for each kind of device.
    "phone": {"id", "mac", "extension", "switch", "port", "site", "admin_password"},
    "dect_base": {"id", "mac", "site", "switch", "port", "handsets", "admin_password"},
    "switch": {
        "id",
        "mac",
        "site",
        "admin_password",
        "snmp_community",
        "snmp_auth_key",
        "snmp_priv_key",
    },
    "iad": {"id", "mac", "site", "fax_pos", "admin_password"},
    "ont": {"id", "serial", "site", "ploam_password"},
}
_REQUIRED_BY_KIND: dict[str, set[str]] = {
    "phone": {"extension"},
    "dect_base": {"handsets"},
    "switch": {"site"},
    "iad": {"site"},
    "ont": {"site"},
}


def check_devices(doc: OrderDocument) -> Iterator[Problem]:
    plan = PLANS[doc.plan]
    sites = {s.id: s for s in doc.sites}
    ext_by_short = {e.short: e for e in doc.extensions}
    ids = device_ids(doc)
    id_index: dict[str, int] = {}
    macs: dict[str, int] = {}
    serials: dict[str, int] = {}
    for i, dev in enumerate(doc.devices):
        model = MODELS[dev.model]
        given = {k for k in dev.model_fields_set if k != "model"}
        for key in sorted(given - _KEYS_BY_KIND[model.kind]):
            yield _p(("devices", i, key), f"{key} does not apply to {dev.model}", model.title)
        for key in sorted(_REQUIRED_BY_KIND[model.kind] - given):
            yield _p(("devices", i, key), f"{dev.model} needs {key}", "required for this model")
        if _seen_before(id_index, ids[i], i) is not None:
            yield _p(
                ("devices", i, "id"),
                f"device id {ids[i]} is used twice",
                "ids are unique",
                ("devices", "extensions"),
            )
        if dev.mac and (first := _seen_before(macs, dev.mac, i)) is not None:
            yield _p(
                ("devices", i, "mac"),
                f"MAC {dev.mac} is also devices[{first}]",
                "one box, one device",
            )
        if dev.serial and _seen_before(serials, dev.serial, i) is not None:
            yield _p(("devices", i, "serial"), f"serial {dev.serial} is used twice", "unique")
        if dev.site is not None and dev.site not in sites:
            yield _p(
                ("devices", i, "site"), f"no site {dev.site} in this order", "sites", ("sites",)
            )
        if plan.analog_only and model.kind in ("phone", "dect_base"):
            yield _p(
                ("devices", i, "model"),
                f"{dev.model} on {plan.key}: its Premium extension is the analog phone "
                "on IAD port 1",
                f"{plan.key}: no IP phones or DECT",
            )
        if model.kind == "phone" and dev.extension is not None:
            ext = ext_by_short.get(dev.extension)
            if ext and dev.site and dev.site != ext.site:
                yield _p(
                    ("devices", i, "site"),
                    f"site {dev.site} differs from extension {ext.short}'s site {ext.site}",
                    "a terminal's site is its extension's site",
                )
        if model.kind == "dect_base":
            yield from _check_dect(doc, i, dev)
        if model.kind == "ont" and dev.site in sites and sites[dev.site].connectivity != "ftth":
            yield _p(
                ("devices", i, "model"),
                f"Mini ONT on site {dev.site} with {sites[dev.site].connectivity}",
                "a Mini ONT goes with FTTH only",
            )
    yield from _check_terminals(doc)
    yield from _check_poe(doc, ids)
    yield from _check_site_devices(doc)


def _check_dect(doc: OrderDocument, i: int, dev: Device) -> Iterator[Problem]:
    model = MODELS[dev.model]
    handsets = dev.handsets or []
    if len(handsets) > model.handset_capacity:
        yield _p(
            ("devices", i, "handsets"),
            f"{len(handsets)} handsets on one {dev.model} base",
            f"{dev.model}: at most {model.handset_capacity}",
        )
    ext_by_short = {e.short: e for e in doc.extensions}
    for s, hs in enumerate(handsets):
        if s > 0 and hs.model == model.included_handset:
            yield _p(
                ("devices", i, "handsets", s, "model"),
                "only the first handset is the kit's own",
                "extra handsets are alcatel-ip15",
            )
        ext = ext_by_short.get(hs.extension)
        site = dev.site or (ext.site if ext else None)
        if ext and site and ext.site != site:
            yield _p(
                ("devices", i, "handsets", s, "extension"),
                f"extension {ext.short} is on site {ext.site}, the base on {site}",
                "a handset's site is its base's site",
            )


def _check_terminals(doc: OrderDocument) -> Iterator[Problem]:
    ext_by_short = {e.short: e for e in doc.extensions}
    taken: dict[int, TerminalRef] = {}
    refs = terminals(doc)
    for ref in refs:
        if ref.extension not in ext_by_short:
            yield _p(
                ref.path,
                f"no extension {ref.extension} in this order",
                "extensions",
                ("extensions",),
            )
            continue
        if (holder := _seen_before(taken, ref.extension, ref)) is not None:
            yield _p(
                ref.path,
                f"extension {ref.extension} already has a terminal at {format_path(holder.path)}",
                "one terminal per extension",
            )
    quota = terminal_quota([e.type for e in doc.extensions])
    if len(refs) > quota:
        yield _p(
            ("devices",),
            f"{len(refs)} terminals, IP phones and DECT handsets together",
            f"at most {quota}: one per {'/'.join(TERMINAL_QUOTA_TYPES)} extension",
            ("extensions",),
        )


def _check_poe(doc: OrderDocument, ids: list[str]) -> Iterator[Problem]:
    ext_site = {e.short: e.site for e in doc.extensions}
    by_id = dict(zip(ids, doc.devices, strict=True))
    ports: dict[tuple[str, int], int] = {}
    for i, dev in enumerate(doc.devices):
        if dev.switch is None and dev.port is None:
            continue
        if dev.switch is None or dev.port is None:
            yield _p(("devices", i), "switch and port go together", "both or neither")
            continue
        sw = by_id.get(dev.switch)
        if sw is None or MODELS[sw.model].kind != "switch":
            yield _p(
                ("devices", i, "switch"),
                f"no switch {dev.switch} in this order",
                "a switch id",
                ("devices",),
            )
            continue
        sw_model = MODELS[sw.model]
        if dev.port not in sw_model.poe_ports:
            lo, hi = sw_model.poe_ports[0], sw_model.poe_ports[-1]
            what = "is not a PoE port" if dev.port <= sw_model.ports else "does not exist"
            yield _p(
                ("devices", i, "port"),
                f"port {dev.port} of {dev.switch} {what}",
                f"{sw.model}: PoE ports {lo}-{hi} of {sw_model.ports}",
            )
        key = (dev.switch, dev.port)
        if (first := _seen_before(ports, key, i)) is not None:
            yield _p(
                ("devices", i, "port"),
                f"port {dev.port} of {dev.switch} is already used by devices[{first}]",
                "one device per port",
            )
        site = dev.site
        if site is None and dev.extension is not None:
            site = ext_site.get(dev.extension)
        if site is None and dev.handsets:
            site = ext_site.get(dev.handsets[0].extension)
        if site and sw.site and site != sw.site:
            yield _p(
                ("devices", i, "switch"),
                f"switch {dev.switch} is on site {sw.site}, the device on {site}",
                "same site",
            )


def _check_site_devices(doc: OrderDocument) -> Iterator[Problem]:
    plan = PLANS[doc.plan]
    for i, site in enumerate(doc.sites):
        iads = [d for d in doc.devices if d.model == "iad" and d.site == site.id]
        onts = [d for d in doc.devices if MODELS[d.model].kind == "ont" and d.site == site.id]
        if len(iads) != 1:
            yield _p(
                ("sites", i),
                f"site {site.id} has {len(iads)} IADs",
                "exactly one per site",
                ("devices",),
            )
        if site.connectivity == "ftth" and len(onts) != 1:
            yield _p(
                ("sites", i),
                f"FTTH site {site.id} has {len(onts)} Mini ONTs",
                "exactly one on FTTH",
                ("devices",),
            )
    # FAX/POS ports on the IADs' analog ports.
    declared = [
        (i, d) for i, d in enumerate(doc.devices) if d.model == "iad" and d.fax_pos is not None
    ]
    total = sum(len(d.fax_pos or []) for _, d in declared)
    if declared and total != doc.options.fax_pos:
        yield _p(
            ("devices", declared[0][0], "fax_pos"),
            f"{total} FAX/POS ports on IADs",
            f"options.fax_pos is {doc.options.fax_pos}",
            ("devices", "options"),
        )
    for i, dev in enumerate(doc.devices):
        if dev.model != "iad":
            continue
        fxs = MODELS["iad"].analog_ports
        analog_ext = 1 if plan.analog_only else 0
        if declared:
            fax = len(dev.fax_pos or [])
        else:
            first_iad = next(j for j, d in enumerate(doc.devices) if d.model == "iad")
            fax = doc.options.fax_pos if i == first_iad else 0
        if analog_ext + fax > fxs:
            yield _p(
                ("devices", i, "fax_pos") if declared else ("options", "fax_pos"),
                f"{analog_ext + fax} analog ports needed on IAD {dev.site}",
                f"the IAD has {fxs} (port 1 is the analog extension on {plan.key})"
                if analog_ext
                else f"the IAD has {fxs}",
                ("devices", "options"),
            )


CHECKS: tuple[Callable[[OrderDocument], Iterator[Problem]], ...] = (
    check_plan,
    check_sites,
    check_options,
    check_numbers,
    check_extensions,
    check_devices,
)


def check_order(doc: OrderDocument) -> list[Problem]:
    """Every violation of the offer's rules in one order document."""
    return [p for check in CHECKS for p in check(doc)]
