"""Settings from one place: environment variables (``PROVISIONER_*``) over an optional file.

The optional file is ``$PROVISIONER_HOME/settings.toml`` (or the path in
``PROVISIONER_SETTINGS``); keys are the lower-case names below without the prefix.
Every setting is listed in the README.
"""

from __future__ import annotations

import ipaddress
import math
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from provisioner.errors import SettingsError

ENV_PREFIX = "PROVISIONER_"


def _default_home() -> Path:
    return Path.home() / ".local" / "share" / "provisioner"


@dataclass(frozen=True)
class Settings:
    """Everything the provisioner can be told. Environment wins over the settings file."""

    home: Path = field(default_factory=_default_home)
    database_url: str = ""
    secret_key: str = ""
    secret_key_file: str = ""
    log_level: str = "INFO"
    # Voice platform the devices register to.
    sip_domain: str = "voip.officesmart.example"
    sip_registrar: str = "sip.officesmart.example"
    sip_registrar_port: int = 5060
    sip_outbound_proxy: str = ""
    sip_transport: str = "udp"
    voicemail_number: str = "*98"
    # Where devices fetch their files.
    provisioning_host: str = "prov.officesmart.example"
    ntp_servers: str = "0.it.pool.ntp.org,1.it.pool.ntp.org"
    timezone: str = "Europe/Rome"
    template_override_dir: str = ""
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
    tls_cert: str = ""
    tls_key: str = ""
    enrollment_minutes: int = 120
    tftp_root: str = ""  # static files (firmware); default: the repository's tftp_root/
    sweep_max_misses: int = 20  # misses per minute from one source before it is blocked
    sweep_block_seconds: int = 900
    # HTTP limits, on every listener (device files and the REST API alike): the request head
    # (request line and header fields) in bytes and in fields, the seconds it may take to
    # arrive, the seconds a kept-alive connection may idle, and connections at once.
    http_max_header_bytes: int = 16 * 1024
    http_max_headers: int = 100
    http_header_timeout: float = 10.0
    http_keepalive_timeout: float = 5.0
    http_max_connections: int = 2048
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
    # REST API limits: requests per second per token, burst, largest body in bytes.
    api_rate: float = 20.0
    api_burst: int = 40
    api_max_body: int = 1024 * 1024

    def __post_init__(self) -> None:
        for name in _POSITIVE:
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):  # NaN and infinity switch a limit off
                raise SettingsError(
                    f"setting {ENV_PREFIX}{name.upper()}: {value} is not a positive number"
                )
        self.trusted_proxy_list  # noqa: B018 - a bad proxy is an error at start

    @property
    def data_dir(self) -> Path:
        return Path(self.home)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'provisioner.db'}"

    @property
    def push_network_list(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        out = []
        for item in self.push_networks.split(","):
            if item.strip():
                try:
                    out.append(ipaddress.ip_network(item.strip(), strict=False))
                except ValueError:
                    raise SettingsError(
                        f"setting {ENV_PREFIX}PUSH_NETWORKS: {item.strip()!r} is not a network"
                    ) from None
        return out

    @property
    def trusted_proxy_list(self) -> list[str]:
        """The trusted proxies as uvicorn takes them (each an address or a network)."""
        out = []
        for item in self.trusted_proxies.split(","):
            text = item.strip()
            if not text:
                continue
            try:
                net = ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise SettingsError(
                    f"setting {ENV_PREFIX}TRUSTED_PROXIES: {text!r} is not an address or network"
                ) from None
            one = net.prefixlen == net.max_prefixlen
            out.append(str(net.network_address) if one else str(net))
        return out

    @property
    def ntp_server_list(self) -> list[str]:
        return [s.strip() for s in self.ntp_servers.split(",") if s.strip()]


# Limits that make no sense at zero or below (a typo must not switch a limit off).
_POSITIVE = (
    "http_max_header_bytes",
    "http_max_headers",
    "http_header_timeout",
    "http_keepalive_timeout",
    "http_max_connections",
)


def _coerce(name: str, raw: Any, target: Any) -> Any:
    try:
        if target is bool:
            if isinstance(raw, bool):
                return raw
            value = str(raw).strip().lower()
            if value in {"1", "true", "yes", "on"}:
                return True
            if value in {"0", "false", "no", "off", ""}:
                return False
            raise ValueError(raw)
        if target is int:
            return int(raw)
        if target is float:
            return float(raw)
        if target is Path:
            return Path(str(raw)).expanduser()
        return str(raw)
    except ValueError:
        raise SettingsError(
            f"setting {ENV_PREFIX}{name.upper()}: {raw!r} is not a valid {target.__name__}"
        ) from None


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read settings: defaults, then the settings file, then the environment."""
    env = dict(os.environ if environ is None else environ)
    types = {f.name: f.type for f in fields(Settings)}
    type_map = {"Path": Path, "str": str, "int": int, "bool": bool, "float": float}
    values: dict[str, Any] = {}

    home_raw = env.get(f"{ENV_PREFIX}HOME")
    home = Path(home_raw).expanduser() if home_raw else _default_home()
    file_path = Path(env.get(f"{ENV_PREFIX}SETTINGS", str(home / "settings.toml")))
    if file_path.is_file():
        try:
            data = tomllib.loads(file_path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"{file_path}: cannot read settings: {exc}") from None
        for key, raw in data.items():
            if key not in types:
                raise SettingsError(f"{file_path}: unknown setting {key!r}")
            values[key] = _coerce(key, raw, type_map[str(types[key])])
    for name, type_name in types.items():
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None:
            values[name] = _coerce(name, raw, type_map[str(type_name)])
    values.setdefault("home", home)
    settings = Settings(**values)
    settings.push_network_list  # noqa: B018 - a bad network is an error at start, not at push
    return settings
