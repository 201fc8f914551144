"""The decision behind every device fetch, for TFTP and HTTP alike (DESIGN.md §5).

``ProvisioningService.fetch(name, source, ...)`` answers one request, in memory:

1. a request with valid per-device credentials (HTTP Basic, installed by the device's first
   file) is served, even from a blocked source: the credentials are 131-bit random;
2. a blocked source gets nothing else;
3. a name no driver serves is a static file under ``tftp_root/`` (firmware) or "not found",
   and never a miss: the names our devices ask for at boot besides their own files
   (model-wide files, firmware, other vendors' names) carry no identity of ours to sweep;
4. a device-file name of an unknown device, a cancelled order, wrong credentials, a closed
   enrollment window or a second claimant all get the *same* answer as an unknown name;
   unknown device identities are counted per source, and a source that sweeps is blocked;
5. a known device inside its enrollment window gets its files, and its first fetch binds it
   to the source address it came from.

The request path does no I/O that can wait: every device of every active order is in an
index in memory (identity -> order), each order's files rendered once when it is loaded.
A background thread follows the store: every write to an order moves the order's generation
(:mod:`provisioner.store.changes`), and the thread reloads exactly the orders that moved,
rendering them off the request path before swapping them in, and picks up blocks lifted (or
set by another server). Source bindings are decided in memory and written in the background
with a conditional UPDATE, the guard between servers; state and audit rows are written in
batches, static files coalesced to one row per source per minute.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import func, insert, select, update

from provisioner.errors import ProvisionerError
from provisioner.serving.guard import SourceGuard
from provisioner.serving.static import resolve_static
from provisioner.store.access import Store
from provisioner.store.models import (
    AuditEvent,
    Device,
    DeviceState,
    Enrollment,
    Order,
    SecretRow,
    SourceBlock,
    utcnow,
)

log = logging.getLogger("provisioner.serving.service")

Outcome = Literal["served", "not_found", "blocked"]


@dataclass(frozen=True)
class _File:
    data: bytes
    sha256: str
    etag: str


@dataclass(frozen=True)
class Answer:
    outcome: Outcome
    data: bytes = b""
    etag: str = ""
    device: str = ""
    # The name has a device file's shape: HTTP answers it with a Basic challenge, the same
    # for a MAC we know and one we don't, so that devices that wait for one send credentials.
    challenge: bool = False
    sha256: str = ""
    # For a served answer: what to audit when the transfer ends (TFTP tells completion).
    ticket: _Ticket | None = None


@dataclass(frozen=True)
class _Ticket:
    name: str
    source: str
    protocol: str
    device_pk: int | None
    device_id: str
    order_id: str
    user_agent: str


@dataclass
class _DeviceEntry:
    """What the hot path needs to know about one device."""

    pk: int
    order_pk: int
    device_id: str
    order_id: str
    username: str  # per-device HTTP user: the MAC without separators (or the serial)
    password: str  # per-device HTTP password ("" when the model has none)
    window_until: datetime | None
    bound_source: str | None
    armed_at: datetime | None  # when its window was last (re-)armed: a re-arm frees it
    files: dict[str, _File] = field(default_factory=dict)


@dataclass
class _Event:
    # served | abandoned | refused | claim-refused | claim | blocked | static | static-abandoned
    kind: str
    source: str
    protocol: str
    name: str
    device_pk: int | None = None
    device_id: str = ""
    order_id: str = ""
    sha256: str = ""
    user_agent: str = ""
    at: datetime = field(default_factory=utcnow)
    armed_at: datetime | None = None  # claims: the window the decision was made in
    identity: str = ""  # claims: the box (MAC or serial) that claimed


@dataclass
class _Flush:
    done: threading.Event


class ProvisioningService:
    """Answers device fetches from memory; thread-safe (TFTP thread + HTTP loop/threads).

    Made with the store's devices indexed; call :meth:`warm` to render every active order
    before a boot storm (``serve`` does, in the background) and :meth:`close` at the end.
    """

    def __init__(
        self,
        inventory: Store,
        renderer: Any,
        static_root: Path,
        guard: SourceGuard | None = None,
        *,
        refresh_seconds: float = 0.25,
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
        self._identities: dict[str, int] = {}  # MAC or serial -> order pk (active orders)
        self._loaded: dict[int, dict[str, _DeviceEntry]] = {}  # order pk -> its devices
        self._order_locks: dict[int, threading.Lock] = {}
        # device pk -> (source, armed_at of its window, the box), claimed but not yet written
        self._pending_claims: dict[int, tuple[str, datetime | None, str]] = {}
        self._generation = -1
        self._static: dict[Path, tuple[float, _File]] = {}
        self._events: queue.Queue[_Event | _Flush | None] = queue.Queue()
        self._coalesced: dict[tuple[str, str, str, str], tuple[int, dict[str, int]]] = {}
        self._stop = threading.Event()
        self._index()
        self._writer = threading.Thread(target=self._write_events, name="audit-writer", daemon=True)
        self._writer.start()
        self._follower = threading.Thread(target=self._follow, name="store-follower", daemon=True)
        self._follower.start()

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
        name = name.lstrip("/") if protocol == "http" else name
        key = self._identity(name.lstrip("/"))
        if key is None:
            return self._other(name, source, protocol, user_agent)
        entry, file = self._entry(key, name.lstrip("/"))
        blocked = self.guard.blocked(source)
        if credentials is not None:
            if entry is None or file is None or not _credentials_ok(entry, credentials):
                return self._refuse(name, source, protocol, key, entry, blocked)
            return self._serve(name, source, protocol, entry, file, user_agent)
        if blocked:
            return self._refuse(name, source, protocol, key, entry, blocked)
        if entry is None or file is None:
            return self._refuse(name, source, protocol, key, entry, blocked)
        if entry.window_until is None or entry.window_until <= utcnow():
            return self._refuse(name, source, protocol, key, entry, blocked)
        with self._lock:
            holder = entry.bound_source
            if holder is None:
                entry.bound_source = holder = source
                self._pending_claims[entry.pk] = (source, entry.armed_at, key)
                self._emit(_Event("claim", source, protocol, name, entry.pk, entry.device_id,
                                  entry.order_id, armed_at=entry.armed_at,
                                  identity=key))  # fmt: skip
        if holder != source:
            return self._refuse(name, source, protocol, key, entry, blocked, kind="claim-refused")
        return self._serve(name, source, protocol, entry, file, user_agent)

    def _serve(
        self,
        name: str,
        source: str,
        protocol: str,
        entry: _DeviceEntry,
        file: _File,
        user_agent: str,
    ) -> Answer:
        ticket = _Ticket(name, source, protocol, entry.pk, entry.device_id, entry.order_id,
                         user_agent)  # fmt: skip
        if protocol != "tftp":  # TFTP reports the end of the transfer (transfer_done)
            self._emit(_served(ticket, file.sha256))
        self._count(protocol, "served", source)
        return Answer("served", file.data, file.etag, entry.device_id, sha256=file.sha256,
                      ticket=ticket)  # fmt: skip

    def _refuse(
        self,
        name: str,
        source: str,
        protocol: str,
        key: str,
        entry: _DeviceEntry | None,
        blocked: bool,
        kind: str = "refused",
    ) -> Answer:
        if blocked:
            if entry is not None:  # the technician sees it in status: an office locked out
                self._emit(_Event("blocked-fetch", source, protocol, name, entry.pk,
                                  entry.device_id, entry.order_id))  # fmt: skip
            self._count(protocol, "blocked", source)
            return Answer("blocked")
        if entry is not None:
            self._emit(_Event(kind, source, protocol, name, entry.pk, entry.device_id,
                              entry.order_id))  # fmt: skip
        elif self.guard.miss(source, key):
            # Only unknown identities count: an office's own devices, refused because their
            # window closed, never get their address blocked.
            log.warning("blocked source %s after sweeping device names", source)
            self._emit(_Event("blocked", source, protocol, name))
            self._count(protocol, "source_blocked", source)
        self._count(protocol, "not_found", source)
        return Answer("not_found", challenge=True)

    def _other(self, name: str, source: str, protocol: str, user_agent: str) -> Answer:
        """A name that is no device's file: static (firmware), or not found. Never a miss."""
        if self.guard.blocked(source):
            self._count(protocol, "blocked", source)
            return Answer("blocked")
        static = self._static_file(name)
        if static is None:
            self._count(protocol, "not_found", source)
            return Answer("not_found")
        ticket = _Ticket(name, source, protocol, None, "", "", user_agent)
        if protocol != "tftp":
            self._emit(_Event("static", source, protocol, name, sha256=static.sha256))
        self._count(protocol, "served", source)
        return Answer("served", static.data, static.etag, sha256=static.sha256, ticket=ticket)

    def transfer_done(self, answer: Answer, completed: bool) -> None:
        """A TFTP transfer of ``answer`` ended: acknowledged to the last block, or abandoned."""
        t = answer.ticket
        if t is None:
            return
        if t.device_pk is None:
            kind = "static" if completed else "static-abandoned"
            self._emit(_Event(kind, t.source, t.protocol, t.name, sha256=answer.sha256))
        elif completed:
            self._emit(_served(t, answer.sha256))
        else:
            self._emit(_Event("abandoned", t.source, t.protocol, t.name, t.device_pk,
                              t.device_id, t.order_id, answer.sha256))  # fmt: skip

    def _count(self, protocol: str, outcome: str, source: str) -> None:
        if self.on_event is not None:
            self.on_event(protocol, outcome, source)

    # ------------------------------------------------------------------ lookups

    def _identity(self, name: str) -> str | None:
        """The MAC or serial a device-file name carries, or None for any other name."""
        for driver in self._drivers:
            ident = driver.match(name)
            if ident is not None:
                return ident.mac or ident.serial
        return None

    def _entry(self, key: str, name: str) -> tuple[_DeviceEntry | None, _File | None]:
        with self._lock:
            order_pk = self._identities.get(key)
            devices = self._loaded.get(order_pk) if order_pk is not None else None
        if order_pk is None:
            return None, None
        if devices is None:
            devices = self._ensure_loaded(order_pk)
        entry = devices.get(key)
        if entry is None:
            return None, None
        return entry, entry.files.get(name)

    def _ensure_loaded(self, order_pk: int) -> dict[str, _DeviceEntry]:
        """The order's devices with their files; rendered now if the warm-up has not yet.

        One load per order at a time: the 32 phones of an office that boot together must not
        render their order 32 times. Whoever waited finds the order loaded.
        """
        with self._lock:
            lock = self._order_locks.setdefault(order_pk, threading.Lock())
        with lock:
            with self._lock:
                loaded = self._loaded.get(order_pk)
            if loaded is not None:
                return loaded
            return self._reload(order_pk)

    # ------------------------------------------------------------------ the index

    def _index(self) -> None:
        """Index every device of every active order (no rendering: that is :meth:`warm`)."""
        with self.inventory.db.read() as s:
            generation = s.scalar(select(func.max(Order.generation))) or 0
            rows = s.execute(
                select(Device.mac, Device.serial, Device.order_pk)
                .join(Order, Device.order_pk == Order.id)
                .where(Order.state == "active")
            ).all()
        with self._lock:
            self._generation = generation
            self._identities = {str(mac or serial): pk for mac, serial, pk in rows if mac or serial}

    def warm(self) -> int:
        """Render every active order not loaded yet (at start-up, before a boot storm)."""
        with self._lock:
            pending = sorted(set(self._identities.values()) - set(self._loaded))
        for pk in pending:
            if self._stop.is_set():
                break
            self._ensure_loaded(pk)
        return len(pending)

    def invalidate(self) -> None:
        """Forget every loaded order and re-index the store (tests, operators' tooling)."""
        with self._lock:
            self._loaded.clear()
        self._index()

    def _reload(self, order_pk: int) -> dict[str, _DeviceEntry]:
        """Load one order from the store, render it, and swap its devices in atomically."""
        with self._lock:
            # Claims pending now may be committed while we read (and then no longer pending
            # when we swap in): the read must not lose them.
            claims = dict(self._pending_claims)
        entries = self._read_order(order_pk)
        with self._lock:
            old = [k for k, pk in self._identities.items() if pk == order_pk]
            for k in old:
                if k not in entries:
                    del self._identities[k]
            for k, e in entries.items():
                self._identities[k] = order_pk
                pending = self._pending_claims.get(e.pk) or claims.get(e.pk)
                if pending is None or e.bound_source is not None:
                    continue
                if pending[1:] == (e.armed_at, k):
                    e.bound_source = pending[0]  # a claim not written yet still holds ...
                elif e.pk in self._pending_claims:
                    del self._pending_claims[e.pk]  # ... unless a re-arm released it since
            if entries:
                self._loaded[order_pk] = entries
            else:
                self._loaded.pop(order_pk, None)
        return entries

    def _read_order(self, order_pk: int) -> dict[str, _DeviceEntry]:
        """Every bound device of an active order with its files; {} for any other order."""
        now = utcnow()
        with self.inventory.db.read() as s:
            order = s.get(Order, order_pk)
            if order is None or order.state != "active":
                return {}
            passwords = {
                row.owner: self.inventory.vault.decrypt(row.ciphertext)
                for row in s.scalars(
                    select(SecretRow).where(
                        SecretRow.order_pk == order_pk, SecretRow.name == "provisioning_password"
                    )
                )
            }
            windows = s.scalars(select(Enrollment).where(Enrollment.order_pk == order_pk)).all()
            states = {
                st.device_pk: st
                for st in s.scalars(
                    select(DeviceState).where(
                        DeviceState.device_pk.in_([d.id for d in order.devices])
                    )
                )
            }
            entries: dict[str, _DeviceEntry] = {}
            for d in order.devices:
                ident = d.mac or d.serial
                if not ident:
                    continue
                state = states.get(d.id)
                entries[ident] = _DeviceEntry(
                    pk=d.id,
                    order_pk=order_pk,
                    device_id=d.device_id,
                    order_id=order.order_id,
                    username=d.mac.replace(":", "") if d.mac else (d.serial or ""),
                    password=passwords.get(f"device:{d.device_id}", ""),
                    window_until=_window(windows, d.id, now),
                    bound_source=state.bound_source if state else None,
                    armed_at=_armed_at(windows, d.id),
                )
            order_id = order.order_id
        by_device = {e.device_id: e for e in entries.values()}
        try:
            rendered = self.renderer.render_order(order_id)
        except ProvisionerError as exc:
            # The order's devices stay known (same answer as any refusal) but get no file.
            log.warning("order %s: cannot render: %s", order_id, exc)
            rendered = {}
        for fname, f in rendered.items():
            target = by_device.get(f.device_id)
            if target is None or not f.served:
                continue
            digest = hashlib.sha256(f.data).hexdigest()
            target.files[fname] = _File(f.data, digest, f'"{digest[:32]}"')
        return entries

    # ------------------------------------------------------------------ following the store

    def _follow(self) -> None:
        """Reload every order whose generation moved; sync blocks. Off the request path."""
        while not self._stop.wait(self.refresh_seconds):
            try:
                self.refresh()
            except Exception:
                log.exception("could not follow the store's changes")

    def refresh(self) -> int:
        """One look at the store: reload the orders that changed; returns how many."""
        with self._lock:
            since = self._generation
        as_of = self.guard.now()
        with self.inventory.db.read() as s:
            rows = s.execute(
                select(Order.id, Order.generation).where(Order.generation > since)
            ).all()
            blocks = s.execute(
                select(SourceBlock.source, SourceBlock.until).where(
                    SourceBlock.lifted_at.is_(None), SourceBlock.until > utcnow()
                )
            ).all()
        self.guard.sync(dict(blocks), as_of)
        for pk, _ in rows:
            self._reload(pk)
        if rows:
            with self._lock:
                self._generation = max(self._generation, *(g for _, g in rows))
        return len(rows)

    # ------------------------------------------------------------------ static files

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
        self._events.put(_Flush(done))
        done.wait(timeout)

    def close(self) -> None:
        self._stop.set()
        self.flush()
        self._events.put(None)
        self._writer.join(5)
        self._follower.join(5)

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
            events = [e for e in batch if isinstance(e, _Event)]
            try:
                if events:
                    self._store(events)
            except Exception:
                log.exception("could not write %d serving events", len(events))
            for f in flushes:
                f.done.set()

    def _store(self, events: list[_Event]) -> None:
        """One transaction per batch: claims, one state row per device, audit rows in bulk."""
        claims = [e for e in events if e.kind == "claim" and e.device_pk is not None]
        served: dict[int, tuple[_Event, int]] = {}
        refused: dict[int, tuple[_Event, int]] = {}
        for e in events:
            if e.device_pk is None:
                continue
            if e.kind == "served":
                _, n = served.get(e.device_pk, (e, 0))
                served[e.device_pk] = (e, n + 1)
            elif e.kind in ("refused", "claim-refused", "blocked-fetch"):
                _, n = refused.get(e.device_pk, (e, 0))
                refused[e.device_pk] = (e, n + 1)
        rows = [_audit_row(e) for e in events if e.kind in _ACTIONS]
        coalesced = [e for e in events if e.kind in _COALESCED]
        blocks = [e for e in events if e.kind == "blocked"]
        with self.inventory.db.write() as s:
            outcomes = [(e, self._write_claim(s, e)) for e in claims]
            pks = list(served) + list(refused)
            states = {
                st.device_pk: st
                for st in s.scalars(select(DeviceState).where(DeviceState.device_pk.in_(pks)))
            }
            for pk, (e, count) in served.items():
                state = states.get(pk) or _new_state(s, states, pk)
                state.last_file = e.name[:255]
                state.last_hash = e.sha256
                state.last_at = e.at
                state.last_source = e.source
                state.last_protocol = e.protocol
                state.last_user_agent = e.user_agent[:200] or None
                state.fetches = (state.fetches or 0) + count
            for pk, (e, count) in refused.items():
                state = states.get(pk) or _new_state(s, states, pk)
                state.refusals = (state.refusals or 0) + count
                state.last_refused_at = e.at
                state.last_refused_source = e.source
            for e in blocks:
                policy = self.guard.policy
                s.add(
                    SourceBlock(
                        source=e.source,
                        blocked_at=e.at,
                        until=e.at + timedelta(seconds=policy.block_seconds),
                        protocol=e.protocol,
                        names=policy.max_misses,
                    )
                )
            s.flush()
            if rows:
                s.execute(insert(AuditEvent), rows)
            self._coalesce(s, coalesced)
        self._claims_written(outcomes)
        for e in blocks:
            self.guard.stored(e.source)

    def _write_claim(self, s: Any, e: _Event) -> str | None:
        """Persist an in-memory claim; returns who holds the device now (another server may
        have bound it first), or None for a claim dropped.

        A claim made in a window that was re-armed since (which released the binding), or
        for a device that names another box now, is dropped: the next fetch decides again.
        """
        assert e.device_pk is not None
        device = s.get(Device, e.device_pk)
        windows = s.scalars(
            select(Enrollment).where(Enrollment.order_pk == device.order_pk)
        ).all() if device is not None else []  # fmt: skip
        if (
            device is None
            or (device.mac or device.serial) != e.identity
            or _armed_at(windows, device.id) != e.armed_at
        ):
            return None
        state = s.get(DeviceState, e.device_pk)
        if state is None:
            s.add(DeviceState(device_pk=e.device_pk, bound_source=e.source, bound_at=e.at,
                              fetches=0, refusals=0))  # fmt: skip
            s.flush()
            return e.source
        done = s.execute(
            update(DeviceState)
            .where(DeviceState.device_pk == e.device_pk, DeviceState.bound_source.is_(None))
            .values(bound_source=e.source, bound_at=e.at)
        )
        s.refresh(state)
        return e.source if done.rowcount else state.bound_source

    def _claims_written(self, outcomes: list[tuple[_Event, str | None]]) -> None:
        """After the commit (not before: a reload meanwhile must still see them), the claims
        stop being pending; a device another server bound first follows that server."""
        with self._lock:
            for e, holder in outcomes:
                assert e.device_pk is not None
                if self._pending_claims.get(e.device_pk, ("",))[0] == e.source:
                    del self._pending_claims[e.device_pk]
                if holder is None or holder == e.source:
                    continue
                log.warning("device %s: bound to %s by another server", e.device_id, holder)
                devices = self._loaded.get(self._identities.get(e.identity, -1), {})
                entry = devices.get(e.identity)
                if entry is not None and entry.pk == e.device_pk:
                    entry.bound_source = holder

    def _coalesce(self, s: Any, events: list[_Event]) -> None:
        """Static files and refusals: one audit row per source, action, device and minute,
        however many requests (a flood cannot grow the audit log faster than that)."""
        if not events:
            return
        groups: dict[tuple[str, str, str, str], dict[str, int]] = {}
        first: dict[tuple[str, str, str, str], _Event] = {}
        for e in events:
            minute = e.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")
            key = (e.source, _COALESCED[e.kind], minute, e.device_id)
            names = groups.setdefault(key, {})
            first.setdefault(key, e)
            shown = _printable(e.name)
            names[shown] = names.get(shown, 0) + 1
        for key, names in groups.items():
            known = self._coalesced.get(key)
            if known is None:
                e = first[key]
                row = AuditEvent(at=e.at, actor=f"device:{key[0]}", action=key[1],
                                 order_id=e.order_id or None, device=e.device_id or None,
                                 detail="")  # fmt: skip
                s.add(row)
                s.flush()
                total = dict(names)
                self._coalesced[key] = (row.id, total)
            else:
                row_id, total = known
                for n, c in names.items():
                    if n in total or len(total) < 20:  # a flood of names keeps a bounded row
                        total[n] = total.get(n, 0) + c
                    else:
                        total["(other names)"] = total.get("(other names)", 0) + c
                row = s.get(AuditEvent, row_id)
                if row is None:
                    continue
            row.detail = json.dumps(
                {
                    "source": key[0],
                    "minute": key[2],
                    "requests": sum(total.values()),
                    "files": total,
                    "protocol": first[key].protocol,
                },
                sort_keys=True,
            )
        # Forget minutes that are over: their rows are final.
        current = utcnow().astimezone(UTC).strftime("%Y-%m-%dT%H:%M")
        for key in [k for k in self._coalesced if k[2] < current]:
            del self._coalesced[key]


