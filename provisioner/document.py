"""Order documents: YAML in, typed plain data out, with the line of every key kept for errors.

The document keys are the contract of DESIGN.md §2b. Unknown keys, duplicate keys and wrong
types are errors (a typo must not pass silently). This module checks only the shape of a
document; the offer's rules are in :mod:`provisioner.rules`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from provisioner.catalog import DEVICE_MODELS, HANDSET_MODELS

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


def normalize_mac(value: str) -> str:
    """Return a MAC address in the stored spelling (``00:80:f0:00:00:01``).

    Accepts ``00:80:F0:00:00:01``, ``00-80-f0-00-00-01``, ``0080.f000.0001``, ``0080f0000001``.
    """
    raw = str(value).strip().lower()
    if not _MAC_RE.match(raw):
        raise ValueError(f"{value!r} is not a MAC address (like 00:80:f0:00:00:01)")
    digits = re.sub(r"[^0-9a-f]", "", raw)
    if int(digits[:2], 16) & 1:
        raise ValueError(f"{value!r} is a multicast MAC address, not a device's")
    if digits in ("000000000000", "ffffffffffff"):
        raise ValueError(f"{value!r} is not a device's MAC address")
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def mac_filename(mac: str) -> str:
    """The device-file stem for a MAC: lowercase, no separators (``0080f0000001``)."""
    return normalize_mac(mac).replace(":", "")


def _e164(value: str) -> str:
    if not _E164_RE.match(value):
        raise ValueError(f"{value!r} is not an E.164 number with '+' (like +390212345601)")
    return value


def _vat(value: str) -> str:
    """Italian VAT number: ``IT`` + 11 digits with the partita IVA check digit."""
    m = re.fullmatch(r"IT(\d{11})", value)
    if not m:
        raise ValueError(f"{value!r} is not an Italian VAT number (IT + 11 digits)")
    digits = [int(c) for c in m.group(1)]
    odd = sum(digits[0:10:2])
    even = sum(d * 2 - 9 if d * 2 > 9 else d * 2 for d in digits[1:10:2])
    if (10 - (odd + even) % 10) % 10 != digits[10]:
        raise ValueError(f"{value!r} has a wrong check digit")
    return value


def _regex(pattern: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.match(value):
            raise ValueError(f"{value!r} is not {what}")
        return value

    return AfterValidator(check)


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _no_int_for_str(value: Any) -> Any:
    # YAML reads an unquoted +390612340000 as an integer: say how to fix it.
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(f"{value} must be a quoted string (write it in quotes)")
    return value


Mac = Annotated[str, AfterValidator(normalize_mac)]
E164 = Annotated[str, BeforeValidator(_no_int_for_str), AfterValidator(_e164)]
Ident = Annotated[str, _regex(_ID_RE, "an id (lowercase letters, digits, '-')")]
Text = Annotated[str, AfterValidator(_not_blank), Field(max_length=200)]
Secret = Annotated[str, Field(min_length=8, max_length=128)]
Short = Annotated[int, Field(ge=10, le=999999)]


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
    single: list[E164] = []
    gnr: list[GnrRange] = []
    isdn_groups: list[list[E164]] = []


class Site(_Strict):
    id: Ident
    address: Text
    connectivity: Literal["adsl", "fttc", "ftth", "fwa"]
    # Access credentials of the site's line; generated when missing.
    pppoe_username: Annotated[str, Field(min_length=1, max_length=128)] | None = None
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
        | list[Literal["my_conference", "my_conference_large"]]
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
    handsets: list[Handset] | None = None
    fax_pos: list[Literal["fax", "pos"]] | None = None
    admin_password: Secret | None = None
    snmp_community: Secret | None = None
    snmp_auth_key: Secret | None = None
    snmp_priv_key: Secret | None = None
    ploam_password: Annotated[str, Field(min_length=10, max_length=10)] | None = None

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
    sites: Annotated[list[Site], Field(min_length=1)]
    extensions: Annotated[list[Extension], Field(min_length=1)]
    devices: list[Device] = []


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

# --------------------------------------------------------------------------- YAML with lines


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a document: where (path and line) and what."""

    path: str
    message: str
    limit: str = ""
    line: int | None = None

    def format(self, file: str, order: str) -> str:
        where = f"{file}:{self.line}" if self.line else file
        text = f"{where}: {order or '?'}: {self.path or '(document)'}: {self.message}"
        return f"{text} ({self.limit})" if self.limit else text


