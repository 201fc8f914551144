"""The switch set-plan: a rendered switch config as plain data, and its SNMP varbinds.

A set-plan is the YAML document the template renderer writes for an SNMP-only switch
(D-Link DGS-1100 non-/ME): system strings, static VLANs with their tagged/untagged
ports, the PVID of every port and the PoE admin state of the PoE ports the order uses::

    model: dlink-dgs-1100-24p
    system: {name: sw-milano, location: "Via Roma 1, 20121 Milano MI", contact: "noc@x"}
    vlans:
      - {vid: 1, name: data, untagged: [1, 2, 3], tagged: []}
      - {vid: 20, name: voice, untagged: [], tagged: [1, 2]}
    pvid: {1: 1, 2: 1, 3: 1}          # every port of the model
    poe: {1: true, 2: true}           # PoE ports the plan sets; the others stay as they are

Everything here is pure: parse and validate (:func:`parse_setplan`), map to the varbinds
that describe the device state (:func:`to_varbinds`), read such varbinds back into a plan
(:func:`from_varbinds`), render them as lines for a diff (:func:`diff_text`) and work out
the SETs that turn one state into another (:func:`plan_writes`). The SNMP I/O lives in
:mod:`provisioner.push.drivers.dlink_snmp`.

Per-model facts are data in the catalog (:data:`provisioner.catalog.MODELS`): port counts,
PoE ports and the SNMP ids (sysObjectID, save object).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeGuard, TypeVar

import yaml

from provisioner.catalog import MODELS
from provisioner.errors import RenderError
from provisioner.render.engine import portlist as ranges  # "1-3,5", as switches write them

T = TypeVar("T")

# --- OIDs (numeric: vendor MIBs are not compiled, see research/libraries.md §2) ---------
SYS_DESCR = "1.3.6.1.2.1.1.1.0"
SYS_OBJECT_ID = "1.3.6.1.2.1.1.2.0"
SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
SYS_CONTACT = "1.3.6.1.2.1.1.4.0"
SYS_NAME = "1.3.6.1.2.1.1.5.0"
SYS_LOCATION = "1.3.6.1.2.1.1.6.0"
# Q-BRIDGE-MIB dot1qVlanStaticTable columns (index: vid) and dot1qPvid (index: port).
VLAN_STATIC = "1.3.6.1.2.1.17.7.1.4.3.1"
VLAN_NAME = VLAN_STATIC + ".1"
VLAN_EGRESS = VLAN_STATIC + ".2"
VLAN_UNTAGGED = VLAN_STATIC + ".4"
VLAN_ROW_STATUS = VLAN_STATIC + ".5"
PVID = "1.3.6.1.2.1.17.7.1.4.5.1.1"
# POWER-ETHERNET-MIB pethPsePortAdminEnable, index: group (always 1 here) . port.
POE_ADMIN = "1.3.6.1.2.1.105.1.1.1.3.1"

ROW_ACTIVE = 1
ROW_CREATE_AND_GO = 4
ROW_DESTROY = 6
TRUTH_TRUE = 1
TRUTH_FALSE = 2
DEFAULT_VLAN = 1
VID_MAX = 4094
SYS_STRING_MAX = 255  # DisplayString (SIZE (0..255))
VLAN_NAME_MAX = 32  # SnmpAdminString (SIZE (0..32)) in dot1qVlanStaticName

NAMES = {
    SYS_CONTACT: "sysContact",
    SYS_NAME: "sysName",
    SYS_LOCATION: "sysLocation",
    VLAN_NAME: "dot1qVlanStaticName",
    VLAN_EGRESS: "dot1qVlanStaticEgressPorts",
    VLAN_UNTAGGED: "dot1qVlanStaticUntaggedPorts",
    VLAN_ROW_STATUS: "dot1qVlanStaticRowStatus",
    PVID: "dot1qPvid",
    POE_ADMIN: "pethPsePortAdminEnable.1",
}


def snmp_switches() -> tuple[str, ...]:
    """The catalog's SNMP-only switch models (the ones a set-plan can be for)."""
    return tuple(key for key, model in MODELS.items() if model.snmp is not None)


def model_ports(model: str) -> tuple[int, tuple[int, ...]]:
    """(port count, PoE ports) of a switch model, from the catalog."""
    facts = MODELS[model]
    return facts.ports, tuple(facts.poe_ports)


