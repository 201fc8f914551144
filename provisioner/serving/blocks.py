"""Blocked sources (DESIGN.md §5): list the sources serving blocked for sweeping, lift a block.

The serving layer blocks a source and writes the block here; every server on the store honours
it and drops it when it is lifted (it follows this table, see ``ProvisioningService.refresh``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from provisioner.errors import BlockUnknown
from provisioner.store import audit
from provisioner.store.access import Store
from provisioner.store.models import SourceBlock, utcnow


@dataclass(frozen=True)
class Block:
    source: str
    blocked_at: datetime
    until: datetime
    protocol: str
    names: int  # distinct unknown device names that triggered it


def active(inv: Store) -> list[Block]:
    """Every block in force now, newest first."""
    with inv.db.read() as s:
        rows = s.scalars(
            select(SourceBlock)
            .where(SourceBlock.lifted_at.is_(None), SourceBlock.until > utcnow())
            .order_by(SourceBlock.blocked_at.desc())
        ).all()
        return [Block(r.source, r.blocked_at, r.until, r.protocol, r.names) for r in rows]


def lift(inv: Store, source: str, actor: str = "") -> int:
    """Lift every block of ``source``; returns how many. Audited."""
    actor = actor or audit.default_actor()
    try:
        address = str(ipaddress.ip_address(source.strip()))
    except ValueError:
        raise BlockUnknown(f"{source}: not an IP address") from None
    with inv.db.write() as s:
        rows = s.scalars(
            select(SourceBlock).where(
                SourceBlock.source == address,
                SourceBlock.lifted_at.is_(None),
                SourceBlock.until > utcnow(),
            )
        ).all()
        if not rows:
            blocked = [b.source for b in active(inv)]
            listing = ", ".join(blocked) if blocked else "none"
            raise BlockUnknown(f"{address}: not blocked (blocked now: {listing})")
        now = utcnow()
        for row in rows:
            row.lifted_at, row.lifted_by = now, actor
        audit.record(s, actor, "source.unblocked", source=address)
        return len(rows)
