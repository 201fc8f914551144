"""The serving layer's writes, off the request path: one background thread stores what the
request path decided, in batches (DESIGN.md §4, "the request path does no I/O that can wait").

- A claim (the first fetch in a window binds a device to its source) is written with a
  conditional UPDATE: of two servers claiming one device, the first write wins and the other
  follows it. A claim made in a window re-armed since, or for a box swapped out, is dropped.
- Each device's state row (last fetch, refusals) is updated once per batch.
- A file served is audited once per device, file, content, source and minute: the first
  fetch writes the row, fetches of the same file repeated within the minute (a phone in a
  reboot loop, a client hammering with its own credentials) count in it (``requests``).
  Static files and refusals are coalesced per source, action, device and minute. Either
  way a flood cannot grow the log, and a write per request does not slow the request path.
- A source the guard blocked is stored, so every server and ``provisioner blocks`` see it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, insert, literal, select, update

from provisioner.serving.guard import SourceGuard
from provisioner.serving.index import Index, armed_at_of
from provisioner.store.access import Store
from provisioner.store.changes import announce
from provisioner.store.models import (
    AuditEvent,
    Device,
    DeviceState,
    Enrollment,
    SourceBlock,
    utcnow,
)

log = logging.getLogger("provisioner.serving.recorder")

BATCH_SECONDS = 0.05  # how long a batch gathers after the first event
BATCH_MAX = 1000  # events stored in one transaction at most


@dataclass(slots=True)
class Event:
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


class Recorder:
    """Stores what the request path decided, from one background thread."""

    def __init__(self, store: Store, index: Index, guard: SourceGuard):
        self.store = store
        self.index = index
        self.guard = guard
        self._events: deque[Event | _Flush | None] = deque()
        self._wake = threading.Event()
        self._coalesced: dict[tuple[str, str, int, str], tuple[int, dict[str, int]]] = {}
        # (source, device, file, sha256, minute) -> (audit row id, requests so far, detail)
        self._served: dict[tuple[str, str, str, str, int], tuple[int, int, dict[str, Any]]] = {}
        self._thread = threading.Thread(target=self._write_events, name="serving-recorder",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def emit(self, event: Event) -> None:
        self._put(event)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until every event so far is in the store (tests, shutdown)."""
        done = threading.Event()
        self._put(_Flush(done))
        done.wait(timeout)

    def close(self) -> None:
        self.flush()
        self._put(None)
        self._thread.join(5)

    def _put(self, item: Event | _Flush | None) -> None:
        # The request path's only cost: an append (deque appends are atomic) and, when the
        # writer sleeps, one wake-up.
        self._events.append(item)
        if not self._wake.is_set():
            self._wake.set()

    def _write_events(self) -> None:
        """Take what arrived in ``BATCH_SECONDS`` after a wake-up (at most ``BATCH_MAX``
        events) and store it in one transaction."""
        events = self._events
        while True:
            self._wake.wait()
            time.sleep(BATCH_SECONDS)  # let a burst gather: one transaction for all of it
            self._wake.clear()
            batch: list[Event] = []
            flushes: list[_Flush] = []
            stop = False
            while events and len(batch) < BATCH_MAX:
                item = events.popleft()
                if item is None:
                    stop = True
                    break
                if isinstance(item, _Flush):
                    flushes.append(item)
                else:
                    batch.append(item)
            if events and not stop:
                self._wake.set()  # more than one batch's worth waiting: go again at once
            try:
                if batch:
                    self._store(batch)
            except Exception:
                log.exception("could not write %d serving events", len(batch))
            for f in flushes:
                f.done.set()
            if stop:
                return

    def _store(self, events: list[Event]) -> None:
        """One transaction per batch: claims, one state row per device, audit rows in bulk."""
        claims = [e for e in events if e.kind == "claim" and e.device_pk is not None]
        served: dict[int, tuple[Event, int]] = {}
        refused: dict[int, tuple[Event, int]] = {}
        for e in events:
            if e.device_pk is None:
                continue
            if e.kind == "served":
                _, n = served.get(e.device_pk, (e, 0))
                served[e.device_pk] = (e, n + 1)
            elif e.kind in ("refused", "claim-refused", "blocked-fetch"):
                _, n = refused.get(e.device_pk, (e, 0))
                refused[e.device_pk] = (e, n + 1)
        rows = [_audit_row(e) for e in events if e.kind in _ACTIONS and e.kind != "served"]
        coalesced = [e for e in events if e.kind in _COALESCED]
        blocks = [e for e in events if e.kind == "blocked"]
        with self.store.db.write() as s:
            outcomes = _write_claims(s, claims)
            conn = s.connection()
            _ensure_states(s, list(served) + list(refused))
            if served:
                conn.execute(
                    update(DeviceState)
                    .where(DeviceState.device_pk == bindparam("pk"))
                    .values(
                        last_file=bindparam("file"),
                        last_hash=bindparam("sha"),
                        last_at=bindparam("at"),
                        last_source=bindparam("source"),
                        last_protocol=bindparam("protocol"),
                        last_user_agent=bindparam("agent"),
                        fetches=DeviceState.fetches + bindparam("n"),
                    ),
                    [_served_row(pk, e, n) for pk, (e, n) in served.items()],
                )
            if refused:
                conn.execute(
                    update(DeviceState)
                    .where(DeviceState.device_pk == bindparam("pk"))
                    .values(
                        refusals=DeviceState.refusals + bindparam("n"),
                        last_refused_at=bindparam("at"),
                        last_refused_source=bindparam("source"),
                    ),
                    [
                        {"pk": pk, "n": n, "at": e.at, "source": e.source}
                        for pk, (e, n) in refused.items()
                    ],
                )
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
                s.connection().execute(insert(AuditEvent), rows)
            self._audit_served(s, [e for e in events if e.kind == "served"])
            if claims or blocks:
                announce(s)  # other servers take the binding or the block at once
            self._coalesce(s, coalesced)
        for e, holder in outcomes:
            assert e.device_pk is not None
            if holder is not None and holder != e.source:
                log.warning("device %s: bound to %s by another server", e.device_id, holder)
            self.index.claimed(e.device_pk, e.source, e.identity, holder)
        for e in blocks:
            self.guard.stored(e.source)

    def _audit_served(self, s: Any, events: list[Event]) -> None:
        """One row per device, file, content, source and minute; repeats add to its count.
        New rows go in with one bulk INSERT .. RETURNING, counts with one executemany UPDATE."""
        if not events:
            return
        counts: dict[tuple[str, str, str, str, int], int] = {}
        first: dict[tuple[str, str, str, str, int], Event] = {}
        for e in events:
            key = (e.source, e.device_id, e.name, e.sha256, _minute(e.at))
            counts[key] = counts.get(key, 0) + 1
            first.setdefault(key, e)
        new = [k for k in counts if k not in self._served]
        if new:
            rows = []
            for k in new:
                detail = _audit_detail(first[k])
                if counts[k] > 1:
                    detail["requests"] = counts[k]
                rows.append((k, _audit_row(first[k], detail), detail))
            # RETURNING in bulk, matched back by (device, detail): asking for the rows in
            # parameter order would make SQLite insert them one statement each.
            returned = (
                s.connection()
                .execute(
                    insert(AuditEvent).returning(
                        AuditEvent.id, AuditEvent.device, AuditEvent.detail
                    ),
                    [row for _, row, _ in rows],
                )
                .all()
            )
            ids: dict[tuple[str | None, str], list[int]] = {}
            for row_id, device, text in returned:
                ids.setdefault((device, text), []).append(row_id)
            for k, row, detail in rows:
                self._served[k] = (ids[(row["device"], row["detail"])].pop(), counts[k], detail)
        again = []
        for k, n in counts.items():
            if k in new:
                continue
            row_id, total, detail = self._served[k]
            detail = {**detail, "requests": total + n}
            self._served[k] = (row_id, total + n, detail)
            again.append({"row": row_id, "detail": json.dumps(detail, sort_keys=True)})
        if again:
            s.connection().execute(
                update(AuditEvent)
                .where(AuditEvent.id == bindparam("row"))
                .values(detail=bindparam("detail")),
                again,
            )
        current = _minute(utcnow())
        for k in [k for k in self._served if k[4] < current]:
            del self._served[k]  # minutes that are over: their rows are final

    def _coalesce(self, s: Any, events: list[Event]) -> None:
        """Static files and refusals: one audit row per source, action, device and minute,
        however many requests (a flood cannot grow the audit log faster than that)."""
        if not events:
            return
        groups: dict[tuple[str, str, int, str], dict[str, int]] = {}
        first: dict[tuple[str, str, int, str], Event] = {}
        for e in events:
            key = (e.source, _COALESCED[e.kind], _minute(e.at), e.device_id)
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
                    "minute": datetime.fromtimestamp(key[2] * 60, UTC).strftime("%Y-%m-%dT%H:%M"),
                    "requests": sum(total.values()),
                    "files": total,
                    "protocol": first[key].protocol,
                },
                sort_keys=True,
            )
        # Forget minutes that are over: their rows are final.
        current = _minute(utcnow())
        for key in [k for k in self._coalesced if k[2] < current]:
            del self._coalesced[key]


