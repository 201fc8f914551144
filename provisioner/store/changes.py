"""What follows every write to an order, kept in one place (DESIGN.md §4, "one write path").

Every flush that adds, changes or deletes a row that an order's files or its fetch decisions
derive from (the order, its customer, sites, extensions, numbers, devices, terminals, secrets,
enrollment windows) gives each order it touched the store's next *generation* and a new
``updated_at``. Serving reloads every order whose generation passed the last one it saw, so
no writer can forget to tell it: a cancelled order, a swapped-out box or a rotated password is
never served stale because some code path did not bump a timestamp by hand.

The generation comes from one counter row, incremented inside the writing transaction: the
row lock (PostgreSQL) or the database lock (SQLite, ``BEGIN IMMEDIATE``) is held until commit,
so generations are handed out in commit order and a reader that saw generation *g* can never
later find a newly committed change below *g*.

The hook also records what each write touched (:class:`Touched`, in ``session.info``): per
order, the devices whose own rows changed, or every device of the order when something they
share changed (a site, an extension, the order itself). The orders service returns it with
every write: it is what publishing the devices' files consumes.

Two more rules hold for every writer because they live here too:

- a device whose MAC or serial changes (bind, unbind, swap, a document naming another box)
  loses its serving state (source binding, last fetch) and its pinned SSH host key: those
  belonged to the old box;
- bulk ``UPDATE``/``DELETE``/``INSERT`` statements on these tables are refused, since they
  would bypass the hook; write through ORM objects.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event, func, insert, inspect, select, update
from sqlalchemy.orm import ORMExecuteState, Session

from provisioner.store.models import (
    CONTENT,
    Counter,
    Customer,
    Device,
    DeviceState,
    Enrollment,
    Order,
    SecretRow,
    Terminal,
    utcnow,
)
from provisioner.store.push_models import HostKey

GENERATION = "generation"
CHANNEL = "provisioner_changes"  # PostgreSQL NOTIFY channel of the change feed

_CONTENT_TABLES = frozenset(cls.__table__.name for cls in CONTENT)


@dataclass
class Touched:
    """What a write changed: order id -> the ids of the devices whose own rows changed, or
    ``None`` for every device of the order (something they share changed); ``windows``: the
    orders whose enrollment windows changed (who may fetch, not what: nothing to render)."""

    orders: dict[str, set[str] | None] = field(default_factory=dict)
    windows: set[str] = field(default_factory=set)

    def add(self, order_id: str, device_id: str | None) -> None:
        if device_id is None:
            self.orders[order_id] = None
            return
        devices = self.orders.setdefault(order_id, set())
        if devices is not None:
            devices.add(device_id)

    def devices(self, order_id: str) -> set[str] | None:
        """The devices of ``order_id`` this write touched (None: all of them)."""
        return self.orders.get(order_id, set())


def touched(session: Session) -> Touched:
    """What the writes of this session touched so far (see :class:`Touched`)."""
    found = session.info.get("touched")
    if not isinstance(found, Touched):
        found = Touched()
        session.info["touched"] = found
    return found


class BulkWriteRefused(RuntimeError):
    """A bulk statement on an order's rows would bypass :func:`_touch_orders`."""


def announce(session: Session) -> None:
    """Tell every listening server that this transaction changed what they answer (delivered
    when it commits; PostgreSQL only: on SQLite servers poll the generation)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_notify(CHANNEL, "")))


def next_generation(session: Session) -> int:
    """Take the store's next generation inside the current write transaction."""
    conn = session.connection()
    done = conn.execute(
        update(Counter).where(Counter.name == GENERATION).values(value=Counter.value + 1)
    )
    if not done.rowcount:
        conn.execute(insert(Counter).values(name=GENERATION, value=1))
    return int(conn.execute(select(Counter.value).where(Counter.name == GENERATION)).scalar_one())


def _changed(session: Session, obj: Any) -> bool:
    if obj in session.new or obj in session.deleted:
        return True
    return session.is_modified(obj, include_collections=isinstance(obj, Order))


def _identity_changed(obj: Device) -> bool:
    state = inspect(obj)
    return any(state.attrs[name].history.has_changes() for name in ("mac", "serial"))


def _order_of(session: Session, obj: Any) -> list[Order]:
    if isinstance(obj, Order):
        return [obj]
    if isinstance(obj, Customer):
        if obj.id is None:
            return []  # a new customer comes with its new order
        return list(session.scalars(select(Order).where(Order.customer_id == obj.id)))
    order = getattr(obj, "order", None)
    if isinstance(order, Order):
        return [order]
    pk = getattr(obj, "order_pk", None)
    if pk is None:
        return []
    found = session.get(Order, pk)
    return [found] if found is not None else []


def _device_of(session: Session, obj: Any) -> str | None:
    """The device whose own rows ``obj`` is, or None for a row the order's devices share."""
    if isinstance(obj, Device):
        return obj.device_id
    if isinstance(obj, Terminal):
        return obj.device.device_id if obj.device is not None else None
    if isinstance(obj, SecretRow) and obj.owner.startswith("device:"):
        return obj.owner.removeprefix("device:")
    return None


@event.listens_for(Session, "before_flush")
def _touch_orders(session: Session, _context: Any, _instances: Any) -> None:
    touched_orders: dict[int, Order] = {}
    record = touched(session)
    for obj in itertools.chain(list(session.new), list(session.dirty), list(session.deleted)):
        if not isinstance(obj, CONTENT) or not _changed(session, obj):
            continue
        if (
            isinstance(obj, Device)
            and obj.id is not None
            and obj not in session.deleted
            and _identity_changed(obj)
        ):
            _forget_box(session, obj.id)
        device_id = _device_of(session, obj)
        for order in _order_of(session, obj):
            touched_orders[id(order)] = order
            if isinstance(obj, Enrollment):
                record.windows.add(order.order_id)
            else:
                record.add(order.order_id, device_id)
    if not touched_orders:
        return
    generation = next_generation(session)
    now = utcnow()
    for order in touched_orders.values():
        order.generation = generation
        order.updated_at = now


def _forget_box(session: Session, device_pk: int) -> None:
    """The device now names another box (or none): the old box's traces go."""
    for cls in (DeviceState, HostKey):
        row = session.get(cls, device_pk)
        if row is not None:
            session.delete(row)


@event.listens_for(Session, "do_orm_execute")
def _refuse_bulk_writes(state: ORMExecuteState) -> None:
    if not (state.is_update or state.is_delete or state.is_insert):
        return
    table = getattr(state.statement, "table", None)
    if table is not None and getattr(table, "name", None) in _CONTENT_TABLES:
        raise BulkWriteRefused(
            f"bulk {type(state.statement).__name__.lower()} on {table.name}: write order rows "
            "through ORM objects so every change moves the order's generation"
        )
