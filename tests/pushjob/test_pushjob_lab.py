"""Pushing WT-2026-000104's switch and IAD to lab devices; net-snmp and OpenSSH check them."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import select

from provisioner.push import setplan as sp
from provisioner.push.backups import list_backups, read_backup
from provisioner.push.job import push_device
from provisioner.push.runner import push_many
from provisioner.push.setlines import parse_config
from provisioner.push.targets import DeviceAddress, Timeouts
from provisioner.render.engine import MASK
from provisioner.store.push_models import HostKey, PushResultRow

ORDER = "WT-2026-000104"


def results_of_job(lab: Any, job_id: str) -> list[PushResultRow]:
    with lab.inv.db.read() as session:
        return list(session.scalars(select(PushResultRow).where(PushResultRow.job_id == job_id)))


def rendered(lab: Any, key: Any) -> str:
    payload = lab.renderer.push_payload(key.order_id, key.device_id)
    assert payload is not None
    return payload[1].data.decode()


def snmp_value(tools: dict[str, str], port: int, vb: sp.VarBind) -> bytes | int:
    """One object as net-snmp reads it (octet strings in hex, so bytes compare exactly)."""
    hexed = ["-Ox"] if vb.kind in ("str", "octets") else []
    out = subprocess.run(
        [tools["snmpget"], "-v2c", "-c", "public", "-On", *hexed, "-Oqv", "-t", "2", "-r", "1",
         f"127.0.0.1:{port}", vb.oid],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    if hexed:  # "73 77 2D " (quoted, may wrap), or "" for an empty string
        return bytes.fromhex(text.replace('"', ""))
    return int(text)


def expected_value(vb: sp.VarBind) -> bytes | int:
    if vb.kind == "str":
        return str(vb.value).encode()
    if vb.kind == "octets":
        assert isinstance(vb.value, bytes)
        return vb.value
    return int(vb.value)


def test_push_then_net_snmp_and_openssh_read_the_rendered_config(
    push_lab: Any, fast: Timeouts, snmp_tools: dict[str, str], ssh_tool: str
) -> None:
    lab = push_lab
    job_id, results = push_many(
        lab.inv, lab.renderer, [(lab.sw_key, lab.sw_at), (lab.iad_key, lab.iad_at)],
        timeouts=fast,
    )  # fmt: skip
    assert [r.result for r in results] == ["ok", "ok"], [r.error for r in results]
    assert all(r.changed and r.diff_lines > 0 and r.backup_version == 1 for r in results)
    stored = results_of_job(lab, job_id)
    assert sorted(r.result for r in stored) == ["ok", "ok"]

    # The switch, read by net-snmp from the agent itself: every varbind of the set-plan.
    plan = sp.parse_setplan(rendered(lab, lab.sw_key))
    want = sp.to_varbinds(plan)
    got = {vb.oid: snmp_value(snmp_tools, lab.switch.agent_port, vb) for vb in want}
    assert got == {vb.oid: expected_value(vb) for vb in want}
    assert got[sp.SYS_NAME] == b"sw-catania"
    assert any(vb.oid.startswith(sp.VLAN_EGRESS) for vb in want)  # VLAN membership compared
    assert any(vb.oid.startswith(sp.POE_ADMIN) for vb in want)  # PoE admin states compared

    # The IAD, through OpenSSH with a pinned known_hosts line.
    known = lab.workdir / "known_hosts"
    known.write_text(lab.iad.known_hosts_line() + "\n")
    out = subprocess.run(
        [ssh_tool, "-F", "/dev/null", "-i", str(lab.client_key), "-p", str(lab.iad_at.port),
         "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
         "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "admin@127.0.0.1",
         "show running-config"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert parse_config(out.stdout) == parse_config(rendered(lab, lab.iad_key))


def test_a_second_push_changes_nothing_and_writes_nothing(push_lab: Any, fast: Timeouts) -> None:
    lab = push_lab
    jobs = [(lab.sw_key, lab.sw_at), (lab.iad_key, lab.iad_at)]
    _, first = push_many(lab.inv, lab.renderer, jobs, timeouts=fast)
    assert [r.result for r in first] == ["ok", "ok"]
    writes, commits, saves = lab.switch.write_count(), lab.iad.commits, lab.iad.saves
    versions = [len(list_backups(lab.inv, k)) for k, _ in jobs]

    _, second = push_many(lab.inv, lab.renderer, jobs, timeouts=fast)
    assert [(r.result, r.changed, r.diff, r.failed) for r in second] == [
        ("no change", False, "", False)
    ] * 2
    assert lab.switch.write_count() == writes
    assert (lab.iad.commits, lab.iad.saves) == (commits, saves)
    # The backup taken before the second push is the state the first one left: one more
    # version each, and a third push adds none.
    assert [len(list_backups(lab.inv, k)) for k, _ in jobs] == [v + 1 for v in versions]
    push_many(lab.inv, lab.renderer, jobs, timeouts=fast)
    assert [len(list_backups(lab.inv, k)) for k, _ in jobs] == [v + 1 for v in versions]


def test_dry_run_changes_nothing_and_masks_secrets(push_lab: Any, fast: Timeouts) -> None:
    lab = push_lab
    before = dict(lab.iad.running)
    res = push_device(lab.inv, lab.renderer, lab.iad_key, lab.iad_at, dry_run=True, timeouts=fast)
    assert res.result == "dry-run" and not res.failed and res.diff_lines > 0
    assert lab.iad.running == before and lab.iad.commits == 0
    admin = lab.secret("iad-catania", "admin_password")
    assert admin not in res.diff
    assert f"+set system admin password {MASK}" in res.diff
    assert "+set system provisioning password " + MASK in res.diff
    stored = results_of_job(lab, res.job_id)
    assert stored[0].result == "dry-run" and admin not in stored[0].diff

    sw = push_device(lab.inv, lab.renderer, lab.sw_key, lab.sw_at, dry_run=True, timeouts=fast)
    assert sw.result == "dry-run" and '+sysName = "sw-catania"' in sw.diff
    assert lab.switch.write_count() == 0


def test_backups_are_encrypted_in_the_sqlite_file(push_lab: Any, fast: Timeouts) -> None:
    lab = push_lab
    assert push_device(lab.inv, lab.renderer, lab.iad_key, lab.iad_at, timeouts=fast).result == "ok"
    res = push_device(lab.inv, lab.renderer, lab.iad_key, lab.iad_at, timeouts=fast)
    assert res.result == "no change" and res.backup_version == 2
    version, _, text = read_backup(lab.inv, lab.iad_key)
    admin = lab.secret("iad-catania", "admin_password")
    assert version == 2 and f"set system admin password {admin}" in text

    db = Path(lab.inv.db.engine.url.database)
    raw = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    assert admin.encode() not in raw  # the backups hold it; the stored diffs mask it
    assert b"admin password " + admin.encode() not in raw


def test_snmpv3_authpriv_push_and_v2c_refused_by_policy(
    push_lab: Any, fast: Timeouts, snmp_tools: dict[str, str]
) -> None:
    lab = push_lab
    strict = lab.inv.settings.model_copy(update={"snmp_require_v3": True})
    v2c = DeviceAddress("127.0.0.1", lab.sw_at.port, snmp_version="2c")
    refused = push_device(lab.inv, lab.renderer, lab.sw_key, v2c, timeouts=fast, settings=strict)
    assert refused.result == "failed" and "SNMPv3" in refused.error
    assert lab.switch.write_count() == 0

    # Policy requires v3: the job picks v3 authPriv with the device's keys by itself.
    res = push_device(lab.inv, lab.renderer, lab.sw_key, lab.sw_at, timeouts=fast, settings=strict)
    assert res.result == "ok", res.error
    auth = lab.secret("sw-catania", "snmp_auth_key")
    priv = lab.secret("sw-catania", "snmp_priv_key")
    out = subprocess.run(
        [snmp_tools["snmpget"], "-v3", "-l", "authPriv", "-u", "provisioner", "-a", "SHA",
         "-A", auth, "-x", "AES", "-X", priv, "-Oqv", "-t", "2", "-r", "1",
         f"127.0.0.1:{lab.sw_at.port}", f"{sp.SYS_NAME}"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().strip('"') == "sw-catania"


def test_one_push_per_device_at_a_time(push_lab: Any, fast: Timeouts) -> None:
    lab = push_lab
    jobs = [(lab.iad_key, lab.iad_at)] * 4
    seen: list[int] = []
    active = 0
    guard = threading.Lock()

    def on_step(device: str, step: str) -> None:
        nonlocal active
        with guard:
            if step == "connect":
                active += 1
                seen.append(active)
            elif step == "done":  # sent while the device is still locked
                active -= 1

    _, results = push_many(
        lab.inv, lab.renderer, jobs, concurrency=4, timeouts=fast, on_step=on_step
    )
    assert sorted(r.result for r in results) == ["no change"] * 3 + ["ok"]
    assert lab.iad.commits == 1
    assert max(seen) == 1  # the lock let one in at a time


def test_unknown_host_key_is_refused_unless_trusted_on_first_use(
    push_lab: Any, fast: Timeouts
) -> None:
    lab = push_lab
    with lab.inv.db.write() as session:
        session.delete(session.get(HostKey, lab.device_pk(lab.iad_key)))
    res = push_device(lab.inv, lab.renderer, lab.iad_key, lab.iad_at, timeouts=fast)
    assert res.result == "failed" and "unknown" in res.error and res.attempts == 1
    assert lab.iad.commits == 0

    res = push_device(
        lab.inv, lab.renderer, lab.iad_key, lab.iad_at, timeouts=fast, trust_on_first_use=True
    )
    assert res.result == "ok", res.error
    with lab.inv.db.read() as session:
        pinned = session.scalar(
            select(HostKey.public_key).where(HostKey.device_pk == lab.device_pk(lab.iad_key))
        )
    assert pinned == lab.iad.host_key


def test_at_most_concurrency_pushes_run_at_once(push_lab: Any) -> None:

    from provisioner.render.engine import DeviceKey
    from provisioner.store.models import Device, Order, SecretRow

    lab = push_lab
    ids = [f"bound-sw-{i:02d}" for i in range(12)]
    with lab.inv.db.write() as session:
        order = session.scalar(select(Order).where(Order.order_id == ORDER))
        for i, device_id in enumerate(ids):
            session.add(
                Device(order_pk=order.id, device_id=device_id, position=900 + i,
                       model="dlink-dgs-1100-08p", site_pk=order.sites[0].id)
            )  # fmt: skip
            for name in ("admin_password", "snmp_community", "snmp_auth_key", "snmp_priv_key"):
                session.add(
                    SecretRow(order_pk=order.id, owner=f"device:{device_id}", name=name,
                              ciphertext=lab.inv.vault.encrypt(f"{name}-{i}-x"),
                              source="generated")
                )  # fmt: skip
    active, peak = 0, 0
    guard = threading.Lock()

    def on_step(device: str, step: str) -> None:
        nonlocal active, peak
        with guard:
            if step == "connect":
                active += 1
                peak = max(peak, active)
            elif step == "done":
                active -= 1

    nowhere = DeviceAddress("127.0.0.1", 9)  # discard port: no SNMP agent answers
    t = Timeouts(snmp=0.3, snmp_retries=0, retries=0)
    jobs = [(DeviceKey(ORDER, d, "dlink-dgs-1100-08p"), nowhere) for d in ids]
    try:
        _, results = push_many(
            lab.inv, lab.renderer, jobs, concurrency=4, timeouts=t, on_step=on_step
        )
    finally:
        with lab.inv.db.write() as session:
            owners = [f"device:{d}" for d in ids]
            for row in session.scalars(select(SecretRow).where(SecretRow.owner.in_(owners))):
                session.delete(row)
            for dev in session.scalars(select(Device).where(Device.device_id.in_(ids))):
                session.delete(dev)
    assert [r.result for r in results] == ["failed"] * len(ids), results[0].error
    assert 2 <= peak <= 4, results[0].error
