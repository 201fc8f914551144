"""Config backups: versioned, encrypted at rest, one taken before every change.

A backup is the device's running config as its driver reads it (set-plan YAML for a switch,
set lines for an IAD). A new version is stored only when it differs from the newest one.
"""

from __future__ import annotations

import hashlib
from typing import Any, NamedTuple

from sqlalchemy import select

from provisioner.errors import PushFailed
from provisioner.push.targets import device_row
from provisioner.render.engine import DeviceKey
from provisioner.store.push_models import Backup


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
    """Every stored backup of a device, oldest first (bodies still encrypted)."""
    with inv.db.read() as session:
        row = device_row(session, key)
        return list(
            session.scalars(
                select(Backup).where(Backup.device_pk == row.id).order_by(Backup.version)
            )
        )


class StoredBackup(NamedTuple):
    version: int
    method: str  # how it was read ("snmp", "ssh"): how it is pushed back
    text: str  # decrypted


def read_backup(inv: Any, key: DeviceKey, version: int | None = None) -> StoredBackup:
    """A stored backup, decrypted; the newest when ``version`` is None."""
    with inv.db.read() as session:
        row = device_row(session, key)
        stmt = select(Backup).where(Backup.device_pk == row.id)
        if version is not None:
            stmt = stmt.where(Backup.version == version)
        found = session.scalar(stmt.order_by(Backup.version.desc()))
        if found is None:
            which = f"version {version}" if version is not None else "any backup"
            raise PushFailed(f"{key}: no {which} stored")
        return StoredBackup(found.version, found.method, inv.vault.decrypt(found.ciphertext))
