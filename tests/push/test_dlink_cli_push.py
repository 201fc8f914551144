"""The D-Link /ME CLI driver against the lab's D-Link mode (no real /ME switch was used)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from napalm.base.exceptions import (
    CommitError,
    ConnectionException,
    MergeConfigException,
    ReplaceConfigException,
)

from provisioner.push.drivers.dlink_cli import DlinkCliDriver, parse_lines
from provisioner_lab.iad_sim import IadSim

# What device_templates/dlink/me.cli.j2 renders for a switch with phones on ports 1-2.
RENDERED = """\
config snmp system_name sw-milano
config snmp system_location "Via Roma 1, 20121 Milano MI"
config snmp system_contact noc@officesmart.example
config vlan default add untagged 1-24
create vlan voice tag 20
config vlan voice add tagged 1-2
config poe ports 1-2 state enable
config poe ports 3-12 state disable
save
"""


@pytest.fixture(scope="module")
def me_module() -> Iterator[IadSim]:
    sim = IadSim("sw", dialect="dlink-me", model="DGS-1100-24P/ME")
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def me(me_module: IadSim) -> IadSim:
    me_module.reset()
    return me_module


def driver(sim: IadSim, **options: Any) -> DlinkCliDriver:
    args = {"port": sim.port, "host_key": sim.host_key, "command_timeout": 2, **options}
    return DlinkCliDriver("127.0.0.1", "admin", "lab-Pass-7", optional_args=args)


def test_merge_push_then_nothing_to_do(me: IadSim) -> None:
    with driver(me) as dev:
        dev.load_merge_candidate(config=RENDERED)
        assert dev.compare_config().splitlines()[0] == "+config snmp system_name sw-milano"
        dev.commit_config()
        assert len(dev.last_changes) == 8
        assert dev.get_config()["running"].splitlines() == sorted(parse_lines(RENDERED))
        sent = len(me.commands)
        dev.load_merge_candidate(config=RENDERED)
        assert dev.compare_config() == ""
        dev.commit_config()
        assert dev.last_changes == []
    assert me.saves == 1
    assert "save" not in me.commands[sent:]
    assert "disable clipaging" in me.commands  # netmiko's dlink_ds session preparation


def test_a_refused_line_is_a_commit_error(me: IadSim) -> None:
    me.reset(refuse=[r"^config bogus"])  # a command this firmware does not know
    with driver(me) as dev:
        dev.load_merge_candidate(config="config snmp system_name a\nconfig bogus_thing 1\n")
        with pytest.raises(CommitError, match="refused 'config bogus_thing 1' after 1 applied"):
            dev.commit_config()
    assert me.running == {("config snmp system_name a",): ""}  # applied at once, no candidate
    assert me.saves == 0


def test_what_it_does_not_do(me: IadSim) -> None:
    with driver(me) as dev:
        with pytest.raises(ReplaceConfigException, match="TFTP"):
            dev.load_replace_candidate(config=RENDERED)
        with pytest.raises(MergeConfigException, match="not a D-Link config command"):
            dev.load_merge_candidate(config="reboot\n")
        with pytest.raises(CommitError, match="restore the backup by hand"):
            dev.rollback()
    me.set_fault("new-host-key")
    with pytest.raises(ConnectionException, match="CHANGED"):
        driver(me).open()
