"""Mini ONT (FTTH): its registration record and WAN VLANs, shown to the technician.

``ont-<serial>.txt`` is YAML of ours [P]: serial, PLOAM password, LOID and the VLANs the
IAD uses behind it. The LOID is the order id and site [interp]: the operator's real LOID
scheme is not public.
"""

from __future__ import annotations

from typing import Any, ClassVar

from provisioner.render.context import DeviceView, OrderView, SecretBook
from provisioner.render.drivers.base import Driver, FileSpec
from provisioner.settings import Settings


class OntDriver(Driver):
    """Mini ONT: ``ont-<serial>.txt`` (fetched by serial, or read out by the technician)."""

    family: ClassVar[str] = "ont"
    kind: ClassVar[str] = "ont"
    models: ClassVar[tuple[str, ...]] = ("mini-ont",)
    files: ClassVar[tuple[FileSpec, ...]] = (FileSpec("ont-{serial}.txt", "ont.txt.j2", "yaml"),)

    def context(
        self, device: DeviceView, order: OrderView, secrets: SecretBook, settings: Settings
    ) -> dict[str, Any]:
        ctx = super().context(device, order, secrets, settings)
        site = device.needed_site("a Mini ONT")
        facts = self.facts(device)
        ctx.update(
            site=site,
            loid=facts.loid_format.format(order_id=order.order_id, site=site.id),
            ploam_password=secrets.get(f"device:{device.device_id}", "ploam_password"),
        )
        return ctx
