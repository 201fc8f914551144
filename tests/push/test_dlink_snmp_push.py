"""Pushing set-plans to a lab DGS-1100 with the SNMP driver; net-snmp checks the result."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from napalm.base.exceptions import CommitError, ConnectionException, MergeConfigException

from provisioner.catalog import MODELS
from provisioner.push import setplan as sp
from provisioner.push.drivers.dlink_snmp import DlinkSnmpDriver
from provisioner_lab.switch_sim import SwitchSim

SUBTREES = (
    "1.3.6.1.2.1.1.4",  # sysContact
    "1.3.6.1.2.1.1.5",  # sysName
    "1.3.6.1.2.1.1.6",  # sysLocation
    "1.3.6.1.2.1.17.7.1.4.3.1",  # dot1qVlanStaticTable
    "1.3.6.1.2.1.17.7.1.4.5.1.1",  # dot1qPvid
    "1.3.6.1.2.1.105.1.1.1.3",  # pethPsePortAdminEnable
)


def driver(sim: SwitchSim, **options: Any) -> DlinkSnmpDriver:
    args = {"port": sim.port, "snmp_timeout": 0.5, "snmp_retries": 1, **options}
    return DlinkSnmpDriver("127.0.0.1", "", "private", timeout=20, optional_args=args)


def walk(net_snmp: dict[str, str], port: int, oid: str) -> str:
    out = subprocess.run(
        [net_snmp["snmpwalk"], "-v2c", "-c", "public", "-On", "-t", "1", "-r", "1",
         f"127.0.0.1:{port}", oid],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout


def snapshot(net_snmp: dict[str, str], sim: SwitchSim) -> str:
    """Everything a push manages, as net-snmp sees it from the agent's own port."""
    return "".join(walk(net_snmp, sim.agent_port, oid) for oid in SUBTREES)


def test_a_push_is_what_net_snmp_reads_back(
    switch: SwitchSim, net_snmp: dict[str, str], plan_yaml: Callable[..., str]
) -> None:
    with driver(switch) as dev:
        dev.load_replace_candidate(config=plan_yaml(poe_off=(5, 6)))
        diff = dev.compare_config()
        assert '+sysName = "sw-milano"' in diff
        dev.commit_config()
        assert dev.compare_config() == ""
    assert switch.save_count() == 1

    text = walk(net_snmp, switch.port, "1.3.6.1.2.1.1")
    assert '.1.3.6.1.2.1.1.5.0 = STRING: "sw-milano"' in text
    assert '.1.3.6.1.2.1.1.6.0 = STRING: "Via Roma 1, 20121 Milano MI"' in text
    vlans = walk(net_snmp, switch.port, "1.3.6.1.2.1.17.7.1.4.3.1")
    assert '.1.3.6.1.2.1.17.7.1.4.3.1.1.20 = STRING: "voice"' in vlans
    assert ".1.3.6.1.2.1.17.7.1.4.3.1.2.1 = Hex-STRING: FF FF FF" in vlans
    assert ".1.3.6.1.2.1.17.7.1.4.3.1.2.20 = Hex-STRING: C0 00 00" in vlans  # ports 1, 2
    assert ".1.3.6.1.2.1.17.7.1.4.3.1.4.1 = Hex-STRING: FF FF FF" in vlans
    assert ".1.3.6.1.2.1.17.7.1.4.3.1.4.20 = Hex-STRING: 00 00 00" in vlans  # tagged only
    poe = walk(net_snmp, switch.port, "1.3.6.1.2.1.105.1.1.1.3.1").splitlines()
    states = {int(line.split(" =")[0].rsplit(".", 1)[1]): line[-1] for line in poe}
    assert states == {p: "2" if p in (5, 6) else "1" for p in range(1, 13)}


def test_the_second_push_writes_nothing(switch: SwitchSim, plan_yaml: Callable[..., str]) -> None:
    with driver(switch) as dev:
        dev.load_replace_candidate(config=plan_yaml())
        dev.commit_config()
        first = switch.write_count()
        assert first == len(dev.last_writes) + 1  # + the save object
        dev.load_merge_candidate(config=plan_yaml())  # merge == replace for a set-plan
        assert dev.compare_config() == ""
        dev.commit_config()
        assert dev.last_writes == []
    assert switch.write_count() == first
    assert switch.save_count() == 1


