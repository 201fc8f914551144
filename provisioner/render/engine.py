"""Render every device's files from Jinja2 templates, and check each file before it is used.

Two layers, pure logic apart from I/O:

- :class:`RenderEngine` turns plain views (:mod:`provisioner.render.context`) into files: template
  lookup most-specific first (override folder, ``device_templates/<family>/<model>/``,
  ``device_templates/<family>/``, then a driver package's own folder), a sandboxed Jinja2
  environment with ``StrictUndefined``, and the checks of every file (it parses as its
  format, no secret of the device is empty, no other device's secret is in it).
- :class:`Renderer` reads an order from the store and hands it to the engine: the API the
  serving layer and the CLI call (``files_for_mac``, ``lookup``, ``render_order``).
"""

from __future__ import annotations

import configparser
import html
import itertools
import json
import re
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import markupsafe
import yaml
from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    FileSystemLoader,
    PrefixLoader,
    StrictUndefined,
    Template,
    TemplateError,
    TemplateNotFound,
    TemplateSyntaxError,
)
from jinja2.filters import do_urlencode
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import htmlsafe_json_dumps
from sqlalchemy import select

from provisioner import data_path
from provisioner.documents.document import normalize_mac
from provisioner.errors import DeviceUnknown, RenderError
from provisioner.render.context import (
    DeviceView,
    OrderView,
    SecretBook,
    build_order_view,
    load_order,
    load_secrets,
)
from provisioner.render.drivers import Registry, default_registry
from provisioner.render.drivers.base import Driver, FileSpec
from provisioner.settings import Settings
from provisioner.store.models import Device, Order

# Package data: provisioner/device_templates in the wheel, device_templates/ in a checkout.
BUILTIN_TEMPLATES = data_path("device_templates")
MASK = "********"
_SERIAL = re.compile(r"^[A-Z]{4}[0-9A-F]{8}$")  # GPON serial: vendor id + 8 hex digits


# ---------------------------------------------------------------------- results


@dataclass(frozen=True)
class DeviceKey:
    """Which device a file belongs to (what the serving layer arms, binds and audits)."""

    order_id: str
    device_id: str
    model: str
    mac: str = ""
    serial: str = ""

    def __str__(self) -> str:
        return f"{self.order_id}/{self.device_id}"


@dataclass(frozen=True)
class RenderedFile:
    """One checked file. ``secrets``: the values in it, for :func:`mask`; never log them."""

    name: str
    data: bytes
    device_id: str
    mac: str
    secrets: list[str] = field(default_factory=list, repr=False)
    model: str = ""
    format: str = ""
    served: bool = True  # False: pushed to the device or shown to the technician

    def masked(self) -> bytes:
        return mask(self.data, self.secrets)


# ---------------------------------------------------------------------- value filters


@dataclass(frozen=True)
class ValueFilter:
    """A Jinja filter that writes one value (a name, a password) into a file format.

    Masking finds a secret by its spelling in each format, and the spelling is derived from
    the filter itself: its output for the secret, without the quotes it put around it (so a
    masked file keeps them). A filter registered with :func:`value_filter` is both given to
    the templates and known to :func:`secret_forms`: none can be forgotten.
    """

    name: str
    fn: Callable[[Any], str]

    def spelling(self, secret: str) -> str:
        out = self.fn(secret)
        if len(out) >= 2 and out[0] == out[-1] == '"' and not secret.startswith('"'):
            return out[1:-1]
        return out


VALUE_FILTERS: dict[str, ValueFilter] = {}


def value_filter(name: str) -> Callable[[Callable[[Any], str]], Callable[[Any], str]]:
    """Register ``fn`` as the template filter ``name`` (see :class:`ValueFilter`)."""

    def register(fn: Callable[[Any], str]) -> Callable[[Any], str]:
        VALUE_FILTERS[name] = ValueFilter(name, fn)
        return fn

    return register


@value_filter("ini")
def _ini(value: Any) -> str:
    # A line break in a name would start a new INI key: no value may hold one.
    return re.sub(r"[\r\n]+", " ", "" if value is None else str(value))


