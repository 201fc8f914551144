"""The company directory a phone fetches: every extension of the order (name, short, full).

Served per device (``phonebook-<mac>.xml``) so the serving layer knows who asks and checks
that device's credentials, like for its config file. Yealink-style remote phonebook XML:
UNVERIFIED for Temporis (no public key list; see research/device-facts.md §1.2).
"""

from __future__ import annotations

from dataclasses import dataclass

from provisioner.render.context import DeviceView, OrderView
from provisioner.render.drivers.base import FileSpec, PublicSettings

PHONEBOOK = FileSpec(
    "phonebook-{mac12}.xml", "phonebook.xml.j2", "xml", family="phonebook", shared=True
)


@dataclass(frozen=True)
class Entry:
    name: str
    short: int
    number: str
    site: str


def directory(order: OrderView) -> list[Entry]:
    """Every extension of the order, by short number (multisite: one numbering plan)."""
    return [
        Entry(e.name, e.short, e.number, e.site)
        for e in sorted(order.extensions, key=lambda e: e.short)
    ]


def phonebook_url(settings: PublicSettings, device: DeviceView) -> str:
    name = PHONEBOOK.name_for(device) or ""
    return settings.provisioning_url + name


# Root element of the Yealink remote phonebook format (a fact of the format, kept as data).
ROOT_ELEMENT = "YealinkIPPhoneDirectory"


def phonebook_context(order: OrderView) -> dict[str, object]:
    """What ``phonebook/phonebook.xml.j2`` reads; merged into a phone driver's context."""
    return {"directory": directory(order), "root": ROOT_ELEMENT}
