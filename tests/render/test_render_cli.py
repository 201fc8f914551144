"""``provisioner render`` / ``provisioner dhcp`` as a technician or the NOC runs them."""

from __future__ import annotations

import stat
from pathlib import Path

from typer.testing import CliRunner

from provisioner.cli.app import app

O123 = "WT-2026-000123"


def _secret(inv, owner: str, name: str, order: str = O123) -> str:  # type: ignore[no-untyped-def]
    with inv.db.read() as s:
        return inv.secret(s, inv.get(s, order), owner, name)


def test_render_masks_secrets_unless_asked(sample_inventory) -> None:  # type: ignore[no-untyped-def]
    sip = _secret(sample_inventory, "extension:201", "sip_password")
    admin = _secret(sample_inventory, "device:phone-201", "admin_password")
    run = CliRunner().invoke(app, ["render", "00:80:F0:00:00:02", "0080f0000002.cfg"])
    assert run.exit_code == 0, run.output
    assert "password = ********" in run.output
    assert sip not in run.output and admin not in run.output
    shown = CliRunner().invoke(
        app, ["render", "0080.f000.0002", "0080f0000002.cfg", "--show-secrets"]
    )
    assert shown.exit_code == 0, shown.output
    assert f"password = {sip}\n" in shown.output
    assert f"password = {admin}\n" in shown.output


def test_render_lists_a_devices_files(sample_inventory) -> None:  # type: ignore[no-untyped-def]
    run = CliRunner().invoke(app, ["render", "00:1d:73:a0:00:01"])
    assert run.exit_code == 0, run.output
    assert "001d73a00001.cfg" in run.output and "iad-milano.cli" in run.output
    assert "fetched" in run.output and "pushed" in run.output


def test_render_unknown_mac_or_file_is_one_line(sample_inventory) -> None:  # type: ignore[no-untyped-def]
    run = CliRunner().invoke(app, ["render", "00:80:f0:99:99:99"])
    assert run.exit_code == 1
    assert run.output.strip().splitlines() == [
        "error: MAC 00:80:f0:99:99:99: no device with this MAC in the store"
    ]
    run = CliRunner().invoke(app, ["render", "00:80:f0:00:00:02", "0080f0000001.cfg"])
    assert run.exit_code == 1
    assert "no file 0080f0000001.cfg" in run.output and len(run.output.splitlines()) == 1


def test_render_order_writes_every_file(sample_inventory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pppoe = _secret(sample_inventory, "site:milano", "pppoe_password")
    out = tmp_path / "masked"
    run = CliRunner().invoke(app, ["render", "--order", O123, "--out", str(out)])
    assert run.exit_code == 0, run.output
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 33 and "sw-milano.setplan.yaml" in names
    assert "set wan pppoe password ********\n" in (out / "iad-milano.cli").read_text()
    assert not any(pppoe in p.read_text() for p in out.iterdir())
    assert "phone-209: planned" in run.output  # said, not silently skipped
    shown = tmp_path / "shown"
    run = CliRunner().invoke(
        app, ["render", "--order", O123, "--out", str(shown), "--show-secrets"]
    )
    assert run.exit_code == 0, run.output
    assert f"set wan pppoe password {pppoe}\n" in (shown / "iad-milano.cli").read_text()
    for p in shown.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p.name


def test_render_needs_a_target(sample_inventory) -> None:  # type: ignore[no-untyped-def]
    run = CliRunner().invoke(app, ["render"])
    assert run.exit_code == 1 and "give a device MAC" in run.output
    run = CliRunner().invoke(app, ["render", "--order", O123])
    assert run.exit_code == 1 and "--out" in run.output


def test_dhcp_command(sample_inventory) -> None:  # type: ignore[no-untyped-def]
    run = CliRunner().invoke(app, ["dhcp", "--order", O123, "--site", "roma"])
    assert run.exit_code == 0, run.output
    assert "dhcp-host=00:80:f0:00:01:01,set:prov\n" in run.output
    run = CliRunner().invoke(app, ["dhcp", "--order", O123, "--site", "roma", "--format", "kea"])
    assert run.exit_code == 0 and '"Dhcp4"' in run.output
    run = CliRunner().invoke(app, ["dhcp", "--order", O123, "--site", "roma", "--format", "isc"])
    assert run.exit_code == 1 and "use one of dnsmasq, kea" in run.output


def test_help_has_examples() -> None:
    for cmd in ("render", "dhcp"):
        run = CliRunner().invoke(app, [cmd, "--help"])
        assert run.exit_code == 0 and f"provisioner {cmd} " in run.output


def test_render_ont_by_serial_prints_its_only_file(sample_inventory) -> None:  # type: ignore[no-untyped-def]
    ploam = _secret(sample_inventory, "device:ont-milano", "ploam_password")
    run = CliRunner().invoke(app, ["render", "ALCL1A2B3C4D"])
    assert run.exit_code == 0, run.output
    assert 'serial: "ALCL1A2B3C4D"' in run.output and 'ploam_password: "********"' in run.output
    assert ploam not in run.output
