"""``provisioner lab up``: a simulated switch and IAD for every pushed device of an order.

Each switch of the order becomes a :class:`lab.switch_sim.SwitchSim` (same model; write
community = the device's ``snmp_community`` from the store; SNMPv3 user ``provisioner``
with the device's auth/priv keys), each IAD an :class:`lab.iad_sim.IadSim` (login
``admin`` / the device's ``admin_password``). All listen on loopback high ports; the
addresses go to a targets file that ``provisioner push --targets`` reads.

IAD host keys are kept in the lab folder and reused, so a second ``lab up`` presents the
same keys (the first push needs ``--trust-on-first-use``, later ones do not).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provisioner.push import setplan as sp
from provisioner.push.targets import (
    SNMP_V3_USER,
    DeviceAddress,
    credentials,
    device_keys,
    write_targets,
)
from provisioner.render.engine import DeviceKey, Renderer
from provisioner_lab.iad_sim import IadSim
from provisioner_lab.switch_sim import SwitchSim


@dataclass
class LabDevice:
    key: DeviceKey
    kind: str  # snmp | ssh
    address: DeviceAddress
    sim: SwitchSim | IadSim
    secrets: dict[str, str] = field(repr=False, default_factory=dict)

    def how_to_reach(self) -> list[str]:
        a = self.address
        if self.kind == "snmp":
            return [
                f"snmpwalk -v2c -c public {a.host}:{a.port} 1.3.6.1.2.1.1",
                f"snmpget -v3 -l authPriv -u {SNMP_V3_USER} -a SHA -A <snmp_auth_key>"
                f" -x AES -X <snmp_priv_key> {a.host}:{a.port} 1.3.6.1.2.1.1.5.0",
            ]
        return [f"ssh -p {a.port} admin@{a.host}   (password: the device's admin_password)"]


@dataclass
class Lab:
    devices: list[LabDevice]
    targets_file: Path | None = None

    @property
    def targets(self) -> dict[str, DeviceAddress]:
        return {d.key.device_id: d.address for d in self.devices}

    def stop(self) -> None:
        for d in self.devices:
            with contextlib.suppress(Exception):  # stop every sim even if one fails
                d.sim.stop()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_lab(
    inv: Any,
    renderer: Renderer,
    order_ids: Iterable[str],
    workdir: Path,
    *,
    authorized_keys: Iterable[str] = (),
    targets_file: Path | None = None,
) -> Lab:
    """Start a simulator per pushed device of the orders; write the targets file."""
    workdir.mkdir(parents=True, exist_ok=True)
    keys_dir = workdir / "host_keys"
    keys_dir.mkdir(exist_ok=True)
    lab = Lab([])
    try:
        for order_id in order_ids:
            for key in device_keys(inv, renderer, order_id):
                payload = renderer.push_payload(key.order_id, key.device_id)
                if payload is None:
                    continue
                kind, rendered = payload
                secrets = credentials(inv, key)
                sim: SwitchSim | IadSim
                if kind == "snmp":
                    plan = sp.parse_setplan(rendered.data.decode())
                    vids = {v.vid for v in plan.vlans} | {1, 20, 100}
                    sim = SwitchSim(
                        key.model,
                        workdir=workdir / f"{key.order_id}-{key.device_id}",
                        community_rw=secrets.get("snmp_community", "private"),
                        v3_user=SNMP_V3_USER,
                        v3_auth_key=secrets.get("snmp_auth_key"),
                        v3_priv_key=secrets.get("snmp_priv_key"),
                        vlan_ids=sorted(vids),
                    ).start()
                else:
                    host_key = keys_dir / f"{key.order_id}-{key.device_id}"
                    if not host_key.exists():
                        import asyncssh

                        asyncssh.generate_private_key("ssh-ed25519").write_private_key(
                            str(host_key)
                        )
                        host_key.chmod(0o600)
                    sim = IadSim(
                        key.device_id,
                        password=secrets.get("admin_password", "lab-Pass-7"),
                        host_key=host_key,
                        authorized_keys=list(authorized_keys),
                    ).start()
                lab.devices.append(
                    LabDevice(key, kind, DeviceAddress("127.0.0.1", sim.port), sim, secrets)
                )
    except BaseException:
        lab.stop()
        raise
    if targets_file is not None:
        order = ",".join(sorted({d.key.order_id for d in lab.devices}))
        write_targets(targets_file, lab.targets, order)
        lab.targets_file = targets_file
    return lab


def wait_for_stop() -> None:
    """Block until Ctrl-C or SIGTERM."""
    done = threading.Event()

    def stop(signum: int, frame: Any) -> None:
        done.set()

    old = signal.signal(signal.SIGTERM, stop)
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old)
