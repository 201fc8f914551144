"""Rotate SIP passwords: new secret in the store, devices pick it up at their next fetch.

One write transaction per call: every rotated ``SecretRow`` gets a new ciphertext,
``source="rotated"`` and a new ``updated_at`` (the order's generation moves with it, see
:mod:`provisioner.store.changes`), and each extension gets a ``secret.rotated`` audit event
(never the value).
The registrar learns the new password from a fresh ``provisioner pbx export``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select

from provisioner.errors import BindRefused, OrderUnknown
from provisioner.orders.service import OrdersService
from provisioner.store import audit, vault
from provisioner.store.models import Order, SecretRow, utcnow

SECRET = "sip_password"  # noqa: S105 - the name of a secret, not a value


@dataclass(frozen=True)
class Rotated:
    order_id: str
    extensions: list[int]
    # Extensions whose password the order document gives: re-applying it restores that value.
    from_document: list[int] = field(default_factory=list)


def rotate(
    inv: OrdersService,
    order_id: str,
    extensions: Iterable[int] | None = None,
    actor: str = "",
) -> Rotated:
    """New SIP passwords for ``extensions`` of the order (all of them for None)."""
    actor = actor or audit.default_actor()
    with inv.db.write() as session:
        order = session.scalar(select(Order).where(Order.order_id == order_id).with_for_update())
        if order is None:
            raise OrderUnknown(f"order {order_id}: not in the store")
        if order.state != "active":
            raise BindRefused(f"order {order_id}: is {order.state}")
        known = [e.short for e in order.extensions]
        wanted = known if extensions is None else list(dict.fromkeys(extensions))
        missing = [s for s in wanted if s not in known]
        if missing:
            raise BindRefused(
                f"order {order_id}: no extension {', '.join(map(str, missing))} "
                f"(extensions: {', '.join(map(str, known))})"
            )
        if not wanted:
            raise BindRefused(f"order {order_id}: has no extensions")
        rows = {
            r.owner: r
            for r in session.scalars(
                select(SecretRow).where(SecretRow.order_pk == order.id, SecretRow.name == SECRET)
            )
        }
        now = utcnow()
        from_document = []
        for short in wanted:
            row = rows.get(f"extension:{short}")
            if row is None:
                raise OrderUnknown(f"order {order_id}: extension {short} has no {SECRET}")
            if row.source == "document":
                from_document.append(short)
            old = inv.vault.decrypt(row.ciphertext)
            new = vault.generate(SECRET)
            while new == old:  # 131 bits: never in practice, but a rotation must change it
                new = vault.generate(SECRET)
            row.ciphertext = inv.vault.encrypt(new)
            row.source = "rotated"
            row.updated_at = now
            audit.record(
                session,
                actor,
                "secret.rotated",
                order_id=order_id,
                extension=short,
                owner=row.owner,
                secret=SECRET,
            )
        return Rotated(order_id, wanted, from_document)
