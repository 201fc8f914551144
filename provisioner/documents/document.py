"""Order documents: YAML in, typed plain data out, with the line of every key kept for errors.

The document keys are the contract of DESIGN.md §2b. Unknown keys, duplicate keys and wrong
types are errors (a typo must not pass silently). This module checks only the shape of a
document; the offer's rules are in :mod:`provisioner.documents.rules`.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from pydantic.fields import FieldInfo

from provisioner.catalog import (
    CONFERENCES,
    DEVICE_MODELS,
    FAX_POS_MAX_PORTS,
    HANDSET_MODELS,
    ISDN_GROUP_MAX,
    MODELS,
    PLANS,
)
from provisioner.documents.loaders import load_json, load_yaml
from provisioner.documents.problems import (
    DocumentProblem,
    Loc,
    Problem,
    format_path,
    parse_path,
    shown,
)
from provisioner.errors import InvalidMac

# --------------------------------------------------------------------------- value types

_MAC_RE = re.compile(
    r"^(?:[0-9a-f]{2}([:-])(?:[0-9a-f]{2}\1){4}[0-9a-f]{2}"
    r"|[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}"
    r"|[0-9a-f]{12})$"
)
_E164_RE = re.compile(r"^\+[1-9]\d{5,14}$")
_ID_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")
_ORDER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SERIAL_RE = re.compile(r"^[A-Z]{4}[0-9A-F]{8}$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


MAC_EXAMPLE = "00:80:f0:12:34:56"


def _q(value: object) -> str:
    """A user's value quoted in an error: ``'...'``, escaped and cut short like :func:`shown`."""
    return f"'{shown(value)}'"


def normalize_mac(value: str) -> str:
    """Return a MAC address in the stored spelling (``00:80:f0:00:00:01``).

    Accepts ``00:80:F0:00:00:01``, ``00-80-f0-00-00-01``, ``0080.f000.0001``, ``0080f0000001``.
    Raises :class:`InvalidMac` (a one-line error, also a ``ValueError``) for anything else,
    and for the addresses no device has (multicast, broadcast, all zeros), saying why.
    """
    raw = str(value).strip().lower()
    if not _MAC_RE.fullmatch(raw):
        raise InvalidMac(f"not a MAC address: {shown(value)} (12 hex digits, e.g. {MAC_EXAMPLE})")
    digits = re.sub(r"[^0-9a-f]", "", raw)
    mac = ":".join(digits[i : i + 2] for i in range(0, 12, 2))
    if digits == "ffffffffffff":
        raise InvalidMac(f"not a device's MAC address: {mac} is the broadcast address")
    if digits == "000000000000":
        raise InvalidMac(f"not a device's MAC address: {mac} is all zeros")
    if int(digits[:2], 16) & 1:
        raise InvalidMac(
            f"not a device's MAC address: {mac} is a multicast address "
            "(a device's has an even first byte)"
        )
    return mac


def _e164(value: str) -> str:
    if not _E164_RE.match(value):
        raise ValueError(f"{_q(value)} is not an E.164 number with '+' (like +390212345601)")
    return value


def _vat(value: str) -> str:
    """Italian VAT number: ``IT`` + 11 digits with the partita IVA check digit."""
    m = re.fullmatch(r"IT(\d{11})", value)
    if not m:
        raise ValueError(f"{_q(value)} is not an Italian VAT number (IT + 11 digits)")
    digits = [int(c) for c in m.group(1)]
    odd = sum(digits[0:10:2])
    even = sum(d * 2 - 9 if d * 2 > 9 else d * 2 for d in digits[1:10:2])
    if (10 - (odd + even) % 10) % 10 != digits[10]:
        raise ValueError(f"{_q(value)} has a wrong check digit")
    return value


def _regex(pattern: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.match(value):
            raise ValueError(f"{_q(value)} is not {what}")
        return value

    return AfterValidator(check)


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _no_int_for_str(value: Any) -> Any:
    # YAML reads an unquoted +390612340000 as an integer: say how to fix it.
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(f"{shown(value)} must be a quoted string (write it in quotes)")
    return value


def _no_controls(value: str) -> str:
    # A line break would start a new key in an INI or CLI file, and no device takes a control
    # character in a password. The message never echoes the value: it is a secret.
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in value):
        raise ValueError("holds a control character or a line break (no device takes one)")
    return value


