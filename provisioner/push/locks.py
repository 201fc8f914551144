"""One push per device at a time: a lock per device in this process, a ``push_locks`` row
for every other process (the store is shared; several ``serve`` or CLI processes may push).

A row older than :data:`STALE_LOCK` was left by a process that died mid-push and is taken
over.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from sqlalchemy import delete

from provisioner.push.errors import DeviceBusy
from provisioner.store.models import utcnow
from provisioner.store.push_models import PushLock

STALE_LOCK = timedelta(minutes=30)

_guard = threading.Lock()
_in_process: dict[int, threading.Lock] = {}


@contextlib.contextmanager
def holding(inv: Any, device_pk: int, job_id: str, actor: str) -> Iterator[None]:
    """Hold the device for one push. Waits for a push of this process; raises
    :class:`DeviceBusy` at once when another process holds it."""
    with _guard:
        local = _in_process.setdefault(device_pk, threading.Lock())
    with local, _store_lock(inv, device_pk, job_id, actor):
        yield


@contextlib.contextmanager
def _store_lock(inv: Any, device_pk: int, job_id: str, actor: str) -> Iterator[None]:
    with inv.db.write() as session:
        row = session.get(PushLock, device_pk)
        if row is not None:
            acquired = row.acquired_at
            if acquired.tzinfo is None:  # SQLite returns naive datetimes
                acquired = acquired.replace(tzinfo=utcnow().tzinfo)
            if utcnow() - acquired < STALE_LOCK:
                raise DeviceBusy(
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
