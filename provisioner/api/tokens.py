"""Managing API tokens (``provisioner token ...``): issue, list, revoke, each audited.

The token rows and their checks are in :mod:`provisioner.store.tokens`; this is the write path
the command line (and anything else that manages tokens) goes through.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from provisioner.store import audit, tokens
from provisioner.store.access import Store


@dataclass(frozen=True)
class TokenRow:
    """A token as it may be listed (never the token itself)."""

    id: int
    name: str
    role: str
    orders: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    expired: bool


@dataclass(frozen=True)
class Issued:
    token: TokenRow
    text: str  # the token: shown once, never stored


def _row(r: tokens.ApiToken) -> TokenRow:
    return TokenRow(r.id, r.name, r.role, list(json.loads(r.orders or "[]")), r.created_at,
                    r.expires_at, r.revoked_at, tokens.expired(r))  # fmt: skip


def issue(
    store: Store,
    role: str,
    *,
    name: str = "",
    orders: list[str] | None = None,
    expires: str | None = None,
    actor: str = "",
) -> Issued:
    """Make a token; the audit log says who made it, for which role, until when."""
    actor = actor or audit.default_actor()
    with store.db.write() as session:
        row, text = tokens.create(
            session, role, name=name, orders=orders or [], actor=actor, expires=expires
        )
        audit.record(
            session,
            actor,
            "token.created",
            token_id=row.id,
            token_name=row.name,
            role=role,
            orders=row.order_ids,
            expires_at=row.expires_at.strftime("%Y-%m-%d %H:%M") if row.expires_at else None,
        )
        return Issued(_row(row), text)


def listing(store: Store) -> list[TokenRow]:
    with store.db.read() as session:
        return [_row(r) for r in tokens.list_tokens(session)]


def revoke(store: Store, token_id: int, *, actor: str = "") -> TokenRow:
    with store.db.write() as session:
        row = tokens.revoke(session, token_id)
        audit.record(session, actor or audit.default_actor(), "token.revoked", token_id=row.id,
                     token_name=row.name)  # fmt: skip
        return _row(row)
