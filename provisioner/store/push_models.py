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
