"""Push-job fixtures: one store holding WT-2026-000104 and its lab devices per test module.

The store and the simulators live for a module (starting snmpsim costs a second); every
test gets them back in factory state, with empty push tables and the lab IAD's host key
pinned (tests of unknown keys unpin it).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete

from provisioner.push.targets import DeviceAddress, Timeouts
from provisioner.render.engine import DeviceKey, Renderer
from provisioner.store.push_models import Backup, HostKey, PushLock, PushResultRow
from provisioner_lab.iad_sim import IadSim
from provisioner_lab.switch_sim import SwitchSim
from provisioner_lab.up import Lab, start_lab

ROOT = Path(__file__).resolve().parents[2]

ORDER = "WT-2026-000104"
SAMPLE = ROOT / "inventory" / "orders" / f"{ORDER}.yaml"
# Small timeouts keep fault tests short; SNMP at 1 s so a busy CI box does not retry early.
FAST = Timeouts(connect=3, command=2, snmp=1.0, snmp_retries=1, operation=20, retries=1,
                backoff=0.1)  # fmt: skip


@dataclass
class PushLab:
    inv: Any
    renderer: Renderer
    lab: Lab
    switch: SwitchSim
    iad: IadSim
    sw_key: DeviceKey
    iad_key: DeviceKey
    sw_at: DeviceAddress
    iad_at: DeviceAddress
    client_key: Path
    workdir: Path

    def secret(self, device_id: str, name: str) -> str:
        for d in self.lab.devices:
            if d.key.device_id == device_id:
                return d.secrets[name]
        raise KeyError(device_id)

    def device_pk(self, key: DeviceKey) -> int:
        from provisioner.push.targets import device_row

        with self.inv.db.read() as session:
            return device_row(session, key).id

    def pin_iad(self) -> None:
        with self.inv.db.write() as session:
            session.add(
                HostKey(device_pk=self.device_pk(self.iad_key), public_key=self.iad.host_key,
                        trusted_by="test")
            )  # fmt: skip

    def clean(self) -> None:
        self.switch.reset()
        self.iad.reset()
        with self.inv.db.write() as session:
            for table in (Backup, HostKey, PushResultRow, PushLock):
                session.execute(delete(table))
        self.pin_iad()


@pytest.fixture(scope="module")
def push_lab_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PushLab]:
    import asyncssh

    from provisioner.documents.validate import check_paths
    from provisioner.orders.service import OrdersService
    from provisioner.settings import load_settings

    workdir = tmp_path_factory.mktemp("pushjob")
    settings = load_settings({"PROVISIONER_HOME": str(workdir / "home")})
    inv = OrdersService(settings)
    for checked in check_paths([SAMPLE]):
        assert checked.ok and checked.document is not None
        inv.apply(checked.document, source=checked.file, actor="test")
    renderer = Renderer(settings, inv)
    key = asyncssh.generate_private_key("ssh-ed25519")
    key_path = workdir / "id_ed25519"
    key.write_private_key(str(key_path))
    key_path.chmod(0o600)
    pub = key.export_public_key("openssh").decode().strip()
    lab = start_lab(inv, renderer, [ORDER], workdir / "lab", authorized_keys=[pub])
    try:
        by_kind = {d.kind: d for d in lab.devices}
        sw, iad = by_kind["snmp"], by_kind["ssh"]
        assert isinstance(sw.sim, SwitchSim) and isinstance(iad.sim, IadSim)
        yield PushLab(
            inv, renderer, lab, sw.sim, iad.sim, sw.key, iad.key, sw.address, iad.address,
            key_path, workdir,
        )  # fmt: skip
    finally:
        lab.stop()
        inv.db.dispose()


@pytest.fixture
def push_lab(push_lab_module: PushLab) -> PushLab:
    push_lab_module.clean()
    return push_lab_module


@pytest.fixture
def fast() -> Timeouts:
    return FAST


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (apt-get install snmp openssh-client)")
    return path


@pytest.fixture
def snmp_tools() -> dict[str, str]:
    return {t: need(t) for t in ("snmpget", "snmpwalk")}


@pytest.fixture
def ssh_tool() -> str:
    return need("ssh")
