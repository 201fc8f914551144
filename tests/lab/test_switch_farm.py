"""Many lab switches in one snmpsim process (the push bench's 200), apart by community."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from provisioner_lab.switch_sim import SwitchFarm

SYS_NAME = "1.3.6.1.2.1.1.5.0"


def _snmp(tool: str, port: int, community: str, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [tool, "-v2c", "-c", community, "-On", "-t", "3", "-r", "0", f"127.0.0.1:{port}"]
    return subprocess.run([*argv, *args], capture_output=True, text=True, timeout=30)


def test_one_process_serves_many_switches_each_with_its_own_state(
    tmp_path: Path, net_snmp: dict[str, str]
) -> None:
    switches = [("dlink-dgs-1100-08p", f"sw-{i}", f"farm-{i}") for i in range(40)]
    with SwitchFarm(switches, tmp_path) as farm:
        assert farm.running
        out = _snmp(net_snmp["snmpset"], farm.port, "farm-7", SYS_NAME, "s", "renamed-7")
        assert out.returncode == 0, out.stderr
        for community, name in (("farm-7", "renamed-7"), ("farm-8", "sw-8"), ("farm-39", "sw-39")):
            got = _snmp(net_snmp["snmpget"], farm.port, community, SYS_NAME)
            assert f'STRING: "{name}"' in got.stdout, (community, got.stdout, got.stderr)
        assert farm["farm-7"].writes() == [{"oid": SYS_NAME, "value": "renamed-7"}]
        assert farm["farm-8"].write_count() == 0
        # An unknown community is not a switch: no answer, as a real agent does.
        assert _snmp(net_snmp["snmpget"], farm.port, "nobody", SYS_NAME).returncode != 0


def test_a_farm_switch_answers_at_a_devices_pace(tmp_path: Path, net_snmp: dict[str, str]) -> None:
    from provisioner.catalog import MODELS

    facts = MODELS["dlink-dgs-1100-08p"].snmp
    assert facts is not None
    switches = [("dlink-dgs-1100-08p", "sw-0", "farm-0")]
    with SwitchFarm(switches, tmp_path, latency=0.2, save_latency=0.6) as farm:
        started = time.monotonic()
        assert _snmp(net_snmp["snmpget"], farm.port, "farm-0", SYS_NAME).returncode == 0
        read = time.monotonic() - started
        started = time.monotonic()
        save = [facts.save_oid, "i", str(facts.save_value)]
        assert _snmp(net_snmp["snmpset"], farm.port, "farm-0", *save).returncode == 0
        saved = time.monotonic() - started
    assert 0.2 <= read < 0.6
    assert saved >= 0.8  # the reply, and the save to flash
    assert farm["farm-0"].save_count() == 1