Mac = Annotated[str, AfterValidator(normalize_mac)]
E164 = Annotated[str, BeforeValidator(_no_int_for_str), AfterValidator(_e164)]
Ident = Annotated[str, _regex(_ID_RE, "an id (lowercase letters, digits, '-')")]
Text = Annotated[str, AfterValidator(_not_blank), Field(max_length=200)]
Secret = Annotated[str, Field(min_length=8, max_length=128), AfterValidator(_no_controls)]
Short = Annotated[int, Field(ge=10, le=999999)]


# --------------------------------------------------------------------------- what a document holds

# At most what the offer could ever allow (DESIGN.md §2), so that a hostile document costs
# bounded work; every cap is derived from the catalog.
MAX_EXTENSIONS = max(p.extensions_max for p in PLANS.values())  # 32, Office Maxi
# A site of a shared PBX is a location of the customer's extensions: never more sites than
# extensions.
MAX_SITES = MAX_EXTENSIONS
# Per site one IAD and one Mini ONT; per extension at most one terminal (an IP phone or a DECT
# base) and one PoE switch to power it.
MAX_DEVICES = 2 * MAX_SITES + 2 * MAX_EXTENSIONS  # 128
# A single number, a GNR range or an ISDN group is held to serve extensions: never more
# entries in one list than extensions.
MAX_NUMBER_ENTRIES = MAX_EXTENSIONS
MAX_HANDSETS = max(m.handset_capacity for m in MODELS.values())  # 5, the IP2215 base

# What each capped list is, for the error that names it (paths with [] for any index).
_CAPPED: dict[str, str] = {
    "extensions": "the largest plan sells",
    "sites": "an order has (one site per extension at most)",
    "devices": "an order has (per site an IAD and a Mini ONT, per extension a terminal "
    "and a switch)",
    "numbers.single": "an order can use (one per extension)",
    "numbers.gnr": "an order can use (one per extension)",
    "numbers.isdn_groups": "an order can use (one per extension)",
    "numbers.isdn_groups[]": "an ISDN multi-number group holds",
    "devices[].handsets": "a DECT base takes",
    "devices[].fax_pos": "FAX/POS ports there are",
    "extensions[].conference": "conference options there are",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Customer(_Strict):
    name: Text
    vat: Annotated[str, AfterValidator(_vat)]


class Options(_Strict):
    multisite: bool = False
    multi_selection: bool = False
    call_distributor_light: bool = False
    efax: bool = False
    fax_pos: Annotated[int, Field(ge=0)] = 0


class GnrRange(_Strict):
    first: E164
    last: E164


class Numbers(_Strict):
    single: Annotated[list[E164], Field(max_length=MAX_NUMBER_ENTRIES)] = []
    gnr: Annotated[list[GnrRange], Field(max_length=MAX_NUMBER_ENTRIES)] = []
    # First = progenitor. At most 8 numbers of one block (rules.check_numbers).
    isdn_groups: Annotated[
        list[Annotated[list[E164], Field(max_length=ISDN_GROUP_MAX)]],
        Field(max_length=MAX_NUMBER_ENTRIES),
    ] = []


class Site(_Strict):
    id: Ident
    address: Text
    connectivity: Literal["adsl", "fttc", "ftth", "fwa"]
    # Access credentials of the site's line; generated when missing.
    pppoe_username: (
        Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_no_controls)] | None
    ) = None
    pppoe_password: Secret | None = None


class Extension(_Strict):
    number: E164
    short: Short
    type: Literal["standard", "premium", "operator"]
    name: Text
    site: Ident
    email: Annotated[str, _regex(_EMAIL_RE, "an e-mail address")] | None = None
    mobile: E164 | None = None
    conference: (
        Literal["my_conference", "my_conference_large"]
        | Annotated[
            list[Literal["my_conference", "my_conference_large"]],
            Field(max_length=len(CONFERENCES)),
        ]
        | None
    ) = None
    sip_password: Secret | None = None

    @property
    def conferences(self) -> list[str]:
        if self.conference is None:
            return []
        return [self.conference] if isinstance(self.conference, str) else list(self.conference)


class Handset(_Strict):
    extension: Short
    model: Literal[HANDSET_MODELS] | None = None  # type: ignore[valid-type]


