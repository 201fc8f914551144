"""The serving read model: every device of every active order, in memory (DESIGN.md §4).

What the request path needs to decide a fetch, and the published bytes it serves: devices by
identity (MAC or serial), each with its order, its enrollment window, the source it is bound
to, its per-device HTTP credentials and its published files. Nothing here renders: files are
the ones the orders service published with the write that changed them; they are decrypted
on first use (cheap), so a restart serves at once.

The index follows the store, off the request path: :meth:`Index.refresh` reloads exactly the
orders whose generation moved (every write to an order moves it, see
:mod:`provisioner.store.changes`) and the source bindings other servers made. Bindings made
here are decided in memory (:meth:`Index.claim`) and stay pending until the background writer
has stored them; a reload meanwhile keeps them, unless a re-arm or another box released them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from provisioner.render.drivers.base import Driver
from provisioner.store.access import Store
from provisioner.store.models import (
    Device,
    DeviceState,
    Enrollment,
    Order,
    PublishedFile,
    SecretRow,
    utcnow,
)

# Orders read per query batch (SQLite's bound-parameter limit is far above this).
_BATCH = 500
# How far back the bindings poll looks again each time: a claim is stored within a fraction
# of a second of its decision (the recorder's batch). A binding stored later than that is
# not taken from the poll; a server that misses it learns it when its own claim of that
# device loses the conditional UPDATE (Index.claimed). Looking back further re-reads a boot
# storm's thousands of bindings on every poll (10 s: a third of a busy server's CPU).
_BINDING_OVERLAP = timedelta(seconds=2)
# The bindings poll runs at most this often (the generation poll on every wake-up): on
# PostgreSQL every batch of claims wakes every server's follower.
_BINDINGS_EVERY = 0.5


@dataclass
class ServedFile:
    """One published file: its hash (the ETag) now, its bytes when first asked for."""

    name: str
    sha256: str
    sealed: bytes = field(repr=False)
    _body: bytes | None = field(default=None, repr=False)

    @property
    def etag(self) -> str:
        return f'"{self.sha256[:32]}"'

    def body(self, store: Store) -> bytes:
        if self._body is None:
            self._body = store.vault.unseal(self.sealed)
        return self._body


@dataclass
class DeviceEntry:
    """What the request path knows about one device."""

    pk: int
    order_pk: int
    device_id: str
    order_id: str
    identity: str  # MAC or serial
    username: str  # per-device HTTP user: the MAC without separators (or the serial)
    password_sealed: bytes | None = field(repr=False)  # provisioning password (vault token)
    window_until: datetime | None
    armed_at: datetime | None  # when its window was last (re-)armed: a re-arm frees it
    bound_source: str | None
    files: dict[str, ServedFile] = field(default_factory=dict)
    _password: str | None = field(default=None, repr=False)

    def password(self, store: Store) -> str:
        """The device's own HTTP password ("" when its model has none)."""
        if self._password is None:
            sealed = self.password_sealed
            self._password = store.vault.decrypt(sealed) if sealed else ""
        return self._password


_NAMES_KEPT = 65536  # file names whose identity is remembered (Index.identity)


