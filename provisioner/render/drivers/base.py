"""The one base class every device-family driver derives from.

A driver is small: it declares data (which models, which files) and builds the template
context for one device; per-model facts are the models' catalog rows
(:data:`provisioner.catalog.MODELS`). The render engine (:mod:`provisioner.render.engine`) does the
template lookup, the rendering and the checks, the same way for every family.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from provisioner.catalog import DEVICE_SECRETS, MODELS, Model
from provisioner.documents.document import normalize_mac
from provisioner.render.context import DeviceView, OrderView, SecretBook
from provisioner.settings import Settings

# What a file-name pattern may use, and what each placeholder matches in a request.
_PLACEHOLDERS = {
    "mac12": r"(?P<mac12>[0-9a-f]{12})",
    "serial": r"(?P<serial>[A-Z]{4}[0-9A-F]{8})",
    "device_id": r"(?P<device_id>[a-z0-9][a-z0-9-]*)",
}
_FIELD = re.compile(r"\{(\w+)\}")

# Secrets a device owns, by kind: the store generates exactly these (one table, no drift).
KIND_SECRETS: dict[str, tuple[str, ...]] = DEVICE_SECRETS


@dataclass(frozen=True)
class FileSpec:
    """One file a driver renders for a device.

    ``pattern`` names the file; placeholders ``{mac12}``, ``{serial}``, ``{device_id}`` come
    from the device (a file whose placeholder the device lacks, e.g. ``{mac12}`` of a planned
    phone, is not rendered). ``format`` decides the check the engine runs on the result:
    ``ini`` (Temporis ``[ section ]`` INI), ``xml``, ``json``, ``yaml``, ``iad-cli``,
    ``dlink-cli``. ``served``: devices fetch it over TFTP/HTTP; otherwise it is pushed or shown
    to the technician. ``family``: template folder, when not the driver's own (shared files).
    ``shared``: the content is the same for every device of an order (rendered once per
    order when a whole order is rendered); its template must not use per-device values.
    """

    pattern: str
    template: str
    format: str
    served: bool = True
    family: str | None = None
    shared: bool = False

    def name_for(self, device: DeviceView) -> str | None:
        values = {"mac12": device.mac12, "serial": device.serial, "device_id": device.device_id}
        needed = _FIELD.findall(self.pattern)
        if any(not values.get(k) for k in needed):
            return None
        return self.pattern.format(**{k: values[k] for k in needed})

    def regex(self) -> re.Pattern[str]:
        parts = _FIELD.split(self.pattern)
        out = ""
        for i, part in enumerate(parts):
            out += _PLACEHOLDERS[part] if i % 2 else re.escape(part)
        return re.compile(f"^{out}$")


@dataclass(frozen=True)
class Identity:
    """What a requested file name says about the device asking: its MAC or serial."""

    mac: str = ""
    serial: str = ""


class Driver:
    """Base of a device-family driver (one per family, models as data beside it).

    Contract, what a subclass declares:

    - ``family``: registry key and template folder (``device_templates/<family>/``).
    - ``kind``: catalog kind of its models (phone, dect_base, iad, ont, switch); decides the
      device's own secrets (:data:`KIND_SECRETS`).
    - ``models``: the catalog keys of the models it serves. Their facts (firmware names,
      key counts, ports) are their rows in :data:`provisioner.catalog.MODELS`, which
      templates see as ``facts``. No ``if model == ...`` branches.
    - ``files``: the :class:`FileSpec` list: what it serves, pushes or shows.
    - ``push``: ``None`` for devices that pull; ``"ssh"`` or ``"snmp"`` for pushed ones, and
      ``push_file`` the pattern of the file handed to the pusher.
    - ``template_dir``: optional folder shipped with a driver package, searched after the
      override folder and ``device_templates/``.

    What it does:

    - :meth:`match` recognises a request: a file name -> the :class:`Identity` of the device
      that may ask for it (derived from the served ``files`` patterns), or None.
    - :meth:`context` builds the template variables of one device: plain data only, and of
      the secrets only those this device owns.
    - :meth:`owned_secrets` says which secrets of the order belong in this device's files;
      the engine refuses any other device's secret found in them.
    - :meth:`finish` post-processes a rendered text (e.g. sort CLI lines).
    """

    family: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    models: ClassVar[tuple[str, ...]] = ()
    files: ClassVar[tuple[FileSpec, ...]] = ()
    push: ClassVar[str | None] = None
    push_file: ClassVar[str | None] = None
    template_dir: ClassVar[Path | None] = None
    # Phones and DECT bases find the server by DHCP option 66 (the site's DHCP snippets).
    wants_option66: ClassVar[bool] = False

    def __init__(self) -> None:
        self._served = [(s, s.regex()) for s in self.files if s.served]

    # ---------------------------------------------------------------- requests

    def match(self, filename: str) -> Identity | None:
        """The identity of the device a requested file name belongs to, or None."""
        for _spec, rx in self._served:
            m = rx.match(filename)
            if m is None:
                continue
            groups = m.groupdict()
            if "mac12" in groups:
                try:
                    return Identity(mac=normalize_mac(groups["mac12"]))
                except ValueError:
                    return None
            if "serial" in groups:
                return Identity(serial=groups["serial"])
        return None

    def file_specs(self, device: DeviceView) -> list[tuple[str, FileSpec]]:
        """(file name, spec) of every file this device has now (planned: fewer)."""
        out = []
        for spec in self.files:
            name = spec.name_for(device)
            if name is not None:
                out.append((name, spec))
        return out

    # ---------------------------------------------------------------- rendering

    def facts(self, device: DeviceView) -> Model:
        """The device's model row in the catalog."""
        return MODELS[device.model]

    def owned_secrets(self, device: DeviceView, order: OrderView) -> list[tuple[str, str]]:
        """(owner, name) of every secret that belongs in this device's files.

        Default: the device's own secrets and the SIP password of each terminal's extension.
        """
        owned = [(f"device:{device.device_id}", n) for n in KIND_SECRETS.get(self.kind, ())]
        owned += [(f"extension:{t.extension.short}", "sip_password") for t in device.terminals]
        return owned

    def context(
        self, device: DeviceView, order: OrderView, secrets: SecretBook, settings: Settings
    ) -> dict[str, Any]:
        """Template variables for ``device``. Subclasses extend this dict."""
        return {
            "device": device,
            "facts": self.facts(device),
            "order": order,
            "settings": public_settings(settings),
        }

    def finish(self, spec: FileSpec, text: str) -> str:
        return text


