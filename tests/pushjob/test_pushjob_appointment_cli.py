"""``backups`` and ``rollback`` at the appointment (issue 15): device ids work where a MAC
does, a dry run keeps no backup version, a rollback says what it restores and asks first, a
missing version lists the ones there are, and the audit log says "rollback"."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from provisioner.cli.app import app
from provisioner.orders.reads import AuditQuery

ORDER = "WT-2026-000104"
FAST = ["--connect-timeout", "3", "--command-timeout", "2"]


@pytest.fixture
def cli(push_lab: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("PROVISIONER_HOME", str(push_lab.inv.settings.home))
    for var in ("PROVISIONER_DATABASE_URL", "PROVISIONER_SETTINGS", "PROVISIONER_SECRET_KEY"):
        monkeypatch.delenv(var, raising=False)

    def run(*args: str, stdin: str | None = None) -> Any:
        return CliRunner().invoke(app, list(args), input=stdin, env={"COLUMNS": "200"})

    return run


def _versions(cli: Any, device: str) -> list[dict[str, Any]]:
    done = cli("backups", device, "--json")
    assert done.exit_code == 0, done.output
    return list(json.loads(done.output))


def test_a_dry_run_leaves_no_backup_version(push_lab: Any, cli: Any) -> None:
    target = f"sw-catania=127.0.0.1:{push_lab.sw_at.port}"
    dry = cli("push", "sw-catania", "--target", target, "--dry-run", *FAST)
    assert dry.exit_code == 0, dry.output
    assert "dry-run" in dry.output
    assert _versions(cli, "sw-catania") == []
    real = cli("push", "sw-catania", "--target", target, *FAST)
    assert real.exit_code == 0, real.output
    assert [v["reason"] for v in _versions(cli, "sw-catania")] == ["pre-push"]


def test_rollback_names_the_backup_asks_and_is_audited_as_a_rollback(
    push_lab: Any, cli: Any
) -> None:
    target = f"sw-catania=127.0.0.1:{push_lab.sw_at.port}"
    assert cli("push", "sw-catania", "--target", target, *FAST).exit_code == 0
    missing = cli("rollback", "sw-catania", "--to", "9", "--target", target, *FAST)
    assert missing.exit_code == 1
    assert "no version 9 stored (versions: 1)" in missing.output

    declined = cli("rollback", "sw-catania", "--to", "1", "--target", target, *FAST, stdin="n\n")
    assert declined.exit_code == 1
    assert "backup 1 taken" in declined.output and "pre-push" in declined.output
    assert "not rolled back" in declined.output
    assert len(_versions(cli, "sw-catania")) == 1  # nothing was done

    done = cli("rollback", "sw-catania", "--to", "1", "--target", target, *FAST, stdin="y\n")
    assert done.exit_code == 0, done.output
    events = push_lab.inv.read_audit(
        AuditQuery(order_id=ORDER, device="sw-catania"), lambda e: e.action, 20, 0
    )
    assert "rollback" in events
