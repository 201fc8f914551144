"""Publish on write (DESIGN.md §4): the files a write changes, rendered and stored with it.

Every write of the orders service ends by publishing what it touched, in the same
transaction: the served files of the touched devices are rendered from the rows as the write
left them, checked, encrypted with the vault key and stored in ``published_files``; files that
no longer exist (a cancelled order, an unbound or swapped-out box, a device that left its
order) are deleted. A render failure refuses the write: nothing is half-published. Serving
only ever reads these rows (decrypt, never render), so the first fetch after a restart costs
what the thousandth does, and every server answers the same bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from provisioner.render.context import build_order_view, load_order, load_secrets
from provisioner.store.access import Store
from provisioner.store.changes import Touched
from provisioner.store.models import Order, PublishedFile

if TYPE_CHECKING:
    from provisioner.render.engine import RenderEngine


@dataclass
class Published:
    """What one publish wrote: files stored (new or changed), files deleted, and the
    devices ``(order_id, device_id)`` whose served files it stored (what a resync tells)."""

    written: int = 0
    deleted: int = 0
    devices: set[tuple[str, str]] = field(default_factory=set)

    def __iadd__(self, other: Published) -> Published:
        self.written += other.written
        self.deleted += other.deleted
        self.devices |= other.devices
        return self


class Publisher:
    """Renders and stores the served files of orders, inside the caller's transaction."""

    def __init__(self, store: Store, engine: RenderEngine):
        self.store = store
        self.engine = engine

    def publish(self, session: Session, touched: Touched) -> Published:
        """Publish every order ``touched`` changed (its touched devices, or all of them)."""
        done = Published()
        if not touched.orders:
            return done
        session.flush()
        session.expire_all()  # views are built from the rows as this write left them
        for order_id, devices in sorted(touched.orders.items()):
            order = session.scalar(select(Order).where(Order.order_id == order_id))
            if order is not None:
                done += self.publish_order(session, order, devices)
        return done

    def publish_order(
        self, session: Session, order: Order, devices: set[str] | None = None
    ) -> Published:
        """Bring the order's published files (of ``devices``, or all) to what renders now."""
        done = Published()
        existing = {
            row.name: row
            for row in session.scalars(
                select(PublishedFile).where(PublishedFile.order_pk == order.id)
            )
        }
        device_pk = {d.device_id: d.id for d in order.devices}
        device_of = {pk: device_id for device_id, pk in device_pk.items()}
        wanted: dict[str, tuple[int, bytes]] = {}
        if order.state == "active":
            view = build_order_view(load_order(session, order.id))
            secrets = load_secrets(session, order, self.store.vault.decrypt)
            shared: dict[tuple[str, str, str], str] = {}
            for device in view.devices:
                if devices is not None and device.device_id not in devices:
                    continue
                if not self.engine.registry.has_model(device.model):
                    continue
                files = self.engine.render_device(
                    view, secrets, device, served_only=True, shared=shared
                )
                for name, f in files.items():
                    wanted[name] = (device_pk[device.device_id], f.data)
        # (A device that left the order took its files with it: ON DELETE CASCADE.)
        scope = None if devices is None else {device_pk.get(d) for d in devices}
        in_scope = {n for n, row in existing.items() if scope is None or row.device_pk in scope}
        gone = [existing[name].id for name in in_scope if name not in wanted]
        if gone:
            session.execute(delete(PublishedFile).where(PublishedFile.id.in_(gone)))
            done.deleted += len(gone)
        session.flush()
        for name, (pk, data) in wanted.items():
            digest = hashlib.sha256(data).hexdigest()
            row = existing.get(name)
            if row is not None and row.sha256 == digest and row.device_pk == pk:
                continue
            body = self.store.vault.seal(data)
            if row is None:
                session.add(PublishedFile(order_pk=order.id, device_pk=pk, name=name,
                                          sha256=digest, size=len(data), ciphertext=body,
                                          generation=order.generation))  # fmt: skip
            else:
                row.device_pk, row.sha256, row.size = pk, digest, len(data)
                row.ciphertext, row.generation = body, order.generation
            done.written += 1
            done.devices.add((order.order_id, device_of[pk]))
        return done