class Device(_Strict):
    model: Literal[DEVICE_MODELS]  # type: ignore[valid-type]
    id: Ident | None = None
    site: Ident | None = None
    mac: Mac | None = None
    serial: (
        Annotated[str, _regex(_SERIAL_RE, "a GPON serial (4 letters + 8 hex digits)")] | None
    ) = None
    extension: Short | None = None
    switch: Ident | None = None
    port: Annotated[int, Field(ge=1)] | None = None
    handsets: Annotated[list[Handset], Field(max_length=MAX_HANDSETS)] | None = None
    fax_pos: Annotated[list[Literal["fax", "pos"]], Field(max_length=FAX_POS_MAX_PORTS)] | None = (
        None
    )
    admin_password: Secret | None = None
    snmp_community: Secret | None = None
    snmp_auth_key: Secret | None = None
    snmp_priv_key: Secret | None = None
    ploam_password: (
        Annotated[str, Field(min_length=10, max_length=10), AfterValidator(_no_controls)] | None
    ) = None

    @field_validator("mac", mode="before")
    @classmethod
    def _mac_is_text(cls, value: Any) -> Any:
        if isinstance(value, int):
            raise ValueError("a MAC address must be a quoted string")
        return value


class OrderDocument(_Strict):
    """One order, exactly as the YAML says (after MAC normalisation)."""

    order: Annotated[str, _regex(_ORDER_RE, "an order id (letters, digits, '.', '_', '-')")]
    customer: Customer
    plan: Literal[
        "super_office_one", "office_one", "office_plus_special", "office_plus", "office_maxi"
    ]
    lines: Annotated[int, Field(ge=1)]
    options: Options = Options()
    numbers: Numbers
    sites: Annotated[list[Site], Field(min_length=1, max_length=MAX_SITES)]
    extensions: Annotated[list[Extension], Field(min_length=1, max_length=MAX_EXTENSIONS)]
    devices: Annotated[list[Device], Field(max_length=MAX_DEVICES)] = []


# Keys holding secrets: never echoed in an error, never exported.
SECRET_KEYS = frozenset(
    {
        "sip_password",
        "admin_password",
        "pppoe_password",
        "snmp_community",
        "snmp_auth_key",
        "snmp_priv_key",
        "ploam_password",
    }
)

# --------------------------------------------------------------------------- shape


@dataclass
class ParsedDocument:
    """Result of reading one file: the typed order (if its shape is right) and the problems.

    ``partial``: when the shape is wrong, the well-shaped rest of the order (ill-shaped items
    left out) for the rules to judge; None when too much is wrong for that.
    """

    file: str
    order_id: str
    data: Any
    lines: dict[Loc, int]
    document: OrderDocument | None
    problems: list[Problem]
    partial: WellShaped | None = None

    def line_of(self, path: Loc) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)


def _clean(loc: Loc) -> Loc:
    # Union and Literal errors repeat the location with the member type: keep the path clean.
    return tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or "'" in p)))


def _normal_path(loc: Loc) -> str:
    return format_path(tuple("[]" if isinstance(p, int) else p for p in loc)).replace(".[]", "[]")


def _pydantic_problems(exc: ValidationError, parsed: ParsedDocument) -> list[Problem]:
    problems = []
    for err in exc.errors(include_url=False, include_input=False):
        clean = _clean(tuple(err["loc"]))
        kind = err["type"]
        key = next((p for p in reversed(clean) if isinstance(p, str)), "")
        limit = ""
        if kind == "extra_forbidden":
            message = "unknown key"
        elif kind == "missing":
            message = "required key is missing"
        elif kind == "literal_error":
            message = f"must be one of {err.get('ctx', {}).get('expected', '')}"
        elif kind == "too_long" and isinstance(clean[-1:][0] if clean else None, str | int):
            ctx = err.get("ctx", {})
            what = _CAPPED.get(_normal_path(clean), "a document may hold")
            message = f"{ctx.get('actual_length', 'too many')} items: more than {what}"
            limit = f"at most {ctx.get('max_length')}"
        else:
            message = err["msg"].removeprefix("Value error, ")
        if key in SECRET_KEYS and kind not in ("extra_forbidden", "missing"):
            if kind == "value_error":  # ours, never echoing the value
                message = f"not a valid secret: {message}"
            elif key == "ploam_password":
                message = "not a valid PLOAM password (exactly 10 characters)"
            else:
                message = "not a valid secret (8 to 128 characters of text)"
        problems.append(Problem(format_path(clean), message, limit, line=parsed.line_of(clean)))
    # One problem per path: unions report every member's complaint.
    seen: set[str] = set()
    unique = []
    for p in problems:
        if p.path not in seen:
            seen.add(p.path)
            unique.append(p)
    return unique


