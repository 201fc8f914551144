"""Settings: environment over the settings file over defaults; every mistake one line."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from provisioner.cli.app import app as cli
from provisioner.errors import SettingsError
from provisioner.settings import Settings, load_settings


def _home(tmp_path: Path, toml: str = "") -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    if toml:
        (home / "settings.toml").write_text(toml)
    return {"PROVISIONER_HOME": str(home)}


def _error(environ: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as caught:
        load_settings(environ)
    line = str(caught.value)
    assert "\n" not in line
    return line


def test_the_environment_wins_over_the_settings_file_which_wins_over_defaults(
    tmp_path: Path,
) -> None:
    env = _home(tmp_path, 'sip_registrar = "file.example"\nhttp_port = 8080\n')
    env["PROVISIONER_SIP_REGISTRAR"] = "env.example"
    s = load_settings(env)
    assert s.sip_registrar == "env.example"
    assert s.http_port == 8080
    assert s.sip_domain == "voip.officesmart.example"
    assert s.home == tmp_path / "home"


def test_the_settings_file_can_be_named_by_provisioner_settings(tmp_path: Path) -> None:
    elsewhere = tmp_path / "prov.toml"
    elsewhere.write_text("tftp_port = 6969\n")
    env = {**_home(tmp_path, "tftp_port = 1069\n"), "PROVISIONER_SETTINGS": str(elsewhere)}
    assert load_settings(env).tftp_port == 6969
    assert load_settings({**env, "PROVISIONER_SETTINGS": ""}).tftp_port == 69  # empty: no file


def test_a_settings_file_named_but_missing_is_an_error_not_silently_skipped(
    tmp_path: Path,
) -> None:
    line = _error({"PROVISIONER_SETTINGS": str(tmp_path / "typo.toml")})
    assert line == f"setting PROVISIONER_SETTINGS: {tmp_path / 'typo.toml'}: no such file"


def test_an_unknown_key_in_the_settings_file_is_refused_naming_the_file_and_key(
    tmp_path: Path,
) -> None:
    env = _home(tmp_path, "http_port = 8080\nhtp_port = 80\n")
    assert _error(env) == f"{tmp_path / 'home' / 'settings.toml'}: unknown setting 'htp_port'"


def test_a_settings_file_that_is_not_toml_is_one_line_naming_the_file(tmp_path: Path) -> None:
    env = _home(tmp_path, "http_port = \n")
    line = _error(env)
    assert line.startswith(f"{tmp_path / 'home' / 'settings.toml'}: cannot read settings: ")


def test_a_wrong_value_names_the_setting_and_where_it_came_from(tmp_path: Path) -> None:
    env = _home(tmp_path, 'http_port = "eighty"\n')
    line = _error(env)
    assert line.startswith("setting PROVISIONER_HTTP_PORT: 'eighty': input should be a valid")
    assert line.endswith(f"(in {tmp_path / 'home' / 'settings.toml'})")
    line = _error({**env, "PROVISIONER_HTTP_PORT": "8o"})
    assert line.startswith("setting PROVISIONER_HTTP_PORT: '8o': input should be a valid")
    assert "settings.toml" not in line


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PUSH_NETWORKS", "10.0.0.0/8,mgmt", "'mgmt' is not a network"),
        ("TRUSTED_PROXIES", "10.0.0.1,proxy", "'proxy' is not an address or network"),
        ("HTTP_HEADER_TIMEOUT", "nan", "nan is not a positive number"),
        ("HTTP_MAX_CONNECTIONS", "0", "0 is not a positive number"),
        ("API_RATE", "0", "0.0 is not a positive number"),
        ("API_BURST", "-1", "-1 is not a positive number"),
        ("API_MAX_BODY", "0", "0 is not a positive number"),
    ],
)
def test_values_that_would_switch_a_protection_off_are_refused_at_start(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    line = _error({**_home(tmp_path), f"PROVISIONER_{name}": value})
    assert line == f"setting PROVISIONER_{name}: {message}"


def test_a_wrong_secret_key_is_never_echoed(tmp_path: Path) -> None:
    env = _home(tmp_path, 'secret_key = ["s3cr3t-canary"]\n')
    line = _error(env)
    assert line.startswith("setting PROVISIONER_SECRET_KEY: (value hidden): ")
    assert "s3cr3t-canary" not in line
    s = load_settings(
        {**env, "PROVISIONER_SECRET_KEY": "s3cr3t-canary", "PROVISIONER_SETTINGS": ""}
    )
    assert "s3cr3t-canary" not in repr(s)


def test_optional_settings_are_none_until_given_in_the_environment_or_the_file(
    tmp_path: Path,
) -> None:
    env = _home(tmp_path)
    s = load_settings(env)
    assert (s.tls_cert, s.tls_key, s.database_url, s.tftp_root) == (None, None, None, None)
    assert s.effective_database_url == f"sqlite:///{tmp_path / 'home' / 'provisioner.db'}"
    (tmp_path / "home" / "settings.toml").write_text('tls_cert = "/etc/prov/cert.pem"\n')
    s = load_settings({**env, "PROVISIONER_TLS_KEY": "/etc/prov/key.pem"})
    assert (s.tls_cert, s.tls_key) == ("/etc/prov/cert.pem", "/etc/prov/key.pem")


def test_booleans_take_the_usual_spellings_and_empty_means_off(tmp_path: Path) -> None:
    env = _home(tmp_path)
    for raw, value in [("yes", True), ("on", True), ("1", True), ("off", False), ("", False)]:
        assert load_settings({**env, "PROVISIONER_SNMP_REQUIRE_V3": raw}).snmp_require_v3 is value
    (tmp_path / "home" / "settings.toml").write_text("snmp_require_v3 = true\n")
    assert load_settings(env).snmp_require_v3 is True


def test_settings_are_frozen_and_hashable_so_renders_can_cache_on_them(tmp_path: Path) -> None:
    s = load_settings(_home(tmp_path))
    with pytest.raises(ValidationError):
        s.http_port = 8080  # type: ignore[misc]
    calls: list[int] = []

    @functools.lru_cache
    def cached(settings: Settings) -> int:
        calls.append(1)
        return settings.http_port

    assert cached(s) == cached(load_settings(_home(tmp_path))) == 80
    assert len(calls) == 1


def test_a_command_with_a_bad_settings_file_says_one_line_and_exits_1(tmp_path: Path) -> None:
    env = _home(tmp_path, "http_prot = 8080\n")
    result = CliRunner().invoke(cli, ["status", "WT-2026-000123"], env=env)
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'home' / 'settings.toml'}: unknown setting 'http_prot'"
    ]
