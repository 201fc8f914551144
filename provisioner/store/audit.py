"""The audit log: every change, refusal, file served and push, as rows in the store.

Details are plain JSON of names, ids and hashes. Callers never pass secrets here; the
``record`` function refuses detail keys that look like secrets as a second line of defence.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioner.documents.document import SECRET_KEYS
from provisioner.store.models import AuditEvent

log = logging.getLogger("provisioner.store.audit")


def default_actor() -> str:
    """Who is running this command: ``cli:<login>``."""
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        user = str(os.getuid())
    return f"cli:{os.environ.get('SUDO_USER') or user}"


def record(
    session: Session,
    actor: str,
    action: str,
    *,
    order_id: str | None = None,
    device: str | None = None,
    **detail: Any,
) -> AuditEvent:
    leaked = SECRET_KEYS.intersection(detail)
    if leaked:
        raise ValueError(f"audit detail must not carry secrets: {sorted(leaked)}")
    event = AuditEvent(
        actor=actor,
        action=action,
        order_id=order_id,
        device=device,
        detail=json.dumps(detail, sort_keys=True, default=str),
    )
    session.add(event)
    log.info("%s %s order=%s device=%s", actor, action, order_id or "-", device or "-")
    return event


def query(
    session: Session,
    *,
    order_id: str | None = None,
    device: str | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    orders: Collection[str] | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[AuditEvent]:
    """Events newest first: of an order, a device, an actor, from ``since`` (inclusive) to
    ``until``; ``orders`` limits them to those orders (a technician's token)."""
    stmt = select(AuditEvent).order_by(AuditEvent.id.desc())
    if order_id:
        stmt = stmt.where(AuditEvent.order_id == order_id)
    if device:
        stmt = stmt.where(AuditEvent.device == device)
    if actor:
        stmt = stmt.where(AuditEvent.actor == actor)
    if since:
        stmt = stmt.where(AuditEvent.at >= since)
    if until:
        stmt = stmt.where(AuditEvent.at < until)
    if orders is not None:
        stmt = stmt.where(AuditEvent.order_id.in_(sorted(orders)))
    return list(session.scalars(stmt.offset(offset).limit(limit)))
