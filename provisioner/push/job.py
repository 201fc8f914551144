"""The push job: one device, its rendered config, a result stored (issue 5).

:func:`push_device` is a plain function of (device, rendered config, address): where it runs
(the CLI's thread pool here, a Celery/Dramatiq worker later) is a deployment choice. Steps:

1. render the device's push payload (SNMP set-plan or IAD CLI lines);
2. open the NAPALM driver (SNMP: v2c community or v3 authPriv keys from the store; SSH:
   ``admin`` + the device's admin password, host key pinned from ``host_keys``);
3. read the running config and store it as a versioned, encrypted backup;
4. load the candidate, diff; stop here on a dry-run or an empty diff ("no change");
5. commit (the driver reads back and verifies); on any failure roll back and verify that
   the device equals the backup: the result is then "rolled back", never "ok";
6. store the result (diff masked, error without values) and audit it.

Connecting and the backup read are retried with exponential backoff on timeouts and
connection errors (at most ``Timeouts.retries`` times), never on refused credentials or a
host key problem. One push per device at a time: a lock per device in this process and a
``push_locks`` row for every other process. No shell is ever involved: addresses are
checked and go to the drivers as data.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from provisioner.errors import DeviceUnknown, ProvisionerError, PushFailed
from provisioner.render.engine import DeviceKey, Renderer, mask
from provisioner.settings import Settings
from provisioner.store import audit
from provisioner.store.models import Device, Order, utcnow
from provisioner.store.push_models import Backup, HostKey, PushLock, PushResultRow

RESULTS = ("ok", "no change", "failed", "rolled back", "dry-run")
NAPALM_DRIVERS = {"snmp": "dlink_snmp", "ssh": "iad_ssh"}
SNMP_V3_USER = "provisioner"  # the USM user the switch template and `lab up` agree on
SSH_USER = "admin"
STALE_LOCK = timedelta(minutes=30)  # a push_locks row older than this was left by a crash
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|[0-9A-Fa-f:.]+)$")
_SECRET_WORD = re.compile(r"(password|secret|psk|community|key|pin)", re.I)


# ---------------------------------------------------------------------- plain data


@dataclass(frozen=True)
class DeviceAddress:
    """Where a device answers. The store has no management addresses: given per push."""

    host: str
    port: int
    snmp_version: str | None = None  # "2c" | "3"; None: "3" when policy requires v3
    username: str | None = None  # SSH login / SNMPv3 user; None: the defaults

    def __post_init__(self) -> None:
        if not _HOST.fullmatch(self.host) or self.host.startswith("-"):
            raise PushFailed(f"address {self.host!r}: not a host name or IP address")
        if not 0 < int(self.port) < 65536:
            raise PushFailed(f"address {self.host}: port {self.port} out of range")
        if self.snmp_version not in (None, "2c", "3"):
            raise PushFailed(f"address {self.host}: snmp_version {self.snmp_version!r}: 2c or 3")
        if self.username is not None and not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", self.username):
            raise PushFailed(f"address {self.host}: username {self.username!r} not allowed")

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @classmethod
    def parse(cls, text: str, **extra: Any) -> DeviceAddress:
        """``HOST:PORT`` or ``[V6]:PORT``."""
        text = text.strip()
        m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)", text) or re.fullmatch(
            r"([^:]+):(\d+)", text
        )
        if not m:
            raise PushFailed(f"address {text!r}: use HOST:PORT")
        return cls(m.group(1), int(m.group(2)), **extra)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"host": self.host, "port": self.port}
        if self.snmp_version:
            out["snmp_version"] = self.snmp_version
        if self.username:
            out["username"] = self.username
        return out


def parse_target_option(value: str) -> tuple[str, DeviceAddress]:
    """``DEVICE_ID=HOST:PORT`` (the ``--target`` option)."""
    device_id, sep, address = value.partition("=")
    if not sep or not device_id.strip():
        raise PushFailed(f"--target {value!r}: use DEVICE_ID=HOST:PORT")
    return device_id.strip(), DeviceAddress.parse(address)


def load_targets(path: Path) -> dict[str, DeviceAddress]:
    """A targets file (YAML or JSON): ``{devices: {ID: "HOST:PORT" | {host, port, ...}}}``.

    The top-level ``devices`` key may be left out. ``lab up`` writes this format.
    """
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PushFailed(f"{path}: cannot read targets: {exc}".splitlines()[0]) from None
    if isinstance(data, dict) and isinstance(data.get("devices"), dict):
        data = data["devices"]
    if not isinstance(data, dict):
        raise PushFailed(f"{path}: targets must map device ids to HOST:PORT")
    out: dict[str, DeviceAddress] = {}
    for device_id, value in data.items():
        where = f"{path}: {device_id}"
        if isinstance(value, str):
            out[str(device_id)] = DeviceAddress.parse(value)
        elif isinstance(value, dict) and {"host", "port"} <= set(value):
            extra = {k: value[k] for k in ("snmp_version", "username") if value.get(k)}
            if "snmp_version" in extra:
                extra["snmp_version"] = str(extra["snmp_version"])
            out[str(device_id)] = DeviceAddress(str(value["host"]), int(value["port"]), **extra)
        else:
            raise PushFailed(f"{where}: give HOST:PORT or {{host, port}}")
    return out


def write_targets(path: Path, targets: Mapping[str, DeviceAddress], order_id: str = "") -> None:
    doc: dict[str, Any] = {"devices": {k: v.as_dict() for k, v in targets.items()}}
    if order_id:
        doc = {"order": order_id, **doc}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


@dataclass(frozen=True)
class Timeouts:
    """Seconds. ``snmp`` is per request (x ``snmp_retries + 1`` tries); ``command`` is per
    SSH command; ``operation`` caps one driver call; ``backoff`` doubles per retry."""

    connect: float = 10.0
    command: float = 30.0
    snmp: float = 2.0
    snmp_retries: int = 2
    operation: float = 60.0
    retries: int = 2
    backoff: float = 1.0


@dataclass
class PushResult:
    """What one push did (Nornir's ``Result``): never "ok" unless verified on the device."""

    device: str  # ORDER/DEVICE_ID
    result: str
    changed: bool = False
    diff: str = ""  # masked
    exception: BaseException | None = field(default=None, repr=False)
    error: str = ""
    seconds: float = 0.0
    backup_version: int | None = None
    job_id: str = ""
    attempts: int = 0

    @property
    def failed(self) -> bool:
        return self.result == "failed" or self.result == "rolled back"

    @property
    def diff_lines(self) -> int:
        return count_diff_lines(self.diff)


def count_diff_lines(diff: str) -> int:
    return sum(
        1 for line in diff.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---"))
    )


def mask_diff(diff: str, secrets: Iterable[str]) -> str:
    """A diff fit to show and store: every known secret masked, and the value of any line
    whose path names a secret (an *old* password the store no longer knows, too)."""
    from provisioner.push.drivers.iad_ssh import ConfigSyntaxError, split_line

    text = mask(diff.encode(), secrets).decode()
    out = []
    for line in text.splitlines():
        sign, body = line[:1], line[1:]
        if sign in "+- " and line and not line.startswith(("+++", "---")):
            if body.startswith("set "):
                try:
                    words = split_line(body)
                except ConfigSyntaxError:
                    words = ["set", "<malformed line>", ""]
                if any(_SECRET_WORD.search(w) for w in words[1:-1]) or len(words) < 3:
                    line = f"{sign}{' '.join(words[:-1])} ********"
            elif "=" in body and _SECRET_WORD.search(body.split("=", 1)[0]):
                line = f"{sign}{body.split('=', 1)[0]}= ********"
        out.append(line)
    return "\n".join(out)


# ---------------------------------------------------------------------- locks


_locks_guard = threading.Lock()
_device_locks: dict[int, threading.Lock] = {}


def _device_lock(device_pk: int) -> threading.Lock:
    with _locks_guard:
        return _device_locks.setdefault(device_pk, threading.Lock())


@contextlib.contextmanager
def _store_lock(inv: Any, device_pk: int, job_id: str, actor: str) -> Iterator[None]:
    """A ``push_locks`` row while the push runs: other processes refuse to push this device."""
    with inv.db.write() as session:
        row = session.get(PushLock, device_pk)
        if row is not None:
            acquired = row.acquired_at
            if acquired.tzinfo is None:  # SQLite returns naive datetimes
                acquired = acquired.replace(tzinfo=utcnow().tzinfo)
            if utcnow() - acquired < STALE_LOCK:
                raise PushFailed(
                    f"another push ({row.job_id}, {row.holder}) is running on this device"
                )
            session.delete(row)
            session.flush()
        session.add(PushLock(device_pk=device_pk, job_id=job_id, holder=actor[:100]))
    try:
        yield
    finally:
        with inv.db.write() as session:
            session.execute(
                delete(PushLock).where(PushLock.device_pk == device_pk, PushLock.job_id == job_id)
            )


# ---------------------------------------------------------------------- store helpers


def _device_row(session: Session, key: DeviceKey) -> Device:
    row = session.scalar(
        select(Device)
        .join(Order, Device.order_pk == Order.id)
        .where(Order.order_id == key.order_id, Device.device_id == key.device_id)
    )
    if row is None:
        raise DeviceUnknown(f"{key}: not in the store")
    return row


def device_keys(inv: Any, renderer: Renderer, what: str) -> list[DeviceKey]:
    """The pushed devices of an order, or the one device with this MAC."""
    with inv.db.read() as session:
        order = session.scalar(select(Order).where(Order.order_id == what))
        if order is not None:
            rows = list(order.devices)
        else:
            try:
                rows = [inv.find_device(session, what)]
            except (DeviceUnknown, ValueError):
                raise DeviceUnknown(
                    f"{what}: no order with this id and no device with this MAC"
                ) from None
        keys = [
            DeviceKey(r.order.order_id, r.device_id, r.model, r.mac or "", r.serial or "")
            for r in rows
        ]
    registry = renderer.engine.registry
    return [
        k
        for k in keys
        if registry.has_model(k.model) and registry.for_model(k.model).push is not None
    ]


def _credentials(inv: Any, key: DeviceKey) -> dict[str, str]:
    with inv.db.read() as session:
        row = _device_row(session, key)
        out = {}
        for name in ("admin_password", "snmp_community", "snmp_auth_key", "snmp_priv_key"):
            with contextlib.suppress(DeviceUnknown):
                out[name] = inv.secret(session, row.order, f"device:{key.device_id}", name)
        return out


def store_backup(inv: Any, device_pk: int, text: str, method: str, reason: str) -> tuple[int, bool]:
    """Store ``text`` as the device's next backup version unless it equals the latest.

    Returns (version, created)."""
    digest = hashlib.sha256(text.encode()).hexdigest()
    with inv.db.write() as session:
        latest = session.scalar(
            select(Backup).where(Backup.device_pk == device_pk).order_by(Backup.version.desc())
        )
        if latest is not None and latest.sha256 == digest:
            return latest.version, False
        version = (latest.version if latest else 0) + 1
        session.add(
            Backup(
                device_pk=device_pk,
                version=version,
                method=method,
                ciphertext=inv.vault.encrypt(text),
                sha256=digest,
                reason=reason,
            )
        )
        return version, True


def list_backups(inv: Any, key: DeviceKey) -> list[Backup]:
    with inv.db.read() as session:
        row = _device_row(session, key)
        return list(
            session.scalars(
                select(Backup).where(Backup.device_pk == row.id).order_by(Backup.version)
            )
        )


def backup_text(inv: Any, key: DeviceKey, version: int | None = None) -> tuple[int, str]:
    """A stored backup, decrypted: (version, config). The newest when ``version`` is None."""
    with inv.db.read() as session:
        row = _device_row(session, key)
        stmt = select(Backup).where(Backup.device_pk == row.id)
        if version is not None:
            stmt = stmt.where(Backup.version == version)
        found = session.scalar(stmt.order_by(Backup.version.desc()))
        if found is None:
            which = f"version {version}" if version is not None else "any backup"
            raise PushFailed(f"{key}: no {which} stored")
        return found.version, inv.vault.decrypt(found.ciphertext)


def results_of_job(inv: Any, job_id: str) -> list[PushResultRow]:
    with inv.db.read() as session:
        return list(session.scalars(select(PushResultRow).where(PushResultRow.job_id == job_id)))


def _normal(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").strip().splitlines())


# ---------------------------------------------------------------------- the job


Step = Callable[[str, str], None]  # (device "ORDER/ID", step name)


def _no_step(device: str, step: str) -> None:
    return None


class _Refused(Exception):
    """Stop now without a retry (refused credentials, host key, bad candidate)."""


@dataclass
class _Job:
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
    attempts: int = 0
    backup_version: int | None = None
    backup: str = ""
    creds: dict[str, str] = field(default_factory=dict)

    # --- drivers ---

    def _host_key(self) -> str | None:
        with self.inv.db.read() as session:
            row = session.get(HostKey, self.device_pk)
            return row.public_key if row else None

    def driver(self) -> Any:
        import napalm

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
            return cls(tgt.host, user, "", timeout=int(t.operation), optional_args=args)
        pinned = self._host_key()
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
        return cls(
            tgt.host, tgt.username or SSH_USER, password, timeout=int(t.operation),
            optional_args=args,
        )  # fmt: skip

    def _pin(self, drv: Any) -> None:
        """After a trust-on-first-use login: store the key, and pin it for reconnects."""
        new = getattr(drv, "new_host_key", None)
        if not new:
            return
        with self.inv.db.write() as session:
            if session.get(HostKey, self.device_pk) is None:
                session.add(
                    HostKey(device_pk=self.device_pk, public_key=new, trusted_by=self.actor)
                )
                audit.record(
                    session,
                    self.actor,
                    "push.host-key-trusted",
                    order_id=self.key.order_id,
                    device=self.key.device_id,
                    key=new,
                    address=str(self.target),
                )
        drv.optional_args["host_key"] = new
        drv.optional_args["trust_on_first_use"] = False

    def _host_key_changed(self, message: str) -> None:
        with self.inv.db.write() as session:
            audit.record(
                session,
                self.actor,
                "push.host-key-changed",
                order_id=self.key.order_id,
                device=self.key.device_id,
                address=str(self.target),
                job=self.job_id,
                message=message,
            )

    # --- phases ---

    def prepare(self) -> tuple[Any, str]:
        """Open, back up, load, diff; retried on connection trouble. Returns (driver, diff)."""
        from napalm.base.exceptions import ConnectAuthError, ConnectionException

        delay = self.timeouts.backoff
        for attempt in range(self.timeouts.retries + 1):
            self.attempts = attempt + 1
            drv = self.driver()
            try:
                self.on_step(str(self.key), "connect")
                drv.open()
                if self.kind == "ssh":
                    self._pin(drv)
                self.on_step(str(self.key), "backup")
                running = drv.get_config(retrieve="running")["running"]
                self.backup = running
                self.backup_version, _ = store_backup(
                    self.inv, self.device_pk, running, self.kind, self.reason
                )
                self.on_step(str(self.key), "diff")
                try:
                    drv.load_replace_candidate(config=self.config)
                except Exception as exc:
                    raise _Refused(f"candidate refused: {exc}") from None
                return drv, drv.compare_config()
            except ConnectAuthError as exc:
                _close(drv)
                raise _Refused(str(exc)) from None
            except ConnectionException as exc:
                _close(drv)
                text = str(exc)
                if "CHANGED" in text:
                    self._host_key_changed(text)
                    raise _Refused(text) from None
                if "is unknown" in text and "host key" in text:
                    raise _Refused(text) from None
                if attempt == self.timeouts.retries:
                    raise
                self.on_step(str(self.key), f"retry in {delay:g} s")
                time.sleep(delay)
                delay *= 2
            except BaseException:
                _close(drv)
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def verify(self, drv: Any) -> bool:
        return _normal(drv.get_config(retrieve="running")["running"]) == _normal(self.backup)

    def roll_back(self, drv: Any) -> str:
        """Back to the backup, verified; "" when done, else why not."""
        why = ""
        try:
            drv.rollback()
            if self.verify(drv):
                return ""
            why = "the device still differs from the backup after rollback"
        except Exception as exc:
            why = f"rollback: {_one_line(exc)}"
        finally:
            _close(drv)
        delay = self.timeouts.backoff
        for _ in range(self.timeouts.retries):
            time.sleep(delay)
            delay *= 2
            self.on_step(str(self.key), "rollback (again)")
            fresh = self.driver()
            try:
                fresh.open()
                fresh.load_replace_candidate(config=self.backup)
                fresh.commit_config()
                if self.verify(fresh):
                    return ""
                why = "the device still differs from the backup after rollback"
            except Exception as exc:
                why = f"rollback: {_one_line(exc)}"
            finally:
                _close(fresh)
        return why

    def run(self) -> PushResult:
        started = time.monotonic()
        res = PushResult(str(self.key), "failed", job_id=self.job_id)
        drv: Any = None
        try:
            drv, raw_diff = self.prepare()
            res.diff = mask_diff(raw_diff, self.secrets)
            res.changed = bool(raw_diff)
            if not raw_diff:
                res.result = "no change"
            elif self.dry_run:
                res.result = "dry-run"
            else:
                self.on_step(str(self.key), "commit")
                try:
                    drv.commit_config()
                    res.result = "ok"
                except Exception as exc:
                    res.exception = exc
                    res.error = _one_line(exc)
                    self.on_step(str(self.key), "rollback")
                    why = self.roll_back(drv)
                    drv = None
                    if why:
                        res.result = "failed"
                        res.error += (
                            f"; {why} (the device may be half-changed: restore backup"
                            f" {self.backup_version} with `provisioner rollback`)"
                        )
                    else:
                        res.result = "rolled back"
                        res.changed = False
        except Exception as exc:
            res.result = "failed"
            res.exception = exc
            res.error = _one_line(exc)
        finally:
            if drv is not None:
                _close(drv)
        res.error = mask(res.error.encode(), self.secrets).decode()
        res.seconds = time.monotonic() - started
        res.backup_version = self.backup_version
        res.attempts = self.attempts
        return res


def _close(drv: Any) -> None:
    with contextlib.suppress(Exception):  # best effort on a broken session
        drv.close()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:500]


def _record(
    inv: Any, key: DeviceKey, device_pk: int, res: PushResult, started: Any, actor: str
) -> None:
    with inv.db.write() as session:
        session.add(
            PushResultRow(
                job_id=res.job_id,
                device_pk=device_pk,
                started_at=started,
                ended_at=utcnow(),
                changed=res.changed,
                diff_lines=res.diff_lines,
                result=res.result,
                error=res.error,
                diff=res.diff,
                backup_version=res.backup_version,
            )
        )
        audit.record(
            session,
            actor,
            "push.device",
            order_id=key.order_id,
            device=key.device_id,
            job=res.job_id,
            result=res.result,
            changed=res.changed,
            diff_lines=res.diff_lines,
            backup=res.backup_version,
            attempts=res.attempts,
            error=res.error,
            seconds=round(res.seconds, 3),
        )


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
        device_pk = _device_row(session, key).id
    creds = _credentials(inv, key)
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
        on_step=on_step or _no_step,
        creds=creds,
    )
    lock = _device_lock(device_pk)
    with lock:
        try:
            with _store_lock(inv, device_pk, job_id, actor):
                res = job.run()
                job.on_step(str(key), "done")
        except PushFailed as exc:  # the store lock is held by another process
            res = PushResult(str(key), "failed", exception=exc, error=str(exc), job_id=job_id)
    res.seconds = time.monotonic() - t0
    _record(inv, key, device_pk, res, started, actor)
    return res


