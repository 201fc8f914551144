"""The push job decides by error type, never by message text, and its results say what went
wrong in the domain's words; the CLI adds the option that helps."""

from __future__ import annotations

from typing import Any

import napalm
import pytest
from napalm.base.exceptions import ConnectionException
from sqlalchemy import select
from typer.testing import CliRunner

from provisioner.cli.app import app
from provisioner.push.drivers.iad_ssh import IadSshDriver
from provisioner.push.job import push_device
from provisioner.push.runner import push_many
from provisioner.push.targets import Timeouts
from provisioner.store.models import AuditEvent
from provisioner.store.push_models import HostKey


def _audited(lab: Any) -> list[str]:
    with lab.inv.db.read() as session:
        return list(
            session.scalars(
                select(AuditEvent.action).where(AuditEvent.device == lab.iad_key.device_id)
            )
        )


def test_a_dropped_connection_whose_text_says_changed_is_retried_not_taken_for_a_host_key(
    push_lab: Any, fast: Timeouts, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab = push_lab
    opened = []

    class Flaky(IadSshDriver):
        def open(self) -> None:
            opened.append(1)
            if len(opened) == 1:  # words a device or a proxy might say; not a key change
                raise ConnectionException("connection lost: the host key is unknown, CHANGED")
            super().open()

    real = napalm.get_network_driver
    monkeypatch.setattr(
        napalm, "get_network_driver", lambda name: Flaky if name == "iad_ssh" else real(name)
    )
    res = push_device(lab.inv, lab.renderer, lab.iad_key, lab.iad_at, timeouts=fast)
    assert res.result == "ok" and res.attempts == 2, res.error
    assert "push.host-key-changed" not in _audited(lab)


@pytest.fixture
def cli(push_lab: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("PROVISIONER_HOME", str(push_lab.inv.settings.home))
    for var in ("PROVISIONER_DATABASE_URL", "PROVISIONER_SETTINGS", "PROVISIONER_SECRET_KEY"):
        monkeypatch.delenv(var, raising=False)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args), catch_exceptions=False)


def test_an_unknown_host_key_result_names_no_option_and_the_cli_adds_it(
    push_lab: Any, fast: Timeouts, cli: Any
) -> None:
    lab = push_lab
    with lab.inv.db.write() as session:
        session.delete(session.get(HostKey, lab.device_pk(lab.iad_key)))
    res = push_device(lab.inv, lab.renderer, lab.iad_key, lab.iad_at, timeouts=fast)
    assert res.result == "failed" and "unknown" in res.error
    assert "trust" not in res.error and "--" not in res.error  # what API clients receive
    target = f"{lab.iad_key.device_id}=127.0.0.1:{lab.iad_at.port}"
    out = cli("push", lab.iad_key.mac, "--target", target, "--connect-timeout", "3")
    assert out.exit_code == 1 and "--trust-on-first-use" in out.output
    assert lab.iad.commits == 0


def test_a_missing_address_names_no_option_and_the_cli_adds_it(push_lab: Any, cli: Any) -> None:
    lab = push_lab
    _, (res,) = push_many(lab.inv, lab.renderer, [(lab.iad_key, None)])
    assert res.result == "failed" and "no address" in res.error and "--" not in res.error
    out = cli("push", lab.iad_key.mac)
    assert out.exit_code == 1 and f"--target {lab.iad_key.device_id}=HOST:PORT" in out.output