def parse_text(text: str, file: str = "<text>") -> ParsedDocument:
    """Read one YAML order document. Never raises for bad input: problems are in the result."""
    try:
        data, lines = load_yaml(text)
    except DocumentProblem as exc:
        # Name the order even when the YAML doesn't parse, if its id line is readable.
        m = re.search(r"^order:\s*['\"]?([A-Za-z0-9][A-Za-z0-9._-]{0,63})\b", text, re.MULTILINE)
        return ParsedDocument(file, m.group(1) if m else "", None, {}, None, [exc.problem])
    return parse_data(data, lines, file)


def parse_json(text: str, file: str = "<json>") -> ParsedDocument:
    """Read one JSON order document (no lines but those of syntax errors)."""
    try:
        data = load_json(text)
    except DocumentProblem as exc:
        return ParsedDocument(file, "", None, {}, None, [exc.problem])
    return parse_data(data, {}, file)


def parse_data(data: Any, lines: dict[Loc, int], file: str) -> ParsedDocument:
    """Check the shape of a parsed document (``lines``: where each path is, if known)."""
    order_id = ""
    if isinstance(data, dict) and isinstance(data.get("order"), str):
        order_id = data["order"] if _ORDER_RE.fullmatch(data["order"]) else ""
    parsed = ParsedDocument(file, order_id, data, lines, None, [])
    if not isinstance(data, dict):
        parsed.problems.append(Problem("", "an order document must be a mapping", line=1))
        return parsed
    try:
        parsed.document = OrderDocument.model_validate(data)
    except ValidationError as exc:
        parsed.problems.extend(_pydantic_problems(exc, parsed))
        parsed.partial = well_shaped(data, exc)
    return parsed


# --------------------------------------------------------------------------- the well-shaped rest

# Optional fields no rule reads across items: leaving one out cannot change another item's
# verdict, so it leaves its list complete.
_LOCAL_FIELDS = frozenset(
    {
        ("extensions", "email"),
        ("extensions", "mobile"),
        ("extensions", "conference"),
        ("extensions", "sip_password"),
        ("sites", "pppoe_username"),
        ("sites", "pppoe_password"),
        ("devices", "mac"),
        ("devices", "serial"),
        ("devices", "admin_password"),
        ("devices", "snmp_community"),
        ("devices", "snmp_auth_key"),
        ("devices", "snmp_priv_key"),
        ("devices", "ploam_password"),
    }
)
# Required top-level fields no rule needs the true value of: a placeholder stands in.
_PLACEHOLDERS: dict[str, Any] = {
    "order": "x",
    "customer": {"name": "x", "vat": "IT00000000000"},
    "lines": 1,  # its own violation is left out (the path is dropped)
    "numbers": {},
}
_LIST_PATH = re.compile(r"\b(?:sites|extensions|devices|numbers)(?:\.[a-z_]+|\[\d+\])+")


@dataclass
class WellShaped:
    """An order document with its ill-shaped parts left out, for the rules to judge the rest.

    ``dropped``: the paths left out (a field, a list item, a top-level field replaced by a
    placeholder), as the original document numbers them; ``kept``: for each list that lost
    items, which of its original indexes remain; ``incomplete``: the top-level lists that
    lost something a rule reads across items.
    """

    document: OrderDocument
    dropped: set[Loc] = field(default_factory=set)
    kept: dict[Loc, list[int]] = field(default_factory=dict)
    incomplete: set[str] = field(default_factory=set)

    def original(self, loc: Loc) -> Loc:
        """A path in :attr:`document` as the original document numbers it."""
        return _original(self.kept, loc)

    def _renumber(self, text: str) -> str:
        return _LIST_PATH.sub(lambda m: format_path(self.original(parse_path(m.group(0)))), text)

    def relevant(self, problems: list[Problem]) -> list[Problem]:
        """The rules' problems with the document's own numbering, without those the leaving
        out may have caused: about a dropped path or the item that lost a field, or judging
        a list as a whole when it is incomplete."""
        items = {d[:-1] for d in self.dropped if d and isinstance(d[-1], str)}
        out = []
        for p in problems:
            loc = self.original(parse_path(p.path))
            if p.needs & self.incomplete or loc in self.dropped or loc in items:
                continue
            out.append(
                Problem(
                    format_path(loc),
                    self._renumber(p.message),
                    self._renumber(p.limit),
                    p.line,
                    p.needs,
                )
            )
        return out


