"""The offer's catalog as data: plans, options, extension types and equipment.

Every fact here comes from the offer's pages (``shared/seeds``) as summarised in DESIGN.md §2.
Readings of ours where the pages are vague are marked ``interp`` and listed in the README.
Rules that use these facts live in :mod:`provisioner.documents.rules`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CONNECTIVITIES = ("adsl", "fttc", "ftth", "fwa")
EXTENSION_TYPES = ("standard", "premium", "operator")
CONFERENCES = ("my_conference", "my_conference_large")


@dataclass(frozen=True)
class Plan:
    key: str
    title: str
    connectivity: tuple[str, ...]
    lines_min: int
    lines_max: int
    extensions_min: int
    extensions_max: int
    extension_types: tuple[str, ...]
    # Lines allowed per connectivity where it differs (Office Maxi on FWA: exactly 3).
    lines_by_connectivity: dict[str, tuple[int, int]] = field(default_factory=dict)
    # Single-extension plans: the Premium extension is an analog phone on IAD FXS port 1;
    # IP phones and DECT are refused (interp).
    analog_only: bool = False
    # Options refused on this plan.
    refused_options: tuple[str, ...] = ()
    interp: tuple[str, ...] = ()


_SOO_REFUSED = (
    "my_conference_large",
    "multi_selection",
    "fax_pos",
    "efax",
    "call_distributor_light",
)

PLANS: dict[str, Plan] = {
    p.key: p
    for p in (
        Plan(
            key="super_office_one",
            title="Super Office One",
            connectivity=("fttc", "ftth"),
            lines_min=1,
            lines_max=1,
            extensions_min=1,
            extensions_max=1,
            extension_types=("premium",),
            analog_only=True,
            refused_options=_SOO_REFUSED,
            interp=("analog-only terminal",),
        ),
        Plan(
            key="office_one",
            title="Office One",
            connectivity=("fttc", "ftth"),
            lines_min=1,
            lines_max=1,
            extensions_min=1,
            extensions_max=1,
            extension_types=("premium",),
            analog_only=True,
            interp=("analog-only terminal",),
        ),
        Plan(
            key="office_plus_special",
            title="Office Plus Special",
            connectivity=("adsl", "fwa", "fttc", "ftth"),
            lines_min=1,
            lines_max=1,
            extensions_min=1,
            extensions_max=1,
            extension_types=("premium",),
            analog_only=True,
            interp=("1 simultaneous call", "analog-only terminal"),
        ),
        Plan(
            key="office_plus",
            title="Office Plus",
            connectivity=("adsl", "fwa", "fttc", "ftth"),
            lines_min=2,
            lines_max=2,
            extensions_min=2,
            extensions_max=8,
            extension_types=EXTENSION_TYPES,
        ),
        Plan(
            key="office_maxi",
            title="Office Maxi",
            connectivity=("adsl", "fttc", "ftth", "fwa"),
            lines_min=3,
            lines_max=8,
            extensions_min=3,
            extensions_max=32,
            extension_types=EXTENSION_TYPES,
            lines_by_connectivity={"fwa": (3, 3)},
        ),
    )
}


@dataclass(frozen=True)
class Option:
    key: str
    title: str
    premium_only: bool = False  # a per-extension option (conference) on Premium only


OPTIONS: dict[str, Option] = {
    o.key: o
    for o in (
        Option("multisite", "Multisite (PBX shared across locations)"),
        Option("my_conference", "My Conference (up to 4 participants)", premium_only=True),
        Option("my_conference_large", "My Conference Large (up to 25)", premium_only=True),
        Option("multi_selection", "Multi Selection (IVR)"),
        Option("fax_pos", "FAX/POS analog ports"),
        Option("efax", "eFax (fax server)"),
        Option("call_distributor_light", "Light Call Distributor (hunt group)"),
    )
}

FAX_POS_MAX_PORTS = 2
CONFERENCE_PARTICIPANTS = {"my_conference": 4, "my_conference_large": 25}
ISDN_GROUP_MAX = 8
# Extension types that count towards the number of terminals the customer may buy.
TERMINAL_QUOTA_TYPES = ("standard", "premium")


@dataclass(frozen=True)
class Model:
    """One device model of the catalog. ``kind`` decides which document keys apply."""

    key: str
    title: str
    kind: str  # phone | dect_base | dect_handset | switch | iad | ont
    family: str  # template folder and driver family
    ports: int = 0
    poe_ports: tuple[int, ...] = ()
    handset_capacity: int = 0
    included_handset: str = ""  # the handset that comes in the kit
    analog_ports: int = 0
    identity: str = "mac"  # how the box in hand is recognised: mac | serial | none

    @property
    def is_terminal(self) -> bool:
        return self.kind in ("phone", "dect_handset")

    @property
    def powered_device(self) -> bool:
        """Fed by a switch port over PoE when connected to a switch."""
        return self.kind in ("phone", "dect_base")


MODELS: dict[str, Model] = {
    m.key: m
    for m in (
        Model("alcatel-temporis-ip150", "Alcatel Temporis IP150", "phone", "temporis"),
        Model("alcatel-temporis-ip701g", "Alcatel Temporis IP701G", "phone", "temporis"),
        Model(
            "alcatel-ip2215",
            "Alcatel IP2215 DECT kit (base + handset)",
            "dect_base",
            "dect",
            handset_capacity=5,  # interp: IP2215 base, up to 5 handsets
            included_handset="alcatel-ip2215-handset",
        ),
        Model(
            "alcatel-ip15",
            "Alcatel IP15 extra DECT handset",
            "dect_handset",
            "dect",
            identity="none",
        ),
        Model(
            "alcatel-ip2215-handset",
            "Alcatel IP2215 kit handset",
            "dect_handset",
            "dect",
            identity="none",
        ),
        Model(
            "dlink-dgs-1100-08p",
            "D-Link DGS-1100-08P PoE switch",
            "switch",
            "dlink",
            ports=8,
            poe_ports=tuple(range(1, 9)),
        ),
        Model(
            "dlink-dgs-1100-24p",
            "D-Link DGS-1100-24P switch (PoE on 1-12)",
            "switch",
            "dlink",
            ports=24,
            poe_ports=tuple(range(1, 13)),
        ),
        Model("iad", "Access gateway (IAD)", "iad", "iad", analog_ports=2),
        Model("mini-ont", "Mini ONT (FTTH)", "ont", "ont", identity="serial"),
    )
}

# Models a customer orders as a standalone device (handsets go inside a DECT base).
DEVICE_MODELS = tuple(k for k, m in MODELS.items() if m.kind != "dect_handset")
HANDSET_MODELS = tuple(k for k, m in MODELS.items() if m.kind == "dect_handset")


def terminal_quota(extension_types: list[str]) -> int:
    """How many terminals an order may have: one per Standard or Premium extension."""
    return sum(1 for t in extension_types if t in TERMINAL_QUOTA_TYPES)