class Index:
    """Devices by identity, loaded from what the store published. Thread-safe."""

    def __init__(self, store: Store, drivers: Iterable[Driver]):
        self.store = store
        self._drivers = list(drivers)
        self._names: dict[str, str | None] = {}  # file name -> identity (see identity())
        self._lock = threading.RLock()
        self._identities: dict[str, int] = {}  # MAC or serial -> order pk (active orders)
        self._loaded: dict[int, dict[str, DeviceEntry]] = {}  # order pk -> its devices
        self._by_pk: dict[int, DeviceEntry] = {}  # device pk -> its entry (loaded orders)
        self._order_locks: dict[int, threading.Lock] = {}
        # device pk -> (source, armed_at of its window, the box), claimed but not yet written
        self._pending: dict[int, tuple[str, datetime | None, str]] = {}
        self._generation = -1
        self._bindings_since = utcnow()
        self._bindings_due = 0.0  # monotonic time of the next bindings poll
        self.loaded = False  # every active order in memory (after warm)
        self._index_identities()

    # ---------------------------------------------------------------- lookups

    def identity(self, name: str) -> str | None:
        """The MAC or serial a device-file name carries, or None for any other name.

        Remembered per name (a device asks for the same few names at every boot; at most
        ``_NAMES_KEPT`` names, forgotten all at once past that: a flood of names stays
        bounded)."""
        try:
            return self._names[name]
        except KeyError:
            pass
        key = None
        for driver in self._drivers:
            ident = driver.match(name)
            if ident is not None:
                key = ident.mac or ident.serial
                break
        if len(self._names) >= _NAMES_KEPT:
            self._names = {}
        self._names[name] = key
        return key

    def lookup(self, key: str) -> DeviceEntry | None:
        """The device with this identity in an active order, or None."""
        with self._lock:
            order_pk = self._identities.get(key)
            devices = self._loaded.get(order_pk) if order_pk is not None else None
        if order_pk is None:
            return None
        if devices is None:  # only until the start-up load has reached this order
            devices = self._ensure_loaded(order_pk)
        return devices.get(key)

    def claim(self, entry: DeviceEntry, source: str) -> tuple[str, bool]:
        """Bind ``entry`` to ``source`` if nobody holds it: (the holder, whether this call
        bound it). The binding is pending until :meth:`claimed` says it is stored."""
        with self._lock:
            if entry.bound_source is None:
                entry.bound_source = source
                self._pending[entry.pk] = (source, entry.armed_at, entry.identity)
                return source, True
            return entry.bound_source, False

    def claimed(self, device_pk: int, source: str, identity: str, holder: str | None) -> None:
        """A claim's write committed (``holder``: who holds the device now) or was dropped
        (None: a re-arm or another box released it since)."""
        with self._lock:
            if self._pending.get(device_pk, ("",))[0] == source:
                del self._pending[device_pk]
            if holder is not None and holder != source:
                entry = self._entry_of(identity)
                if entry is not None and entry.pk == device_pk:
                    entry.bound_source = holder  # another server bound it first

    def entries(self) -> Iterator[DeviceEntry]:
        with self._lock:
            loaded = [e for devices in self._loaded.values() for e in devices.values()]
        yield from loaded

    # ---------------------------------------------------------------- loading

    def warm(self) -> int:
        """Load every active order not loaded yet, in batches; returns how many."""
        with self._lock:
            pending = sorted(set(self._identities.values()) - set(self._loaded))
        for start in range(0, len(pending), _BATCH):
            self._reload(pending[start : start + _BATCH])
        self.loaded = True  # from now on an order is loaded before its devices are indexed
        return len(pending)

    def decrypt_ahead(self) -> int:
        """Decrypt every loaded file and password now (after :meth:`warm`, off the request
        path), so that a device's first fetch after a restart costs what its next one does;
        returns how many files. A device not reached yet is decrypted on its first fetch."""
        files = 0
        for entry in self.entries():
            entry.password(self.store)
            for file in entry.files.values():
                file.body(self.store)
                files += 1
        return files

    def refresh(self) -> int:
        """Reload the orders whose generation moved and take bindings made elsewhere;
        returns how many orders were reloaded."""
        with self._lock:
            since = self._generation
        now = time.monotonic()
        take_bindings = now >= self._bindings_due
        bindings_since = self._bindings_since
        if take_bindings:
            self._bindings_due = now + _BINDINGS_EVERY
            self._bindings_since = utcnow() - _BINDING_OVERLAP
        with self.store.db.read() as s:
            # Plain rows (Core, not the ORM's loading): this runs several times a second,
            # and in a boot storm the bindings of the last seconds are thousands of rows.
            conn = s.connection()
            rows = conn.execute(
                select(Order.id, Order.generation).where(Order.generation > since)
            ).all()
            bound = (
                conn.execute(
                    select(DeviceState.device_pk, DeviceState.bound_source).where(
                        DeviceState.bound_at >= bindings_since
                    )
                ).all()
                if take_bindings
                else []
            )
        changed = [pk for pk, _ in rows]
        for start in range(0, len(changed), _BATCH):
            self._reload(changed[start : start + _BATCH])
        if rows:
            with self._lock:
                self._generation = max(self._generation, *(g for _, g in rows))
        self._take_bindings(dict(bound))
        return len(rows)

    def _take_bindings(self, bound: dict[int, str | None]) -> None:
        if not bound:
            return
        with self._lock:
            for pk, holder in bound.items():
                entry = self._by_pk.get(pk)
                if entry is not None and holder and pk not in self._pending:
                    entry.bound_source = holder

    def _index_identities(self) -> None:
        """Every identity of every active order (files are loaded by :meth:`warm`)."""
        with self.store.db.read() as s:
            generation = s.scalar(select(func.max(Order.generation))) or 0
            rows = s.execute(
                select(Device.mac, Device.serial, Device.order_pk)
                .join(Order, Device.order_pk == Order.id)
                .where(Order.state == "active")
            ).all()
        with self._lock:
            self._generation = generation
            self._identities = {str(mac or serial): pk for mac, serial, pk in rows if mac or serial}

    def _ensure_loaded(self, order_pk: int) -> dict[str, DeviceEntry]:
        """One order now (a fetch came before the start-up load reached it). One load per
        order at a time: the 32 phones of an office that boot together wait for one read."""
        with self._lock:
            lock = self._order_locks.setdefault(order_pk, threading.Lock())
        with lock:
            with self._lock:
                loaded = self._loaded.get(order_pk)
            if loaded is not None:
                return loaded
            return self._reload([order_pk]).get(order_pk, {})

    def _reload(self, order_pks: list[int]) -> dict[int, dict[str, DeviceEntry]]:
        """Read these orders from the store and swap their devices in atomically."""
        with self._lock:
            # Claims pending now may be committed while we read (and then no longer pending
            # when we swap in): the read must not lose them.
            claims = dict(self._pending)
        fresh = self._read(order_pks)
        with self._lock:
            for order_pk in order_pks:
                entries = fresh.get(order_pk, {})
                for k in [k for k, pk in self._identities.items() if pk == order_pk]:
                    if k not in entries:
                        del self._identities[k]
                for k, e in entries.items():
                    self._identities[k] = order_pk
                    pending = self._pending.get(e.pk) or claims.get(e.pk)
                    if pending is None or e.bound_source is not None:
                        continue
                    if pending[1:] == (e.armed_at, k):
                        e.bound_source = pending[0]  # a claim not written yet still holds...
                    elif e.pk in self._pending:
                        del self._pending[e.pk]  # ...unless a re-arm released it since
                for old in self._loaded.get(order_pk, {}).values():
                    self._by_pk.pop(old.pk, None)
                for e in entries.values():
                    self._by_pk[e.pk] = e
                if entries:
                    self._loaded[order_pk] = entries
                else:
                    self._loaded.pop(order_pk, None)
        return fresh

    def _read(self, order_pks: list[int]) -> dict[int, dict[str, DeviceEntry]]:
        """Every bound device of these orders that are active, with their published files."""
        now = utcnow()
        out: dict[int, dict[str, DeviceEntry]] = {}
        with self.store.db.read() as s:
            orders = dict(
                s.execute(
                    select(Order.id, Order.order_id).where(
                        Order.id.in_(order_pks), Order.state == "active"
                    )
                ).all()
            )
            if not orders:
                return out
            pks = list(orders)
            windows: dict[int, list[Enrollment]] = {}
            for w in s.scalars(select(Enrollment).where(Enrollment.order_pk.in_(pks))):
                windows.setdefault(w.order_pk, []).append(w)
            passwords = {
                (order_pk, owner): sealed
                for order_pk, owner, sealed in s.execute(
                    select(SecretRow.order_pk, SecretRow.owner, SecretRow.ciphertext).where(
                        SecretRow.order_pk.in_(pks), SecretRow.name == "provisioning_password"
                    )
                )
            }
            bound = dict(
                s.execute(
                    select(DeviceState.device_pk, DeviceState.bound_source)
                    .join(Device, Device.id == DeviceState.device_pk)
                    .where(Device.order_pk.in_(pks))
                ).all()
            )
            by_pk: dict[int, DeviceEntry] = {}
            for pk, order_pk, device_id, mac, serial in s.execute(
                select(
                    Device.id, Device.order_pk, Device.device_id, Device.mac, Device.serial
                ).where(Device.order_pk.in_(pks))
            ):
                ident = mac or serial
                if not ident:
                    continue
                ws = windows.get(order_pk, [])
                entry = DeviceEntry(
                    pk=pk,
                    order_pk=order_pk,
                    device_id=device_id,
                    order_id=orders[order_pk],
                    identity=ident,
                    username=mac.replace(":", "") if mac else (serial or ""),
                    password_sealed=passwords.get((order_pk, f"device:{device_id}")),
                    window_until=_window(ws, pk, now),
                    armed_at=_armed_at(ws, pk),
                    bound_source=bound.get(pk),
                )
                by_pk[pk] = entry
                out.setdefault(order_pk, {})[ident] = entry
            for device_pk, name, sha256, sealed in s.execute(
                select(
                    PublishedFile.device_pk,
                    PublishedFile.name,
                    PublishedFile.sha256,
                    PublishedFile.ciphertext,
                ).where(PublishedFile.order_pk.in_(pks))
            ):
                target = by_pk.get(device_pk)
                if target is not None:
                    target.files[name] = ServedFile(name, sha256, sealed)
        return out

    def _entry_of(self, identity: str) -> DeviceEntry | None:
        devices = self._loaded.get(self._identities.get(identity, -1), {})
        return devices.get(identity)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "orders": len(self._loaded),
                "devices": sum(len(d) for d in self._loaded.values()),
                "identities": len(self._identities),
            }


def _window(windows: Iterable[Enrollment], device_pk: int, now: datetime) -> datetime | None:
    """When the device's window (its own or its order's) closes, or None if it is closed."""
    ends = [w.expires_at for w in windows if w.device_pk is None or w.device_pk == device_pk]
    open_ends = [e for e in ends if e > now]
    return max(open_ends) if open_ends else None


def armed_at_of(windows: Iterable[Enrollment], device_pk: int) -> datetime | None:
    """When the device's window (its own or its order's) was last armed."""
    stamps = [w.armed_at for w in windows if w.device_pk is None or w.device_pk == device_pk]
    return max(stamps) if stamps else None


_armed_at = armed_at_of
