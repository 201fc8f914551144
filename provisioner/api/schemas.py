"""Request and response bodies. ``XCreate``/``XUpdate`` in, ``XPublic`` out; no secrets out.

Only :class:`SecretPublic` carries a secret, and only the admin-only secrets route returns it.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from provisioner.api.problems import Violation
from provisioner.documents.document import normalize_mac
from provisioner.documents.problems import shown
from provisioner.errors import InvalidMac
from provisioner.orders.status import State

# The usual MAC spellings of a unicast address (second hex digit even), not all zeros: what
# the OpenAPI schema says of a MAC. Requests are checked by a validator instead of the
# pattern, so a refused MAC gets a sentence saying why, not the regex.
_HEX = "[0-9A-Fa-f]"
_FIRST = f"{_HEX}[02468AaCcEe]"
MAC_PATTERN = (
    "^(?![0.:-]*$)(?:"
    f"^{_FIRST}(?::{_HEX}{{2}}){{5}}$"
    f"|^{_FIRST}(?:-{_HEX}{{2}}){{5}}$"
    f"|^{_FIRST}{_HEX}{{2}}\\.{_HEX}{{4}}\\.{_HEX}{{4}}$"
    f"|^{_FIRST}{_HEX}{{10}}$)"
)
_MAC_RE = re.compile(MAC_PATTERN)
ORDER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
MAC_EXAMPLE = "00:80:f0:00:00:01"
ORDER_EXAMPLE = "WT-2026-000123"
MAC_SCHEMA: dict[str, Any] = {"type": "string", "pattern": MAC_PATTERN, "examples": [MAC_EXAMPLE]}


def api_mac(value: str) -> str:
    """A MAC of a request in the stored spelling, or :class:`InvalidMac` saying why not."""
    if not _MAC_RE.match(value):
        normalize_mac(value)  # raises with the reason (not a MAC, multicast, all zeros)
        raise InvalidMac(f"not a MAC address: {shown(value)} (12 hex digits, e.g. {MAC_EXAMPLE})")
    return normalize_mac(value)


Mac = Annotated[str, AfterValidator(api_mac), WithJsonSchema(MAC_SCHEMA)]
# Optional in a body: absent, never null (the schema then says exactly which keys go together).
Text40 = Annotated[str, Field(min_length=1, max_length=40)]


def _not_bool(value: Any) -> Any:
    # JSON's true/false are not numbers; pydantic's lax mode would take them as 1/0 (and the
    # schema says integer). Bodies' booleans are StrictBool for the same reason.
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    return value


Int = Annotated[int, BeforeValidator(_not_bool)]
Float = Annotated[float, BeforeValidator(_not_bool)]


# Every time in an answer carries its offset (the store hands back aware UTC datetimes).
Timestamp = AwareDatetime


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", regex_engine="python-re")

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        # An optional field is left out, not sent as null: the schema has no null anywhere
        # in a request body (SkipJsonSchema), and the API holds to what it documents.
        if isinstance(data, dict):
            nulls = sorted(str(k) for k, v in data.items() if v is None)
            if nulls:
                raise ValueError(f"{', '.join(nulls)}: leave the key out instead of null")
        return data


def _exactly_one(*groups: tuple[str, ...]) -> dict[str, Any]:
    """JSON Schema for "exactly one key of each group" (what the model validator checks)."""
    return {"allOf": [{"oneOf": [{"required": [key]} for key in group]} for group in groups]}


class OrderState(enum.StrEnum):
    active = "active"
    cancelled = "cancelled"


# One vocabulary of device states for CLI, API and the technician page.
DeviceState = State


class ApplyStatus(enum.StrEnum):
    created = "created"
    updated = "updated"
    unchanged = "unchanged"


class CustomerPublic(BaseModel):
    name: str
    vat: str


class GnrPublic(BaseModel):
    first: str
    last: str


class NumbersPublic(BaseModel):
    single: list[str] = []
    gnr: list[GnrPublic] = []
    isdn_groups: list[list[str]] = []


class SitePublic(BaseModel):
    id: str
    address: str
    connectivity: str
    pppoe_username: str


class ExtensionPublic(BaseModel):
    number: str
    short: int
    type: str
    name: str
    site: str
    email: str | None = None
    mobile: str | None = None
    conference: list[str] = []
    terminal: str | None = Field(None, description="Device id of its terminal, if any.")


class HandsetPublic(BaseModel):
    slot: int
    extension: int
    model: str


class DevicePublic(BaseModel):
    id: str
    model: str
    kind: str
    site: str | None = None
    mac: str | None = None
    serial: str | None = None
    state: DeviceState
    extensions: list[int] = Field([], description="Short numbers of the extensions it serves.")
    switch: str | None = None
    port: int | None = None
    handsets: list[HandsetPublic] = []


class OrderSummary(BaseModel):
    order: str
    customer: CustomerPublic
    plan: str
    lines: int
    state: OrderState
    sites: int
    extensions: int
    devices: int
    bound: int
    updated_at: Timestamp | None = None


class OrderPage(BaseModel):
    items: list[OrderSummary]
    total: int
    limit: int
    offset: int


class OrderPublic(BaseModel):
    order: str
    customer: CustomerPublic
    plan: str
    lines: int
    state: OrderState
    options: dict[str, bool | int]
    numbers: NumbersPublic
    sites: list[SitePublic]
    extensions: list[ExtensionPublic]
    devices: list[DevicePublic]
    updated_at: Timestamp | None = None


class OrderApplied(BaseModel):
    order: str
    status: ApplyStatus
    changes: list[str] = []


class OrderValidation(BaseModel):
    valid: bool
    order: str | None = None
    violations: list[Violation] = Field([], description="The first 100 violations.")
    violations_total: int = Field(0, description="How many violations there are in all.")


class BindCreate(_In):
    """The box in hand (``mac`` or ``serial``) and what it serves (``extension`` or ``device``)."""

    model_config = ConfigDict(
        json_schema_extra=_exactly_one(("mac", "serial"), ("extension", "device"))
    )

    mac: Mac | SkipJsonSchema[None] = None
    serial: Annotated[str, Field(min_length=1, max_length=12)] | SkipJsonSchema[None] = None
    extension: Annotated[Int, Field(ge=0, le=99_999_999)] | SkipJsonSchema[None] = None
    device: Text40 | SkipJsonSchema[None] = None
    model: Text40 | SkipJsonSchema[None] = Field(
        None, description="Phone model, when the extension has no terminal yet."
    )

    @model_validator(mode="after")
    def _one_of_each(self) -> BindCreate:
        if (self.mac is None) == (self.serial is None):
            raise ValueError("give exactly one of mac or serial")
        if (self.extension is None) == (self.device is None):
            raise ValueError("give exactly one of extension or device")
        return self


class UnbindCreate(_In):
    """The bound box, by ``mac`` or by ``device`` id."""

    model_config = ConfigDict(json_schema_extra=_exactly_one(("mac", "device")))

    mac: Mac | SkipJsonSchema[None] = None
    device: Text40 | SkipJsonSchema[None] = None

    @model_validator(mode="after")
    def _one(self) -> UnbindCreate:
        if (self.mac is None) == (self.device is None):
            raise ValueError("give exactly one of mac or device")
        return self


class BindPublic(BaseModel):
    order: str
    device: str
    identity: str | None = None
    state: DeviceState


class SwapCreate(_In):
    new_mac: Mac


class SwapPublic(BaseModel):
    order: str
    device: str
    old_mac: str
    new_mac: str


class ArmCreate(_In):
    """How long the enrollment window stays open (default: the enrollment_minutes setting)."""

    minutes: Annotated[Int, Field(ge=1, le=7 * 24 * 60)] | SkipJsonSchema[None] = None


class ArmedPublic(BaseModel):
    order: str
    devices: list[str] = Field(description="Device ids the window covers.")
    expires_at: Timestamp


class DeviceDetail(DevicePublic):
    order: str
    order_state: OrderState


class TerminalPublic(BaseModel):
    slot: int = Field(description="0 for a desk phone, 1.. for a DECT base's handsets.")
    extension: int
    name: str


class DeviceStatus(BaseModel):
    order: str
    device: str
    model: str
    mac: str | None
    state: DeviceState
    title: str = Field("", description="The model as people name it.")
    kind: str = ""
    site: str | None = None
    serial: str | None = None
    terminals: list[TerminalPublic] = []
    switch: str | None = None
    port: int | None = None
    window_until: Timestamp | None = Field(None, description="When its enrollment window closes.")
    refusals: int = Field(0, description="Fetches of its files refused.")
    last_refused_at: Timestamp | None = None
    last_refused_source: str | None = None
    blocked_until: Timestamp | None = Field(None, description="Its address is blocked until.")
    last_push_job: str | None = None
    last_push_error: str = ""
    last_fetch_at: Timestamp | None = None
    last_fetch_file: str | None = None
    last_fetch_source: str | None = Field(None, description="Address of the last fetch.")
    bound_source: str | None = Field(None, description="Address the device is bound to.")
    fetches: int = 0
    last_push_at: Timestamp | None = None
    last_push_result: str | None = None
    last_resync_at: Timestamp | None = Field(
        None, description="When a resync (NOTIFY check-sync) was last sent to it."
    )
    last_resync_outcome: str | None = Field(
        None, description="delivered, not-registered, refused, timeout or failed."
    )


class ResyncOutcome(enum.StrEnum):
    delivered = "delivered"
    not_registered = "not-registered"
    refused = "refused"
    timeout = "timeout"
    failed = "failed"


class ResyncedDevice(BaseModel):
    order: str
    device: str
    model: str
    mac: str
    user: str = Field(description="The SIP user the NOTIFY went to (its first account).")
    outcome: ResyncOutcome = Field(
        description="delivered: the device took it and re-fetches; not-registered: the "
        "registrar has no contact for it; refused, timeout, failed: it did not get there."
    )
    status: int | None = Field(None, description="The SIP status of the final answer.")
    reason: str = ""
    seconds: float = Field(description="From sending to the final answer.")


class ResyncPublic(BaseModel):
    """One NOTIFY check-sync per desk phone and DECT base, with what became of it."""

    items: list[ResyncedDevice]
    delivered: int = Field(description="Devices that took it.")


class DeviceFilePublic(BaseModel):
    name: str
    format: str
    served: bool = Field(description="Fetched by the device (else pushed or shown).")
    size: int


class DeviceFiles(BaseModel):
    order: str
    device: str
    model: str
    files: list[DeviceFilePublic]


class AuditEventPublic(BaseModel):
    id: int
    at: Timestamp
    actor: str
    action: str
    order: str | None = None
    device: str | None = None
    detail: dict[str, Any] = {}


class BlockPublic(BaseModel):
    source: str
    blocked_at: Timestamp
    until: Timestamp
    protocol: str
    unknown_names: int = Field(description="Distinct unknown device names that triggered it.")


class BlockList(BaseModel):
    items: list[BlockPublic]


class Unblocked(BaseModel):
    source: str


class AuditPage(BaseModel):
    items: list[AuditEventPublic]
    total: int = Field(description="Events matching the filters, on every page.")
    limit: int
    offset: int


class DevicePage(BaseModel):
    items: list[DeviceStatus]
    total: int
    limit: int
    offset: int


class SitePlace(BaseModel):
    id: str
    address: str
    connectivity: str


class FreeExtensionPublic(BaseModel):
    short: int
    name: str
    type: str
    site: str


class OrderStatusPublic(BaseModel):
    """Every device of an order with its state, in one call."""

    order: str
    customer: CustomerPublic
    plan: str
    state: OrderState
    counts: dict[str, int] = Field(description="Devices per state.")
    sites: list[SitePlace]
    devices: list[DeviceStatus]
    free_extensions: list[FreeExtensionPublic] = Field(
        description="Extensions no terminal serves yet (a phone may be bound to them)."
    )
    blocked_sources: dict[str, Timestamp] = Field(
        description="Addresses of this order's devices blocked by the sweep guard -> until."
    )


class SecretPublic(BaseModel):
    owner: str
    name: str
    value: str
    source: str


class SecretsPublic(BaseModel):
    order: str
    secrets: list[SecretPublic]


class Health(BaseModel):
    status: str


class CancelPublic(BaseModel):
    order: str
    state: OrderState


# ---------------------------------------------------------------------- push jobs

JOB_ID_PATTERN = "^[0-9a-f]{32}$"
DEVICE_ID_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class PushOutcome(enum.StrEnum):
    ok = "ok"
    no_change = "no change"
    failed = "failed"
    rolled_back = "rolled back"
    dry_run = "dry-run"


def _ip_address(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError("must be an IP address (the API does not resolve names)") from None


class PushTarget(_In):
    """Where the device answers. The store keeps no management addresses."""

    host: Annotated[str, AfterValidator(_ip_address)] = Field(
        max_length=45,
        description="IP address, inside the push_networks setting.",
        examples=["192.168.1.254"],
        json_schema_extra={"anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]},
    )
    port: Int = Field(ge=1, le=65535, examples=[22])
    snmp_version: Literal["2c", "3"] | SkipJsonSchema[None] = Field(
        None, description="Switches: 2c or 3 (default: 3 when the policy asks for v3, else 2c)."
    )
    username: Annotated[str, Field(pattern="^[A-Za-z0-9._-]{1,64}$")] | SkipJsonSchema[None] = (
        Field(None, description="SSH login or SNMPv3 user, when not the default.")
    )


class PushCreate(_In):
    """Which devices to push (the keys of ``targets``: device ids of the order)."""

    targets: dict[Annotated[str, Field(pattern=DEVICE_ID_PATTERN)], PushTarget] = Field(
        min_length=1,
        max_length=64,
        description="Device id -> address. Each must be a pushed device (switch or IAD).",
        examples=[{"iad-milano": {"host": "192.168.1.254", "port": 22}}],
    )
    dry_run: StrictBool = Field(False, description="Read, back up and diff; change nothing.")
    trust_on_first_use: StrictBool = Field(
        False, description="Pin an SSH host key the store has not seen yet (audited)."
    )
    connect_timeout: Float = Field(10.0, ge=0.5, le=120, description="Seconds per connect.")
    command_timeout: Float = Field(30.0, ge=1, le=600, description="Seconds per command.")
    retries: Int = Field(2, ge=0, le=5, description="Retries of a connect that times out.")


class PushStepEvent(BaseModel):
    """The ``data`` of a ``step`` event: a device moved to a step (connect, diff, commit, ...)."""

    device: str
    step: str


class PushDoneEvent(BaseModel):
    """The ``data`` of the last event, ``done``: results per outcome, and when the job ended."""

    summary: dict[str, int]
    finished_at: Timestamp


class PushDeviceResult(BaseModel):
    device: str = Field(description="Device id in the order.")
    model: str
    result: PushOutcome | None = Field(default=None, description="None while the push runs.")
    step: str | None = Field(default=None, description="The step running now (connect, diff, ...).")
    changed: bool = False
    diff_lines: int = 0
    diff: str = Field(default="", description="The change, every secret masked.")
    seconds: float | None = None
    backup: int | None = Field(default=None, description="Version of the backup taken first.")
    error: str = ""


class PushJobState(enum.StrEnum):
    running = "running"
    finished = "finished"


class PushJobSummaryPublic(BaseModel):
    id: str
    order: str
    started_at: Timestamp
    finished_at: Timestamp
    summary: dict[str, int] = Field(description="Devices per result.")
    devices: list[str]


class PushJobPage(BaseModel):
    items: list[PushJobSummaryPublic]
    total: int
    limit: int
    offset: int


class PushJobPublic(BaseModel):
    id: str
    order: str
    state: PushJobState
    dry_run: bool
    actor: str | None = None
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None
    summary: dict[str, int] = Field(description="Devices per result so far.")
    devices: list[PushDeviceResult]


def sse_event(name: str, data: dict[str, Any], about: str) -> dict[str, Any]:
    """One server-sent event of a stream, for the OpenAPI document (``data``: one JSON line)."""
    return {
        "type": "object",
        "description": about,
        "required": ["id", "event", "data"],
        "properties": {
            "id": {"type": "string", "pattern": "^[1-9][0-9]*$"},
            "event": {"const": name},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": data,
            },
        },
    }
