"""API tokens for the NOC REST API: stored hashed, shown once, revocable.

A token reads ``pvt_<id>_<secret>``: the id finds the row, the secret (32 random bytes,
URL-safe base64) is checked against its stored SHA-256 in constant time. The secret itself
is never stored, so a copy of the database does not hand out API access.

Tokens expire: after ``expires`` (``90m``, ``12h``, ``30d``), by default 12 hours for a
technician (one install appointment) and 90 days for the other roles; ``never`` only when
asked for. An expired token is refused like an unknown one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from provisioner.errors import ProvisionerError
from provisioner.store.models import Base, utcnow

ROLES = ("viewer", "technician", "noc", "admin")
PREFIX = "pvt"
# How long a token works when its maker does not say: a technician's lasts one working day.
DEFAULT_EXPIRES = {"viewer": "90d", "technician": "12h", "noc": "90d", "admin": "90d"}
MAX_LIFETIME = timedelta(days=3650)
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


class TokenError(ProvisionerError):
    """A token could not be made, found or revoked."""


class ApiToken(Base):
    """One API token: its role, the orders it is limited to (technicians), its hash."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(16))
    orders: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of order ids
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(100), default="")
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(nullable=True)

    @property
    def order_ids(self) -> list[str]:
        return list(json.loads(self.orders or "[]"))


def parse_expires(text: str) -> timedelta | None:
    """A token's lifetime from ``90m``, ``12h``, ``30d`` (minutes, hours, days) or ``never``
    (None)."""
    value = text.strip().lower()
    if value == "never":
        return None
    found = re.fullmatch(r"([0-9]{1,9})([mhd])", value)
    if found is None:
        raise TokenError(
            f"token expiry {text!r}: give a whole number and a unit m, h or d "
            "(90m, 12h, 30d), or never"
        )
    lifetime = timedelta(**{_UNITS[found[2]]: int(found[1])})
    if lifetime <= timedelta(0):
        raise TokenError(f"token expiry {text!r}: must be at least 1m")
    if lifetime > MAX_LIFETIME:
        raise TokenError(
            f"token expiry {text!r}: at most {MAX_LIFETIME.days}d; say never for a token "
            "that does not expire"
        )
    return lifetime


def expired(row: ApiToken, now: datetime | None = None) -> bool:
    """Whether the token's expiry has passed."""
    return row.expires_at is not None and row.expires_at <= (now or utcnow())


@dataclass(frozen=True)
class TokenInfo:
    """What a verified token grants (a plain value, safe to keep per request)."""

    id: int
    name: str
    role: str
    orders: frozenset[str]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create(
    session: Session,
    role: str,
    *,
    name: str = "",
    orders: list[str] | None = None,
    actor: str = "",
    expires: str | None = None,
) -> tuple[ApiToken, str]:
    """Make a token; returns the row and the token text (shown once, never stored).

    ``expires`` is a lifetime for :func:`parse_expires`; None takes the role's default.
    """
    if role not in ROLES:
        raise TokenError(f"role {role!r}: must be one of {', '.join(ROLES)}")
    lifetime = parse_expires(DEFAULT_EXPIRES[role] if expires is None else expires)
    orders = sorted(set(orders or []))
    if role == "technician" and not orders:
        raise TokenError("a technician token needs at least one --order")
    if role != "technician" and orders:
        raise TokenError(f"--order limits technician tokens only; a {role} token sees every order")
    secret = secrets.token_urlsafe(32)
    row = ApiToken(
        name=name,
        role=role,
        orders=json.dumps(orders),
        token_hash=_digest(secret),
        created_by=actor,
        expires_at=None if lifetime is None else utcnow() + lifetime,
    )
    session.add(row)
    session.flush()
    if not row.name:
        # Unnamed tokens still get a distinct name: audit events say who acted.
        row.name = f"{role}-{row.id}"
    return row, f"{PREFIX}_{row.id}_{secret}"


def verify(session: Session, token: str) -> TokenInfo | None:
    """The grant of a presented token, or None (malformed, unknown, revoked, expired, wrong
    secret)."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1].isdigit() or len(parts[1]) > 12:
        return None
    row = session.get(ApiToken, int(parts[1]))
    # Compare digests even when the row is missing, so timing does not tell ids apart.
    expected = row.token_hash if row is not None else "0" * 64
    ok = hmac.compare_digest(expected, _digest(parts[2]))
    if row is None or not ok or row.revoked_at is not None or expired(row):
        return None
    return TokenInfo(row.id, row.name, row.role, frozenset(row.order_ids))


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.id)))


def revoke(session: Session, token_id: int) -> ApiToken:
    row = session.get(ApiToken, token_id)
    if row is None:
        raise TokenError(f"token {token_id}: no such token")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return row
