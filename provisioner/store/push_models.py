"""The push job's tables: config backups, pinned SSH host keys, push results, push locks.

Kept apart from :mod:`provisioner.store.models` (same ``Base``, same metadata) so the push
side can grow without touching the order tables. Schema: migration ``0004_push``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from provisioner.store.models import Base, utcnow


class Backup(Base):
    """A device's running config as read before a push (or a manual rollback).

    ``ciphertext`` is the config encrypted with the store's vault key: configs hold the
    device's passwords. ``sha256`` is of the plain text (tells versions apart, dedups).
    """

    __tablename__ = "backups"
    __table_args__ = (UniqueConstraint("device_pk", "version"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    device_pk: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)  # 1, 2, ... per device
    taken_at: Mapped[datetime] = mapped_column(default=utcnow)
    method: Mapped[str] = mapped_column(String(8))  # snmp | ssh
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    sha256: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(16))  # pre-push | manual


class HostKey(Base):
    """The SSH host key pinned for a device (OpenSSH ``type base64``)."""

    __tablename__ = "host_keys"
    device_pk: Mapped[int] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    public_key: Mapped[str] = mapped_column(Text)
    first_seen: Mapped[datetime] = mapped_column(default=utcnow)
    trusted_by: Mapped[str] = mapped_column(String(100))


class PushResultRow(Base):
    """One device's outcome in one push job. ``diff`` is masked; ``error`` holds no values."""

    __tablename__ = "push_results"
    __table_args__ = (
        Index("ix_push_results_job", "job_id"),
        Index("ix_push_results_device", "device_pk"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[str] = mapped_column(String(32))
    device_pk: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    started_at: Mapped[datetime] = mapped_column()
    ended_at: Mapped[datetime] = mapped_column()
    changed: Mapped[bool] = mapped_column(Boolean, default=False)
    diff_lines: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[str] = mapped_column(
        String(16)
    )  # ok | no change | failed | rolled back | dry-run
    error: Mapped[str] = mapped_column(Text, default="")
    diff: Mapped[str] = mapped_column(Text, default="")
    backup_version: Mapped[int | None] = mapped_column(Integer, nullable=True)


class PushLock(Base):
    """A push in progress on a device: the lock that holds across processes and servers."""

    __tablename__ = "push_locks"
    device_pk: Mapped[int] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    job_id: Mapped[str] = mapped_column(String(32))
    holder: Mapped[str] = mapped_column(String(100))
    acquired_at: Mapped[datetime] = mapped_column(default=utcnow)


class PushJob(Base):
    """A push job: the devices of one order pushed together, whoever runs them.

    ``events`` counts the job's :class:`PushEvent` rows: the next event takes the number
    after it, in the same transaction that raises it (so numbers have no gaps and never
    repeat, whichever worker writes). ``finished_at`` is set with the last event, ``done``.
    """

    __tablename__ = "push_jobs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(100))
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    trust_on_first_use: Mapped[bool] = mapped_column(Boolean, default=False)
    timeouts: Mapped[str] = mapped_column(Text, default="{}")  # JSON of push.targets.Timeouts
    queue: Mapped[str] = mapped_column(String(16), default="local")  # where its tasks run
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    events: Mapped[int] = mapped_column(Integer, default=0)


class PushTask(Base):
    """One device of a push job: queued, running (under a lease), done.

    A worker takes a queued task by a conditional UPDATE (``state`` queued -> running) and
    keeps renewing ``lease_until`` while it pushes; a task whose lease ran out is a worker
    that died, and the reaper ends it "failed" (:mod:`provisioner.push.queue`).
    """

    __tablename__ = "push_tasks"
    __table_args__ = (
        Index("ix_push_tasks_job", "job_id"),
        Index("ix_push_tasks_state", "state", "lease_until"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("push_jobs.id", ondelete="CASCADE"))
    device_pk: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    device_id: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(Text, default="")  # JSON of DeviceAddress; "" none
    state: Mapped[str] = mapped_column(String(16), default="queued")  # queued|running|done
    worker: Mapped[str] = mapped_column(String(100), default="")
    lease_until: Mapped[datetime | None] = mapped_column(nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[str | None] = mapped_column(String(16), nullable=True)


class PushEvent(Base):
    """A push job's event, numbered per job from 1: a ``step`` of a device, a device's
    ``result``, the job's last event ``done``. ``data`` is the event's JSON."""

    __tablename__ = "push_events"
    __table_args__ = (UniqueConstraint("job_id", "seq"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("push_jobs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(8))  # step | result | done
    data: Mapped[str] = mapped_column(Text)
