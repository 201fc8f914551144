"""The offer's catalog as data: plans, options, extension types and equipment.

The offer's facts come from its pages (``shared/seeds``) as summarised in DESIGN.md §2; the
device facts from research/device-facts.md. Readings of ours where a source is vague are
marked ``interp`` and listed in the README. :data:`MODELS` is the one table of every model
fact (kind, identity, files facts, ports, PoE ports, handset capacity, SNMP ids): the
order rules (:mod:`provisioner.documents.rules`), the render drivers and the push drivers
read it, and a new model is its row here plus a driver file and templates.
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


def _single_extension_plan(
    key: str,
    title: str,
    connectivity: tuple[str, ...],
    *,
    refused_options: tuple[str, ...] = (),
    interp: tuple[str, ...],
) -> Plan:
    """One line and one Premium extension, an analog phone (see :attr:`Plan.analog_only`)."""
    return Plan(
        key=key,
        title=title,
        connectivity=connectivity,
        lines_min=1,
        lines_max=1,
        extensions_min=1,
        extensions_max=1,
        extension_types=("premium",),
        analog_only=True,
        refused_options=refused_options,
        interp=interp,
    )


PLANS: dict[str, Plan] = {
    p.key: p
    for p in (
        _single_extension_plan(
            "super_office_one",
            "Super Office One",
            ("fttc", "ftth"),
            refused_options=_SOO_REFUSED,
            interp=("analog-only terminal",),
        ),
        _single_extension_plan(
            "office_one", "Office One", ("fttc", "ftth"), interp=("analog-only terminal",)
        ),
        _single_extension_plan(
            "office_plus_special",
            "Office Plus Special",
            ("adsl", "fwa", "fttc", "ftth"),
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
class SnmpIds:
    """How an SNMP-managed switch model is recognised and told to save (numeric OIDs).

    ``*_verified``: a public source confirms the value (research/device-facts.md §2); an
    unverified one is our best reading, to be replaced from a real device."""

    sys_object_id: str
    sys_object_id_verified: bool
    save_oid: str
    save_value: int
    save_verified: bool


@dataclass(frozen=True)
class Model:
    """One device model of the catalog: every fact about it, in one row.

    ``kind`` decides which document keys apply and which secrets the device owns
    (:data:`DEVICE_SECRETS`); ``family`` names the driver and the template folder. Facts a
    kind does not have stay at their empty default. Templates see the row as ``facts``.
    """

    key: str
    title: str
    kind: str  # phone | dect_base | dect_handset | switch | iad | ont
    family: str  # template folder and driver family
    identity: str = "mac"  # how the box in hand is recognised: mac | serial | none
    product: str = ""  # the vendor's short name, as the device reports it (DGS-1100-24P)
    # Phones and DECT bases.
    firmware: str = ""  # firmware image at the TFTP/HTTP root (IP701G.img)
    sip_accounts: int = 0  # SIP accounts a desk phone holds
    dss_keys: int = 0  # programmable keys (BLF, call park)
    handset_capacity: int = 0  # handset slots of a DECT base
    included_handset: str = ""  # the handset that comes in the kit
    # Switches.
    ports: int = 0
    poe_ports: tuple[int, ...] = ()
    snmp: SnmpIds | None = None  # an SNMP-only switch (no CLI)
    # Access gateways and ONTs.
    analog_ports: int = 0  # FXS ports
    loid_format: str = ""  # ONT LOID, str.format with order_id and site [interp]

    @property
    def is_terminal(self) -> bool:
        return self.kind in ("phone", "dect_handset")

    @property
    def powered_device(self) -> bool:
        """Fed by a switch port over PoE when connected to a switch."""
        return self.kind in ("phone", "dect_base")


def _temporis_phone(key: str, name: str, *, sip_accounts: int, dss_keys: int) -> Model:
    """An Alcatel Temporis desk phone: its firmware image is named after it (IP701G.img)."""
    return Model(
        key,
        f"Alcatel Temporis {name}",
        "phone",
        "temporis",
        firmware=f"{name}.img",
        sip_accounts=sip_accounts,
        dss_keys=dss_keys,
    )


def _dect_handset(key: str, title: str) -> Model:
    """A DECT handset: it has no identity of its own, it goes inside a DECT base."""
    return Model(key, title, "dect_handset", "dect", identity="none")


# The DGS-1100 non-/ME save object is not documented anywhere we could find. We use the
# DGS-1100-06/ME object (1.3.6.1.4.1.171.10.134.1.1.1.10.0 = 1, research/device-facts.md
# §2.4) for both models: UNVERIFIED. Confirm with D-Link's DGS-1100 MIB zip; fixing it is a
# change of this function only.
def _dgs1100_switch(
    key: str, title: str, product: str, *, poe_ports: range, snmp_id: str, snmp_id_verified: bool
) -> Model:
    """A D-Link DGS-1100 PoE switch, SNMP only; ``product`` ends with its port count."""
    return Model(
        key,
        title,
        "switch",
        "dlink",
        product=product,
        ports=int(product.removeprefix("DGS-1100-").rstrip("P")),
        poe_ports=tuple(poe_ports),
        snmp=SnmpIds(
            sys_object_id=snmp_id,
            sys_object_id_verified=snmp_id_verified,
            save_oid="1.3.6.1.4.1.171.10.134.1.1.1.10.0",
            save_value=1,
            save_verified=False,
        ),
    )


MODELS: dict[str, Model] = {
    m.key: m
    for m in (
        # Key counts are from the vendor's datasheets [interp, unverified]; the firmware
        # names follow the verified IP701G.img pattern.
        _temporis_phone("alcatel-temporis-ip150", "IP150", sip_accounts=2, dss_keys=2),
        _temporis_phone("alcatel-temporis-ip701g", "IP701G", sip_accounts=6, dss_keys=10),
        Model(
            "alcatel-ip2215",
            "Alcatel IP2215 DECT kit (base + handset)",
            "dect_base",
            "dect",
            firmware="IP2215.img",  # [interp] named like the IP701G's; unverified
            handset_capacity=5,  # interp: IP2215 base, up to 5 handsets
            included_handset="alcatel-ip2215-handset",
        ),
        _dect_handset("alcatel-ip15", "Alcatel IP15 extra DECT handset"),
        _dect_handset("alcatel-ip2215-handset", "Alcatel IP2215 kit handset"),
        # PLACEHOLDER: the -08P sysObjectID was not found (research §2.1). This arc
        # (.134.900.8) is made up so the lab can tell the models apart; replace it with the
        # real value from a device's sysObjectID.0.
        _dgs1100_switch(
            "dlink-dgs-1100-08p",
            "D-Link DGS-1100-08P PoE switch",
            "DGS-1100-08P",
            poe_ports=range(1, 9),
            snmp_id="1.3.6.1.4.1.171.10.134.900.8",
            snmp_id_verified=False,
        ),
        # DGS1100PRIMGMT-MIB dgs1100SeriesProd.9 (verified, research §2.1).
        _dgs1100_switch(
            "dlink-dgs-1100-24p",
            "D-Link DGS-1100-24P switch (PoE on 1-12)",
            "DGS-1100-24P",
            poe_ports=range(1, 13),
            snmp_id="1.3.6.1.4.1.171.10.134.9",
            snmp_id_verified=True,
        ),
        Model("iad", "Access gateway (IAD)", "iad", "iad", analog_ports=2),
        # The LOID is the order id and site [interp]: the operator's scheme is not public.
        Model(
            "mini-ont",
            "Mini ONT (FTTH)",
            "ont",
            "ont",
            identity="serial",
            loid_format="{order_id}-{site}",
        ),
    )
}

# The secrets a device owns, by kind (generated when the order does not give them).
DEVICE_SECRETS: dict[str, tuple[str, ...]] = {
    "phone": ("admin_password", "provisioning_password"),
    "dect_base": ("admin_password", "provisioning_password"),
    "switch": ("admin_password", "snmp_community", "snmp_auth_key", "snmp_priv_key"),
    "iad": ("admin_password", "provisioning_password"),
    "ont": ("ploam_password",),
}

# Models a customer orders as a standalone device (handsets go inside a DECT base).
DEVICE_MODELS = tuple(k for k, m in MODELS.items() if m.kind != "dect_handset")
HANDSET_MODELS = tuple(k for k, m in MODELS.items() if m.kind == "dect_handset")


def snmp_model(sys_object_id: str) -> str | None:
    """The key of the SNMP switch model with that sysObjectID, or None."""
    wanted = sys_object_id.lstrip(".")
    for key, model in MODELS.items():
        if model.snmp is not None and model.snmp.sys_object_id == wanted:
            return key
    return None


def terminal_quota(extension_types: list[str]) -> int:
    """How many terminals an order may have: one per Standard or Premium extension."""
    return sum(1 for t in extension_types if t in TERMINAL_QUOTA_TYPES)
