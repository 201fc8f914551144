"""Managing API tokens (``provisioner token ...``): issue, list, revoke, each audited.

The token rows and their checks are in :mod:`provisioner.store.tokens`; this is the write path
the command line (and anything else that manages tokens) goes through.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

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


def _link_digest(secret: str) -> str:
    # A link's secret is stored under another digest than a token's: the link's text does
    # not work as a bearer token, only as a one-time login (see redeem_link).
    return hashlib.sha256(f"link:{secret}".encode()).hexdigest()


def issue(
    store: Store,
    role: str,
    *,
    name: str = "",
    orders: list[str] | None = None,
    expires: str | None = None,
    actor: str = "",
    link: bool = False,
) -> Issued:
    """Make a token; the audit log says who made it, for which role, until when.

    With ``link`` the text is a one-time login for the technician page: it is not a bearer
    token, and opening it (:func:`redeem_link`) turns it into the page's session."""
    actor = actor or audit.default_actor()
    with store.db.write() as session:
        row, text = tokens.create(
            session, role, name=name, orders=orders or [], actor=actor, expires=expires
        )
        if link:
            row.token_hash = _link_digest(text.split("_", 2)[2])
        audit.record(
            session,
            actor,
            "token.created",
            token_id=row.id,
            token_name=row.name,
            role=role,
            orders=row.order_ids,
            expires_at=row.expires_at.strftime("%Y-%m-%d %H:%M") if row.expires_at else None,
            link=link,
        )
        return Issued(_row(row), text)


@dataclass(frozen=True)
class PageSession:
    """A page session made from a login link: the token it works as, and what it grants."""

    text: str  # the session's token (goes into an HttpOnly cookie, never shown)
    info: tokens.TokenInfo
    expires_at: datetime | None


def redeem_link(store: Store, text: str, *, source: str = "") -> PageSession | None:
    """Open a one-time login link: None when it is unknown, used, revoked or expired.

    The token gets a new secret (the session's, kept in the page's cookie); the link's own
    secret stops working at once, so a second opening, a photo of the QR code or the browser
    history lead nowhere. Checked and changed in one write transaction (the row locked)."""
    parts = text.split("_", 2)
    if len(parts) != 3 or parts[0] != tokens.PREFIX or not parts[1].isdigit() or len(parts[1]) > 12:
        return None
    with store.db.write() as session:
        row = session.scalar(
            select(tokens.ApiToken).where(tokens.ApiToken.id == int(parts[1])).with_for_update()
        )
        expected = row.token_hash if row is not None else "0" * 64
        ok = hmac.compare_digest(expected, _link_digest(parts[2]))
        if row is None or not ok or row.revoked_at is not None or tokens.expired(row):
            return None
        secret = secrets.token_urlsafe(32)
        row.token_hash = hashlib.sha256(secret.encode()).hexdigest()
        audit.record(session, f"api:{row.name}", "token.link-opened", token_id=row.id,
                     source=source)  # fmt: skip
        info = tokens.TokenInfo(row.id, row.name, row.role, frozenset(row.order_ids))
        return PageSession(f"{tokens.PREFIX}_{row.id}_{secret}", info, row.expires_at)


def listing(store: Store) -> list[TokenRow]:
    with store.db.read() as session:
        return [_row(r) for r in tokens.list_tokens(session)]


def revoke(store: Store, token_id: int, *, actor: str = "") -> TokenRow:
    with store.db.write() as session:
        row = tokens.revoke(session, token_id)
        audit.record(session, actor or audit.default_actor(), "token.revoked", token_id=row.id,
                     token_name=row.name)  # fmt: skip
        return _row(row)