def _original(kept: dict[Loc, list[int]], loc: Loc) -> Loc:
    out: list[int | str] = []
    for part in loc:
        if isinstance(part, int):
            indexes = kept.get(tuple(out))
            if indexes is not None and part < len(indexes):
                part = indexes[part]
        out.append(part)
    return tuple(out)


def _field_of(loc: Loc) -> FieldInfo | None:
    """The model field a path ends at (list indexes skipped), or None."""
    model: type[BaseModel] | None = OrderDocument
    info = None
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None or part not in model.model_fields:
            return None
        info = model.model_fields[part]
        model = _model_in(info.annotation)
    return info


def _model_in(tp: Any) -> type[BaseModel] | None:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    for arg in get_args(tp):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


@dataclass
class _Plan:
    drop: set[Loc] = field(default_factory=set)
    unknown: set[Loc] = field(default_factory=set)  # unknown keys (in drop too)
    truncate: dict[Loc, int] = field(default_factory=dict)
    replace: dict[Loc, Any] = field(default_factory=dict)


def _plan_error(plan: _Plan, loc: Loc, err: Any) -> bool:
    """Add what to leave out for one error at ``loc`` (original numbering); False if the
    error cannot be left out (a plan, the sites, the extensions themselves)."""
    kind = err["type"]
    if kind == "too_long":
        plan.truncate[loc] = int(err.get("ctx", {}).get("max_length", 0))
        return True
    if kind == "extra_forbidden":
        plan.drop.add(loc)
        plan.unknown.add(loc)
        return True
    while loc:
        last = loc[-1]
        if isinstance(last, int):
            plan.drop.add(loc)  # the list item that holds the error
            return True
        if len(loc) == 1 and last in _PLACEHOLDERS:
            plan.replace[loc] = _PLACEHOLDERS[str(last)]
            return True
        info = _field_of(loc)
        if info is not None and not info.is_required():
            plan.drop.add(loc)
            return True
        loc = loc[:-1]
    return False


def _without(data: Any, plan: _Plan, path: Loc, kept: dict[Loc, list[int]]) -> Any:
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            loc = (*path, key)
            if loc in plan.replace:
                out[key] = plan.replace[loc]
            elif loc not in plan.drop:
                out[key] = _without(value, plan, loc, kept)
        for loc, value in plan.replace.items():
            if loc[:-1] == path and loc[-1] not in out:
                out[loc[-1]] = value
        return out
    if isinstance(data, list):
        items = data[: plan.truncate[path]] if path in plan.truncate else data
        new, indexes = [], []
        for i, value in enumerate(items):
            loc = (*path, i)
            if loc not in plan.drop:
                new.append(_without(value, plan, loc, kept))
                indexes.append(i)
        if len(indexes) != len(data):
            kept[path] = indexes
        return new
    return data


def well_shaped(data: dict[str, Any], exc: ValidationError) -> WellShaped | None:
    """The document without its ill-shaped parts: an optional field that failed is left
    out, so is a list item whose required field failed, and a list past its cap is cut to
    it; then validated again. None when what failed cannot be left out."""
    plan = _Plan()
    kept: dict[Loc, list[int]] = {}  # the numbering of the document validated last
    for _ in range(3):
        for err in exc.errors(include_url=False, include_input=False):
            loc = _original(kept, _clean(tuple(err["loc"])))
            if not _plan_error(plan, loc, err):
                return None
        kept = {}
        pruned = _without(data, plan, (), kept)
        try:
            document = OrderDocument.model_validate(pruned)
        except ValidationError as again:
            exc = again
            continue
        result = WellShaped(document, (plan.drop - plan.unknown) | set(plan.replace), kept)
        for loc in (plan.drop - plan.unknown) | set(plan.truncate):
            if len(loc) >= 3 and (loc[0], loc[2]) in _LOCAL_FIELDS:
                continue
            result.incomplete.add(str(loc[0]))
        if ("numbers",) in plan.replace:
            result.incomplete.add("numbers")
        return result
    return None


def parse_file(path: Path) -> ParsedDocument:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return ParsedDocument(str(path), "", None, {}, None, [Problem("", "not UTF-8 text")])
    except OSError as exc:
        return ParsedDocument(
            str(path), "", None, {}, None, [Problem("", f"cannot read: {exc.strerror}")]
        )
    return parse_text(text, str(path))


def collect_files(paths: list[Path]) -> list[Path]:
    """Expand folders into their ``*.yaml``/``*.yml`` files (sorted); keep files as given."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.suffix in (".yaml", ".yml")))
        else:
            files.append(p)
    return files