def push_device(
    inv: Any,
    renderer: Renderer,
    device_key: DeviceKey,
    target: DeviceAddress,
    *,
    dry_run: bool = False,
    trust_on_first_use: bool = False,
    timeouts: Timeouts | None = None,
    actor: str = "",
    job_id: str = "",
    settings: Settings | None = None,
    on_step: Step | None = None,
) -> PushResult:
    """Render the device's push payload and push it (see :func:`push_config`)."""
    try:
        payload = renderer.push_payload(device_key.order_id, device_key.device_id)
        if payload is None:
            raise PushFailed(f"{device_key}: a {device_key.model} fetches its files, no push")
    except ProvisionerError as exc:
        return _early_failure(inv, device_key, exc, actor, job_id)
    kind, rendered = payload
    return push_config(
        inv,
        device_key,
        kind,
        rendered.data.decode("utf-8"),
        rendered.secrets,
        target,
        dry_run=dry_run,
        trust_on_first_use=trust_on_first_use,
        timeouts=timeouts,
        actor=actor,
        job_id=job_id,
        settings=settings,
        on_step=on_step,
    )


def rollback_device(
    inv: Any,
    renderer: Renderer,
    device_key: DeviceKey,
    target: DeviceAddress,
    *,
    version: int | None = None,
    dry_run: bool = False,
    trust_on_first_use: bool = False,
    timeouts: Timeouts | None = None,
    actor: str = "",
    settings: Settings | None = None,
    on_step: Step | None = None,
) -> PushResult:
    """Push a stored backup (the newest, or ``version``) back to the device.

    The config the device has now is backed up first (reason "manual")."""
    with inv.db.read() as session:
        row = _device_row(session, device_key)
        method = session.scalar(
            select(Backup.method).where(Backup.device_pk == row.id).order_by(Backup.version.desc())
        )
    _, text = backup_text(inv, device_key, version)
    kind = method or ("snmp" if device_key.model.startswith("dlink") else "ssh")
    secrets: list[str] = []
    with contextlib.suppress(ProvisionerError):
        payload = renderer.push_payload(device_key.order_id, device_key.device_id)
        if payload is not None:
            secrets = list(payload[1].secrets)
    return push_config(
        inv,
        device_key,
        kind,
        text,
        secrets,
        target,
        dry_run=dry_run,
        trust_on_first_use=trust_on_first_use,
        timeouts=timeouts,
        actor=actor,
        reason="manual",
        settings=settings,
        on_step=on_step,
    )