def format_path(loc: tuple[int | str, ...]) -> str:
    """``("extensions", 2, "type")`` -> ``extensions[2].type``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and records the line of every node."""


def _compose(
    loader: _LineLoader,
    node: yaml.Node,
    path: tuple[int | str, ...],
    lines: dict[tuple[int | str, ...], int],
) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int) or isinstance(key, bool):
                raise DocumentProblem(
                    Problem(format_path(path), f"key {key!r} is not a name", line=lines[path])
                )
            if key in out:
                raise DocumentProblem(
                    Problem(
                        format_path((*path, key)),
                        "duplicate key",
                        line=key_node.start_mark.line + 1,
                    )
                )
            out[key] = _compose(loader, value_node, (*path, key), lines)
            lines.setdefault((*path, key), key_node.start_mark.line + 1)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_compose(loader, item, (*path, i), lines) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


class DocumentProblem(Exception):
    """Raised while reading YAML; carries the one :class:`Problem`."""

    def __init__(self, problem: Problem):
        self.problem = problem
        super().__init__(problem.message)


@dataclass
class ParsedDocument:
    """Result of reading one file: the typed order (if its shape is right) and the problems."""

    file: str
    order_id: str
    data: Any
    lines: dict[tuple[int | str, ...], int]
    document: OrderDocument | None
    problems: list[Problem]

    def line_of(self, path: tuple[int | str, ...]) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)


def load_yaml(text: str) -> tuple[Any, dict[tuple[int | str, ...], int]]:
    """Parse one YAML document; raise :class:`DocumentProblem` with a line on any error."""
    loader = _LineLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise DocumentProblem(Problem("", "the file is empty", line=1))
        lines: dict[tuple[int | str, ...], int] = {}
        return _compose(loader, node, (), lines), lines
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        message = exc.problem or "invalid YAML"
        raise DocumentProblem(Problem("", f"YAML syntax: {message}", line=line)) from None
    except yaml.YAMLError as exc:
        raise DocumentProblem(Problem("", f"YAML: {exc}".splitlines()[0])) from None
    finally:
        loader.dispose()


def _pydantic_problems(exc: ValidationError, parsed: ParsedDocument) -> list[Problem]:
    problems = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = tuple(err["loc"])
        # Union and Literal errors repeat the location with the member type: keep the path clean.
        clean = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or "'" in p)))
        kind = err["type"]
        key = next((p for p in reversed(clean) if isinstance(p, str)), "")
        if kind == "extra_forbidden":
            message = "unknown key"
        elif kind == "missing":
            message = "required key is missing"
        elif kind == "literal_error":
            message = f"must be one of {err.get('ctx', {}).get('expected', '')}"
        else:
            message = err["msg"].removeprefix("Value error, ")
        if key in SECRET_KEYS and kind not in ("extra_forbidden", "missing"):
            message = "not a valid secret (8 to 128 characters of text)"
            if key == "ploam_password":
                message = "not a valid PLOAM password (exactly 10 characters)"
        problems.append(Problem(format_path(clean), message, line=parsed.line_of(clean)))
    # One problem per path: unions report every member's complaint.
    seen: set[str] = set()
    unique = []
    for p in problems:
        if p.path not in seen:
            seen.add(p.path)
            unique.append(p)
    return unique


def parse_text(text: str, file: str = "<text>") -> ParsedDocument:
    """Read one order document. Never raises for bad input: problems are in the result."""
    try:
        data, lines = load_yaml(text)
    except DocumentProblem as exc:
        # Name the order even when the YAML doesn't parse, if its id line is readable.
        m = re.search(r"^order:\s*['\"]?([A-Za-z0-9][A-Za-z0-9._-]*)", text, re.MULTILINE)
        return ParsedDocument(file, m.group(1) if m else "", None, {}, None, [exc.problem])
    order_id = ""
    if isinstance(data, dict) and isinstance(data.get("order"), str):
        order_id = data["order"]
    parsed = ParsedDocument(file, order_id, data, lines, None, [])
    if not isinstance(data, dict):
        parsed.problems.append(Problem("", "an order document must be a mapping", line=1))
        return parsed
    try:
        parsed.document = OrderDocument.model_validate(data)
    except ValidationError as exc:
        parsed.problems.extend(_pydantic_problems(exc, parsed))
    return parsed


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
