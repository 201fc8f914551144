"""A made-up desk phone, added the way a new model is: this one driver file plus templates.

The ACME SP-1 pulls ``acme/<mac>.xml``; its templates live in an override folder the test
writes (``acme/sp1.xml.j2``), as an operator or a driver package would ship them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from provisioner.render.context import DeviceView, OrderView, SecretBook
from provisioner.render.drivers.base import Driver, FileSpec, public_settings
from provisioner.settings import Settings


@dataclass(frozen=True)
class AcmeFacts:
    firmware: str
    lines: int


class AcmeDriver(Driver):
    """ACME SP-1: one XML file per phone, one SIP account."""

    family: ClassVar[str] = "acme"
    kind: ClassVar[str] = "phone"
    models: ClassVar[dict[str, Any]] = {"acme-sp1": AcmeFacts(firmware="sp1-2.0.bin", lines=1)}
    files: ClassVar[tuple[FileSpec, ...]] = (FileSpec("acme-{mac12}.xml", "sp1.xml.j2", "xml"),)
    wants_option66: ClassVar[bool] = True

    def context(
        self, device: DeviceView, order: OrderView, secrets: SecretBook, settings: Settings
    ) -> dict[str, Any]:
        ctx = super().context(device, order, secrets, settings)
        ext = device.terminals[0].extension
        ctx.update(
            ext=ext,
            password=secrets.get(f"extension:{ext.short}", "sip_password"),
            admin=secrets.get(f"device:{device.device_id}", "admin_password"),
            registrar=public_settings(settings).sip.registrar,
        )
        return ctx