class SetPlanError(RenderError):
    """A set-plan is malformed or breaks the model's limits. ``problems``: one per line."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


# --- the plan ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SystemInfo:
    name: str = ""
    location: str = ""
    contact: str = ""


@dataclass(frozen=True)
class Vlan:
    vid: int
    name: str = ""
    untagged: frozenset[int] = frozenset()
    tagged: frozenset[int] = frozenset()

    @property
    def egress(self) -> frozenset[int]:
        """Every member port: Q-BRIDGE egress includes the untagged ports."""
        return self.untagged | self.tagged


@dataclass(frozen=True)
class SetPlan:
    """A switch's whole managed state. ``vlans`` are sorted by vid."""

    model: str
    system: SystemInfo = SystemInfo()
    vlans: tuple[Vlan, ...] = ()
    pvid: Mapping[int, int] = field(default_factory=dict)
    poe: Mapping[int, bool] = field(default_factory=dict)

    def to_yaml(self) -> str:
        """The plan as set-plan YAML (the form :func:`parse_setplan` reads)."""
        doc: dict[str, Any] = {
            "model": self.model,
            "system": {
                "name": self.system.name,
                "location": self.system.location,
                "contact": self.system.contact,
            },
            "vlans": [
                {
                    "vid": v.vid,
                    "name": v.name,
                    "untagged": sorted(v.untagged),
                    "tagged": sorted(v.tagged),
                }
                for v in self.vlans
            ],
            "pvid": dict(sorted(self.pvid.items())),
            "poe": dict(sorted(self.poe.items())),
        }
        # Flow style for the leaf lists and maps: one line per VLAN, one line for pvid/poe.
        return yaml.safe_dump(
            doc, sort_keys=False, allow_unicode=True, width=1000, default_flow_style=None
        )


@dataclass(frozen=True)
class VarBind:
    """One SNMP variable: numeric OID, a value kind the SNMP adapter maps to a type.

    kinds: ``int`` Integer32, ``gauge`` Gauge32, ``str`` OctetString from UTF-8 text,
    ``octets`` OctetString from raw bytes (PortList bitmaps).
    """

    oid: str
    kind: Literal["int", "str", "octets", "gauge"]
    value: int | str | bytes


# --- PortList (Q-BRIDGE-MIB): port 1 is the most significant bit of the first octet ----


def portlist(ports: Iterable[int], port_count: int) -> bytes:
    """Encode ports as a PortList of ceil(port_count / 8) octets."""
    data = bytearray((port_count + 7) // 8)
    for port in ports:
        if not 1 <= port <= port_count:
            raise ValueError(f"port {port} outside 1-{port_count}")
        data[(port - 1) // 8] |= 0x80 >> ((port - 1) % 8)
    return bytes(data)


def ports_of(data: bytes) -> frozenset[int]:
    """Decode a PortList of any length into the set of ports it names."""
    return frozenset(
        octet_index * 8 + bit + 1
        for octet_index, octet in enumerate(data)
        for bit in range(8)
        if octet & (0x80 >> bit)
    )


# --- parsing and validation -------------------------------------------------------------

_TOP_KEYS = {"model", "system", "vlans", "pvid", "poe"}
_SYSTEM_KEYS = {"name", "location", "contact"}
_VLAN_KEYS = {"vid", "name", "untagged", "tagged"}


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value: object, where: str, limit: int, problems: list[str]) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        problems.append(f"{where}: expected text, got {value!r}")
        return ""
    if len(value.encode()) > limit:
        problems.append(f"{where}: {len(value.encode())} bytes, the limit is {limit}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        problems.append(f"{where}: control characters are not allowed")
    return value


def _ports(value: object, where: str, port_count: int, problems: list[str]) -> frozenset[int]:
    if value is None:
        return frozenset()
    if not isinstance(value, list):
        problems.append(f"{where}: expected a list of port numbers, got {value!r}")
        return frozenset()
    ports: set[int] = set()
    for port in value:
        if not _is_int(port):
            problems.append(f"{where}: {port!r} is not a port number")
        elif not 1 <= port <= port_count:
            problems.append(f"{where}: port {port} does not exist (ports 1-{port_count})")
        elif port in ports:
            problems.append(f"{where}: port {port} listed twice")
        else:
            ports.add(port)
    return frozenset(ports)


def _part(
    doc: dict[Any, Any], name: str, kind: type[T], expected: str, where: str, problems: list[str]
) -> T:
    """``doc[name]`` when it is a ``kind`` (an empty one when it is not given); else a
    problem (``expected`` says what it should be) and an empty one."""
    value = doc.get(name) or kind()
    if not isinstance(value, kind):
        problems.append(f"{where}: {name}: expected {expected}")
        return kind()
    return value


def _unknown(keys: Iterable[object], allowed: set[str], where: str, problems: list[str]) -> None:
    for key in keys:
        if key not in allowed:
            problems.append(f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(allowed))})")


