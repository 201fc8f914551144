"""The renderer's golden files are what the push drivers accept, and push cleanly to the lab.

Cases are discovered from tests/render/golden/: a new golden file is a new case here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.push import setplan as sp
from provisioner.push.drivers.dlink_cli import parse_lines
from provisioner.push.drivers.dlink_snmp import DlinkSnmpDriver
from provisioner.push.drivers.iad_ssh import IadSshDriver
from provisioner.push.setlines import parse_config
from provisioner_lab.iad_sim import IadSim
from provisioner_lab.switch_sim import SwitchSim

GOLDEN = Path(__file__).resolve().parents[1] / "render" / "golden"
SETPLANS = sorted(GOLDEN.glob("dlink-*/*.setplan.yaml"))
ME_CLI = sorted(GOLDEN.glob("dlink-*/*.me.cli"))
IAD = sorted([*GOLDEN.glob("iad/*.cli"), *GOLDEN.glob("iad/*.cfg")])


def _ids(paths: list[Path]) -> list[str]:
    return [f"{p.parent.name}/{p.name}" for p in paths]


def _need(paths: list[Path]) -> None:
    if not paths:
        pytest.skip(f"no golden files under {GOLDEN}")


@pytest.mark.parametrize("path", SETPLANS, ids=_ids(SETPLANS))
def test_golden_setplans_parse(path: Path) -> None:
    plan = sp.parse_setplan(path.read_text())
    assert plan.model == path.parent.name


@pytest.mark.parametrize("path", IAD, ids=_ids(IAD))
def test_golden_iad_configs_parse(path: Path) -> None:
    text = path.read_text()
    config = parse_config(text)
    assert len(config) == len([line for line in text.splitlines() if line.strip()])


@pytest.mark.parametrize("path", ME_CLI, ids=_ids(ME_CLI))
def test_golden_me_cli_parses(path: Path) -> None:
    assert parse_lines(path.read_text())


def test_a_golden_setplan_pushes_to_the_lab_switch(switch: SwitchSim) -> None:
    plans = [p for p in SETPLANS if p.parent.name == switch.model]
    _need(plans)
    with DlinkSnmpDriver("127.0.0.1", "", "private", optional_args={"port": switch.port}) as dev:
        for path in plans:
            dev.load_replace_candidate(filename=str(path))
            dev.commit_config()
            dev.load_replace_candidate(filename=str(path))
            assert dev.compare_config() == "", path.name


def test_a_golden_iad_config_pushes_to_the_lab_iad(iad: IadSim) -> None:
    _need(IAD)
    args = {"port": iad.port, "host_key": iad.host_key, "command_timeout": 5}
    with IadSshDriver("127.0.0.1", "admin", "lab-Pass-7", optional_args=args) as dev:
        for path in IAD[:2]:
            dev.load_replace_candidate(filename=str(path))
            dev.commit_config()
            assert iad.running == parse_config(path.read_text())
            dev.load_replace_candidate(filename=str(path))
            assert dev.compare_config() == "", path.name
