"""Addresses, targets files and diff masking: plain data, no network."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.errors import PushFailed
from provisioner.push.results import count_diff_lines, mask_diff
from provisioner.push.targets import DeviceAddress, load_targets, parse_target, write_targets


def test_addresses_parse_and_print() -> None:
    assert DeviceAddress.parse("127.0.0.1:161") == DeviceAddress("127.0.0.1", 161)
    assert DeviceAddress.parse("[::1]:2222") == DeviceAddress("::1", 2222)
    assert str(DeviceAddress("::1", 2222)) == "[::1]:2222"
    assert parse_target("sw-catania=sw1.lan:161") == (
        "sw-catania",
        DeviceAddress("sw1.lan", 161),
    )


@pytest.mark.parametrize(
    "text",
    ["-oProxyCommand=id:22", "a;id:22", "$(id):22", "`id`:22", "a b:22", "host:0", "host:70000",
     "host", "host\n:22"],
)  # fmt: skip
def test_addresses_that_could_be_read_as_options_or_commands_are_refused(text: str) -> None:
    with pytest.raises(PushFailed):
        DeviceAddress.parse(text)


def test_bad_target_options_are_refused() -> None:
    with pytest.raises(PushFailed):
        parse_target("127.0.0.1:161")
    with pytest.raises(PushFailed):
        DeviceAddress("127.0.0.1", 161, username="-oProxyCommand=x")


def test_targets_file_round_trip_and_short_form(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    targets = {
        "sw-catania": DeviceAddress("127.0.0.1", 1161, snmp_version="3"),
        "iad-catania": DeviceAddress("127.0.0.1", 2222, username="admin"),
    }
    write_targets(path, targets, "WT-2026-000104")
    assert load_targets(path) == targets
    path.write_text('{"sw-catania": "10.0.0.2:161"}')  # JSON, no "devices" level
    assert load_targets(path) == {"sw-catania": DeviceAddress("10.0.0.2", 161)}
    path.write_text("devices: [a, b]\n")
    with pytest.raises(PushFailed):
        load_targets(path)


def test_diffs_mask_known_secrets_and_any_secret_looking_value() -> None:
    diff = "\n".join(
        [
            "--- running",
            "+++ candidate",
            "-set system admin password old-Secret-1",  # an old value the store forgot
            "+set system admin password NEW-secret-2",
            "+set voice sip registrar sip.example",
            ' sysName = "sw-1"',
            '-snmpCommunity = "xyz"',
        ]
    )
    masked = mask_diff(diff, ["NEW-secret-2"])
    assert "old-Secret-1" not in masked and "NEW-secret-2" not in masked and "xyz" not in masked
    assert "-set system admin password ********" in masked
    assert "+set voice sip registrar sip.example" in masked
    assert ' sysName = "sw-1"' in masked
    assert count_diff_lines(masked) == 4
