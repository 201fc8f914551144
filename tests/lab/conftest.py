"""Lab fixtures: simulated devices on loopback, the real peers that talk to them, set-plans.

tests/push/conftest.py loads this file too, so push tests share these fixtures. Test
modules never import a conftest: helpers are fixtures (``net_snmp``, ``openssh``,
``plan_yaml``).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from provisioner_lab.iad_sim import IadSim
from provisioner_lab.switch_sim import SwitchSim

ROOT = Path(__file__).resolve().parents[2]


def _need(tool: str) -> str:
    """Path of a real third-party peer, or skip saying how to get it."""
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (apt-get install snmp openssh-client)")
    return path


def build_plan(
    model: str = "dlink-dgs-1100-24p",
    name: str = "sw-milano",
    voice_ports: tuple[int, ...] = (1, 2),
    extra_vlan: int | None = None,
    poe_off: tuple[int, ...] = (),
) -> str:
    """A set-plan as the template renderer writes it: data on VLAN 1, voice tagged on 20."""
    ports = 8 if model.endswith("08p") else 24
    poe_ports = range(1, 9) if ports == 8 else range(1, 13)
    vlans = [
        f"  - {{vid: 1, name: data, untagged: [{', '.join(map(str, range(1, ports + 1)))}],"
        " tagged: []}",
        f"  - {{vid: 20, name: voice, untagged: [], tagged: [{', '.join(map(str, voice_ports))}]}}",
    ]
    if extra_vlan is not None:
        vlans.append(f"  - {{vid: {extra_vlan}, name: cams, untagged: [], tagged: [{ports}]}}")
    pvid = ", ".join(f"{p}: 1" for p in range(1, ports + 1))
    poe = ", ".join(f"{p}: {'false' if p in poe_off else 'true'}" for p in poe_ports)
    return (
        f"model: {model}\n"
        f'system: {{name: {name}, location: "Via Roma 1, 20121 Milano MI",'
        ' contact: "noc@officesmart.example"}\n'
        "vlans:\n" + "\n".join(vlans) + "\n"
        f"pvid: {{{pvid}}}\n"
        f"poe: {{{poe}}}\n"
    )


@pytest.fixture
def net_snmp() -> dict[str, str]:
    """net-snmp's command-line tools: {"snmpget": path, ...}."""
    return {t: _need(t) for t in ("snmpget", "snmpset", "snmpwalk")}


@pytest.fixture
def openssh() -> str:
    """OpenSSH's ssh client."""
    return _need("ssh")


@pytest.fixture
def plan_yaml() -> Callable[..., str]:
    """The set-plan builder (see build_plan)."""
    return build_plan


V3 = {"user": "labuser", "auth": "authpass123", "priv": "privpass123"}


@pytest.fixture(scope="session")
def v3() -> dict[str, str]:
    """The SNMPv3 user of the lab switches."""
    return dict(V3)


@pytest.fixture(scope="module")
def switch_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwitchSim]:
    """One lab DGS-1100-24P per test module (v2c public/private and a v3 user)."""
    sim = SwitchSim(
        "dlink-dgs-1100-24p",
        workdir=tmp_path_factory.mktemp("switch"),
        v3_user=V3["user"],
        v3_auth_key=V3["auth"],
        v3_priv_key=V3["priv"],
    )
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def switch(switch_module: SwitchSim) -> SwitchSim:
    """The module's switch, back to factory state and without fault."""
    switch_module.reset()
    return switch_module


@pytest.fixture(scope="session")
def client_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An ed25519 client key pair in OpenSSH format: (private key path, public line)."""
    import asyncssh

    key = asyncssh.generate_private_key("ssh-ed25519")
    path = tmp_path_factory.mktemp("keys") / "id_ed25519"
    key.write_private_key(str(path))
    path.chmod(0o600)
    return path, key.export_public_key("openssh").decode().strip()


@pytest.fixture(scope="module")
def iad_module(client_key: tuple[Path, str]) -> Iterator[IadSim]:
    sim = IadSim("milano", authorized_keys=[client_key[1]])
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def iad(iad_module: IadSim) -> IadSim:
    iad_module.reset()
    return iad_module
