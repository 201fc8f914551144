"""The push job: one device, its rendered config, a result stored.

:func:`push_config` is a plain function of (device, rendered config, address) that returns a
:class:`~provisioner.push.results.PushResult` and stores it: where it runs (the CLI's thread
pool, the API's job board, a Celery/Dramatiq worker later) is a deployment choice. The
device goes through these steps, each reported to ``on_step``::

    connect -> backup -> diff --(no difference: "no change"; dry-run: "dry-run")--> done
                          |
                          '--> commit --(the driver verified it)--> "ok"
                                 |
                                 '--(failed)--> rollback --(equals the backup)--> "rolled back"
                                                   '--(does not)--> "failed"

- connect: the NAPALM driver of the device's push method (SNMP: v2c community or v3
  authPriv keys from the store; SSH: ``admin`` and the device's admin password, host key
  pinned, :mod:`provisioner.push.hostkeys`);
- backup: the running config, stored as a versioned, encrypted backup;
- diff: load the candidate and diff; the stored diff is masked;
- commit: the driver sends only what differs, reads back and verifies; on any failure the
  backup is restored and verified: the result is then "rolled back", never "ok".

Connecting and the backup read are retried with exponential backoff when the failure is
worth a retry (:func:`provisioner.push.errors.retried`: a timeout, a lost connection), never
on refused credentials, a host key problem or the wrong device. One push per device at a
time (:mod:`provisioner.push.locks`). Errors become a "failed" result, never an exception.

This module loads NAPALM, netmiko and paramiko (about 1.5 s): :mod:`provisioner.push.runner`
imports it when a push runs, so the API and the CLI start without them.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Unpack

import napalm

from provisioner.errors import ProvisionerError, PushFailed
from provisioner.push import hostkeys, locks
from provisioner.push.backups import read_backup, store_backup
from provisioner.push.drivers.base import PushDriver, SshDriver
from provisioner.push.errors import (
    DeviceBusy,
    HostKeyChanged,
    NoAddress,
    RollbackIncomplete,
    retried,
)
from provisioner.push.results import (
    PushOptions,
    PushResult,
    Step,
    mask_diff,
    no_step,
    one_line,
    record,
    record_failure,
)
from provisioner.push.targets import (
    SNMP_V3_USER,
    SSH_USER,
    DeviceAddress,
    Timeouts,
    credentials,
    device_row,
)
from provisioner.render.engine import DeviceKey, Renderer, mask
from provisioner.settings import Settings
from provisioner.store import audit
from provisioner.store.models import utcnow

NAPALM_DRIVERS = {"snmp": "dlink_snmp", "ssh": "iad_ssh"}  # push method -> NAPALM driver


def _normal(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").strip().splitlines())


@dataclass
class _Job:
    """One push of one device: the steps above, with what they learn on the way."""

    inv: Any
    settings: Settings
    key: DeviceKey
    device_pk: int
    kind: str
    config: str
    secrets: list[str]
    target: DeviceAddress
    dry_run: bool
    trust_on_first_use: bool
    timeouts: Timeouts
    actor: str
    job_id: str
    reason: str
    on_step: Step
    creds: dict[str, str]
    attempts: int = 0
    backup_version: int | None = None
    backup: str = ""

    def step(self, name: str) -> None:
        self.on_step(str(self.key), name)

    def driver(self) -> PushDriver:
        """A driver for the device, not opened yet."""
        t, tgt, creds = self.timeouts, self.target, self.creds
        cls = napalm.get_network_driver(NAPALM_DRIVERS[self.kind])
        if self.kind == "snmp":
            version = tgt.snmp_version or ("3" if self.settings.snmp_require_v3 else "2c")
            args: dict[str, Any] = {
                "port": tgt.port,
                "snmp_version": version,
                "require_v3": self.settings.snmp_require_v3,
                "snmp_timeout": t.snmp,
                "snmp_retries": t.snmp_retries,
                "model": self.key.model,
            }
            if version == "3":
                args["auth_key"] = creds.get("snmp_auth_key", "")
                args["priv_key"] = creds.get("snmp_priv_key", "")
            else:
                args["community"] = creds.get("snmp_community", "")
            user = tgt.username or SNMP_V3_USER
            drv: PushDriver = cls(tgt.host, user, "", timeout=int(t.operation), optional_args=args)
            return drv
        pinned = hostkeys.pinned(self.inv, self.device_pk)
        args = {
            "port": tgt.port,
            "host_key": pinned,
            "trust_on_first_use": self.trust_on_first_use and pinned is None,
            "conn_timeout": t.connect,
            "auth_timeout": t.connect,
            "banner_timeout": t.connect,
            "command_timeout": t.command,
        }
        password = creds.get("admin_password", "")
        user = tgt.username or SSH_USER
        drv = cls(tgt.host, user, password, timeout=int(t.operation), optional_args=args)
        return drv

    def _pin(self, drv: PushDriver) -> None:
        """After a trust-on-first-use login: store the key, and pin it for reconnects."""
        if isinstance(drv, SshDriver) and drv.new_host_key:
            new = drv.new_host_key
            hostkeys.trust(self.inv, self.key, self.device_pk, new, self.actor, str(self.target))
            drv.pin(new)

    # --- steps ---

    def prepare(self) -> tuple[PushDriver, str]:
        """Connect, back up, load, diff; retried when worth it. Returns (open driver, diff)."""
        delay = self.timeouts.backoff
        for attempt in range(self.timeouts.retries + 1):
            self.attempts = attempt + 1
            drv = self.driver()
            try:
                self.step("connect")
                drv.open()
                self._pin(drv)
                self.step("backup")
                running = drv.get_config(retrieve="running")["running"]
                self.backup = running
                if not self.dry_run:  # a dry run changes nothing: it keeps no version either
                    self.backup_version, _ = store_backup(
                        self.inv, self.device_pk, running, self.kind, self.reason
                    )
                self.step("diff")
                drv.load_replace_candidate(config=self.config)
                return drv, drv.compare_config()
            except BaseException as exc:
                drv.close()
                if isinstance(exc, HostKeyChanged):
                    hostkeys.record_change(
                        self.inv, self.key, exc, self.actor, str(self.target), self.job_id
                    )
                if not retried(exc) or attempt == self.timeouts.retries:
                    raise
            self.step(f"retry in {delay:g} s")
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def verify(self, drv: PushDriver) -> bool:
        return _normal(drv.get_config(retrieve="running")["running"]) == _normal(self.backup)

    def restore(
        self, connection: AbstractContextManager[PushDriver], put_back: Callable[[PushDriver], None]
    ) -> str:
        """``put_back`` the backup over ``connection`` (closed after) and verify it: "" when
        the device has it again, else why not."""
        try:
            with connection as drv:
                put_back(drv)
                if self.verify(drv):
                    return ""
            return "the device still differs from the backup after rollback"
        except Exception as exc:
            return f"rollback: {one_line(exc)}"

    def replace_with_backup(self, drv: PushDriver) -> None:
        drv.load_replace_candidate(config=self.backup)
        drv.commit_config()

    def roll_back(self, drv: PushDriver) -> str:
        """Back to the backup, verified; "" when done, else why not. Closes ``drv``."""
        why = self.restore(contextlib.closing(drv), lambda d: d.rollback())
        delay = self.timeouts.backoff
        for _ in range(self.timeouts.retries):
            if not why:
                break
            time.sleep(delay)
            delay *= 2
            self.step("rollback (again)")
            why = self.restore(self.driver(), self.replace_with_backup)
        return why

    def run(self) -> PushResult:
        started = time.monotonic()
        res = PushResult(str(self.key), "failed", job_id=self.job_id)
        drv: PushDriver | None = None
        try:
            drv, raw_diff = self.prepare()
            res.diff = mask_diff(raw_diff, self.secrets)
            res.changed = bool(raw_diff)
            if not raw_diff:
                res.result = "no change"
            elif self.dry_run:
                res.result = "dry-run"
            else:
                self.step("commit")
                try:
                    drv.commit_config()
                    res.result = "ok"
                except Exception as exc:
                    res.fail(exc)
                    self.step("rollback")
                    why = self.roll_back(drv)
                    drv = None
                    if why:
                        res.fail(
                            RollbackIncomplete(
                                f"{res.error}; {why} (the device may be half-changed: restore"
                                f" backup {self.backup_version})",
                                backup_version=self.backup_version,
                            )
                        )
                    else:
                        res.result = "rolled back"
                        res.changed = False
        except Exception as exc:
            res.fail(exc)
        finally:
            if drv is not None:
                drv.close()
        res.error = mask(res.error.encode(), self.secrets).decode()
        res.seconds = time.monotonic() - started
        res.backup_version = self.backup_version
        res.attempts = self.attempts
        return res


def push_config(
    inv: Any,
    key: DeviceKey,
    kind: str,
    config: str,
    secrets: Sequence[str],
    target: DeviceAddress,
    *,
    dry_run: bool = False,
    trust_on_first_use: bool = False,
    timeouts: Timeouts | None = None,
    actor: str = "",
    job_id: str = "",
    reason: str = "pre-push",
    settings: Settings | None = None,
    on_step: Step | None = None,
) -> PushResult:
    """Push ``config`` (set-plan or CLI lines, by ``kind`` "snmp"/"ssh") to one device.

    The job function: plain data in, a :class:`PushResult` out, the result stored and
    audited. Errors become a "failed" result, never an exception.
    """
    actor = actor or audit.default_actor()
    job_id = job_id or uuid.uuid4().hex
    started = utcnow()
    t0 = time.monotonic()
    with inv.db.read() as session:
        device_pk = device_row(session, key).id
    creds = credentials(inv, key)
    job = _Job(
        inv=inv,
        settings=settings or inv.settings,
        key=key,
        device_pk=device_pk,
        kind=kind,
        config=config,
        secrets=[*secrets, *creds.values()],
        target=target,
        dry_run=dry_run,
        trust_on_first_use=trust_on_first_use,
        timeouts=timeouts or Timeouts(),
        actor=actor,
        job_id=job_id,
        reason=reason,
        on_step=on_step or no_step,
        creds=creds,
    )
    try:
        with locks.holding(inv, device_pk, job_id, actor):
            res = job.run()
            job.step("done")  # still holding the device
    except DeviceBusy as exc:
        res = PushResult(str(key), "failed", job_id=job_id)
        res.fail(exc)
    res.seconds = time.monotonic() - t0
    record(inv, key, device_pk, res, started, actor)
    return res


def push_device(
    inv: Any,
    renderer: Renderer,
    device_key: DeviceKey,
    target: DeviceAddress | None,
    **options: Unpack[PushOptions],
) -> PushResult:
    """Render the device's push payload and push it (see :func:`push_config`)."""
    try:
        if target is None:
            raise NoAddress(f"{device_key}: no address given for it")
        payload = renderer.push_payload(device_key.order_id, device_key.device_id)
        if payload is None:
            raise PushFailed(f"{device_key}: a {device_key.model} fetches its files, no push")
    except ProvisionerError as exc:
        actor, job_id = options.get("actor", ""), options.get("job_id", "")
        return record_failure(inv, device_key, exc, actor, job_id)
    kind, rendered = payload
    config = rendered.data.decode("utf-8")
    return push_config(inv, device_key, kind, config, rendered.secrets, target, **options)


def rollback_device(
    inv: Any,
    renderer: Renderer,
    device_key: DeviceKey,
    target: DeviceAddress,
    *,
    version: int | None = None,
    **options: Unpack[PushOptions],
) -> PushResult:
    """Push a stored backup (the newest, or ``version``) back to the device.

    The config the device has now is backed up first (reason "manual")."""
    backup = read_backup(inv, device_key, version)
    secrets: list[str] = []
    try:
        payload = renderer.push_payload(device_key.order_id, device_key.device_id)
    except ProvisionerError:
        payload = None  # the order no longer renders: mask what the store knows
    if payload is not None:
        secrets = list(payload[1].secrets)
    return push_config(
        inv, device_key, backup.method, backup.text, secrets, target, reason="manual", **options
    )