@dataclass(frozen=True)
class SipSettings:
    registrar: str
    port: int
    outbound_proxy: str
    outbound_port: int
    transport: str
    domain: str


@dataclass(frozen=True)
class PublicSettings:
    """The settings templates may read (no paths, keys or URLs of the store)."""

    sip: SipSettings
    provisioning_host: str
    provisioning_url: str  # http://host[:port]/ (what DHCP option 66 carries)
    ntp_servers: tuple[str, ...]
    timezone: str
    voicemail_number: str
    wan_data_vlan: int
    wan_voice_vlan: int
    adsl_vpi: int
    adsl_vci: int
    lan_voice_vlan: int
    lan_data_vlan: int


@functools.lru_cache(maxsize=32)
def public_settings(settings: Settings) -> PublicSettings:
    """The template-facing part of ``settings`` (settings are frozen: cached)."""
    proxy, _, proxy_port = settings.sip_outbound_proxy.partition(":")
    port = f":{settings.http_port}" if settings.http_port != 80 else ""
    return PublicSettings(
        sip=SipSettings(
            registrar=settings.sip_registrar,
            port=settings.sip_registrar_port,
            outbound_proxy=proxy,
            outbound_port=int(proxy_port) if proxy_port.isdigit() else settings.sip_registrar_port,
            transport=settings.sip_transport.lower(),
            domain=settings.sip_domain,
        ),
        provisioning_host=settings.provisioning_host,
        provisioning_url=f"http://{settings.provisioning_host}{port}/",
        ntp_servers=tuple(settings.ntp_server_list),
        timezone=settings.timezone,
        voicemail_number=settings.voicemail_number,
        wan_data_vlan=settings.wan_data_vlan,
        wan_voice_vlan=settings.wan_voice_vlan,
        adsl_vpi=settings.adsl_vpi,
        adsl_vci=settings.adsl_vci,
        lan_voice_vlan=settings.lan_voice_vlan,
        lan_data_vlan=settings.lan_data_vlan,
    )
