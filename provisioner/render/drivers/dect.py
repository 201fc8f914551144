"""Alcatel IP2215 DECT base: pulls ``<mac>.cfg`` holding one SIP account per handset slot.

Same Yealink-legacy INI as the Temporis desk phones (shared sections in
``device_templates/temporis/_sections.j2``); UNVERIFIED for the IP2215: the account index is
the handset slot minus one and ``HandsetSlot`` is a key of ours. Handsets (the kit's own and
IP15s) have no file: they register on the base.
"""

from __future__ import annotations

from typing import ClassVar

from provisioner.errors import RenderError
from provisioner.render.context import DeviceView, OrderView, SecretBook
from provisioner.render.drivers.base import FileSpec
from provisioner.render.drivers.phonebook import PHONEBOOK
from provisioner.render.drivers.temporis import DssKey, SipLine, TemporisDriver, sip_line


class DectDriver(TemporisDriver):
    """IP2215 base: one account per handset slot, slot and extension exactly as ordered."""

    family: ClassVar[str] = "dect"
    kind: ClassVar[str] = "dect_base"
    models: ClassVar[tuple[str, ...]] = ("alcatel-ip2215",)
    files: ClassVar[tuple[FileSpec, ...]] = (
        FileSpec("{mac12}.cfg", "base.cfg.j2", "ini"),
        PHONEBOOK,
    )

    def lines(self, device: DeviceView, secrets: SecretBook) -> list[SipLine]:
        facts = self.facts(device)
        out = []
        for t in device.terminals:
            if not 1 <= t.slot <= facts.handset_capacity:
                raise RenderError(
                    f"device {device.device_id}: handset slot {t.slot} "
                    f"(the {device.model} base has slots 1-{facts.handset_capacity})"
                )
            password = secrets.get(f"extension:{t.extension.short}", "sip_password")
            out.append(sip_line(t.slot - 1, t.slot, t.extension, password))
        return out

    def keys(self, device: DeviceView, order: OrderView) -> list[DssKey]:
        return []  # handsets have no programmable BLF/park keys here
