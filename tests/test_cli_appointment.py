"""The CLI at the install appointment (issue 15): one vocabulary of states with the API and
the page, local time, a status that fits 60 columns, --json on every read command,
status --watch, shell completion, help examples one per line, device ids where a MAC is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from provisioner.cli.app import app

ORDER = "WT-2026-000123"


def run(*args: str, columns: int = 60) -> Any:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": str(columns)})
    return result


def test_status_fits_60_columns_and_says_the_api_s_words_in_local_time(
    sample_inventory: Any,
) -> None:
    armed = sample_inventory.arm(ORDER, 30, actor="test")
    done = run("status", ORDER)
    assert done.exit_code == 0, done.output
    lines = done.output.splitlines()
    assert max(len(line) for line in lines) <= 60, [ln for ln in lines if len(ln) > 60]
    assert "…" not in done.output and "│" not in done.output  # nothing cut into a table cell
    local = armed.expires_at.astimezone(ZoneInfo("Europe/Rome")).strftime("%H:%M:%S")
    assert f"window until {local}" in done.output  # Italian time, not UTC
    assert "phone-200 armed  Alcatel Temporis IP701G" in done.output  # titles, as show has
    assert "phone-209 planned" in done.output
    api = {d.device_id: d.state.value for d in sample_inventory.read_status(ORDER).devices}
    as_json = json.loads(run("status", ORDER, "--json").output)
    assert {d["device"]: d["state"] for d in as_json["devices"]} == api
    shown = run("show", ORDER, columns=200).output
    assert "armed" in shown and " bound " not in shown  # show: the same words


@pytest.mark.parametrize(
    "args",
    [("orders",), ("show", ORDER), ("status", ORDER), ("blocks",), ("token", "list")],
    ids=lambda a: " ".join(a),
)
def test_every_read_command_prints_json_for_scripts(
    sample_inventory: Any, args: tuple[str, ...]
) -> None:
    done = run(*args, "--json")
    assert done.exit_code == 0, done.output
    parsed = json.loads(done.output)
    assert isinstance(parsed, (list, dict))


def _shows_armed_in_a_later_view(output: str) -> bool:
    return output.count("--- ") >= 2 and "armed" in output.split("--- ")[-1]


def test_status_watch_prints_again_when_a_device_changes(sample_inventory: Any, home: Path) -> None:
    env = {**os.environ, "PROVISIONER_HOME": str(home), "COLUMNS": "60"}
    command = str(Path(sys.executable).parent / "provisioner")
    cmd = [command, "status", ORDER, "--watch", "--interval", "0.2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        # The first view, however long the command takes to start on a busy machine.
        deadline = time.monotonic() + 60
        while not any(ln.startswith("--- ") for ln in lines):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
            lines.append(proc.stdout.readline())
        sample_inventory.arm(ORDER, 10, actor="test")
        # A new view that shows the change, within a few intervals.
        deadline = time.monotonic() + 30
        while not _shows_armed_in_a_later_view("".join(lines)):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
            lines.append(proc.stdout.readline())
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    output = "".join(lines)
    assert output.count("--- ") >= 2, output
    assert "armed" in output.split("--- ")[-1]


def test_shell_completion_is_on() -> None:
    done = run("--help", columns=120)
    assert "--install-completion" in done.output


def _docstring_examples(command: Any) -> list[str]:
    text = command.help or ""
    return [ln.strip() for ln in text.splitlines() if ln.strip().startswith("provisioner ")]


def test_help_keeps_every_example_on_its_own_line_and_every_flag_whole() -> None:
    import typer

    group = typer.main.get_command(app)
    ctx = group.make_context("provisioner", ["--help"], resilient_parsing=True)
    names = group.list_commands(ctx)
    checked = 0
    for name in names:
        if name == "lab":
            continue
        done = run(name, "--help")
        assert done.exit_code == 0, (name, done.output)
        lines = [ln.strip() for ln in done.output.splitlines()]
        for example in _docstring_examples(group.get_command(ctx, name)):
            assert example in lines, f"{name}: example not on a line of its own: {example}"
            checked += 1
        # No word of the help is split at a hyphen (--dry-/run, lab-/targets.yaml).
        assert not any(ln.endswith("-") and not ln.endswith(" -") for ln in lines), (
            name,
            done.output,
        )
    assert checked >= 10


def test_arm_takes_a_device_id_like_push_does(sample_inventory: Any) -> None:
    done = run("arm", "sw-catania", "--minutes", "15")
    assert done.exit_code == 0, done.output
    assert "WT-2026-000104: armed 1 devices" in done.output
    ambiguous = run("arm", "phone-200")
    assert ambiguous.exit_code == 1
    assert (
        "WT-2026-000104/phone-200" in ambiguous.output
        and "WT-2026-000123/phone-200" in ambiguous.output
    )
    assert "Traceback" not in ambiguous.output


def test_apply_says_a_new_order_was_created_once(inventory: Any, tmp_path: Path) -> None:
    sample = Path(__file__).resolve().parent.parent / "inventory" / "orders" / "WT-2026-000101.yaml"
    done = run("apply", str(sample), columns=200)
    assert done.exit_code == 0, done.output
    assert done.output.count("created") == 1, done.output


def test_a_time_shown_by_blocks_is_local(sample_inventory: Any) -> None:
    from datetime import UTC, timedelta

    from provisioner.store.models import SourceBlock

    now = datetime.now(UTC).replace(microsecond=0)
    with sample_inventory.db.write() as session:
        until = now + timedelta(minutes=15)
        session.add(SourceBlock(source="203.0.113.5", blocked_at=now, until=until,
                                protocol="tftp", names=20))  # fmt: skip
    done = run("blocks", columns=120)
    local = (now + timedelta(minutes=15)).astimezone(ZoneInfo("Europe/Rome")).strftime("%H:%M:%S")
    assert local in done.output, done.output
