"""How a push reaches a device: which devices are pushed, where they answer, as whom, how long
we wait.

The store holds no management addresses: every push is given one per device (a
:class:`DeviceAddress`, from ``--target``, a targets file that ``lab up`` writes, or an API
request, which must stay inside the ``push_networks`` setting). Credentials are the device's
own secrets from the store. Addresses are checked here and go to the drivers as data; no
shell is ever involved.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioner.errors import DeviceUnknown, PushFailed
from provisioner.render.engine import DeviceKey, Renderer
from provisioner.store import audit
from provisioner.store.models import Device, Order

SNMP_V3_USER = "provisioner"  # the USM user the switch template and `lab up` agree on
SSH_USER = "admin"
CREDENTIALS = ("admin_password", "snmp_community", "snmp_auth_key", "snmp_priv_key")
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|[0-9A-Fa-f:.]+)$")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class DeviceAddress:
    """Where a device answers. The store has no management addresses: given per push."""

    host: str
    port: int
    snmp_version: str | None = None  # "2c" | "3"; None: "3" when policy requires v3
    username: str | None = None  # SSH login / SNMPv3 user; None: the defaults

    def __post_init__(self) -> None:
        if not _HOST.fullmatch(self.host) or self.host.startswith("-"):
            raise PushFailed(f"address {self.host!r}: not a host name or IP address")
        if not 0 < int(self.port) < 65536:
            raise PushFailed(f"address {self.host}: port {self.port} out of range")
        if self.snmp_version not in (None, "2c", "3"):
            raise PushFailed(f"address {self.host}: snmp_version {self.snmp_version!r}: 2c or 3")
        if self.username is not None and not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", self.username):
            raise PushFailed(f"address {self.host}: username {self.username!r} not allowed")

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @classmethod
    def parse(cls, text: str, **extra: Any) -> DeviceAddress:
        """``HOST:PORT`` or ``[V6]:PORT``."""
        text = text.strip()
        m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)", text) or re.fullmatch(
            r"([^:]+):(\d+)", text
        )
        if not m:
            raise PushFailed(f"address {text!r}: use HOST:PORT")
        return cls(m.group(1), int(m.group(2)), **extra)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"host": self.host, "port": self.port}
        if self.snmp_version:
            out["snmp_version"] = self.snmp_version
        if self.username:
            out["username"] = self.username
        return out

    def inside(self, networks: Iterable[Network]) -> bool:
        """Whether the address is an IP inside one of ``networks`` (a host name never is)."""
        try:
            ip = ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return any(ip.version == net.version and ip in net for net in networks)


def parse_target(value: str) -> tuple[str, DeviceAddress]:
    """``DEVICE_ID=HOST:PORT``: one device's address."""
    device_id, sep, address = value.partition("=")
    if not sep or not device_id.strip():
        raise PushFailed(f"target {value!r}: use DEVICE_ID=HOST:PORT")
    return device_id.strip(), DeviceAddress.parse(address)


def load_targets(path: Path) -> dict[str, DeviceAddress]:
    """A targets file (YAML or JSON): ``{devices: {ID: "HOST:PORT" | {host, port, ...}}}``.

    The top-level ``devices`` key may be left out. ``lab up`` writes this format.
    """
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PushFailed(f"{path}: cannot read targets: {exc}".splitlines()[0]) from None
    if isinstance(data, dict) and isinstance(data.get("devices"), dict):
        data = data["devices"]
    if not isinstance(data, dict):
        raise PushFailed(f"{path}: targets must map device ids to HOST:PORT")
    out: dict[str, DeviceAddress] = {}
    for device_id, value in data.items():
        where = f"{path}: {device_id}"
        if isinstance(value, str):
            out[str(device_id)] = DeviceAddress.parse(value)
        elif isinstance(value, dict) and {"host", "port"} <= set(value):
            extra = {k: value[k] for k in ("snmp_version", "username") if value.get(k)}
            if "snmp_version" in extra:
                extra["snmp_version"] = str(extra["snmp_version"])
            out[str(device_id)] = DeviceAddress(str(value["host"]), int(value["port"]), **extra)
        else:
            raise PushFailed(f"{where}: give HOST:PORT or {{host, port}}")
    return out


def write_targets(path: Path, targets: Mapping[str, DeviceAddress], order_id: str = "") -> None:
    """Write a targets file :func:`load_targets` reads back."""
    doc: dict[str, Any] = {"devices": {k: v.as_dict() for k, v in targets.items()}}
    if order_id:
        doc = {"order": order_id, **doc}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


@dataclass(frozen=True)
class Timeouts:
    """Seconds. ``snmp`` is per request (x ``snmp_retries + 1`` tries); ``command`` is per
    SSH command; ``operation`` caps one driver call; ``backoff`` doubles per retry."""

    connect: float = 10.0
    command: float = 30.0
    snmp: float = 2.0
    snmp_retries: int = 2
    operation: float = 60.0
    retries: int = 2
    backoff: float = 1.0


# ---------------------------------------------------------------------- devices in the store


def device_row(session: Session, key: DeviceKey) -> Device:
    """The store's row of a device; :class:`DeviceUnknown` when it is gone."""
    row = session.scalar(
        select(Device)
        .join(Order, Device.order_pk == Order.id)
        .where(Order.order_id == key.order_id, Device.device_id == key.device_id)
    )
    if row is None:
        raise DeviceUnknown(f"{key}: not in the store")
    return row


def audit_device(
    session: Session, actor: str, action: str, device: DeviceKey, /, **detail: Any
) -> None:
    """Audit ``action`` on a pushed device: its order and id in the record's own columns."""
    audit.record(
        session, actor, action, order_id=device.order_id, device=device.device_id, **detail
    )


def device_keys(inv: Any, renderer: Renderer, what: str) -> list[DeviceKey]:
    """The pushed devices of an order, or the one device with this MAC."""
    with inv.db.read() as session:
        order = session.scalar(select(Order).where(Order.order_id == what))
        if order is not None:
            rows = list(order.devices)
        else:
            try:
                rows = [inv.find_device(session, what)]
            except (DeviceUnknown, ValueError):
                raise DeviceUnknown(
                    f"{what}: no order with this id and no device with this MAC"
                ) from None
        keys = [
            DeviceKey(r.order.order_id, r.device_id, r.model, r.mac or "", r.serial or "")
            for r in rows
        ]
    registry = renderer.engine.registry
    return [
        k
        for k in keys
        if registry.has_model(k.model) and registry.for_model(k.model).push is not None
    ]


def credentials(inv: Any, key: DeviceKey) -> dict[str, str]:
    """The device's login secrets the store holds (admin password, SNMP community/keys)."""
    with inv.db.read() as session:
        row = device_row(session, key)
        out = {}
        for name in CREDENTIALS:
            with contextlib.suppress(DeviceUnknown):
                out[name] = inv.secret(session, row.order, f"device:{key.device_id}", name)
        return out
