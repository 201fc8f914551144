"""``provisioner push``, ``backups`` and ``rollback`` against the lab devices."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from provisioner.cli.app import app
from provisioner.push.targets import write_targets

ORDER = "WT-2026-000104"
FAST = ["--connect-timeout", "3", "--command-timeout", "2"]


@pytest.fixture
def cli(push_lab: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("PROVISIONER_HOME", str(push_lab.inv.settings.home))
    for var in ("PROVISIONER_DATABASE_URL", "PROVISIONER_SETTINGS", "PROVISIONER_SECRET_KEY"):
        monkeypatch.delenv(var, raising=False)
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(app, list(args), catch_exceptions=False)

    return run


def test_push_prints_a_table_and_a_second_push_changes_nothing(push_lab: Any, cli: Any) -> None:
    targets = push_lab.workdir / "targets.yaml"
    write_targets(targets, push_lab.lab.targets, ORDER)
    first = cli("push", ORDER, "--targets", str(targets), *FAST)
    assert first.exit_code == 0, first.output
    assert "iad-catania" in first.output and "sw-catania" in first.output
    assert first.output.count(" ok ") == 2
    second = cli("push", ORDER, "--targets", str(targets), *FAST)
    assert second.exit_code == 0 and second.output.count("no change") == 2
    assert push_lab.iad.commits == 1

    listed = cli("backups", push_lab.sw_key.mac)
    assert listed.exit_code == 0 and "pre-push" in listed.output
    sw_target = f"sw-catania=127.0.0.1:{push_lab.sw_at.port}"
    back = cli("rollback", push_lab.sw_key.mac, "--to", "1", "--target", sw_target, "--yes",
               *FAST)  # fmt: skip
    assert back.exit_code == 0, back.output
    assert "sw-lab" in _sysname(push_lab)


def _sysname(lab: Any) -> str:
    from provisioner.push.drivers.dlink_snmp import DlinkSnmpDriver

    community = lab.secret("sw-catania", "snmp_community")
    args = {"port": lab.switch.agent_port, "model": lab.sw_key.model}
    with DlinkSnmpDriver("127.0.0.1", "", community, optional_args=args) as dev:
        return str(dev.get_facts()["hostname"])


def test_a_failed_device_makes_the_exit_status_1(push_lab: Any, cli: Any) -> None:
    push_lab.iad.set_fault("auth-fail")
    target = f"iad-catania=127.0.0.1:{push_lab.iad_at.port}"
    res = cli("push", push_lab.iad_key.mac, "--target", target, *FAST)
    assert res.exit_code == 1
    assert "failed" in res.output and "authentication failed" in res.output
    no_address = cli("push", push_lab.iad_key.mac, *FAST)
    assert no_address.exit_code == 1 and "no address" in no_address.output
