"""The lab IAD speaks its CLI dialect to OpenSSH's own client."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from provisioner_lab.iad_sim import IadSim, config_lines, parse_config, quote, tokens


def ssh_argv(ssh: str, sim: IadSim, key: Path, known_hosts: Path, *extra: str) -> list[str]:
    known_hosts.write_text(sim.known_hosts_line() + "\n")
    return [
        ssh, "-i", str(key), "-p", str(sim.port),
        "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes", "-o", "ConnectTimeout=3", "-o", "IdentitiesOnly=yes",
        "-F", "/dev/null", *extra, "admin@127.0.0.1",
    ]  # fmt: skip


def run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=20)


def test_exec_request_shows_the_running_config(
    iad: IadSim, openssh: str, client_key: tuple[Path, str], tmp_path: Path
) -> None:
    out = run([*ssh_argv(openssh, iad, client_key[0], tmp_path / "kh"), "show running-config"])
    assert out.returncode == 0, out.stderr
    assert out.stdout == "set system hostname milano\n"


def test_an_interactive_session_configures_commits_and_saves(
    iad: IadSim, openssh: str, client_key: tuple[Path, str], tmp_path: Path
) -> None:
    script = (
        "configure\r"  # OpenSSH's pty sends \r; \n and \r\n work too
        'set voice line 1 display-name "Giulia \\"G\\" Rossi"\n'
        "set voice line 1 number +390212345601\r\n"
        "commit\nend\nsave\nshow running-config\nexit\n"
    )
    out = run(ssh_argv(openssh, iad, client_key[0], tmp_path / "kh", "-tt"), stdin=script)
    assert out.returncode == 0, out.stderr
    assert "iad-milano(config)#" in out.stdout
    assert 'set voice line 1 display-name "Giulia \\"G\\" Rossi"' in out.stdout
    assert iad.running[("voice", "line", "1", "display-name")] == 'Giulia "G" Rossi'
    assert iad.startup == iad.running
    assert (iad.commits, iad.saves) == (1, 1)


def test_uncommitted_changes_never_reach_running(
    iad: IadSim, openssh: str, client_key: tuple[Path, str], tmp_path: Path
) -> None:
    script = "configure\nset voice line 1 number 1\ndelete system hostname\nexit\n"
    run(ssh_argv(openssh, iad, client_key[0], tmp_path / "kh", "-tt"), stdin=script)
    assert iad.running == {("system", "hostname"): "milano"}
    assert iad.commits == 0


def test_bad_commands_are_reported_and_keep_the_mode(
    iad: IadSim, openssh: str, client_key: tuple[Path, str], tmp_path: Path
) -> None:
    argv = ssh_argv(openssh, iad, client_key[0], tmp_path / "kh")
    out = run([*argv, "show running-configuration"])
    assert out.returncode == 1
    assert out.stdout.strip() == "% Invalid command: show running-configuration"
    script = 'configure\nset a "unterminated\ndelete no such path\nset voice 1\nset voice x y\n'
    out = run([*ssh_argv(openssh, iad, client_key[0], tmp_path / "kh", "-tt")], stdin=script)
    assert '% Invalid command: set a "unterminated' in out.stdout
    assert "% Invalid command: delete no such path" in out.stdout
    # "voice" is a leaf now, so "voice x" cannot be a section under it.
    assert "% Invalid command: set voice x y" in out.stdout
    assert out.stdout.rstrip().endswith("iad-milano(config)#")


def test_refused_auth_changed_key_and_silence_are_errors(
    iad: IadSim, openssh: str, client_key: tuple[Path, str], tmp_path: Path
) -> None:
    argv = [*ssh_argv(openssh, iad, client_key[0], tmp_path / "kh"), "show version"]
    assert "model: LAB-IAD-2FXS" in run(argv).stdout

    iad.set_fault("auth-fail")
    out = run(argv)
    assert out.returncode == 255
    assert "Permission denied" in out.stderr

    iad.set_fault("new-host-key")
    out = run(argv)  # known_hosts still holds the recorded key
    assert out.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in out.stderr

    iad.set_fault("no-banner")
    started = time.monotonic()
    out = run([argv[0], "-o", "ConnectTimeout=1", *argv[1:]])
    assert out.returncode == 255
    assert time.monotonic() - started < 10

    iad.set_fault(None)
    assert "model: LAB-IAD-2FXS" in run(argv).stdout


def test_password_login_over_a_pty(iad: IadSim) -> None:
    # OpenSSH will not take a password from a script; paramiko (what netmiko uses) does.
    import paramiko

    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # noqa: S507 - lab only
    client.connect(
        "127.0.0.1",
        iad.port,
        "admin",
        "lab-Pass-7",
        look_for_keys=False,
        allow_agent=False,
        timeout=5,
    )
    try:
        _, stdout, _ = client.exec_command("show version", timeout=5)
        assert "serial: LAB0000001" in stdout.read().decode()
        with pytest.raises(paramiko.AuthenticationException):
            other = paramiko.SSHClient()
            other.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # noqa: S507
            other.connect(
                "127.0.0.1",
                iad.port,
                "admin",
                "wrong",
                look_for_keys=False,
                allow_agent=False,
                timeout=5,
            )
    finally:
        client.close()


def test_dialect_text_forms() -> None:
    assert tokens('set a b "x \\"y\\" \\\\ z"') == ["set", "a", "b", 'x "y" \\ z']
    assert tokens('set a "b"c') is None
    assert quote("") == '""'
    assert quote("plain") == "plain"
    config = {("b",): "2", ("a", "z"): "has space", ("a", "b"): 'q"'}
    text = "\n".join(config_lines(config))
    assert text == 'set a b "q\\""\nset a z "has space"\nset b 2'
    assert parse_config(text) == config
