"""A made-up desk phone, added the way a new model is: its catalog row, this one driver file
plus templates.

The ACME SP-1 pulls ``acme/<mac>.xml``; its templates live in an override folder the test
writes (``acme/sp1.xml.j2``), as an operator or a driver package would ship them. Its
catalog row (:data:`ACME_SP1`) is what ``provisioner/catalog.py`` would hold; the tests put
it in the catalog.
"""

from __future__ import annotations

from typing import Any, ClassVar

from provisioner.catalog import Model
from provisioner.render.context import DeviceView, OrderView, SecretBook
from provisioner.render.drivers.base import Driver, FileSpec, public_settings
from provisioner.settings import Settings

ACME_SP1 = Model("acme-sp1", "ACME SP-1", "phone", "acme", firmware="sp1-2.0.bin", sip_accounts=1)


class AcmeDriver(Driver):
    """ACME SP-1: one XML file per phone, one SIP account."""

    family: ClassVar[str] = "acme"
    kind: ClassVar[str] = "phone"
    models: ClassVar[tuple[str, ...]] = ("acme-sp1",)
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
