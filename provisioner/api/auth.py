"""Bearer tokens, roles and permissions. Deny by default.

Every route declares the permission it needs with ``Depends(require("orders:read"))`` (see
the aliases in :mod:`provisioner.api.deps`); a test walks the routes and fails for any route
without one. Roles:

- ``viewer``: read every order, device and audit event; never a secret.
- ``technician``: read, bind, unbind, swap, arm, push and resync, only on the orders the token
  names. Any other order answers 404, exactly like an order that does not exist, so a
  technician's token cannot be used to learn which orders exist.
- ``noc``: everything on every order except reading secrets and managing tokens; lifting
  the block of a source the sweep guard blocked.
- ``admin``: everything, including the secrets endpoint and renaming a customer through an
  order that is not one of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from provisioner.api.limits import RateLimiter
from provisioner.store import tokens
from provisioner.store.tokens import TokenInfo

READ = frozenset({"orders:read", "devices:read", "audit:read"})
# the install's work (devices:resync: tell phones to re-fetch, SIP NOTIFY check-sync)
FIELD = frozenset({"devices:bind", "devices:arm", "devices:push", "devices:resync"})
# customers:rename: an order may rename a customer that other orders own (admin only).
PERMISSIONS = frozenset(
    {*READ, *FIELD, "orders:write", "secrets:read", "blocks:lift", "customers:rename"}
)
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "viewer": READ,
    "technician": READ | FIELD,
    "noc": READ | FIELD | {"orders:write", "blocks:lift"},
    "admin": PERMISSIONS,
}
# Roles limited to the orders named on their token.
SCOPED_ROLES = frozenset({"technician"})
# The technician page's session cookie (HttpOnly, SameSite=Strict): it holds a token, and the
# API takes it on reads only (GET, HEAD: the page's live streams). Writes need the bearer
# header, or the page's own forms with their CSRF token (provisioner.tech).
SESSION_COOKIE = "pv_session"
_SAFE = frozenset({"GET", "HEAD"})

bearer = HTTPBearer(
    auto_error=False,
    description="An API token from `provisioner token create --role ROLE`.",
)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the verified token and what its role allows."""

    token: TokenInfo
    permissions: frozenset[str]

    @property
    def role(self) -> str:
        return self.token.role

    @property
    def actor(self) -> str:
        """The audit log's actor for this caller."""
        return f"api:{self.token.name or self.token.id}"

    @property
    def scoped(self) -> bool:
        return self.token.role in SCOPED_ROLES

    @property
    def visible_orders(self) -> frozenset[str] | None:
        """The order ids this caller may see, or None when it sees every order."""
        return self.token.orders if self.scoped else None

    def sees(self, order_id: str) -> bool:
        """Whether this caller may know that ``order_id`` exists."""
        return not self.scoped or order_id in self.token.orders


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": 'Bearer realm="provisioner"'})


class Permission:
    """A route dependency: authenticate the bearer token, apply its rate limit, check a right.

    Kept a class (not a closure) so the route-walking test can find it by type.
    """

    def __init__(self, permission: str):
        if permission not in PERMISSIONS:
            raise ValueError(f"unknown permission {permission!r}")
        self.permission = permission

    def __repr__(self) -> str:
        return f"Permission({self.permission!r})"

    def __call__(
        self,
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Principal:
        limiter: RateLimiter = request.app.state.rate_limiter
        if credentials is not None and credentials.scheme.lower() == "bearer":
            presented = credentials.credentials
        elif request.method in _SAFE and request.cookies.get(SESSION_COOKIE):
            presented = request.cookies[SESSION_COOKIE]
        else:
            raise _unauthorized("a bearer token is required")
        inventory = request.app.state.inventory
        with inventory.db.read() as session:
            info = tokens.verify(session, presented)
        if info is None:
            # Failed logins share a bucket per source, so guessing tokens is throttled too.
            source = request.client.host if request.client else "-"
            wait = limiter.take(("unauthenticated", source))
            if wait:
                retry = {"Retry-After": limiter.retry_after(wait)}
                raise HTTPException(429, "too many failed logins", headers=retry)
            raise _unauthorized("the token is unknown, malformed, revoked or expired")
        wait = limiter.take(("token", info.id))
        if wait:
            raise HTTPException(
                429, "rate limit exceeded", headers={"Retry-After": limiter.retry_after(wait)}
            )
        principal = Principal(info, ROLE_PERMISSIONS.get(info.role, frozenset()))
        if self.permission not in principal.permissions:
            raise HTTPException(403, f"role {info.role} may not {self.permission}")
        request.state.principal = principal
        return principal


def require(permission: str) -> Permission:
    """The dependency that guards a route with ``permission``."""
    return Permission(permission)


def principal_of(inventory: Any, presented: str) -> Principal | None:
    """The caller a token (a bearer's or the page's session cookie) stands for, or None."""
    if not presented:
        return None
    with inventory.db.read() as session:
        info = tokens.verify(session, presented)
    if info is None:
        return None
    return Principal(info, ROLE_PERMISSIONS.get(info.role, frozenset()))
