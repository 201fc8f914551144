"""The IAD (access gateway): pushed over SSH as CLI lines, or pulled as the same lines.

The CLI dialect (contract with the lab's IAD simulator): one command per line,
``set <path words...> <value>``; a value is double-quoted when it is empty or holds a space,
a quote or a backslash (escapes ``\\"`` and ``\\\\``); lines sorted. The pulled file
``<mac>.cfg`` holds exactly the pushed lines (the IAD runs it as a script), so both ways
give the same state. Real IADs are set up over TR-069; the dialect is ours [P].

What goes in: WAN by connectivity (data as :data:`WAN_PROFILES`), LAN with a DHCP server
handing phones option 66 and the voice VLAN, the SIP trunk sized to the order's
simultaneous calls, the analog (FXS) ports: the Premium extension on port 1 for the small
plans, then FAX/POS ports with the line profile of :data:`FXS_PROFILES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from provisioner.errors import RenderError
from provisioner.render.context import DeviceView, ExtensionView, OrderView, SecretBook
from provisioner.render.drivers.base import Driver, FileSpec, public_settings
from provisioner.render.drivers.temporis import SipLine, sip_line
from provisioner.settings import Settings


@dataclass(frozen=True)
class WanProfile:
    """How the IAD reaches the network on one connectivity. VLAN ids come from settings."""

    medium: str  # adsl | vdsl | ethernet
    mode: str  # pppoe | dhcp
    atm: bool  # ADSL: VPI/VCI + encapsulation
    encapsulation: str  # ADSL only: llc (PPPoE-LLC)
    tagged: bool  # data on settings.wan_data_vlan, voice on settings.wan_voice_vlan


WAN_PROFILES: dict[str, WanProfile] = {
    # ADSL 8/35 PPPoE-LLC (research §3: the usual Italian pairing).
    "adsl": WanProfile("adsl", "pppoe", atm=True, encapsulation="llc", tagged=False),
    # Italian FTTx: PPPoE on VLAN 835, voice on VLAN 836.
    "fttc": WanProfile("vdsl", "pppoe", atm=False, encapsulation="", tagged=True),
    # FTTH: the Mini ONT is external; the IAD's Ethernet WAN carries the same VLANs.
    "ftth": WanProfile("ethernet", "pppoe", atm=False, encapsulation="", tagged=True),
    # FWA: the outdoor unit hands out an address on plain Ethernet.
    "fwa": WanProfile("ethernet", "dhcp", atm=False, encapsulation="", tagged=False),
}


@dataclass(frozen=True)
class FxsProfile:
    """Line settings of an analog port by use."""

    t38: bool
    codecs: tuple[str, ...]
    vad: bool
    echo_cancel: bool


FXS_PROFILES: dict[str, FxsProfile] = {
    "phone": FxsProfile(t38=False, codecs=("g711a", "g711u", "g729"), vad=False, echo_cancel=True),
    # Fax: T.38 with G.711 as the fallback, no VAD (silence suppression breaks modems).
    "fax": FxsProfile(t38=True, codecs=("g711a",), vad=False, echo_cancel=False),
    # POS terminals are modems: G.711 only, no VAD, no echo cancellation.
    "pos": FxsProfile(t38=False, codecs=("g711a",), vad=False, echo_cancel=False),
}


@dataclass(frozen=True)
class FxsPort:
    port: int
    use: str  # phone | fax | pos
    profile: FxsProfile
    line: SipLine | None  # the SIP account of an analog extension; None: calls on the trunk


def analog_extension(device: DeviceView, order: OrderView) -> ExtensionView | None:
    """The extension on FXS port 1: the Premium extension of a small (analog-only) plan."""
    if not order.analog_only or device.site is None:
        return None
    site = device.site.id
    return next((e for e in order.extensions if e.site == site and e.type == "premium"), None)


class IadDriver(Driver):
    """IAD: ``<device>.cli`` for the SSH pusher, ``<mac>.cfg`` with the same lines to pull."""

    family: ClassVar[str] = "iad"
    kind: ClassVar[str] = "iad"
    models: ClassVar[tuple[str, ...]] = ("iad",)
    files: ClassVar[tuple[FileSpec, ...]] = (
        FileSpec("{mac12}.cfg", "iad.cli.j2", "iad-cli"),
        FileSpec("{device_id}.cli", "iad.cli.j2", "iad-cli", served=False),
    )
    push: ClassVar[str | None] = "ssh"
    push_file: ClassVar[str | None] = "{device_id}.cli"

    def owned_secrets(self, device: DeviceView, order: OrderView) -> list[tuple[str, str]]:
        owned = super().owned_secrets(device, order)
        if device.site is not None and WAN_PROFILES[device.site.connectivity].mode == "pppoe":
            owned.append((f"site:{device.site.id}", "pppoe_password"))
        ext = analog_extension(device, order)
        if ext is not None:
            owned.append((f"extension:{ext.short}", "sip_password"))
        return owned

    def ports(self, device: DeviceView, order: OrderView, secrets: SecretBook) -> list[FxsPort]:
        facts = self.facts(device)
        uses: list[tuple[str, ExtensionView | None]] = []
        ext = analog_extension(device, order)
        if ext is not None:
            uses.append(("phone", ext))
        uses += [(use, None) for use in device.fax_pos]
        if len(uses) > facts.analog_ports:
            raise RenderError(
                f"device {device.device_id}: {len(uses)} analog ports needed, "
                f"the IAD has {facts.analog_ports}"
            )
        out = []
        for i, (use, e) in enumerate(uses):
            line = None
            if e is not None:
                password = secrets.get(f"extension:{e.short}", "sip_password")
                line = sip_line(i, 0, e, password)
            out.append(FxsPort(i + 1, use, FXS_PROFILES[use], line))
        return out

    def context(
        self, device: DeviceView, order: OrderView, secrets: SecretBook, settings: Settings
    ) -> dict[str, Any]:
        ctx = super().context(device, order, secrets, settings)
        site = device.needed_site("an IAD")
        owner = f"device:{device.device_id}"
        wan = WAN_PROFILES[site.connectivity]
        pub = public_settings(settings)
        ctx.update(
            site=site,
            wan=wan,
            pppoe_password=(
                secrets.get(f"site:{site.id}", "pppoe_password") if wan.mode == "pppoe" else ""
            ),
            admin_password=secrets.get(owner, "admin_password"),
            prov_user=device.mac12,
            prov_password=secrets.get(owner, "provisioning_password"),
            prov_url=pub.provisioning_url + (f"{device.mac12}.cfg" if device.mac else ""),
            fxs=self.ports(device, order, secrets),
            channels=order.lines,
        )
        return ctx

    def finish(self, spec: FileSpec, text: str) -> str:
        # One command per line, sorted: a diff of two configs is a diff of sets.
        lines = sorted({line.strip() for line in text.splitlines() if line.strip()})
        return "\n".join(lines) + "\n"
