"""The decision behind every device fetch, for TFTP and HTTP alike (DESIGN.md §5).

``ProvisioningService.fetch(name, source, ...)`` answers one request:

1. a blocked source gets nothing;
2. a static file under ``tftp_root/`` (firmware) is served as it is;
3. a name no driver recognises, a device not in the store, a cancelled order, wrong
   credentials, a closed enrollment window or a second claimant all get the *same* answer as
   an unknown name, and count as a miss of that source; a source that sweeps is blocked;
4. a known device is served with per-device credentials (HTTP, installed by its first config)
   or inside its enrollment window, where its first fetch binds it to its source address.

The hot path stays in memory: rendered files are cached per device and dropped when any
order changes (every write to an order moves ``orders.updated_at``); state and audit rows go
to the store in batches from a background thread.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import func, insert, select, update

from provisioner.document import normalize_mac
from provisioner.enrollment import aware, window_open
from provisioner.errors import ProvisionerError
from provisioner.guard import SourceGuard
from provisioner.inventory import Inventory
from provisioner.staticfiles import resolve_static
from provisioner.store.models import AuditEvent, Device, DeviceState, Order, SecretRow, utcnow

log = logging.getLogger("provisioner.serving")

Outcome = Literal["served", "not_found", "blocked"]


@dataclass(frozen=True)
class Answer:
    outcome: Outcome
    data: bytes = b""
    etag: str = ""
    device: str = ""
    # The name has a device file's shape: HTTP answers it with a Basic challenge, the same
    # for a MAC we know and one we don't, so that devices that wait for one send credentials.
    challenge: bool = False


@dataclass
class _File:
    data: bytes
    sha256: str
    etag: str


@dataclass
class _DeviceEntry:
    """What the hot path needs to know about one device, cached until any order changes."""

    pk: int
    order_pk: int
    device_id: str
    order_id: str
    active: bool
    username: str  # per-device HTTP user: the MAC without separators (or the serial)
    password: str  # per-device HTTP password ("" when the model has none)
    window_until: datetime | None
    bound_source: str | None
    files: dict[str, _File] = field(default_factory=dict)


@dataclass
class _Event:
    kind: str  # served | refused | claim | blocked
    source: str
    protocol: str
    name: str
    device_pk: int | None = None
    device_id: str = ""
    order_id: str = ""
    sha256: str = ""
    user_agent: str = ""
    at: datetime = field(default_factory=utcnow)


class ProvisioningService:
    """Answers device fetches from the store; thread-safe (TFTP thread + HTTP loop)."""

    def __init__(
        self,
        inventory: Inventory,
        renderer: Any,
        static_root: Path,
        guard: SourceGuard | None = None,
        *,
        refresh_seconds: float = 0.5,
        on_event: Callable[[str, str, str], None] | None = None,
    ):
        self.inventory = inventory
        self.renderer = renderer
        self.static_root = static_root
        self.guard = guard or SourceGuard()
        self.refresh_seconds = refresh_seconds
        self.on_event = on_event  # metrics hook: (protocol, outcome, source)
        self._drivers = list(renderer.engine.registry.drivers())
        self._lock = threading.RLock()
        self._load_lock = threading.Lock()
        self._by_identity: dict[str, _DeviceEntry | None] = {}
        self._generation = -1  # the store generation last seen (see store.changes)
        self._checked_at = 0.0
        self._static: dict[Path, tuple[float, _File]] = {}
        self._events: queue.Queue[_Event | None] = queue.Queue()
        self._writer = threading.Thread(target=self._write_events, name="audit-writer", daemon=True)
        self._writer.start()

    # ------------------------------------------------------------------ the decision

    def fetch(
        self,
        name: str,
        source: str,
        protocol: str,
        *,
        credentials: tuple[str, str] | None = None,
        user_agent: str = "",
    ) -> Answer:
        if self.guard.blocked(source):
            self._count(protocol, "blocked", source)
            return Answer("blocked")
        name = name.lstrip("/") if protocol == "http" else name
        # Device-file names first (a regex each); only other names go to the disk.
        matched, entry, file = self._device_file(name.lstrip("/"))
        if not matched:
            static = self._static_file(name)
            if static is not None:
                self._emit(
                    _Event(
                        "served",
                        source,
                        protocol,
                        name,
                        sha256=static.sha256,
                        user_agent=user_agent,
                    )
                )
                self._count(protocol, "served", source)
                return Answer("served", static.data, static.etag)
        if entry is None or file is None or not entry.active:
            return self._miss(name, source, protocol, entry, challenge=matched)
        if credentials is not None:
            user, password = credentials
            ok = (
                bool(entry.password)
                and hmac.compare_digest(user.encode(), entry.username.encode())
                and hmac.compare_digest(password.encode(), entry.password.encode())
            )
            if not ok:
                return self._miss(name, source, protocol, entry, challenge=True)
        else:
            if entry.window_until is None or entry.window_until <= utcnow():
                return self._miss(name, source, protocol, entry, challenge=True)
            if entry.bound_source != source and not self._claim(entry, source):
                self._emit(
                    _Event(
                        "claim",
                        source,
                        protocol,
                        name,
                        entry.pk,
                        entry.device_id,
                        entry.order_id,
                        user_agent=user_agent,
                    )
                )
                return self._miss(name, source, protocol, entry, audited=True, challenge=True)
        self._emit(
            _Event(
                "served",
                source,
                protocol,
                name,
                entry.pk,
                entry.device_id,
                entry.order_id,
                file.sha256,
                user_agent,
            )
        )
        self._count(protocol, "served", source)
        return Answer("served", file.data, file.etag, entry.device_id)

    def _miss(
        self,
        name: str,
        source: str,
        protocol: str,
        entry: _DeviceEntry | None,
        audited: bool = False,
        challenge: bool = False,
    ) -> Answer:
        if entry is not None and not audited:
            self._emit(
                _Event("refused", source, protocol, name, entry.pk, entry.device_id, entry.order_id)
            )
        if self.guard.miss(source):
            log.warning("blocked source %s after repeated misses", source)
            self._emit(_Event("blocked", source, protocol, name))
            self._count(protocol, "source_blocked", source)
        self._count(protocol, "not_found", source)
        return Answer("not_found", challenge=challenge)

    def _count(self, protocol: str, outcome: str, source: str) -> None:
        if self.on_event is not None:
            self.on_event(protocol, outcome, source)

    def _claim(self, entry: _DeviceEntry, source: str) -> bool:
        """Bind the device to ``source`` if nobody holds it; True if ``source`` holds it now.

        One conditional UPDATE in the store, so two claimants (even on two servers) cannot
        both win.
        """
        with self.inventory.db.write() as s:
            state = s.get(DeviceState, entry.pk)
            if state is None:
                s.add(
                    DeviceState(
                        device_pk=entry.pk, bound_source=source, bound_at=utcnow(), fetches=0
                    )
                )
                s.flush()
                won = True
            else:
                res = s.execute(
                    update(DeviceState)
                    .where(DeviceState.device_pk == entry.pk, DeviceState.bound_source.is_(None))
                    .values(bound_source=source, bound_at=utcnow())
                )
                won = bool(res.rowcount)  # type: ignore[attr-defined]
                if not won:
                    s.refresh(state)
                    won = state.bound_source == source
            holder = source if won else s.get(DeviceState, entry.pk).bound_source  # type: ignore[union-attr]
        with self._lock:
            entry.bound_source = holder
        return won

    # ------------------------------------------------------------------ caches

    def _refresh(self) -> None:
        """Drop the cached devices of every order written since the last look.

        Every write to an order moves its generation (:mod:`provisioner.store.changes`), so
        one indexed query tells what changed; the other orders stay warm.
        """
        now = time.monotonic()
        with self._lock:
            if now - self._checked_at < self.refresh_seconds:
                return
            self._checked_at = now  # the other threads keep the cache meanwhile
            since = self._generation
        with self.inventory.db.read() as s:
            rows = s.execute(
                select(Order.id, Order.generation).where(Order.generation > since)
            ).all()
        if not rows:
            return
        with self._lock:
            changed = {pk for pk, _ in rows}
            self._generation = max(self._generation, *(g for _, g in rows))
            # A change may also make a name known that was not (a new order, a bind).
            self._by_identity = {
                k: e
                for k, e in self._by_identity.items()
                if e is not None and e.order_pk not in changed
            }

    def invalidate(self) -> None:
        with self._lock:
            self._generation = -1
            self._checked_at = 0.0
            self._by_identity.clear()

    def warm(self) -> int:
        """Render every active order's devices now (at start-up, before a boot storm)."""
        self._refresh()
        with self.inventory.db.read() as s:
            # One bound device per active order: loading it loads its whole order.
            first = s.execute(
                select(func.min(Device.mac), func.min(Device.serial))
                .join(Order, Device.order_pk == Order.id)
                .where(Order.state == "active")
                .where((Device.mac.is_not(None)) | (Device.serial.is_not(None)))
                .group_by(Device.order_pk)
            ).all()
        warmed = 0
        for mac, serial in first:
            key = mac or serial
            with self._lock:
                if key in self._by_identity:
                    continue
            if self._load(mac or "", "" if mac else serial or "") is not None:
                warmed += 1
        return warmed

    def _device_file(self, name: str) -> tuple[bool, _DeviceEntry | None, _File | None]:
        """(the name has a device file's shape, the device's entry, the file)."""
        ident = None
        for driver in self._drivers:
            ident = driver.match(name)
            if ident is not None:
                break
        if ident is None:
            return False, None, None
        key = ident.mac or ident.serial
        self._refresh()
        with self._lock:
            cached = key in self._by_identity
            entry = self._by_identity.get(key)
        if not cached:
            # One load at a time: the 32 phones of an office that boot together must not
            # render their order 32 times. Whoever waited finds the order loaded.
            with self._load_lock:
                with self._lock:
                    cached = key in self._by_identity
                    entry = self._by_identity.get(key)
                if not cached:
                    entry = self._load(ident.mac, ident.serial)
                    with self._lock:
                        self._by_identity[key] = entry
        if entry is None:
            return True, None, None
        return True, entry, entry.files.get(name)

    def _load(self, mac: str, serial: str) -> _DeviceEntry | None:
        """Load the device's whole order at once: a booting office asks for all of it."""
        with self.inventory.db.read() as s:
            column = Device.mac if mac else Device.serial
            dev = s.scalar(select(Device).where(column == (mac or serial)))
            if dev is None:
                return None
            order = dev.order
            active = order.state == "active"
            passwords = {
                row.owner: self.inventory.vault.decrypt(row.ciphertext)
                for row in s.scalars(
                    select(SecretRow).where(
                        SecretRow.order_pk == order.id,
                        SecretRow.name == "provisioning_password",
                    )
                )
            }
            entries: dict[str, _DeviceEntry] = {}
            for d in order.devices:
                ident = d.mac or d.serial
                if not ident:
                    continue
                state = s.get(DeviceState, d.id)
                entries[ident] = _DeviceEntry(
                    pk=d.id,
                    order_pk=order.id,
                    device_id=d.device_id,
                    order_id=order.order_id,
                    active=active,
                    username=d.mac.replace(":", "") if d.mac else (d.serial or ""),
                    password=passwords.get(f"device:{d.device_id}", ""),
                    window_until=window_open(s, d),
                    bound_source=state.bound_source if state else None,
                )
            order_id = order.order_id
        if active:
            by_device = {e.device_id: e for e in entries.values()}
            try:
                rendered = self.renderer.render_order(order_id)
            except ProvisionerError as exc:
                log.warning("order %s: cannot render: %s", order_id, exc)
                rendered = {}
            for fname, f in rendered.items():
                target = by_device.get(f.device_id)
                if target is None or not f.served:
                    continue
                digest = hashlib.sha256(f.data).hexdigest()
                target.files[fname] = _File(f.data, digest, f'"{digest[:32]}"')
        with self._lock:
            self._by_identity.update(entries)
        return entries.get(mac or serial)

    def _static_file(self, name: str) -> _File | None:
        path = resolve_static(self.static_root, name)
        if path is None:
            return None
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return None
        hit = self._static.get(path)
        if hit is not None and hit[0] == mtime:
            return hit[1]
        try:
            data = path.read_bytes()
        except OSError:
            return None
        digest = hashlib.sha256(data).hexdigest()
        file = _File(data, digest, f'"{digest[:32]}"')
        with self._lock:
            if len(self._static) > 256:
                self._static.clear()
            self._static[path] = (mtime, file)
        return file

    # ------------------------------------------------------------------ state and audit

    def _emit(self, event: _Event) -> None:
        self._events.put(event)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until every event so far is in the store (tests, shutdown)."""
        done = threading.Event()
        self._events.put(_Flush(done))  # type: ignore[arg-type]
        done.wait(timeout)

    def close(self) -> None:
        self.flush()
        self._events.put(None)
        self._writer.join(5)

    def _write_events(self) -> None:
        while True:
            first = self._events.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + 0.05
            while len(batch) < 1000:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._events.get(timeout=remaining)
                except queue.Empty:
                    break
                if item is None:
                    self._events.put(None)
                    break
                batch.append(item)
            flushes = [e for e in batch if isinstance(e, _Flush)]
            events = [e for e in batch if not isinstance(e, _Flush)]
            try:
                if events:
                    self._store(events)
            except Exception:
                log.exception("could not write %d serving events", len(events))
            for f in flushes:
                f.done.set()

    def _store(self, events: list[_Event]) -> None:
        """One transaction per batch: one state row per device, audit rows in bulk."""
        served: dict[int, tuple[_Event, int]] = {}
        for e in events:
            if e.kind == "served" and e.device_pk is not None:
                _, count = served.get(e.device_pk, (e, 0))
                served[e.device_pk] = (e, count + 1)
        rows = [
            {
                "at": e.at,
                "actor": f"device:{e.source}",
                "action": _ACTIONS[e.kind],
                "order_id": e.order_id or None,
                "device": e.device_id or None,
                # Names, addresses and hashes only: an event never carries file content.
                "detail": json.dumps(
                    {
                        "file": _printable(e.name),
                        "protocol": e.protocol,
                        "sha256": e.sha256 or None,
                        "source": e.source,
                    },
                    sort_keys=True,
                ),
            }
            for e in events
        ]
        with self.inventory.db.write() as s:
            states = {
                st.device_pk: st
                for st in s.scalars(
                    select(DeviceState).where(DeviceState.device_pk.in_(list(served)))
                )
            }
            for pk, (e, count) in served.items():
                state = states.get(pk)
                if state is None:
                    state = DeviceState(device_pk=pk, fetches=0)
                    s.add(state)
                state.last_file = e.name[:255]
                state.last_hash = e.sha256
                state.last_at = e.at
                state.last_source = e.source
                state.last_protocol = e.protocol
                state.last_user_agent = e.user_agent[:200] or None
                state.fetches = (state.fetches or 0) + count
            s.flush()
            s.execute(insert(AuditEvent), rows)


_ACTIONS = {
    "served": "file.served",
    "refused": "file.refused",
    "claim": "file.claim-refused",
    "blocked": "source.blocked",
}


@dataclass
class _Flush:
    done: threading.Event


def _printable(name: str) -> str:
    """A requested name as it may be logged: escaped, at most 200 characters."""
    text = name.encode("unicode_escape", "backslashreplace").decode("ascii", "replace")
    return text[:200]


def identity_of(value: str) -> str:
    """A MAC in stored spelling, or the value as given (serials)."""
    try:
        return normalize_mac(value)
    except ValueError:
        return value


__all__ = ["Answer", "ProvisioningService", "aware"]