def _early_failure(
    inv: Any, key: DeviceKey, exc: BaseException, actor: str, job_id: str
) -> PushResult:
    actor = actor or audit.default_actor()
    res = PushResult(
        str(key), "failed", exception=exc, error=_one_line(exc), job_id=job_id or uuid.uuid4().hex
    )
    try:
        with inv.db.read() as session:
            device_pk = _device_row(session, key).id
    except DeviceUnknown:
        return res
    _record(inv, key, device_pk, res, utcnow(), actor)
    return res


def push_many(
    inv: Any,
    renderer: Renderer,
    jobs: Sequence[tuple[DeviceKey, DeviceAddress | None]],
    *,
    concurrency: int | None = None,
    dry_run: bool = False,
    trust_on_first_use: bool = False,
    timeouts: Timeouts | None = None,
    actor: str = "",
    settings: Settings | None = None,
    on_step: Step | None = None,
    on_done: Callable[[PushResult], None] | None = None,
    job_id: str = "",
) -> tuple[str, list[PushResult]]:
    """Push every (device, address) with at most ``concurrency`` at once (default: the
    push_concurrency setting). One job id for the run (made when not given); results in
    the order given."""
    settings = settings or inv.settings
    width = max(1, concurrency or settings.push_concurrency)
    job_id = job_id or uuid.uuid4().hex
    actor = actor or audit.default_actor()

    def one(item: tuple[DeviceKey, DeviceAddress | None]) -> PushResult:
        key, target = item
        if target is None:
            exc = PushFailed(f"{key}: no address (give --target {key.device_id}=HOST:PORT)")
            res = _early_failure(inv, key, exc, actor, job_id)
        else:
            res = push_device(
                inv,
                renderer,
                key,
                target,
                dry_run=dry_run,
                trust_on_first_use=trust_on_first_use,
                timeouts=timeouts,
                actor=actor,
                job_id=job_id,
                settings=settings,
                on_step=on_step,
            )
        if on_done is not None:
            on_done(res)
        return res

    with ThreadPoolExecutor(
        max_workers=min(width, max(1, len(jobs))), thread_name_prefix="push"
    ) as pool:
        results = list(pool.map(one, jobs))
    return job_id, results


def summary(results: Sequence[PushResult]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in results:
        out[r.result] = out.get(r.result, 0) + 1
    return out


def results_json(results: Sequence[PushResult]) -> str:
    return json.dumps(
        [
            {
                "device": r.device,
                "result": r.result,
                "changed": r.changed,
                "diff_lines": r.diff_lines,
                "seconds": round(r.seconds, 3),
                "backup": r.backup_version,
                "error": r.error,
            }
            for r in results
        ],
        indent=2,
    )


def backup_count(inv: Any, device_pk: int) -> int:
    with inv.db.read() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(Backup).where(Backup.device_pk == device_pk)
            )
            or 0
        )
