"""Settings from one place: environment variables (``PROVISIONER_*``) over an optional file.

One :class:`Settings` class (pydantic-settings). Its sources, strongest first: values given
to the constructor, the environment (``PROVISIONER_<NAME>``), the settings file, the
defaults below. The file is ``$PROVISIONER_HOME/settings.toml``, or the path in
``PROVISIONER_SETTINGS`` (empty: no file); its keys are the lower-case names below without
the prefix, and a key it does not know is an error (a typo must not pass silently).

:func:`load_settings` is the entry point: it reads the process's environment (or the mapping
it is given) and turns any wrong value into one :class:`~provisioner.errors.SettingsError`
line, ``setting PROVISIONER_<NAME>: ...``. Every setting is listed in the README.
"""

from __future__ import annotations

import ipaddress
import math
import os
import tomllib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from provisioner.errors import SettingsError

ENV_PREFIX = "PROVISIONER_"
FILE_NAME = "settings.toml"
# Settings whose value an error message must never repeat.
_SECRET = frozenset({"secret_key"})

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
N = TypeVar("N", int, float)

# The environment load_settings was given (None: the process's own).
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("provisioner_environ", default=None)


def _default_home() -> Path:
    return Path.home() / ".local" / "share" / "provisioner"


def _positive(value: N) -> N:
    # NaN and infinity would switch a limit off as surely as zero.
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{value} is not a positive number")
    return value


# A limit that makes no sense at zero or below (a typo must not switch a limit off).
PositiveInt = Annotated[int, AfterValidator(_positive)]
PositiveFloat = Annotated[float, AfterValidator(_positive)]


def _items(text: str) -> Iterator[str]:
    """The non-empty items of a comma-separated setting."""
    return (item.strip() for item in text.split(",") if item.strip())


def _networks(text: str, what: str) -> list[Network]:
    out = []
    for item in _items(text):
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not {what}") from None
    return out


