"""Pushing set-line configs to a lab IAD with the SSH driver; OpenSSH checks the result."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from napalm.base.exceptions import (
    CommandErrorException,
    CommitError,
    ConnectAuthError,
    ConnectionException,
    ConnectTimeoutError,
    MergeConfigException,
)

from provisioner.push.drivers.iad_ssh import IadSshDriver
from provisioner.push.errors import HostKeyUnknown
from provisioner.push.setlines import (
    change_lines,
    diff_configs,
    format_config,
    parse_config,
    quote,
    split_line,
)
from provisioner_lab.iad_sim import IadSim

CONFIG = """\
set system hostname milano
set system admin password "S3cret pass"
set voice sip registrar sip.officesmart.example
set voice line 1 number +390212345601
set voice line 1 display-name "Giulia Rossi"
set fxs 1 enable true
set fxs 1 account line 1
"""
OLD = {("system", "hostname"): "milano"}  # the lab IAD's factory config
NEW = parse_config(CONFIG)


def driver(sim: IadSim, **options: Any) -> IadSshDriver:
    args = {
        "port": sim.port,
        "host_key": sim.host_key,
        "conn_timeout": 3,
        "auth_timeout": 3,
        "banner_timeout": 3,
        "command_timeout": 2,
        **options,
    }
    return IadSshDriver("127.0.0.1", "admin", "lab-Pass-7", optional_args=args)


def ssh(openssh: str, sim: IadSim, key: Path, tmp_path: Path, command: str) -> str:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sim.known_hosts_line() + "\n")
    out = subprocess.run(
        [openssh, "-F", "/dev/null", "-i", str(key), "-p", str(sim.port), "-o", "BatchMode=yes",
         "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
         "-o", "IdentitiesOnly=yes", "admin@127.0.0.1", command],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_a_push_is_what_openssh_shows(
    iad: IadSim, openssh: str, client_key: tuple[Path, str], tmp_path: Path
) -> None:
    with driver(iad) as dev:
        dev.load_replace_candidate(config=CONFIG)
        diff = dev.compare_config()
        assert '+set system admin password "S3cret pass"' in diff
        dev.commit_config()
    expected = format_config(NEW) + "\n"
    assert ssh(openssh, iad, client_key[0], tmp_path, "show running-config") == expected
    assert ssh(openssh, iad, client_key[0], tmp_path, "show startup-config") == expected
    assert (iad.commits, iad.saves) == (1, 1)


def test_the_second_push_changes_nothing(iad: IadSim) -> None:
    with driver(iad) as dev:
        dev.load_replace_candidate(config=CONFIG)
        dev.commit_config()
        sent = len(iad.commands)
        dev.load_replace_candidate(config=CONFIG)
        assert dev.compare_config() == ""
        dev.commit_config()
        assert dev.last_changes == []
    assert (iad.commits, iad.saves) == (1, 1)
    assert "configure" not in iad.commands[sent:]  # only the read-back was sent


def test_only_the_differences_are_sent(iad: IadSim) -> None:
    iad.reset(running=NEW)
    changed = CONFIG.replace("Giulia Rossi", "Giulia R.").replace("set fxs 1 account line 1\n", "")
    with driver(iad) as dev:
        dev.load_replace_candidate(config=changed)
        dev.commit_config()
        assert dev.last_changes == [
            "delete fxs 1 account",
            'set voice line 1 display-name "Giulia R."',
        ]
    assert iad.running == parse_config(changed)


@pytest.mark.parametrize(
    ("fault", "params", "running_after"),
    [
        ("drop-mid", {"lines": 0}, "old"),  # cut before the first set line
        ("drop-mid", {"lines": 3}, "old"),  # cut in the middle of the set lines
        ("drop-mid", {"lines": 7}, "new"),  # 6 sets + commit done, cut at "end"
        ("hang", {"command": "set"}, "old"),  # silent after the first set
        ("hang", {"command": "commit"}, "new"),  # silent right after committing
        ("slow", {"delay": 3.0}, "old"),  # every answer later than the command timeout
    ],
)
def test_faults_fail_in_bounded_time_and_never_leave_a_mix(
    iad: IadSim, fault: str, params: dict[str, Any], running_after: str
) -> None:
    dev = driver(iad, command_timeout=1)
    dev.open()
    dev.load_replace_candidate(config=CONFIG)
    iad.set_fault(fault, **params)
    started = time.monotonic()
    with pytest.raises(CommitError):
        dev.commit_config()
    assert time.monotonic() - started < 5
    assert iad.running == (OLD if running_after == "old" else NEW)
    assert iad.startup == OLD  # never saved

    iad.set_fault(None)
    dev.rollback()  # reconnects if the session died
    assert iad.running == OLD
    assert iad.startup == OLD or running_after == "new"  # a rollback saves what it restores
    dev.close()


def test_auth_failure(iad: IadSim) -> None:
    iad.set_fault("auth-fail")
    started = time.monotonic()
    with pytest.raises(ConnectAuthError, match="authentication failed"):
        driver(iad).open()
    assert time.monotonic() - started < 5


def test_a_changed_host_key_is_refused_even_with_tofu(iad: IadSim) -> None:
    iad.set_fault("new-host-key")
    for tofu in (False, True):
        dev = driver(iad, trust_on_first_use=tofu)
        with pytest.raises(ConnectionException, match="CHANGED"):
            dev.open()
        assert dev.new_host_key is None
    assert iad.commands == []


def test_a_silent_server_is_a_timeout(iad: IadSim) -> None:
    iad.set_fault("no-banner")
    started = time.monotonic()
    with pytest.raises(ConnectTimeoutError, match="no answer in time"):
        driver(iad, conn_timeout=1, banner_timeout=1).open()
    assert time.monotonic() - started < 5


def test_unknown_host_keys_only_with_trust_on_first_use(iad: IadSim) -> None:
    with pytest.raises(HostKeyUnknown, match="unknown"):
        driver(iad, host_key=None).open()
    dev = driver(iad, host_key=None, trust_on_first_use=True)
    with dev:
        assert dev.new_host_key == iad.host_key
    # Stored and pinned, it now works without trusting anything new.
    with driver(iad, host_key=dev.new_host_key) as pinned:
        assert pinned.new_host_key is None
        assert pinned.get_facts()["hostname"] == "milano"


def test_a_known_hosts_file_written_by_openssh(
    iad: IadSim, openssh: str, client_key: tuple[Path, str], tmp_path: Path
) -> None:
    known_hosts = tmp_path / "known_hosts"
    out = subprocess.run(
        [openssh, "-F", "/dev/null", "-i", str(client_key[0]), "-p", str(iad.port),
         "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new",
         "-o", "HashKnownHosts=yes", "-o", f"UserKnownHostsFile={known_hosts}",
         "admin@127.0.0.1", "show version"],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert known_hosts.read_text().startswith("|1|")  # hashed entry
    with driver(iad, host_key=None, known_hosts=str(known_hosts)) as dev:
        assert dev.get_facts()["serial_number"] == "LAB0000001"
    iad.set_fault("new-host-key")
    with pytest.raises(ConnectionException, match="CHANGED"):
        driver(iad, host_key=None, known_hosts=str(known_hosts)).open()


def test_a_refused_line_fails_the_commit_and_changes_nothing(iad: IadSim) -> None:
    iad.reset(refuse=[r"^set voice codec", r"^set system admin"])  # firmware without those
    with driver(iad) as dev:
        dev.load_replace_candidate(config=CONFIG + "set voice codec g729 true\n")
        with pytest.raises(CommitError, match="refused 'set system admin password <value>'") as err:
            dev.commit_config()
        assert "S3cret" not in str(err.value)  # error messages never carry values
        assert iad.running == OLD
        assert iad.commits == 0
        assert iad.commands[-2:] == ["discard", "end"]  # the device is left in exec mode
        with pytest.raises(CommandErrorException, match="% Invalid command: bogus"):
            dev.cli(["bogus"])
        assert dev.cli(["show version"])["show version"].startswith("model: LAB-IAD-2FXS")


def test_values_cannot_inject_commands(
    iad: IadSim, openssh: str, client_key: tuple[Path, str], tmp_path: Path
) -> None:
    nasty = 'x"; delete system hostname \\ $(id)'
    config = f"set system hostname milano\nset voice line 1 display-name {quote(nasty)}\n"
    with driver(iad) as dev:
        dev.load_replace_candidate(config=config)
        dev.commit_config()
        assert iad.running[("voice", "line", "1", "display-name")] == nasty
        assert iad.running[("system", "hostname")] == "milano"
        shown = ssh(openssh, iad, client_key[0], tmp_path, "show running-config")
        assert parse_config(shown) == parse_config(config)

        sent = len(iad.commands)
        with pytest.raises(MergeConfigException, match="control characters"):
            dev.load_replace_candidate(config='set a b "one\x1b[2Kdelete system"\n')
        with pytest.raises(MergeConfigException, match="unterminated quote"):
            dev.load_replace_candidate(config='set a b "one\ndelete system hostname"\n')
        with pytest.raises(MergeConfigException, match="not a valid path word"):
            dev.load_replace_candidate(config="set a;reboot b c\n")
        assert iad.commands[sent:] == []


def test_merge_keeps_what_the_candidate_does_not_mention(iad: IadSim) -> None:
    iad.reset(running=NEW)
    with driver(iad) as dev:
        dev.load_merge_candidate(config="set voice line 2 number +390212345602\n")
        assert dev.compare_config().count("\n+set") == 1
        dev.commit_config()
    assert iad.running == {**NEW, ("voice", "line", "2", "number"): "+390212345602"}


def test_get_config_reads_what_the_device_shows(iad: IadSim) -> None:
    iad.reset(running=NEW)
    with driver(iad) as dev:
        before = dev.get_config()
        assert before["candidate"] == "" and "set voice line 2 number" not in before["running"]
        assert before["running"].startswith("set ") and before["startup"].startswith("set ")
        dev.load_merge_candidate(config="set voice line 2 number +390212345602\n")
        only = dev.get_config(retrieve="candidate")
        assert only["running"] == only["startup"] == ""
        assert "set voice line 2 number +390212345602" in only["candidate"]


def test_dialect_functions() -> None:
    assert split_line('set a "b \\"c\\" \\\\"') == ["set", "a", 'b "c" \\']
    assert quote("") == '""'
    assert parse_config(format_config(NEW)) == NEW
    with pytest.raises(ValueError, match="clashes with"):
        parse_config("set a b 1\nset a b c 2\n")
    # A leaf becoming a section: delete first, then set.
    assert change_lines({("a", "b"): "1"}, {("a", "b", "c"): "2"}) == [
        "delete a b",
        "set a b c 2",
    ]
    # Dropping a whole line is one delete at the top of what goes.
    old = {("voice", "line", "1", "n"): "1", ("voice", "line", "2", "n"): "2", ("x",): "1"}
    assert change_lines(old, {("voice", "line", "1", "n"): "1", ("x",): "1"}) == [
        "delete voice line 2"
    ]
    assert diff_configs(NEW, NEW) == ""