def test_only_the_differences_are_written(switch: SwitchSim, plan_yaml: Callable[..., str]) -> None:
    with driver(switch) as dev:
        dev.load_replace_candidate(config=plan_yaml())
        dev.commit_config()
        before = switch.write_count()
        dev.load_replace_candidate(config=plan_yaml(voice_ports=(1, 2, 3)))
        dev.commit_config()
    sent = [w["oid"] for w in switch.writes()[before:]]
    assert sent == [f"{sp.VLAN_EGRESS}.20", MODELS["dlink-dgs-1100-24p"].snmp.save_oid]


def test_snmpv3_auth_priv_push(
    switch: SwitchSim, net_snmp: dict[str, str], v3: dict[str, str], plan_yaml: Callable[..., str]
) -> None:
    dev = DlinkSnmpDriver(
        "127.0.0.1",
        v3["user"],
        v3["auth"],
        optional_args={
            "port": switch.port,
            "snmp_version": "3",
            "priv_key": v3["priv"],
            "require_v3": True,
            "snmp_timeout": 0.5,
        },
    )
    with dev:
        dev.load_replace_candidate(config=plan_yaml(name="sw-v3"))
        dev.commit_config()
    out = subprocess.run(
        [net_snmp["snmpget"], "-v3", "-l", "authPriv", "-u", v3["user"], "-a", "SHA", "-A",
         v3["auth"], "-x", "AES", "-X", v3["priv"], "-On", f"127.0.0.1:{switch.port}",
         "1.3.6.1.2.1.1.5.0"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert 'STRING: "sw-v3"' in out.stdout, out.stderr


def test_require_v3_refuses_a_v2c_write_before_sending_anything(
    switch: SwitchSim, plan_yaml: Callable[..., str]
) -> None:
    with driver(switch, require_v3=True) as dev:
        dev.load_replace_candidate(config=plan_yaml())
        requests = switch.request_count()
        with pytest.raises(CommitError, match="policy requires SNMPv3 authPriv"):
            dev.commit_config()
        assert switch.request_count() == requests
    assert switch.write_count() == 0


def test_no_reply_is_a_connection_error_within_the_timeout(switch: SwitchSim) -> None:
    switch.set_fault("no-reply")
    dev = driver(switch, snmp_timeout=0.5, snmp_retries=1)
    started = time.monotonic()
    with pytest.raises(ConnectionException, match="wrong community"):
        dev.open()
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed <= 0.5 * 2 + 1.5
    assert not dev.is_alive()["is_alive"]


def test_a_reply_slower_than_the_timeout_is_no_reply(switch: SwitchSim) -> None:
    switch.set_fault("slow", delay=1.0)
    with pytest.raises(ConnectionException):
        driver(switch, snmp_timeout=0.3, snmp_retries=1).open()
    switch.set_fault("slow", delay=0.2)
    with driver(switch, snmp_timeout=1.0) as dev:
        assert dev.model == "dlink-dgs-1100-24p"


def test_wrong_community_is_a_connection_error(switch: SwitchSim) -> None:
    dev = DlinkSnmpDriver(
        "127.0.0.1", "", "guess", optional_args={"port": switch.port, "snmp_timeout": 0.3}
    )
    with pytest.raises(ConnectionException, match=r"No SNMP response"):
        dev.open()


def test_drop_mid_commit_then_rollback_leaves_the_old_config(
    switch: SwitchSim, net_snmp: dict[str, str], plan_yaml: Callable[..., str]
) -> None:
    old = snapshot(net_snmp, switch)
    dev = driver(switch, max_varbinds=4, snmp_timeout=0.3, snmp_retries=1)
    dev.open()
    dev.load_replace_candidate(config=plan_yaml(extra_vlan=100, poe_off=(7, 8, 9)))
    dev.compare_config()  # reads the device: commit works from this read
    # Let commit send one SET PDU (of 4 varbinds, max_varbinds), then cut the line.
    switch.set_fault("drop-mid", after=1)
    with pytest.raises(CommitError, match="half-changed"):
        dev.commit_config()
    half = snapshot(net_snmp, switch)
    assert half != old  # the first PDU landed: the device is neither old nor new
    assert switch.save_count() == 0

    switch.set_fault(None)
    dev.rollback()
    assert snapshot(net_snmp, switch) == old

    # And forward again: all of the new config.
    dev.load_replace_candidate(config=plan_yaml(extra_vlan=100, poe_off=(7, 8, 9)))
    dev.commit_config()
    assert dev.compare_config() == ""
    assert ".1.3.6.1.2.1.17.7.1.4.3.1.5.100 = INTEGER: 1" in snapshot(net_snmp, switch)
    dev.close()


def test_rollback_after_a_good_commit_removes_the_new_vlan(
    switch: SwitchSim, net_snmp: dict[str, str], plan_yaml: Callable[..., str]
) -> None:
    old = snapshot(net_snmp, switch)
    with driver(switch) as dev:
        with pytest.raises(CommitError, match="no commit to roll back"):
            dev.rollback()
        dev.load_replace_candidate(config=plan_yaml(extra_vlan=100))
        dev.commit_config()
        assert ".3.1.5.100 = INTEGER: 1" in snapshot(net_snmp, switch)
        dev.rollback()
    assert snapshot(net_snmp, switch) == old


def test_a_missing_object_is_a_commit_error(
    switch: SwitchSim, net_snmp: dict[str, str], plan_yaml: Callable[..., str]
) -> None:
    # VLAN 300 is not provisioned on this lab switch: the agent answers noSuchInstance
    # with errorStatus 0, which must not pass for success.
    old = snapshot(net_snmp, switch)
    with driver(switch) as dev:
        dev.load_replace_candidate(config=plan_yaml(extra_vlan=300))
        with pytest.raises(
            CommitError, match=r"no such object 1\.3\.6\.1\.2\.1\.17\.7\.1\.4\.3\.1\.5\.300"
        ):
            dev.commit_config()
        dev.rollback()
    assert snapshot(net_snmp, switch) == old


def test_invalid_plans_are_refused_at_load(
    switch: SwitchSim, plan_yaml: Callable[..., str]
) -> None:
    with driver(switch) as dev:
        bad = plan_yaml().replace("12: true}", "12: true, 13: true}")
        with pytest.raises(MergeConfigException, match="port 13 is not a PoE port"):
            dev.load_replace_candidate(config=bad)
        with pytest.raises(MergeConfigException, match="set-plan is for dlink-dgs-1100-08p"):
            dev.load_replace_candidate(config=plan_yaml("dlink-dgs-1100-08p"))
        assert dev.candidate is None
        assert dev.compare_config() == ""
    assert switch.write_count() == 0


def test_facts_config_and_model_check(switch: SwitchSim, plan_yaml: Callable[..., str]) -> None:
    with driver(switch) as dev:
        facts = dev.get_facts()
        assert facts["vendor"] == "D-Link"
        assert facts["model"] == "DGS-1100-24P"
        assert facts["hostname"] == "sw-lab"
        assert len(facts["interface_list"]) == 24
        assert facts["uptime"] >= 0
        dev.load_replace_candidate(config=plan_yaml())
        dev.commit_config()
        running = sp.parse_setplan(dev.get_config()["running"])
        assert running == sp.parse_setplan(plan_yaml())
    wrong = driver(switch, model="dlink-dgs-1100-08p")
    with pytest.raises(ConnectionException, match="the inventory says dlink-dgs-1100-08p"):
        wrong.open()


@pytest.mark.parametrize(
    ("name", "module", "cls"),
    [
        ("dlink_snmp", "provisioner.push.drivers.dlink_snmp", "DlinkSnmpDriver"),
        ("iad_ssh", "provisioner.push.drivers.iad_ssh", "IadSshDriver"),
        ("dlink_cli", "provisioner.push.drivers.dlink_cli", "DlinkCliDriver"),
    ],
)
def test_napalm_loads_the_drivers_the_documented_way(
    tmp_path: Path, name: str, module: str, cls: str
) -> None:
    # What the module docstrings tell the lead to ship: custom_napalm/<name>.py holding one
    # import. napalm must return our class, not the NetworkDriver base.
    import importlib

    import napalm

    shim = tmp_path / "custom_napalm"
    shim.mkdir()
    (shim / "__init__.py").write_text("")
    (shim / f"{name}.py").write_text(f"from {module} import {cls}  # noqa: F401\n")
    sys.path.insert(0, str(tmp_path))
    try:
        assert napalm.get_network_driver(name) is getattr(importlib.import_module(module), cls)
    finally:
        sys.path.remove(str(tmp_path))
        for loaded in [m for m in sys.modules if m.startswith("custom_napalm")]:
            del sys.modules[loaded]
