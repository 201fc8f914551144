"""The lab switch answers net-snmp's own tools like a DGS-1100 would."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from provisioner_lab.switch_sim import SwitchSim, SwitchSimError

SYS_OBJECT_ID = "1.3.6.1.2.1.1.2.0"
SYS_NAME = "1.3.6.1.2.1.1.5.0"
ROW_STATUS_100 = "1.3.6.1.2.1.17.7.1.4.3.1.5.100"
EGRESS_100 = "1.3.6.1.2.1.17.7.1.4.3.1.2.100"
PVID_3 = "1.3.6.1.2.1.17.7.1.4.5.1.1.3"


def snmp(
    tool: str,
    sim: SwitchSim,
    *args: str,
    community: str = "public",
    timeout: float = 1,
    retries: int = 0,
) -> subprocess.CompletedProcess[str]:
    argv = [
        tool,
        "-v2c",
        "-c",
        community,
        "-On",
        "-t",
        str(timeout),
        "-r",
        str(retries),
        f"127.0.0.1:{sim.port}",
        *args,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


def test_snmpget_shows_the_models_sys_object_id(
    switch: SwitchSim, net_snmp: dict[str, str]
) -> None:
    out = snmp(net_snmp["snmpget"], switch, SYS_OBJECT_ID, "1.3.6.1.2.1.1.1.0")
    assert out.returncode == 0, out.stderr
    assert "OID: .1.3.6.1.4.1.171.10.134.9" in out.stdout
    assert "DGS-1100-24P" in out.stdout


def test_snmpset_then_snmpget_round_trip(switch: SwitchSim, net_snmp: dict[str, str]) -> None:
    out = snmp(net_snmp["snmpset"], switch, SYS_NAME, "s", "sw-bari", community="private")
    assert out.returncode == 0, out.stderr
    out = snmp(net_snmp["snmpget"], switch, SYS_NAME)
    assert 'STRING: "sw-bari"' in out.stdout
    assert switch.writes() == [{"oid": SYS_NAME, "value": "sw-bari"}]


def test_the_read_only_community_cannot_write(switch: SwitchSim, net_snmp: dict[str, str]) -> None:
    out = snmp(net_snmp["snmpset"], switch, SYS_NAME, "s", "evil", community="public")
    assert "noAccess" in out.stdout + out.stderr
    assert switch.write_count() == 0
    assert 'STRING: "sw-lab"' in snmp(net_snmp["snmpget"], switch, SYS_NAME).stdout


def test_wrong_type_and_read_only_objects_are_refused(
    switch: SwitchSim, net_snmp: dict[str, str]
) -> None:
    out = snmp(net_snmp["snmpset"], switch, SYS_NAME, "i", "5", community="private")
    assert "wrongType" in out.stdout + out.stderr
    out = snmp(net_snmp["snmpset"], switch, SYS_OBJECT_ID, "o", "1.3.6.1", community="private")
    assert "notWritable" in out.stdout + out.stderr
    assert switch.write_count() == 0


def test_vlan_rows_are_created_and_destroyed(switch: SwitchSim, net_snmp: dict[str, str]) -> None:
    walk = snmp(net_snmp["snmpwalk"], switch, "1.3.6.1.2.1.17.7.1.4.3.1.5")
    assert walk.stdout.count("INTEGER: 1") == 1  # only the default VLAN exists
    # A column of a missing row cannot be written, and a PVID cannot point at it.
    out = snmp(net_snmp["snmpset"], switch, EGRESS_100, "x", "000001", community="private")
    assert "noCreation" in out.stdout + out.stderr
    out = snmp(net_snmp["snmpset"], switch, PVID_3, "u", "100", community="private")
    assert "inconsistentValue" in out.stdout + out.stderr

    out = snmp(
        net_snmp["snmpset"],
        switch,
        ROW_STATUS_100,
        "i",
        "4",
        EGRESS_100,
        "x",
        "000001",
        community="private",
    )
    assert out.returncode == 0, out.stderr
    walk = snmp(net_snmp["snmpwalk"], switch, "1.3.6.1.2.1.17.7.1.4.3.1")
    assert f".{ROW_STATUS_100} = INTEGER: 1" in walk.stdout
    assert f".{EGRESS_100} = Hex-STRING: 00 00 01" in walk.stdout

    out = snmp(net_snmp["snmpset"], switch, ROW_STATUS_100, "i", "6", community="private")
    assert out.returncode == 0, out.stderr
    walk = snmp(net_snmp["snmpwalk"], switch, "1.3.6.1.2.1.17.7.1.4.3.1")
    assert ".100 =" not in walk.stdout
    # The default VLAN cannot be destroyed.
    out = snmp(
        net_snmp["snmpset"], switch, "1.3.6.1.2.1.17.7.1.4.3.1.5.1", "i", "6", community="private"
    )
    assert "inconsistentValue" in out.stdout + out.stderr


def test_snmpv3_auth_priv(switch: SwitchSim, net_snmp: dict[str, str], v3: dict[str, str]) -> None:
    base = [
        net_snmp["snmpget"],
        "-v3",
        "-l",
        "authPriv",
        "-u",
        v3["user"],
        "-a",
        "SHA",
        "-A",
        v3["auth"],
        "-x",
        "AES",
        "-X",
        v3["priv"],
        "-On",
        "-t",
        "1",
        "-r",
        "0",
        f"127.0.0.1:{switch.port}",
        SYS_NAME,
    ]
    out = subprocess.run(base, capture_output=True, text=True, timeout=30)
    assert 'STRING: "sw-lab"' in out.stdout, out.stderr
    wrong = [*base]
    wrong[wrong.index(v3["auth"])] = "not-the-key"
    out = subprocess.run(wrong, capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "sw-lab" not in out.stdout


def test_faults(switch: SwitchSim, net_snmp: dict[str, str]) -> None:
    get = net_snmp["snmpget"]
    switch.set_fault("no-reply")
    started = time.monotonic()
    out = snmp(get, switch, SYS_NAME, timeout=0.5)
    assert "Timeout" in out.stderr
    assert time.monotonic() - started < 3

    switch.set_fault("slow", delay=0.6)
    assert "Timeout" in snmp(get, switch, SYS_NAME, timeout=0.3).stderr
    started = time.monotonic()
    assert "sw-lab" in snmp(get, switch, SYS_NAME, timeout=2).stdout
    assert time.monotonic() - started >= 0.6

    switch.set_fault("drop-mid", after=2)
    assert "sw-lab" in snmp(get, switch, SYS_NAME).stdout
    assert "sw-lab" in snmp(get, switch, SYS_NAME).stdout
    assert "Timeout" in snmp(get, switch, SYS_NAME, timeout=0.3).stderr

    switch.set_fault(None)
    assert "sw-lab" in snmp(get, switch, SYS_NAME).stdout
    with pytest.raises(SwitchSimError, match="unknown fault"):
        switch.set_fault("meteor")


def test_reset_is_factory_state(switch: SwitchSim, net_snmp: dict[str, str]) -> None:
    snmp(net_snmp["snmpset"], switch, SYS_NAME, "s", "changed", community="private")
    assert switch.write_count() == 1
    switch.reset(existing_vlans=(1, 20))
    assert switch.write_count() == 0
    assert 'STRING: "sw-lab"' in snmp(net_snmp["snmpget"], switch, SYS_NAME).stdout
    walk = snmp(net_snmp["snmpwalk"], switch, "1.3.6.1.2.1.17.7.1.4.3.1.5")
    assert walk.stdout.count("INTEGER: 1") == 2


def test_an_08p_is_its_own_process_and_stops_cleanly(
    tmp_path: object, net_snmp: dict[str, str], switch: SwitchSim
) -> None:
    with SwitchSim("dlink-dgs-1100-08p", name="sw-small") as small:
        assert small.port != switch.port
        out = snmp(net_snmp["snmpget"], small, SYS_OBJECT_ID, SYS_NAME)
        assert "1.3.6.1.4.1.171.10.134.900.8" in out.stdout  # the marked placeholder
        walk = snmp(net_snmp["snmpwalk"], small, "1.3.6.1.2.1.105.1.1.1.3")
        assert walk.stdout.count("INTEGER: 1") == 8
        # Writes to one switch never show on another (one process each).
        snmp(net_snmp["snmpset"], small, SYS_NAME, "s", "only-here", community="private")
        assert 'STRING: "sw-lab"' in snmp(net_snmp["snmpget"], switch, SYS_NAME).stdout
        agent = small.agent_port
        workdir = small.workdir
    assert not small.running
    assert not workdir.exists()
    # The agent's port is free again: nothing survived to answer later tests.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", agent))


def test_a_set_pdu_is_applied_all_or_nothing(switch: SwitchSim, net_snmp: dict[str, str]) -> None:
    # sysName is fine, PoE admin 9 is not a TruthValue: the agent refuses the PDU, and the
    # sysName in front of it must not stick (RFC 3416: "as if simultaneously").
    poe_1 = "1.3.6.1.2.1.105.1.1.1.3.1.1"
    out = snmp(
        net_snmp["snmpset"], switch, SYS_NAME, "s", "sw-half", poe_1, "i", "9",
        community="private",
    )  # fmt: skip
    assert out.returncode != 0 and "wrongValue" in out.stderr + out.stdout
    assert 'STRING: "sw-lab"' in snmp(net_snmp["snmpget"], switch, SYS_NAME).stdout
    assert switch.write_count() == 0
    # The same PDU with a good value goes in whole.
    out = snmp(
        net_snmp["snmpset"], switch, SYS_NAME, "s", "sw-whole", poe_1, "i", "2",
        community="private",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert 'STRING: "sw-whole"' in snmp(net_snmp["snmpget"], switch, SYS_NAME).stdout
    assert switch.write_count() == 2