def parse_setplan(text: str) -> SetPlan:
    """Parse and validate a set-plan YAML document. Raises :class:`SetPlanError`."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SetPlanError([f"set-plan: not valid YAML: {exc}".replace("\n", " ")]) from None
    if not isinstance(doc, dict):
        raise SetPlanError(["set-plan: expected a mapping at the top"])
    problems: list[str] = []
    _unknown(doc, _TOP_KEYS, "set-plan", problems)
    model = doc.get("model")
    known = snmp_switches()
    if model not in known:
        raise SetPlanError(
            [f"set-plan: model {model!r} is not an SNMP switch (known: {', '.join(known)})"]
        )
    port_count, poe_ports = model_ports(model)
    where = model

    system_doc = _part(doc, "system", dict, "a mapping", where, problems)
    _unknown(system_doc, _SYSTEM_KEYS, f"{where}: system", problems)
    system = SystemInfo(
        name=_text(system_doc.get("name"), f"{where}: system.name", SYS_STRING_MAX, problems),
        location=_text(
            system_doc.get("location"), f"{where}: system.location", SYS_STRING_MAX, problems
        ),
        contact=_text(
            system_doc.get("contact"), f"{where}: system.contact", SYS_STRING_MAX, problems
        ),
    )

    vlans: dict[int, Vlan] = {}
    vlan_docs = _part(doc, "vlans", list, "a list", where, problems)
    untagged_in: dict[int, int] = {}
    for n, vdoc in enumerate(vlan_docs, 1):
        if not isinstance(vdoc, dict):
            problems.append(f"{where}: vlans[{n}]: expected a mapping")
            continue
        _unknown(vdoc, _VLAN_KEYS, f"{where}: vlans[{n}]", problems)
        vid = vdoc.get("vid")
        if not _is_int(vid) or not 1 <= vid <= VID_MAX:
            problems.append(f"{where}: vlans[{n}]: vid {vid!r} is not a VLAN id (1-{VID_MAX})")
            continue
        vwhere = f"{where}: vlan {vid}"
        if vid in vlans:
            problems.append(f"{vwhere}: listed twice")
            continue
        untagged = _ports(vdoc.get("untagged"), f"{vwhere} untagged", port_count, problems)
        tagged = _ports(vdoc.get("tagged"), f"{vwhere} tagged", port_count, problems)
        both = untagged & tagged
        if both:
            problems.append(f"{vwhere}: ports {ranges(both)} are both tagged and untagged")
        for port in sorted(untagged):
            # A port sends untagged frames of one VLAN only (802.1Q; D-Link enforces it).
            if port in untagged_in:
                problems.append(
                    f"{vwhere}: port {port} is already untagged in vlan {untagged_in[port]}"
                )
            else:
                untagged_in[port] = vid
        name = _text(vdoc.get("name"), f"{vwhere} name", VLAN_NAME_MAX, problems)
        vlans[vid] = Vlan(vid=vid, name=name, untagged=untagged, tagged=tagged)

    pvid: dict[int, int] = {}
    pvid_doc = _part(doc, "pvid", dict, "a mapping port -> vid", where, problems)
    for port, vid in pvid_doc.items():
        if not _is_int(port) or not 1 <= port <= port_count:
            problems.append(f"{where}: pvid: port {port!r} does not exist (ports 1-{port_count})")
        elif not _is_int(vid) or vid not in vlans:
            problems.append(f"{where}: pvid: port {port} -> vlan {vid!r} is not in the plan")
        else:
            pvid[port] = vid
    missing = [p for p in range(1, port_count + 1) if p not in pvid_doc]
    if missing:
        problems.append(
            f"{where}: pvid: ports {ranges(missing)} have no PVID (every port needs one)"
        )

    poe: dict[int, bool] = {}
    poe_doc = _part(doc, "poe", dict, "a mapping port -> true/false", where, problems)
    for port, state in poe_doc.items():
        if not _is_int(port) or port not in poe_ports:
            problems.append(
                f"{where}: poe: port {port!r} is not a PoE port (PoE ports: {ranges(poe_ports)})"
            )
        elif not isinstance(state, bool):
            problems.append(f"{where}: poe: port {port}: {state!r} is not true/false")
        else:
            poe[port] = state
    # A PoE port the plan does not name is left as it is: a phone plugged in on site into a
    # port the order does not list keeps its power.

    if problems:
        raise SetPlanError(problems)
    return SetPlan(
        model=model,
        system=system,
        vlans=tuple(vlans[v] for v in sorted(vlans)),
        pvid=dict(sorted(pvid.items())),
        poe=dict(sorted(poe.items())),
    )


# --- plan <-> varbinds ------------------------------------------------------------------


def oid_key(oid: str) -> tuple[int, ...]:
    """Sort key: OIDs in MIB (numeric) order."""
    return tuple(int(x) for x in oid.strip(".").split("."))


def to_varbinds(plan: SetPlan) -> list[VarBind]:
    """The device state a plan describes, in OID order. VLAN rows show as RowStatus active.

    Whether a row must be created (createAndGo) or destroyed depends on the device's
    current state: see :func:`plan_writes`. The default VLAN cannot be deleted, so a plan
    without it asks for it to be emptied (no member ports; its name is left alone).
    """
    port_count, _ = model_ports(plan.model)
    out = [
        VarBind(SYS_CONTACT, "str", plan.system.contact),
        VarBind(SYS_NAME, "str", plan.system.name),
        VarBind(SYS_LOCATION, "str", plan.system.location),
    ]
    if all(vlan.vid != DEFAULT_VLAN for vlan in plan.vlans):
        out += [
            VarBind(f"{VLAN_EGRESS}.{DEFAULT_VLAN}", "octets", portlist((), port_count)),
            VarBind(f"{VLAN_UNTAGGED}.{DEFAULT_VLAN}", "octets", portlist((), port_count)),
            VarBind(f"{VLAN_ROW_STATUS}.{DEFAULT_VLAN}", "int", ROW_ACTIVE),
        ]
    for vlan in plan.vlans:
        out += [
            VarBind(f"{VLAN_NAME}.{vlan.vid}", "str", vlan.name),
            VarBind(f"{VLAN_EGRESS}.{vlan.vid}", "octets", portlist(vlan.egress, port_count)),
            VarBind(f"{VLAN_UNTAGGED}.{vlan.vid}", "octets", portlist(vlan.untagged, port_count)),
            VarBind(f"{VLAN_ROW_STATUS}.{vlan.vid}", "int", ROW_ACTIVE),
        ]
    out += [VarBind(f"{PVID}.{port}", "gauge", vid) for port, vid in plan.pvid.items()]
    out += [
        VarBind(f"{POE_ADMIN}.{port}", "int", TRUTH_TRUE if on else TRUTH_FALSE)
        for port, on in plan.poe.items()
    ]
    return sorted(out, key=lambda vb: oid_key(vb.oid))


def _index(oid: str, column: str) -> int | None:
    prefix = column + "."
    if oid.startswith(prefix) and oid[len(prefix) :].isdigit():
        return int(oid[len(prefix) :])
    return None


def _as_text(value: int | str | bytes) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _as_bytes(value: int | str | bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode()


def from_varbinds(model: str, varbinds: Iterable[VarBind]) -> SetPlan:
    """Read a device's varbinds (as the driver fetched them) back into a plan.

    Tolerant on purpose: a device reading is what it is, so nothing is validated; unknown
    OIDs are ignored, and a VLAN exists when its RowStatus is active.
    """
    system: dict[str, str] = {}
    rows: dict[int, dict[str, int | str | bytes]] = {}
    pvid: dict[int, int] = {}
    poe: dict[int, bool] = {}
    scalar = {SYS_NAME: "name", SYS_LOCATION: "location", SYS_CONTACT: "contact"}
    columns = {
        VLAN_NAME: "name",
        VLAN_EGRESS: "egress",
        VLAN_UNTAGGED: "untagged",
        VLAN_ROW_STATUS: "status",
    }
    for vb in varbinds:
        if vb.oid in scalar:
            system[scalar[vb.oid]] = _as_text(vb.value)
            continue
        for column, label in columns.items():
            vid = _index(vb.oid, column)
            if vid is not None:
                rows.setdefault(vid, {})[label] = vb.value
                break
        else:
            port = _index(vb.oid, PVID)
            if port is not None:
                pvid[port] = int(vb.value)
                continue
            port = _index(vb.oid, POE_ADMIN)
            if port is not None:
                poe[port] = int(vb.value) == TRUTH_TRUE
    vlans = []
    for vid, row in sorted(rows.items()):
        if row.get("status") != ROW_ACTIVE:
            continue
        untagged = ports_of(_as_bytes(row.get("untagged", b"")))
        egress = ports_of(_as_bytes(row.get("egress", b"")))
        vlans.append(
            Vlan(
                vid=vid,
                name=_as_text(row.get("name", "")),
                untagged=untagged,
                tagged=egress - untagged,
            )
        )
    return SetPlan(
        model=model,
        system=SystemInfo(**system),
        vlans=tuple(vlans),
        pvid=dict(sorted(pvid.items())),
        poe=dict(sorted(poe.items())),
    )


# --- lines, diff, writes ----------------------------------------------------------------


def _name(oid: str) -> str:
    for base, name in NAMES.items():
        if oid == base:
            return name
        if oid.startswith(base + "."):
            return f"{name}.{oid[len(base) + 1 :]}"
    return oid


def varbind_line(vb: VarBind) -> str:
    """One readable line per varbind: ``sysName = "sw-milano"``, bitmaps with their ports."""
    if vb.kind == "octets":
        data = _as_bytes(vb.value)
        ports = ranges(ports_of(data)) or "none"
        value = f"{data.hex() or '(empty)'} (ports {ports})"
    elif vb.kind == "str":
        value = '"' + _as_text(vb.value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    else:
        value = str(vb.value)
    return f"{_name(vb.oid)} = {value}"


def varbind_lines(varbinds: Iterable[VarBind]) -> list[str]:
    """Lines in OID order."""
    return [varbind_line(vb) for vb in sorted(varbinds, key=lambda vb: oid_key(vb.oid))]


def vlan_of(oid: str) -> int | None:
    """The VLAN id of a Q-BRIDGE static VLAN table column's OID, else None."""
    for column in (VLAN_NAME, VLAN_EGRESS, VLAN_UNTAGGED, VLAN_ROW_STATUS):
        vid = _index(oid, column)
        if vid is not None:
            return vid
    return None