def _minute(at: datetime) -> int:
    """Minutes since the epoch (a key per minute, cheaper than formatting one per event)."""
    return int(at.timestamp()) // 60


# One audit row per event: abandoned transfers and blocks (served files: see _audit_served).
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


def _audit_detail(e: Event) -> dict[str, Any]:
    # Names, addresses and hashes only: an event never carries file content.
    return {
        "file": _printable(e.name),
        "protocol": e.protocol,
        "sha256": e.sha256 or None,
        "source": e.source,
    }


def _audit_row(e: Event, detail: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "at": e.at,
        "actor": f"device:{e.source}",
        "action": _ACTIONS[e.kind],
        "order_id": e.order_id or None,
        "device": e.device_id or None,
        "detail": json.dumps(_audit_detail(e) if detail is None else detail, sort_keys=True),
    }


def _served_row(pk: int, e: Event, n: int) -> dict[str, Any]:
    return {
        "pk": pk,
        "file": e.name[:255],
        "sha": e.sha256,
        "at": e.at,
        "source": e.source,
        "protocol": e.protocol,
        "agent": e.user_agent[:200] or None,
        "n": n,
    }


def _write_claims(s: Any, claims: list[Event]) -> list[tuple[Event, str | None]]:
    """Persist in-memory claims, a batch at once; for each, who holds the device now
    (another server may have bound it first), or None for a claim dropped.

    The conditional UPDATE (only where nobody holds it) is the guard between servers. A
    claim made in a window that was re-armed since (which released the binding), or for a
    device that names another box now, is dropped: the next fetch decides again.
    """
    if not claims:
        return []
    # Plain rows (Core): the ORM's loading costs more than the query in a boot storm.
    conn = s.connection()
    pks = {e.device_pk for e in claims if e.device_pk is not None}
    devices = {
        pk: (mac or serial, order_pk)
        for pk, mac, serial, order_pk in conn.execute(
            select(Device.id, Device.mac, Device.serial, Device.order_pk).where(Device.id.in_(pks))
        )
    }
    windows: dict[int, list[Any]] = {}
    for w in conn.execute(
        select(Enrollment.order_pk, Enrollment.device_pk, Enrollment.armed_at).where(
            Enrollment.order_pk.in_({order_pk for _, order_pk in devices.values()})
        )
    ):
        windows.setdefault(w.order_pk, []).append(w)
    valid = []
    for e in claims:
        pk = e.device_pk
        if pk is None or pk not in devices or devices[pk][0] != e.identity:
            continue
        if armed_at_of(windows.get(devices[pk][1], []), pk) == e.armed_at:
            valid.append(e)
    if valid:
        _ensure_states(s, [e.device_pk for e in valid if e.device_pk is not None])
        conn.execute(
            update(DeviceState)
            .where(DeviceState.device_pk == bindparam("pk"), DeviceState.bound_source.is_(None))
            .values(bound_source=bindparam("source"), bound_at=bindparam("at")),
            [{"pk": e.device_pk, "source": e.source, "at": e.at} for e in valid],
        )
    holders = dict(
        conn.execute(
            select(DeviceState.device_pk, DeviceState.bound_source).where(
                DeviceState.device_pk.in_([e.device_pk for e in valid])
            )
        ).all()
    ) if valid else {}  # fmt: skip
    kept = {id(e) for e in valid}
    return [(e, holders.get(e.device_pk) if id(e) in kept else None) for e in claims]


def _ensure_states(s: Any, pks: list[int]) -> None:
    """A state row for each device, made if missing; two servers racing to make the same one
    both succeed (INSERT ... ON CONFLICT DO NOTHING, on PostgreSQL and SQLite alike). Only
    devices that still exist (one may have left its order since the fetch): the rows come
    from a SELECT of the devices, in one statement that compiles once (an IN list that
    expands), not a VALUES list compiled again for every batch."""
    if not pks:
        return
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = s.get_bind().dialect.name
    upsert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = (
        upsert(DeviceState)
        .from_select(
            ["device_pk", "fetches", "refusals"],
            select(Device.id, literal(0), literal(0)).where(
                Device.id.in_(bindparam("pks", expanding=True))
            ),
        )
        .on_conflict_do_nothing()
    )
    s.connection().execute(stmt, {"pks": list(dict.fromkeys(pks))})


def _printable(name: str) -> str:
    """A requested name as it may be logged: escaped, at most 200 characters."""
    text = name.encode("unicode_escape", "backslashreplace").decode("ascii", "replace")
    return text[:200]
