"""Alcatel Temporis IP desk phones (IP150, IP701G): they pull ``<mac>.cfg`` over TFTP/HTTP.

Format: the Yealink-legacy INI with one ``path=`` line per section, verified for the older
Temporis IP800/IP200 firmware only (research/device-facts.md §1). The IP150/IP701G key list
is UNVERIFIED: every key and constant is data here or a template variable, so a verified
list later is a template/data change, not a code change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from provisioner.errors import RenderError
from provisioner.render.context import DeviceView, ExtensionView, OrderView, SecretBook
from provisioner.render.drivers.base import Driver, FileSpec, public_settings
from provisioner.render.drivers.phonebook import PHONEBOOK, phonebook_context, phonebook_url
from provisioner.settings import Settings


@dataclass(frozen=True)
class IniFormat:
    """Constants of the Yealink-legacy format the templates write (assumed for Temporis)."""

    transport_codes: dict[str, int]  # SIP transport -> Transport key value
    key_types: dict[str, int]  # DSS key function -> DKtype value
    sip_expire: int  # registration expiry, seconds
    vlan_priority: int  # 802.1p priority of voice frames
    ntp_interval: int  # seconds between NTP syncs
    park_code: str  # feature code the call-park key dials [interp: platform code unknown]


INI_FORMAT = IniFormat(
    transport_codes={"udp": 0, "tcp": 1, "tls": 2},
    key_types={"blf": 16, "park": 10},
    sip_expire=3600,
    vlan_priority=5,
    ntp_interval=1000,
    park_code="*85",
)


@dataclass(frozen=True)
class DstRule:
    """Daylight saving by week: month / week of month (5 = last) / weekday (7 = Sunday) / hour."""

    start: str
    end: str
    offset_minutes: int


# The EU rule (last Sunday of March 02:00 -> last Sunday of October 03:00 local time).
EU_DST = DstRule(start="3/5/7/2", end="10/5/7/3", offset_minutes=60)
# Yealink-legacy time-zone names [I]; other zones fall back to their IANA name.
TZ_NAMES = {"Europe/Rome": "Italy(Rome)"}


@dataclass(frozen=True)
class TimeView:
    zone: str
    name: str
    offset: str  # standard offset in hours: "+1", "+5:30"
    summer_time: int  # 0 off, 1 by rule below, 2 automatic
    dst: DstRule | None


def time_view(zone: str) -> TimeView:
    """Offset and DST of an IANA zone, for phones that want them spelled out."""
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise RenderError(f"setting PROVISIONER_TIMEZONE: unknown time zone {zone!r}") from None
    winter = datetime(2026, 1, 15, tzinfo=tz).utcoffset()
    summer = datetime(2026, 7, 15, tzinfo=tz).utcoffset()
    assert winter is not None and summer is not None
    std = min(winter, summer)
    minutes = int(std.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    h, m = divmod(abs(minutes), 60)
    offset = f"{sign}{h}" + (f":{m:02d}" if m else "")
    if winter == summer:
        summer_time, dst = 0, None
    elif zone.startswith("Europe/"):
        summer_time, dst = 1, EU_DST
    else:
        summer_time, dst = 2, None
    return TimeView(zone, TZ_NAMES.get(zone, zone), offset, summer_time, dst)


@dataclass(frozen=True)
class SipLine:
    """One SIP account as the phone shows and registers it."""

    index: int  # 0-based account index in the file
    slot: int  # DECT handset slot (0 on a desk phone)
    label: str
    display_name: str
    user: str
    auth_name: str
    password: str
    number: str
    short: int


@dataclass(frozen=True)
class DssKey:
    index: int  # 1-based programmable key
    function: str  # blf | park
    type_code: int
    value: str
    label: str


def sip_line(index: int, slot: int, ext: ExtensionView, password: str) -> SipLine:
    # The platform authenticates by number: user and auth name are the E.164 number.
    return SipLine(
        index=index,
        slot=slot,
        label=str(ext.short),
        display_name=ext.name,
        user=ext.number,
        auth_name=ext.number,
        password=password,
        number=ext.number,
        short=ext.short,
    )


def operator_keys(ext: ExtensionView, order: OrderView, capacity: int) -> list[DssKey]:
    """An Operator's keys: BLF on the order's other extensions, then one call-park key.

    A phone with fewer keys than extensions monitors the first ones by short number.
    """
    if ext.type != "operator" or capacity < 1:
        return []
    others = sorted((e for e in order.extensions if e.short != ext.short), key=lambda e: e.short)
    keys = [
        DssKey(i + 1, "blf", INI_FORMAT.key_types["blf"], str(e.short), e.name)
        for i, e in enumerate(others[: capacity - 1])
    ]
    keys.append(
        DssKey(len(keys) + 1, "park", INI_FORMAT.key_types["park"], INI_FORMAT.park_code, "Park")
    )
    return keys


class TemporisDriver(Driver):
    """Temporis desk phones: ``<mac>.cfg`` (one SIP account) and the company phonebook."""

    family: ClassVar[str] = "temporis"
    kind: ClassVar[str] = "phone"
    models: ClassVar[tuple[str, ...]] = ("alcatel-temporis-ip150", "alcatel-temporis-ip701g")
    files: ClassVar[tuple[FileSpec, ...]] = (
        FileSpec("{mac12}.cfg", "phone.cfg.j2", "ini"),
        PHONEBOOK,
    )
    wants_option66: ClassVar[bool] = True

    def lines(self, device: DeviceView, secrets: SecretBook) -> list[SipLine]:
        facts = self.facts(device)
        if len(device.terminals) > facts.sip_accounts:
            raise RenderError(
                f"device {device.device_id}: {len(device.terminals)} extensions on a "
                f"{device.model} (it holds {facts.sip_accounts} SIP accounts)"
            )
        out = []
        for i, t in enumerate(device.terminals):
            password = secrets.get(f"extension:{t.extension.short}", "sip_password")
            out.append(sip_line(i, t.slot, t.extension, password))
        return out

    def keys(self, device: DeviceView, order: OrderView) -> list[DssKey]:
        if not device.terminals:
            return []
        return operator_keys(device.terminals[0].extension, order, self.facts(device).dss_keys)

    def context(
        self, device: DeviceView, order: OrderView, secrets: SecretBook, settings: Settings
    ) -> dict[str, Any]:
        ctx = super().context(device, order, secrets, settings)
        pub = public_settings(settings)
        lines = self.lines(device, secrets)
        owner = f"device:{device.device_id}"
        ctx.update(
            fmt=INI_FORMAT,
            lines=lines,
            keys=self.keys(device, order),
            time=time_view(pub.timezone),
            # Tagged voice VLAN only behind our switch; on the IAD's LAN port it is untagged.
            voice_vlan=pub.lan_voice_vlan if device.switch else 0,
            admin_password=secrets.get(owner, "admin_password"),
            prov_user=device.mac12,
            prov_password=secrets.get(owner, "provisioning_password"),
            phonebook_url=phonebook_url(pub, device),
            **phonebook_context(order),
        )
        return ctx
