"""Every fault ends "failed" or "rolled back", never "ok"; the device ends with the old or the
new config, never a mix; a backup was taken; the other device of the run is unaffected."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select

from provisioner.push.backups import list_backups, read_backup
from provisioner.push.drivers.dlink_snmp import DlinkSnmpDriver
from provisioner.push.errors import RollbackIncomplete
from provisioner.push.job import push_device, rollback_device
from provisioner.push.runner import push_many
from provisioner.push.setlines import parse_config
from provisioner.push.targets import Timeouts
from provisioner.store.models import AuditEvent


def switch_state(lab: Any) -> str:
    """The switch's managed objects, read from the agent itself (bypassing the fault proxy)."""
    community = lab.secret("sw-catania", "snmp_community")
    args = {"port": lab.switch.agent_port, "model": lab.sw_key.model}
    with DlinkSnmpDriver("127.0.0.1", "", community, optional_args=args) as dev:
        return dev.read_plan().to_yaml()


def new_switch_state(lab: Any, before: str) -> str:
    """The switch after the whole plan: the plan's objects over ``before`` (PoE ports the
    plan does not name keep their state)."""
    import dataclasses

    from provisioner.push import setplan as sp

    payload = lab.renderer.push_payload(lab.sw_key.order_id, lab.sw_key.device_id)
    plan = sp.parse_setplan(payload[1].data.decode())
    old = sp.parse_setplan(before)
    return dataclasses.replace(plan, poe={**old.poe, **plan.poe}).to_yaml()


def iad_new(lab: Any) -> dict[tuple[str, ...], str]:
    payload = lab.renderer.push_payload(lab.iad_key.order_id, lab.iad_key.device_id)
    return parse_config(payload[1].data.decode())


def test_switch_dropped_mid_commit_is_rolled_back(push_lab: Any, fast: Timeouts) -> None:
    lab = push_lab
    before = switch_state(lab)

    def on_step(device: str, step: str) -> None:
        if step == "commit":  # the plan's one SET PDU goes through, then darkness
            lab.switch.set_fault("drop-mid", after=1)
        elif step == "rollback":  # the line comes back while we roll back
            lab.switch.set_fault(None)

    res = push_device(lab.inv, lab.renderer, lab.sw_key, lab.sw_at, timeouts=fast, on_step=on_step)
    assert res.result == "rolled back" and res.failed and not res.changed, res.error
    assert "reading back failed" in res.error
    assert lab.switch.write_count() > 0  # it really was changed before the rollback
    assert switch_state(lab) == before
    assert (
        res.backup_version == 1 and read_backup(lab.inv, lab.sw_key).text.strip() == before.strip()
    )


def test_switch_dark_for_good_fails_then_rollback_restores_the_backup(
    push_lab: Any, fast: Timeouts
) -> None:
    lab = push_lab
    before = switch_state(lab)
    quick = Timeouts(snmp=0.4, snmp_retries=1, retries=1, backoff=0.1)

    def on_step(device: str, step: str) -> None:
        if step == "commit":  # the one SET PDU goes through, then darkness for good
            lab.switch.set_fault("drop-mid", after=1)

    res = push_device(lab.inv, lab.renderer, lab.sw_key, lab.sw_at, timeouts=quick, on_step=on_step)
    assert res.result == "failed" and "restore backup 1" in res.error
    assert isinstance(res.exception, RollbackIncomplete) and res.exception.backup_version == 1
    # The whole plan went in one SET PDU, applied all or nothing: the new config, not a mix.
    assert switch_state(lab) == new_switch_state(lab, before)

    lab.switch.set_fault(None)
    back = rollback_device(lab.inv, lab.renderer, lab.sw_key, lab.sw_at, version=1, timeouts=fast)
    assert back.result == "ok", back.error
    assert switch_state(lab) == before
    assert [b.reason for b in list_backups(lab.inv, lab.sw_key)] == ["pre-push", "manual"]


def test_switch_no_reply_fails_in_bounded_time_and_the_iad_is_unaffected(
    push_lab: Any,
) -> None:
    lab = push_lab
    lab.switch.set_fault("no-reply")
    t = Timeouts(connect=3, command=2, snmp=0.5, snmp_retries=2, retries=1, backoff=0.1)
    started = time.monotonic()
    _, (sw, iad) = push_many(
        lab.inv, lab.renderer, [(lab.sw_key, lab.sw_at), (lab.iad_key, lab.iad_at)], timeouts=t
    )
    bound = (t.snmp * (t.snmp_retries + 1) + 1.0) * (t.retries + 1) + t.backoff + 2.0
    assert sw.result == "failed" and sw.attempts == 2 and sw.seconds < bound, sw
    assert "no answer" in sw.error or "timeout" in sw.error.lower() or "unreachable" in sw.error
    assert iad.result == "ok" and iad.seconds < sw.seconds
    assert time.monotonic() - started < bound + 2
    assert lab.switch.write_count() == 0 and lab.iad.running == iad_new(lab)