_CLI_PLAIN = re.compile(r'^[^\s"\\]+$')


@value_filter("cli")
def cli_quote(value: Any) -> str:
    """A value in the IAD CLI dialect: bare, or double-quoted with ``\\"`` and ``\\\\``."""
    text = re.sub(r"[\r\n]+", " ", "" if value is None else str(value))
    if _CLI_PLAIN.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@value_filter("jstr")
def _jstr(value: Any) -> str:
    """A JSON string literal; also a valid YAML double-quoted scalar and dnsmasq string."""
    return json.dumps("" if value is None else str(value), ensure_ascii=False)


@value_filter("dlink")
def dlink_quote(value: Any) -> str:
    """A D-Link CLI argument: quoted when it holds a space (the CLI knows no escapes)."""
    text = re.sub(r"\s+", " ", "" if value is None else str(value)).replace('"', "'")
    return text if text and " " not in text else f'"{text}"'


def kea_mac(mac: str) -> str:
    """A Kea class test matching one client's hardware address."""
    return f"hexstring(pkt4.mac, ':') == '{mac}'"


def portlist(ports: Iterable[int]) -> str:
    """``[1, 2, 3, 5]`` -> ``1-3,5`` (D-Link port lists)."""
    nums = sorted(set(ports))
    out: list[str] = []
    i = 0
    while i < len(nums):
        j = i
        while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
            j += 1
        out.append(str(nums[i]) if i == j else f"{nums[i]}-{nums[j]}")
        i = j + 1
    return ",".join(out)


# Filters that never take a secret: port numbers, a device's MAC.
OTHER_FILTERS: dict[str, Callable[..., str]] = {"portlist": portlist, "kea_mac": kea_mac}


# ---------------------------------------------------------------------- secrets


