"""Driver failures are typed (NAPALM's pattern): a caller decides by type, never by text, and
the messages are in the domain's words (no option or flag names)."""

from __future__ import annotations

from typing import Any

import pytest

from provisioner.errors import ProvisionerError
from provisioner.push.drivers.dlink_snmp import DlinkSnmpDriver
from provisioner.push.drivers.iad_ssh import IadSshDriver
from provisioner.push.errors import (
    ConnectAuthError,
    ConnectionException,
    ConnectTimeoutError,
    HostKeyChanged,
    HostKeyUnknown,
    WrongDevice,
    retried,
)
from provisioner_lab.iad_sim import IadSim
from provisioner_lab.switch_sim import SwitchSim


def iad_driver(sim: IadSim, **options: Any) -> IadSshDriver:
    args = {"port": sim.port, "host_key": sim.host_key, "conn_timeout": 2, "banner_timeout": 2,
            "auth_timeout": 2, "command_timeout": 2, **options}  # fmt: skip
    return IadSshDriver("127.0.0.1", "admin", "lab-Pass-7", optional_args=args)


def snmp_driver(sim: SwitchSim, **options: Any) -> DlinkSnmpDriver:
    args = {"port": sim.port, "snmp_timeout": 0.3, "snmp_retries": 0, **options}
    return DlinkSnmpDriver("127.0.0.1", "", "private", timeout=10, optional_args=args)


def test_an_unknown_host_key_is_its_own_type_and_names_no_option(iad: IadSim) -> None:
    with pytest.raises(HostKeyUnknown) as err:
        iad_driver(iad, host_key=None).open()
    assert err.value.offered == iad.host_key
    assert "trust_on_first_use" not in str(err.value) and "--" not in str(err.value)
    assert isinstance(err.value, ConnectionException) and isinstance(err.value, ProvisionerError)
    assert not retried(err.value)


def test_a_changed_host_key_is_its_own_type_with_both_keys(iad: IadSim) -> None:
    pinned = iad.host_key
    iad.set_fault("new-host-key")
    with pytest.raises(HostKeyChanged) as err:
        iad_driver(iad, host_key=pinned, trust_on_first_use=True).open()
    assert err.value.pinned == pinned and err.value.offered not in ("", pinned)
    assert not retried(err.value)


def test_refused_credentials_are_an_auth_error_never_retried(iad: IadSim) -> None:
    iad.set_fault("auth-fail")
    with pytest.raises(ConnectAuthError) as err:
        iad_driver(iad).open()
    assert not retried(err.value)


def test_silence_is_a_timeout_and_is_retried(iad: IadSim, switch: SwitchSim) -> None:
    iad.set_fault("no-banner")
    with pytest.raises(ConnectTimeoutError) as ssh:
        iad_driver(iad, conn_timeout=1, banner_timeout=1).open()
    switch.set_fault("no-reply")
    with pytest.raises(ConnectTimeoutError) as snmp:
        snmp_driver(switch).open()
    assert retried(ssh.value) and retried(snmp.value)


def test_another_model_than_the_inventory_says_is_the_wrong_device(switch: SwitchSim) -> None:
    with pytest.raises(WrongDevice, match="the inventory says dlink-dgs-1100-08p") as err:
        snmp_driver(switch, model="dlink-dgs-1100-08p").open()
    assert not retried(err.value) and "optional_args" not in str(err.value)
