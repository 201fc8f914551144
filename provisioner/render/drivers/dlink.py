"""D-Link DGS-1100-08P / -24P PoE switches: pushed, never pulled.

Two renderings of one intent (data VLAN untagged on every port, voice VLAN tagged on the
ports with a phone or DECT base, PoE on exactly those ports):

- ``<switch>.setplan.yaml``: the declarative SNMP set-plan the SNMP pusher applies
  (contract: provisioner/push/setplan.py); these models have no CLI (research §2.1).
- ``<switch>.me.cli``: the same as D-Link CLI commands (research §2.2), for the /ME
  hardware variants that have a CLI.
"""

from __future__ import annotations

from typing import Any, ClassVar

from provisioner.errors import RenderError
from provisioner.render.context import DeviceView, OrderView, SecretBook
from provisioner.render.drivers.base import Driver, FileSpec, public_settings
from provisioner.settings import Settings

# sysContact written on every switch [interp]: no setting holds a NOC contact yet.
DEFAULT_CONTACT = "noc@officesmart.example"


class DlinkDriver(Driver):
    """DGS-1100: set-plan YAML for SNMP, CLI text for /ME variants."""

    family: ClassVar[str] = "dlink"
    kind: ClassVar[str] = "switch"
    models: ClassVar[tuple[str, ...]] = ("dlink-dgs-1100-08p", "dlink-dgs-1100-24p")
    files: ClassVar[tuple[FileSpec, ...]] = (
        FileSpec("{device_id}.setplan.yaml", "setplan.yaml.j2", "yaml", served=False),
        FileSpec("{device_id}.me.cli", "me.cli.j2", "dlink-cli", served=False),
    )
    push: ClassVar[str | None] = "snmp"
    push_file: ClassVar[str | None] = "{device_id}.setplan.yaml"

    def context(
        self, device: DeviceView, order: OrderView, secrets: SecretBook, settings: Settings
    ) -> dict[str, Any]:
        ctx = super().context(device, order, secrets, settings)
        facts = self.facts(device)
        pub = public_settings(settings)
        if pub.lan_voice_vlan == pub.lan_data_vlan:
            raise RenderError(
                f"device {device.device_id}: voice and data VLAN are both {pub.lan_data_vlan}"
            )
        powered = sorted({d.port for d in order.on_switch(device.device_id) if d.port})
        bad = [p for p in powered if p not in facts.poe_ports]
        if bad:
            raise RenderError(f"device {device.device_id}: port {bad[0]} is not a PoE port")
        ctx.update(
            name=device.device_id,
            location=device.site.address if device.site else "",
            contact=getattr(settings, "noc_contact", "") or DEFAULT_CONTACT,
            data_vlan=pub.lan_data_vlan,
            voice_vlan=pub.lan_voice_vlan,
            ports=list(range(1, facts.ports + 1)),
            poe_ports=list(facts.poe_ports),
            voice_ports=powered,
            poe_on=[p for p in facts.poe_ports if p in powered],
            poe_off=[p for p in facts.poe_ports if p not in powered],
        )
        return ctx