def test_switch_slower_than_the_timeout_fails_without_writing(
    push_lab: Any, fast: Timeouts
) -> None:
    lab = push_lab
    lab.switch.set_fault("slow", delay=2.5)
    t = Timeouts(snmp=0.5, snmp_retries=1, retries=1, backoff=0.1)
    res = push_device(lab.inv, lab.renderer, lab.sw_key, lab.sw_at, timeouts=t)
    assert res.result == "failed" and res.backup_version is None
    assert lab.switch.write_count() == 0


def test_iad_dropped_mid_config_keeps_the_old_config(push_lab: Any, fast: Timeouts) -> None:
    lab = push_lab
    before = dict(lab.iad.running)
    lab.iad.set_fault("drop-mid", lines=5)
    res = push_device(lab.inv, lab.renderer, lab.iad_key, lab.iad_at, timeouts=fast)
    assert res.result == "rolled back", res.error
    assert lab.iad.running == before and lab.iad.commits == 0
    assert list_backups(lab.inv, lab.iad_key)


def test_iad_hung_after_commit_is_rolled_back(push_lab: Any, fast: Timeouts) -> None:
    lab = push_lab
    before = dict(lab.iad.running)
    lab.iad.set_fault("hang", command="commit")

    def on_step(device: str, step: str) -> None:
        if step == "rollback":
            lab.iad.set_fault(None)

    res = push_device(
        lab.inv, lab.renderer, lab.iad_key, lab.iad_at, timeouts=fast, on_step=on_step
    )
    assert res.result == "rolled back", res.error
    assert lab.iad.commits == 2  # the hung commit went through, the rollback undid it
    assert lab.iad.running == before and lab.iad.startup == before


def test_iad_that_hangs_on_every_commit_ends_with_a_whole_config(push_lab: Any) -> None:
    lab = push_lab
    before = dict(lab.iad.running)
    lab.iad.set_fault("hang", command="commit")
    t = Timeouts(connect=3, command=1, retries=1, backoff=0.1)
    res = push_device(lab.inv, lab.renderer, lab.iad_key, lab.iad_at, timeouts=t)
    # Every commit executes and then hangs: the rollback's commit restores the old config
    # (and hangs), the next attempt finds the device equal to the backup: verified.
    assert res.result in ("failed", "rolled back") and res.failed
    assert lab.iad.running in (before, iad_new(lab))  # commit is atomic on the device
    if res.result == "rolled back":
        assert lab.iad.running == before
    assert list_backups(lab.inv, lab.iad_key)


def test_iad_refusing_the_login_is_not_retried(push_lab: Any, fast: Timeouts) -> None:
    lab = push_lab
    lab.iad.set_fault("auth-fail")
    res = push_device(lab.inv, lab.renderer, lab.iad_key, lab.iad_at, timeouts=fast)
    assert res.result == "failed" and "authentication" in res.error and res.attempts == 1
    assert lab.iad.sessions == 0 and lab.iad.commits == 0


def test_iad_with_a_changed_host_key_is_refused_and_audited(push_lab: Any, fast: Timeouts) -> None:
    lab = push_lab
    lab.iad.set_fault("new-host-key")
    res = push_device(
        lab.inv, lab.renderer, lab.iad_key, lab.iad_at, timeouts=fast, trust_on_first_use=True
    )
    assert res.result == "failed" and "CHANGED" in res.error and res.attempts == 1
    assert lab.iad.commands == [] and lab.iad.commits == 0
    with lab.inv.db.read() as session:
        actions = list(
            session.scalars(
                select(AuditEvent.action).where(AuditEvent.device == lab.iad_key.device_id)
            )
        )
    assert "push.host-key-changed" in actions


def test_iad_slower_than_the_timeout_or_silent_fails_without_a_change(push_lab: Any) -> None:
    lab = push_lab
    before = dict(lab.iad.running)
    t = Timeouts(connect=1, command=0.5, retries=0)
    lab.iad.set_fault("slow", delay=1.5)
    slow = push_device(lab.inv, lab.renderer, lab.iad_key, lab.iad_at, timeouts=t)
    lab.iad.set_fault("no-banner")
    silent = push_device(lab.inv, lab.renderer, lab.iad_key, lab.iad_at, timeouts=t)
    assert (slow.result, silent.result) == ("failed", "failed"), (slow.error, silent.error)
    assert slow.seconds < 10 and silent.seconds < 10
    assert lab.iad.running == before and lab.iad.commits == 0
