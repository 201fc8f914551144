"""Resync after change (DESIGN.md §7): a device re-fetches its files when told, no reboot.

:class:`Resyncer` asks the registrar (settings ``sip_registrar``, ``sip_registrar_port``) to
deliver one ``NOTIFY`` with ``Event: check-sync`` to each device's registered contact: the
user of its first account (the first handset slot's extension on a DECT base: one NOTIFY
for the base, never one per handset). Every attempt is audited (``device.resync``, with its
outcome; no secret is in it). The registrar relays NOTIFY only from this server's address
(README: "Resync").

:class:`ResyncQueue` does it after a publish that changed a device's served files (setting
``resync_after_publish``): the orders service tells it which devices' files changed once the
write committed; it waits ``resync_debounce_seconds`` after the last change of a device (a
burst of writes sends one NOTIFY) and sends from its own thread, never on the request path.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioner.catalog import MODELS
from provisioner.documents.document import normalize_mac
from provisioner.errors import DeviceUnknown, OrderUnknown, ResyncRefused
from provisioner.orders.service import OrdersService
from provisioner.orders.status import RESYNC_ACTION
from provisioner.store import audit
from provisioner.store.models import Device, Order
from provisioner.voice.notify import Answer, Outcome, send_check_sync

log = logging.getLogger("provisioner.voice.resync")

KINDS = ("phone", "dect_base")  # devices that pull their file and register (check-sync)
ACTION = RESYNC_ACTION


@dataclass(frozen=True)
class Target:
    """One device to tell: where it is in the store and the user it registers first."""

    order_id: str
    device_id: str
    model: str
    mac: str
    user: str  # "" when it registers nothing (a DECT base with no handset yet)


@dataclass(frozen=True)
class Resynced:
    """The outcome for one device."""

    target: Target
    answer: Answer

    @property
    def ok(self) -> bool:
        return self.answer.outcome == Outcome.delivered

    def line(self) -> str:
        t = self.target
        who = f"{t.user} " if t.user else ""
        return f"{t.order_id} {t.device_id} {t.mac} {who}{self.answer.text}"


def _target(dev: Device) -> Target:
    first = min(dev.terminals, key=lambda t: t.slot, default=None)
    user = first.extension.number if first is not None else ""
    return Target(dev.order.order_id, dev.device_id, dev.model, dev.mac or "", user)


def _resyncable(dev: Device) -> bool:
    facts = MODELS.get(dev.model)
    return bool(dev.mac) and facts is not None and facts.kind in KINDS


def resolve(
    session: Session, target: str, visible: Callable[[str], bool] = lambda _o: True
) -> list[Target]:
    """The devices ``target`` names (an order id, or a device's MAC), in order position.

    An order gives its bound desk phones and DECT bases; a cancelled order, or a MAC of a
    device that takes no check-sync, is refused. ``visible`` hides other orders (a
    technician's token): they read as unknown.
    """
    order = session.scalar(select(Order).where(Order.order_id == target))
    if order is not None and visible(order.order_id):
        if order.state != "active":
            raise ResyncRefused(f"order {order.order_id}: is {order.state}; nothing to resync")
        devices = [d for d in sorted(order.devices, key=lambda d: d.position) if _resyncable(d)]
        if not devices:
            raise ResyncRefused(
                f"order {order.order_id}: no bound desk phone or DECT base to resync"
            )
        return [_target(d) for d in devices]
    try:
        mac = normalize_mac(target)
    except ValueError:
        raise OrderUnknown(f"{target}: neither an order in the store nor a MAC address") from None
    dev = session.scalar(select(Device).where(Device.mac == mac))
    if dev is None or not visible(dev.order.order_id):
        raise DeviceUnknown(f"MAC {mac}: no device with this MAC in the store")
    where = f"order {dev.order.order_id}: device {dev.device_id}"
    if dev.order.state != "active":
        raise ResyncRefused(f"{where}: the order is {dev.order.state}; nothing to resync")
    if not _resyncable(dev):
        raise ResyncRefused(f"{where}: a {dev.model} takes no check-sync (pushed, not pulled)")
    return [_target(dev)]


class Resyncer:
    """Sends check-sync to devices of the store and audits each outcome."""

    def __init__(self, inventory: OrdersService, deadline: float | None = None):
        self.inventory = inventory
        settings = inventory.settings
        self.registrar = settings.sip_registrar
        self.port = settings.sip_registrar_port
        self.deadline = settings.resync_timeout if deadline is None else deadline
        self.source = settings.resync_source_address

    def targets(
        self, target: str, visible: Callable[[str], bool] = lambda _o: True
    ) -> list[Target]:
        with self.inventory.db.read() as session:
            return resolve(session, target, visible)

    def devices(self, keys: Iterable[tuple[str, str]]) -> list[Target]:
        """The resyncable devices among ``(order_id, device_id)`` (others are skipped)."""
        wanted: dict[str, set[str]] = {}
        for order_id, device_id in keys:
            wanted.setdefault(order_id, set()).add(device_id)
        out: list[Target] = []
        with self.inventory.db.read() as session:
            for order_id, ids in sorted(wanted.items()):
                order = session.scalar(select(Order).where(Order.order_id == order_id))
                if order is None or order.state != "active":
                    continue
                out += [
                    _target(d)
                    for d in sorted(order.devices, key=lambda d: d.position)
                    if d.device_id in ids and _resyncable(d)
                ]
        return out

    def resync(
        self,
        target: str,
        *,
        actor: str = "",
        visible: Callable[[str], bool] = lambda _o: True,
    ) -> list[Resynced]:
        """Resync every device ``target`` (order id or MAC) names; audited."""
        return self.send(self.targets(target, visible), actor=actor)

    def send(self, targets: list[Target], *, actor: str = "", why: str = "asked") -> list[Resynced]:
        """One NOTIFY per target, all at once; each outcome audited."""
        users = [t.user for t in targets if t.user]
        answers = iter(
            send_check_sync(
                users, self.registrar, self.port, deadline=self.deadline, source=self.source
            )
        )
        done = []
        for t in targets:
            if t.user:
                answer = next(answers)
            else:
                answer = Answer("", Outcome.not_registered, reason="no account in its file")
            done.append(Resynced(t, answer))
        with self.inventory.db.write() as session:  # one transaction for the whole batch
            for r in done:
                audit.record(
                    session,
                    actor or "provisioner",
                    ACTION,
                    order_id=r.target.order_id,
                    device=r.target.device_id,
                    mac=r.target.mac,
                    user=r.target.user,
                    outcome=str(r.answer.outcome),
                    status=r.answer.status,
                    reason=r.answer.reason,
                    why=why,
                )
        return done


class ResyncQueue:
    """Resyncs devices whose served files a publish changed, debounced, from one thread."""

    def __init__(self, resyncer: Resyncer, debounce: float):
        self.resyncer = resyncer
        self.debounce = debounce
        self._due: dict[tuple[str, str], float] = {}
        self._busy = 0
        self._cond = threading.Condition()
        self._closed = False
        self.sent: list[Resynced] = []  # the last batch's outcomes (tests, logs)
        self._thread = threading.Thread(target=self._run, name="resync", daemon=True)
        self._thread.start()

    def published(self, devices: Iterable[tuple[str, str]]) -> None:
        """``(order_id, device_id)`` whose served files changed (a write just committed)."""
        due = time.monotonic() + self.debounce
        with self._cond:
            for key in devices:
                self._due[key] = due  # a later change moves it: one NOTIFY per burst
            self._cond.notify_all()

    def drain(self, timeout: float) -> bool:
        """Wait until every pending resync was sent (a command's exit); False on timeout."""
        end = time.monotonic() + timeout
        with self._cond:
            while self._due or self._busy:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def close(self, timeout: float = 5.0) -> None:
        self.drain(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    now = time.monotonic()
                    ready = [k for k, at in self._due.items() if at <= now]
                    if ready:
                        break
                    wake = min(self._due.values(), default=None)
                    self._cond.wait(None if wake is None else wake - now)
                if self._closed:
                    return
                for k in ready:
                    del self._due[k]
                self._busy += 1
            try:
                targets = self.resyncer.devices(ready)
                if targets:
                    self.sent = self.resyncer.send(targets, actor="provisioner", why="published")
                    for r in self.sent:
                        log.info("resync %s", r.line())
            except Exception:
                log.exception("resync of %d devices failed", len(ready))
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()


def follow_publishes(inventory: OrdersService) -> ResyncQueue | None:
    """With ``resync_after_publish`` on: a :class:`ResyncQueue` that hears every publish of
    ``inventory`` (the publish-on-write path, after each commit). None when the setting is
    off."""
    settings = inventory.settings
    if not settings.resync_after_publish:
        return None
    queue = ResyncQueue(Resyncer(inventory), settings.resync_debounce_seconds)
    inventory.on_published(queue.published)
    return queue