# One audit row per event: fetches a device made, and blocks.
_ACTIONS = {
    "served": "file.served",
    "abandoned": "file.abandoned",
    "blocked": "source.blocked",
}
# One row per source, action, device and minute (see _coalesce): what a flood could repeat.
_COALESCED = {
    "static": "static.served",
    "static-abandoned": "static.abandoned",
    "refused": "file.refused",
    "claim-refused": "file.claim-refused",
    "blocked-fetch": "file.blocked",
}


def _served(t: _Ticket, sha256: str) -> _Event:
    return _Event("served", t.source, t.protocol, t.name, t.device_pk, t.device_id, t.order_id,
                  sha256, t.user_agent)  # fmt: skip


def _audit_row(e: _Event) -> dict[str, Any]:
    return {
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


def _new_state(s: Any, states: dict[int, DeviceState], pk: int) -> DeviceState:
    state = DeviceState(device_pk=pk, fetches=0, refusals=0)
    s.add(state)
    states[pk] = state
    return state


def _window(windows: Iterable[Enrollment], device_pk: int, now: datetime) -> datetime | None:
    """When the device's window (its own or its order's) closes, or None if it is closed."""
    ends = [w.expires_at for w in windows if w.device_pk is None or w.device_pk == device_pk]
    open_ends = [e for e in ends if e is not None and e > now]
    return max(open_ends) if open_ends else None


def _armed_at(windows: Iterable[Enrollment], device_pk: int) -> datetime | None:
    """When the device's window (its own or its order's) was last armed."""
    stamps = [w.armed_at for w in windows if w.device_pk is None or w.device_pk == device_pk]
    return max(stamps) if stamps else None


def _credentials_ok(entry: _DeviceEntry, credentials: tuple[str, str]) -> bool:
    user, password = credentials
    return (
        bool(entry.password)
        and hmac.compare_digest(user.encode(), entry.username.encode())
        and hmac.compare_digest(password.encode(), entry.password.encode())
    )


def _printable(name: str) -> str:
    """A requested name as it may be logged: escaped, at most 200 characters."""
    text = name.encode("unicode_escape", "backslashreplace").decode("ascii", "replace")
    return text[:200]


__all__ = ["Answer", "ProvisioningService"]