def _unquoted(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


@lru_cache(maxsize=4096)
def secret_forms(value: str) -> tuple[str, ...]:
    """The spellings a secret may take in a file: raw, through each value filter, XML-escaped
    (autoescape, Jinja's ``|e``), and as Jinja's ``|tojson`` and ``|urlencode`` write it."""
    forms = {
        value,
        *(f.spelling(value) for f in VALUE_FILTERS.values()),
        str(markupsafe.escape(value)),
        html.escape(value, quote=True),
        html.escape(value, quote=False),
        value.replace("\\", "\\\\").replace('"', '\\"'),
        json.dumps(value, ensure_ascii=False)[1:-1],
        _unquoted(str(htmlsafe_json_dumps(value))),
        do_urlencode(value),
    }
    # Longest first, so a form is never cut in half by a shorter one.
    return tuple(sorted((f for f in forms if f), key=len, reverse=True))


def mask(data: bytes, secrets: Iterable[str]) -> bytes:
    """``data`` with every secret (in any spelling a template gives it) replaced by ********."""
    text = data.decode("utf-8")
    forms = sorted({f for s in secrets if s for f in secret_forms(s)}, key=len, reverse=True)
    for form in forms:
        text = text.replace(form, MASK)
    return text.encode("utf-8")


# ---------------------------------------------------------------------- checks

# libyaml's safe loader when built in: the pure-Python one is 20x slower on set-plans.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SECTION = re.compile(r"^[ \t]*\[[ \t]*(?P<header>[^\]\n]+?)[ \t]*\][ \t]*$", re.MULTILINE)
_CLI_LINE = re.compile(r'^set(?: [a-z0-9][a-z0-9_.-]*)+ (?:[^\s"\\]+|"(?:[^"\\]|\\["\\])*")$')
_DLINK_LINE = re.compile(r"^(config|create|delete|enable|disable|save)\b")


def parse_temporis_ini(text: str) -> list[tuple[str, configparser.SectionProxy]]:
    """Parse the Temporis INI (``[ section ]`` + ``path=``) with configparser.

    Sections repeat (one ``[ account ]`` per SIP account), so each is numbered before
    configparser reads it in strict mode: a duplicate *key* in one section is still an error.
    Returns (section name, its keys) in file order.
    """
    counter = itertools.count(1)
    numbered = _SECTION.sub(lambda m: f"[{next(counter)}#{m.group('header')}]", text)
    parser = configparser.ConfigParser(
        interpolation=None, strict=True, delimiters=("=",), comment_prefixes=("#", ";")
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(numbered)
    return [(_shown(name), parser[name]) for name in parser.sections()]


def _shown(section: str) -> str:
    """A section's name as written (``parse_temporis_ini`` numbers the headers it can)."""
    number, hash_, name = section.partition("#")
    return name if hash_ and number.isdigit() else section


_CP_SECTION = re.compile(r"\[(?P<header>.+)\]")  # configparser's SECTCRE
_CP_NONSPACE = re.compile(r"\S")


def check_temporis_ini(text: str) -> None:
    """Raise ValueError (short reason, with the line) unless ``text`` is a Temporis INI file
    that :func:`parse_temporis_ini` reads, with a non-empty ``path=`` in every section.

    The same rules as configparser in the strict mode that function uses (whole-line ``#``/``;``
    comments, ``key = value`` lines, deeper-indented lines continuing the previous value, a
    duplicate key in one section refused, ``[DEFAULT]`` keys inherited), in one pass without
    building a parser: this runs on every phone file at every publish, and configparser was
    a third of a republish. ``tests/render/test_ini_check.py`` holds the two to the same
    answers.
    """
    sections: dict[str, dict[str, list[str]]] = {}
    defaults: dict[str, list[str]] = {}
    cursect: dict[str, list[str]] | None = None
    optname: str | None = None
    indent_level = 0
    counter = 0
    for lineno, line in enumerate(text.split("\n"), 1):
        value = line.strip()
        if not value or value[0] in "#;":
            if not value and cursect is not None and optname:
                cursect[optname].append("")
            continue
        numbered = _SECTION.fullmatch(line)
        if numbered:  # what parse_temporis_ini numbers (and unindents): never a duplicate
            counter += 1
            cursect = sections[f"{counter}#{numbered.group('header')}"] = {}
            optname, indent_level = None, 0
            continue
        first = _CP_NONSPACE.search(line)
        cur_indent = first.start() if first else 0
        if cursect is not None and optname and cur_indent > indent_level:
            cursect[optname].append(value)
            continue
        indent_level = cur_indent
        header = _CP_SECTION.match(value)
        if header is not None:
            name = header.group("header")
            if name in sections:
                raise ValueError(f"line {lineno}: section [{name}] twice")
            cursect = defaults if name == "DEFAULT" else sections.setdefault(name, {})
            optname = None
            continue
        if cursect is None:
            raise ValueError(f"line {lineno}: a key before any [ section ]")
        key, eq, rest = value.partition("=")
        key = key.rstrip()
        if not eq or not key:
            raise ValueError(f"line {lineno}: not key = value: {value[:40]!r}")
        if key in cursect:
            raise ValueError(f"line {lineno}: key {key!r} twice in one section")
        cursect[key] = [rest.strip()]
        optname = key
    if not sections:
        raise ValueError("no section")
    for name, keys in sections.items():
        path = keys.get("path", defaults.get("path"))
        if not path or not "\n".join(path).rstrip():
            raise ValueError(f"section [ {_shown(name)} ] has no path=")


# Formats a FileSpec may declare: each has its check in check_format.
FORMATS = ("ini", "xml", "json", "yaml", "iad-cli", "dlink-cli", "text")


def check_format(fmt: str, text: str) -> None:
    """Raise ValueError (short reason) unless ``text`` parses as ``fmt``."""
    if fmt == "ini":
        check_temporis_ini(text)
    elif fmt == "xml":
        try:
            ET.fromstring(text)  # noqa: S314 - parsing our own output, not untrusted input
        except ET.ParseError as exc:
            raise ValueError(f"XML: {exc}") from None
    elif fmt == "json":
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"JSON: {exc}") from None
    elif fmt == "yaml":
        try:
            data = yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 - a safe loader
        except yaml.YAMLError as exc:
            raise ValueError(f"YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise ValueError("YAML: not a mapping")
    elif fmt == "iad-cli":
        lines = text.splitlines()
        for n, line in enumerate(lines, 1):
            if not _CLI_LINE.match(line):
                raise ValueError(f"line {n} is not a set command")
        if lines != sorted(lines):
            raise ValueError("lines are not sorted")
    elif fmt == "dlink-cli":
        for n, line in enumerate(text.splitlines(), 1):
            if not _DLINK_LINE.match(line) or line.count('"') % 2:
                raise ValueError(f"line {n} is not a D-Link command")
    elif fmt != "text":
        raise ValueError(f"unknown format {fmt}")


# ---------------------------------------------------------------------- engine


class RenderEngine:
    """Pure rendering: plain views in, checked files out. Compiled templates are cached."""

    def __init__(self, settings: Settings, registry: Registry | None = None):
        self.settings = settings
        self.registry = registry or default_registry()
        roots: list[Path] = []
        if settings.template_override_dir:
            roots.append(Path(settings.template_override_dir).expanduser())
        roots.append(BUILTIN_TEMPLATES)
        for drv in self.registry.drivers():
            if drv.template_dir is not None and drv.template_dir not in roots:
                roots.append(drv.template_dir)
        self.roots = roots
        prefixed: dict[str, BaseLoader] = {
            f"r{i}": FileSystemLoader(str(r)) for i, r in enumerate(roots)
        }
        self.env = SandboxedEnvironment(
            # Prefixed names pick one root; plain names (in {% import %}) search every root
            # in order, so an override folder can replace a shared macro file too.
            loader=ChoiceLoader(
                [PrefixLoader(prefixed), FileSystemLoader([str(r) for r in roots])]
            ),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=lambda name: bool(name) and (name.endswith((".xml.j2", ".xml"))),
            auto_reload=False,
        )
        self.env.filters.update({name: f.fn for name, f in VALUE_FILTERS.items()})
        self.env.filters.update(OTHER_FILTERS)
        self._templates: dict[tuple[str, str, str], Template] = {}
        self._lock = threading.Lock()

    def driver_for(self, model: str) -> Driver:
        return self.registry.for_model(model)

    def template(self, family: str, model: str, name: str) -> Template:
        """Most specific first: per root, ``<family>/<model>/<name>`` then ``<family>/<name>``."""
        key = (family, model, name)
        tpl = self._templates.get(key)
        if tpl is not None:
            return tpl
        candidates = []
        for i in range(len(self.roots)):
            candidates += [f"r{i}/{family}/{model}/{name}", f"r{i}/{family}/{name}"]
        try:
            tpl = self.env.select_template(candidates)
        except TemplateNotFound:
            raise RenderError(
                f"template {family}/{name} for {model}: not found in "
                + ", ".join(str(r) for r in self.roots)
            ) from None
        except TemplateSyntaxError as exc:
            raise RenderError(
                f"template {exc.filename or name} line {exc.lineno}: {exc.message}"
            ) from None
        except TemplateError as exc:
            raise RenderError(f"template {family}/{name}: {exc}") from None
        with self._lock:
            self._templates[key] = tpl
        return tpl

    def render_device(
        self,
        order: OrderView,
        secrets: SecretBook,
        device: DeviceView,
        *,
        served_only: bool = False,
        shared: dict[tuple[str, str, str], str] | None = None,
        only: str | None = None,
    ) -> dict[str, RenderedFile]:
        """Every file of ``device`` (only those it fetches with ``served_only``), checked.

        ``shared``: a cache of files that are the same for every device of one order (the
        phonebook), for rendering a whole order; never reuse it across orders. ``only``: just
        that file (a device's request), with the same checks.
        """
        drv = self.driver_for(device.model)
        where = f"order {order.order_id}: device {device.device_id}"
        owned_keys = drv.owned_secrets(device, order)
        own: list[str] = []
        for owner, name in owned_keys:
            value = secrets.get(owner, name)
            if not value:
                raise RenderError(f"{where}: secret {name} of {owner} is empty")
            own.append(value)
        own_set = set(own)
        owned_set = set(owned_keys)
        others = [
            (k, v) for k, v in secrets.items() if k not in owned_set and v and v not in own_set
        ]
        ctx: dict[str, Any] | None = None
        out: dict[str, RenderedFile] = {}
        for fname, spec in drv.file_specs(device):
            if (served_only and not spec.served) or (only is not None and fname != only):
                continue
            if ctx is None:
                ctx = drv.context(device, order, secrets, self.settings)
            skey = (spec.family or drv.family, device.model, spec.template)
            if spec.shared and shared is not None and skey in shared:
                text = shared[skey]
            else:
                text = self._render_one(drv, spec, device, ctx, where, fname)
                if spec.shared and shared is not None:
                    shared[skey] = text
            for (owner, _name), value in others:
                if any(form in text for form in secret_forms(value)):
                    raise RenderError(
                        f"{where}: file {fname}: holds a secret of {owner} (another device)"
                    )
            out[fname] = RenderedFile(
                name=fname,
                data=text.encode("utf-8"),
                device_id=device.device_id,
                mac=device.mac,
                secrets=[s for s in own if any(f in text for f in secret_forms(s))],
                model=device.model,
                format=spec.format,
                served=spec.served,
            )
        return out

    def _render_one(
        self,
        drv: Driver,
        spec: FileSpec,
        device: DeviceView,
        ctx: dict[str, Any],
        where: str,
        fname: str,
    ) -> str:
        try:
            tpl = self.template(spec.family or drv.family, device.model, spec.template)
        except RenderError as exc:
            raise RenderError(f"{where}: file {fname}: {exc}") from None
        try:
            text = drv.finish(spec, tpl.render(ctx))
        except TemplateError as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise RenderError(f"{where}: file {fname}: template {tpl.name}: {msg}") from None
        try:
            check_format(spec.format, text)
        except ValueError as exc:
            raise RenderError(f"{where}: file {fname}: not valid {spec.format}: {exc}") from None
        return text

    def render_all(self, order: OrderView, secrets: SecretBook) -> dict[str, RenderedFile]:
        """Every file of every device of the order (planned devices: what they have)."""
        out: dict[str, RenderedFile] = {}
        shared: dict[tuple[str, str, str], str] = {}
        for device in order.devices:
            if not self.registry.has_model(device.model):
                continue  # handsets-only models etc. have no files of their own
            for name, f in self.render_device(order, secrets, device, shared=shared).items():
                if name in out:
                    raise RenderError(
                        f"order {order.order_id}: file {name} of {f.device_id} is also "
                        f"{out[name].device_id}'s"
                    )
                out[name] = f
        return out


# ---------------------------------------------------------------------- store-facing API


class Renderer:
    """Files for devices in the store: the serving layer's and the CLI's entry point.

    ``Renderer(settings, inventory)``; every method opens its own read session. Files of a
    cancelled order are never handed out by :meth:`files_for_mac` or :meth:`lookup`.
    """

    def __init__(self, settings: Settings, inventory: Any, registry: Registry | None = None):
        self.settings = settings
        self.inventory = inventory
        self.engine = RenderEngine(settings, registry)

    def _views(self, session: Any, order: Order) -> tuple[OrderView, SecretBook]:
        order = load_order(session, order.id)
        return build_order_view(order), load_secrets(session, order, self.inventory.vault.decrypt)

    @staticmethod
    def key(order: OrderView, device: DeviceView) -> DeviceKey:
        return DeviceKey(order.order_id, device.device_id, device.model, device.mac, device.serial)

    def device_files(
        self, mac: str, *, served_only: bool = False
    ) -> tuple[DeviceKey, dict[str, RenderedFile]]:
        """The device with this MAC (or GPON serial, for a Mini ONT) and all its files
        (also the pushed/shown ones unless ``served_only``)."""
        # "ABCDEF123456" is both a GPON serial and a MAC spelling: try the serial first.
        candidates: list[tuple[Any, str, str]] = []
        serial = mac.strip().upper()
        if _SERIAL.match(serial):
            candidates.append((Device.serial, serial, "serial"))
        try:
            candidates.append((Device.mac, normalize_mac(mac), "MAC"))
        except ValueError as exc:
            if not candidates:
                raise DeviceUnknown(str(exc)) from None  # says what is wrong with it
        with self.inventory.db.read() as session:
            row = None
            for column, value, _what in candidates:
                row = session.scalar(select(Device).where(column == value))
                if row is not None:
                    break
            if row is None:
                _, value, what = candidates[-1]
                raise DeviceUnknown(f"{what} {value}: no device with this {what} in the store")
            order, secrets = self._views(session, row.order)
            state = row.order.state
        device = order.device(row.device_id)
        if served_only and state != "active":
            return self.key(order, device), {}
        if not self.engine.registry.has_model(device.model):
            return self.key(order, device), {}
        files = self.engine.render_device(order, secrets, device, served_only=served_only)
        return self.key(order, device), files

    def files_for_mac(self, mac: str) -> dict[str, bytes]:
        """Every file a device with this MAC may fetch: name -> bytes, secrets included.

        Empty for an unknown MAC or a cancelled order.
        """
        try:
            _key, files = self.device_files(mac, served_only=True)
        except DeviceUnknown:
            return {}
        return {name: f.data for name, f in files.items()}

    def lookup(self, filename: str) -> tuple[DeviceKey, bytes] | None:
        """Which device a requested file name belongs to, and the file; None if nobody's."""
        name = filename.lstrip("/")
        identities = {i for d in self.engine.registry.drivers() if (i := d.match(name))}
        for ident in identities:
            with self.inventory.db.read() as session:
                column = Device.mac if ident.mac else Device.serial
                row = session.scalar(select(Device).where(column == (ident.mac or ident.serial)))
                if row is None or row.order.state != "active":
                    continue
                if not self.engine.registry.has_model(row.model):
                    continue
                order, secrets = self._views(session, row.order)
            device = order.device(row.device_id)
            files = self.engine.render_device(order, secrets, device, served_only=True, only=name)
            if name in files:
                return self.key(order, device), files[name].data
        return None

    def render_order(self, order_id: str) -> dict[str, RenderedFile]:
        """Every file of every device of the order: name -> :class:`RenderedFile`."""
        order, secrets = self.order_views(order_id)
        return self.engine.render_all(order, secrets)

    def render_device(self, order_id: str, device_id: str) -> dict[str, RenderedFile]:
        order, secrets = self.order_views(order_id)
        return self.engine.render_device(order, secrets, order.device(device_id))

    def push_payload(self, order_id: str, device_id: str) -> tuple[str, RenderedFile] | None:
        """What the pusher applies to a pushed device: ("ssh", the IAD's CLI lines) or
        ("snmp", the switch's set-plan); None for a device that pulls its files."""
        order, secrets = self.order_views(order_id)
        device = order.device(device_id)
        drv = self.engine.driver_for(device.model)
        if drv.push is None or drv.push_file is None:
            return None
        name = drv.push_file.format(
            device_id=device.device_id, mac12=device.mac12, serial=device.serial
        )
        files = self.engine.render_device(order, secrets, device)
        return drv.push, files[name]

    def order_views(self, order_id: str) -> tuple[OrderView, SecretBook]:
        with self.inventory.db.read() as session:
            return self._views(session, self.inventory.get(session, order_id))

    def unrendered(self, order_id: str) -> list[str]:
        """Devices of the order that have no file yet, and why (planned: no MAC/serial)."""
        order, _ = self.order_views(order_id)
        out = []
        for d in order.devices:
            if not self.engine.registry.has_model(d.model):
                continue
            drv = self.engine.driver_for(d.model)
            missing = [s.pattern for s in drv.files if s.name_for(d) is None]
            if missing:
                what = "MAC" if any("{mac12}" in p for p in missing) else "serial"
                out.append(f"{d.device_id}: planned (no {what} yet): {', '.join(missing)}")
        return out
