"""The audit log: every change, refusal, file served and push, as rows in the store.

Details are plain JSON of names, ids and hashes. Callers never pass secrets here; the
``record`` function refuses detail keys that look like secrets as a second line of defence.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from provisioner.documents.document import SECRET_KEYS
from provisioner.store.filters import S, where_equal, where_in
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


@dataclass(frozen=True)
class AuditQuery:
    """Which events to read (all filters optional): of an order, a device, an actor, from
    ``since`` (inclusive) to ``until``; ``only`` limits them to those order ids (a
    technician's token)."""

    order_id: str | None = None
    device: str | None = None
    actor: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    only: frozenset[str] | None = None

    def where(self, stmt: S) -> S:
        """``stmt`` (a select of audit events) narrowed to the events this query asks for."""
        stmt = where_equal(
            stmt,
            {
                AuditEvent.order_id: self.order_id,
                AuditEvent.device: self.device,
                AuditEvent.actor: self.actor,
            },
        )
        if self.since:
            stmt = stmt.where(AuditEvent.at >= self.since)
        if self.until:
            stmt = stmt.where(AuditEvent.at < self.until)
        return where_in(stmt, AuditEvent.order_id, self.only)


def query(
    session: Session, query: AuditQuery, limit: int = 100, offset: int = 0
) -> list[AuditEvent]:
    """The events ``query`` asks for, newest first."""
    stmt = query.where(select(AuditEvent).order_by(AuditEvent.id.desc()))
    return list(session.scalars(stmt.offset(offset).limit(limit)))


def count(session: Session, query: AuditQuery) -> int:
    """How many events ``query`` asks for."""
    return session.scalar(query.where(select(func.count(AuditEvent.id)))) or 0