class Settings(BaseSettings):
    """Everything the provisioner can be told. Frozen (and hashable): read it, never set it."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        frozen=True,
        extra="forbid",
        coerce_numbers_to_str=True,  # `voicemail_number = 98` in the file is the text "98"
        validate_default=True,
    )

    # Where the store, the secret key and the settings file live.
    home: Path = Field(default_factory=_default_home)
    database_url: str | None = None  # default: SQLite in home
    secret_key: str | None = Field(default=None, repr=False)
    secret_key_file: str | None = None  # default: home/secret.key
    log_level: str = "INFO"
    # Voice platform the devices register to.
    sip_domain: str = "voip.officesmart.example"
    sip_registrar: str = "sip.officesmart.example"
    sip_registrar_port: int = 5060
    sip_outbound_proxy: str = ""  # host[:port]; empty: none
    sip_transport: str = "udp"
    voicemail_number: str = "*98"
    # Resync (SIP NOTIFY check-sync through the registrar): after a publish that changed a
    # device's served files, tell it to re-fetch, once per device per burst of writes
    # (debounce), each NOTIFY waiting at most resync_timeout seconds for its answer.
    resync_after_publish: bool = False
    resync_debounce_seconds: PositiveFloat = 0.5
    resync_timeout: PositiveFloat = 2.0
    # The address the NOTIFYs leave from (the registrar relays them only from it); empty:
    # the one the system picks.
    resync_source_address: str = ""
    # Where devices fetch their files.
    provisioning_host: str = "prov.officesmart.example"
    ntp_servers: str = "0.it.pool.ntp.org,1.it.pool.ntp.org"
    timezone: str = "Europe/Rome"
    template_override_dir: str | None = None
    # Access network conventions (Italian FTTx): every value a setting.
    wan_data_vlan: int = 835
    wan_voice_vlan: int = 836
    adsl_vpi: int = 8
    adsl_vci: int = 35
    lan_voice_vlan: int = 20
    lan_data_vlan: int = 1
    # Serving.
    tftp_port: int = 69
    http_port: int = 80
    https_port: int = 443
    bind_address: str = "0.0.0.0"  # noqa: S104 - a provisioning server listens for the LAN
    # Serving processes (``serve --workers``): they share the TFTP and HTTP(S) ports, each
    # with its own in-memory index. Use one per core.
    serve_workers: PositiveInt = 1
    tls_cert: str | None = None
    tls_key: str | None = None
    enrollment_minutes: int = 120
    tftp_root: str | None = None  # static files (firmware); default: the shipped tftp_root
    sweep_max_misses: int = 20  # misses per minute from one source before it is blocked
    sweep_block_seconds: int = 900
    # Several servers behind one load balancer share the sweep guard's counts through Redis
    # (redis://host:6379/0); without it each server counts on its own.
    redis_url: str | None = None
    # HTTP limits, on every listener (device files and the REST API alike): the request head
    # (request line and header fields) in bytes and in fields, the seconds it may take to
    # arrive, the seconds a kept-alive connection may idle, and connections at once.
    http_max_header_bytes: PositiveInt = 16 * 1024
    http_max_headers: PositiveInt = 100
    http_header_timeout: PositiveFloat = 10.0
    http_keepalive_timeout: PositiveFloat = 5.0
    http_max_connections: PositiveInt = 2048
    # Proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (addresses or CIDRs,
    # comma-separated). Empty: the source of a request is always its TCP peer.
    trusted_proxies: str = ""
    # Push.
    push_concurrency: int = 20
    snmp_require_v3: bool = False
    # Where the REST API may send a push (management networks, CIDRs, comma-separated). The
    # store holds no device addresses, so an API caller names them; this keeps a token from
    # turning the server into a scanner of anything else it can reach.
    push_networks: str = (
        "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,fc00::/7"
    )
    push_jobs_running: int = 4  # API push jobs at once; more get 429
    # Where pushes run: "local" in the process that starts them (the CLI, the API), or
    # "procrastinate": on the PostgreSQL store's queue, run by `provisioner worker`.
    push_queue: Literal["local", "procrastinate"] = "local"
    push_lease: PositiveFloat = 30.0  # a running push not heard from this long has died
    # REST API limits: requests per second per token, burst, largest body in bytes.
    api_rate: PositiveFloat = 20.0
    api_burst: PositiveInt = 40
    api_max_body: PositiveInt = 1024 * 1024

    @field_validator("home")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("snmp_require_v3", mode="before")
    @classmethod
    def _empty_is_false(cls, value: object) -> object:
        # PROVISIONER_SNMP_REQUIRE_V3= (set but empty) has always meant off.
        return False if isinstance(value, str) and not value.strip() else value

    @field_validator("push_networks")
    @classmethod
    def _check_push_networks(cls, value: str) -> str:
        _networks(value, "a network")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_trusted_proxies(cls, value: str) -> str:
        _networks(value, "an address or network")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        environ = _ENVIRON.get()
        if environ is None:
            environ = os.environ
        given = init_settings.init_kwargs if isinstance(init_settings, InitSettingsSource) else {}
        home = given.get("home")
        return (
            init_settings,
            _Environment(settings_cls, environ),
            _SettingsFile(settings_cls, settings_file(environ, home)),
        )

    @property
    def data_dir(self) -> Path:
        return self.home

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'provisioner.db'}"

    @property
    def push_network_list(self) -> list[Network]:
        return _networks(self.push_networks, "a network")

    @property
    def trusted_proxy_list(self) -> list[str]:
        """The trusted proxies as uvicorn takes them (each an address or a network)."""
        nets = _networks(self.trusted_proxies, "an address or network")
        return [
            str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
            for net in nets
        ]

    @property
    def ntp_server_list(self) -> list[str]:
        return list(_items(self.ntp_servers))


class _Environment(EnvSettingsSource):
    """``PROVISIONER_*`` variables of the given environment (the process's by default)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]):
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # Names are matched case-insensitively, as pydantic-settings does by default.
        return {name.lower(): value for name, value in self._environ.items()}


class _SettingsFile(TomlConfigSettingsSource):
    """The settings file: TOML, keys named like the fields, none unknown."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None):
        super().__init__(settings_cls, toml_file=path)
        unknown = sorted(set(self.toml_data) - set(settings_cls.model_fields))
        if unknown:
            raise SettingsError(f"{path}: unknown setting {unknown[0]!r}")

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        try:
            return super()._read_file(file_path)
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise SettingsError(f"{file_path}: cannot read settings: {reason}") from None


def settings_file(environ: Mapping[str, str], home: Path | str | None = None) -> Path | None:
    """The settings file to read: ``PROVISIONER_SETTINGS`` if set (empty: none), else
    ``settings.toml`` in the home (``home``, else ``PROVISIONER_HOME``, else the default)."""
    explicit = environ.get(f"{ENV_PREFIX}SETTINGS")
    if explicit is not None:
        if not explicit.strip():
            return None
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise SettingsError(f"setting {ENV_PREFIX}SETTINGS: {path}: no such file")
        return path
    if home is None:
        home = environ.get(f"{ENV_PREFIX}HOME") or _default_home()
    return Path(home).expanduser() / FILE_NAME


def _one_line(error: ErrorDetails, environ: Mapping[str, str], file: Path | None) -> str:
    """One wrong value as the line a user sees: which setting, what is wrong, where it was."""
    name = str(error["loc"][0]) if error["loc"] else ""
    ctx = error.get("ctx") or {}
    if error["type"] == "value_error" and "error" in ctx:
        reason = str(ctx["error"])  # our own validators' sentences
    else:
        msg = error["msg"]
        shown = "(value hidden)" if name in _SECRET else _shown(error["input"])
        reason = f"{shown}: {msg[:1].lower()}{msg[1:]}"
    env_name = f"{ENV_PREFIX}{name.upper()}"
    from_env = any(key.upper() == env_name for key in environ)
    where = "" if from_env or file is None else f" (in {file})"
    return f"setting {env_name}: {reason}{where}"


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read settings: defaults, then the settings file, then the environment (``environ``,
    or the process's). Raises :class:`SettingsError` (one line) for any wrong value."""
    env = os.environ if environ is None else environ
    token = _ENVIRON.set(env)
    try:
        return Settings()
    except ValidationError as exc:
        line = _one_line(exc.errors()[0], env, settings_file(env))
        raise SettingsError(line) from None
    finally:
        _ENVIRON.reset(token)