def diff_text(current: Iterable[VarBind], desired: Iterable[VarBind]) -> str:
    """Unified diff of current vs desired state as varbind lines; "" when equal.

    Objects the plan does not manage (the default VLAN's name when the plan leaves the
    default VLAN out) are not shown; a VLAN that will be destroyed shows all its lines.
    """
    want = {vb.oid for vb in desired}
    doomed = {
        vid
        for vb in current
        if (vid := row_of(vb.oid)) is not None and vid != DEFAULT_VLAN and vb.oid not in want
    }
    shown = [vb for vb in current if vb.oid in want or vlan_of(vb.oid) in doomed]
    lines = difflib.unified_diff(
        varbind_lines(shown), varbind_lines(desired), "running", "candidate", lineterm=""
    )
    return "\n".join(lines)


def _same(a: VarBind, b: VarBind) -> bool:
    if a.kind == "octets" or b.kind == "octets":
        return _as_bytes(a.value) == _as_bytes(b.value)
    return a.value == b.value


def row_of(oid: str) -> int | None:
    """The VLAN id of a dot1qVlanStaticRowStatus OID, else None."""
    return _index(oid, VLAN_ROW_STATUS)


def plan_writes(current: Iterable[VarBind], desired: Iterable[VarBind]) -> list[VarBind]:
    """The SETs that turn ``current`` into ``desired``, in the order to send them.

    Only what differs is written. Order: create missing VLAN rows (createAndGo), set the
    changed columns and scalars (VLAN membership before PVIDs, so a PVID never points at
    a VLAN the port is not in yet), then destroy VLAN rows the plan does not have. The
    default VLAN is never destroyed.
    """
    now = {vb.oid: vb for vb in current}
    want = {vb.oid: vb for vb in desired}
    creates: list[VarBind] = []
    changes: list[VarBind] = []
    destroys: list[VarBind] = []
    for oid, vb in sorted(want.items(), key=lambda kv: oid_key(kv[0])):
        vid = row_of(oid)
        if vid is not None:
            if oid not in now or now[oid].value != ROW_ACTIVE:
                creates.append(VarBind(oid, "int", ROW_CREATE_AND_GO))
            continue
        if oid not in now or not _same(now[oid], vb):
            changes.append(vb)
    for oid in sorted(now, key=oid_key):
        vid = row_of(oid)
        if vid is not None and vid != DEFAULT_VLAN and oid not in want:
            destroys.append(VarBind(oid, "int", ROW_DESTROY))
    # Within changes, OID order already puts Q-BRIDGE VLAN columns (17.7.1.4.3) before
    # dot1qPvid (17.7.1.4.5) and PoE (105) after both.
    return creates + changes + destroys
