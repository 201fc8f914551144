"""A boot storm on the lab network: 1,000 devices power on within 10 s, each doing a real
DHCP exchange, fetching its files from the server DHCP named and registering on Kamailio.

What an operator would notice: after a power cut every device is back (registered, or its
files fetched when it has nothing to register) within a minute of its power-on, and every
file it got is the one render gives. And the lab leaves nothing behind on the machine.
Skips, saying why, where network namespaces cannot be made (not root, a container that
refuses ``ip netns add``) or dnsmasq/Kamailio are missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from provisioner.cli.app import app
from provisioner_lab.labnet import LabNet, probe_netns
from provisioner_lab.sip import missing_tools
from provisioner_lab.storm import AIM_SECONDS, run_storm

# Not the default "plab" (a storm someone runs by hand is left alone), and this process's
# own: two test runs at once on one machine must not take each other's network down.
NAME = f"pst{os.getpid()}"


@pytest.fixture
def _netns_allowed() -> None:
    why = probe_netns()
    if why:
        pytest.skip(f"no lab network here: {why}")
    if shutil.which("dnsmasq") is None or "kamailio" in missing_tools():
        pytest.skip("the storm needs dnsmasq and kamailio (apt-get install dnsmasq kamailio)")


def _leftovers() -> list[str]:
    """Our namespaces and any interface of ours in the machine's own namespace."""
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return [line for line in (netns + links).splitlines()
            if NAME in line or "to-svc" in line or "to-dev" in line]  # fmt: skip


def test_without_root_the_storm_and_the_network_say_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert probe_netns() == "the lab network needs root (network namespaces, raw sockets)"
    runner = CliRunner()
    for args in (["lab", "storm", "--devices", "10"], ["lab", "net", "up", "--name", NAME]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, result.output
        assert "needs root" in result.output
    assert _leftovers() == []


@pytest.mark.slow
@pytest.mark.usefixtures("_netns_allowed")
def test_a_thousand_devices_boot_register_and_get_exactly_their_rendered_files() -> None:
    lines: list[str] = []
    report = run_storm(devices=1000, spread=10, seed=7, name=NAME, emit=lines.append)
    text = "\n".join(lines + report.lines())
    print(text)  # the figures, with pytest -s
    assert report.devices == 1000
    assert {r.kind for r in report.results} == {"phone", "dect_base", "iad", "ont"}
    done = report.done
    assert len([d for d in done if d <= AIM_SECONDS]) >= 999, text
    assert max(done) <= AIM_SECONDS, text
    assert report.files >= 1900, text  # a phone's file and its phonebook, the others' one
    assert report.differ == 0, text
    registered = [r for r in report.results if r.accounts and r.registered is not None]
    assert len(registered) >= 0.999 * len(report.with_accounts), text
    assert report.ok, text
    assert _leftovers() == []


@pytest.mark.usefixtures("_netns_allowed")
def test_net_up_twice_says_so_and_down_leaves_nothing_behind() -> None:
    runner = CliRunner()
    first = runner.invoke(app, ["lab", "net", "up", "--name", NAME, "--detach", "--no-services"])
    assert first.exit_code == 0, first.output
    try:
        assert LabNet(name=NAME).is_up()
        again = runner.invoke(app, ["lab", "net", "up", "--name", NAME, "--no-services"])
        assert again.exit_code == 0, again.output
        assert "up already" in again.output
    finally:
        down = runner.invoke(app, ["lab", "net", "down", "--name", NAME])
    assert down.exit_code == 0, down.output
    assert f"{NAME}-svc" in down.output
    assert _leftovers() == []
    gone = runner.invoke(app, ["lab", "net", "down", "--name", NAME])
    assert "not up" in gone.output
