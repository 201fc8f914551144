"""Where each device of an order stands, in one vocabulary that the CLI, the REST API, the
technician page and the event stream all use (:class:`State`).

A device's state is decided from what the store holds, in this order:

- ``planned``: no box is bound yet (no MAC or serial);
- pushed devices (the switch, the IAD) by their last push: ``pushing`` while a push holds
  the device, ``verified`` after one that committed and read the config back equal (or found
  nothing to change), ``failed`` after one that failed or was rolled back;
- ``blocked``: the address it fetches from is blocked by the sweep guard;
- ``refused``: its last fetch was refused (window closed, another source) and none was served
  since;
- ``fetched``: it got its file (which, when, from where);
- ``armed``: its enrollment window is open and it has not fetched yet;
- ``bound``: a box is bound, no window is open.

Every answer is computed in bulk for a list of devices (one query per table), so the fleet
listing and the live stream stay cheap.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from provisioner.catalog import MODELS
from provisioner.store.models import (
    AuditEvent,
    Device,
    DeviceState,
    Enrollment,
    Order,
    SourceBlock,
    utcnow,
)
from provisioner.store.push_models import PushLock, PushResultRow


class State(enum.StrEnum):
    """The states of a device, as every adapter names them."""

    planned = "planned"
    bound = "bound"
    armed = "armed"
    fetched = "fetched"
    refused = "refused"
    blocked = "blocked"
    pushing = "pushing"
    verified = "verified"
    failed = "failed"


# How a state reads at a glance: done (green), waiting (amber), wrong (red), to do (grey).
DONE = frozenset({State.fetched, State.verified})
WRONG = frozenset({State.refused, State.blocked, State.failed})
TONE = {
    **dict.fromkeys(DONE, "done"),
    **dict.fromkeys(WRONG, "wrong"),
    State.planned: "todo",
    State.bound: "wait",
    State.armed: "wait",
    State.pushing: "wait",
}
# Push results (push_results.result) by the state they leave a device in.
PUSH_VERIFIED = frozenset({"ok", "no change"})
PUSH_FAILED = frozenset({"failed", "rolled back"})


@dataclass(frozen=True)
class Handset:
    """What a terminal serves: slot 0 for a desk phone, 1.. for a DECT base's handsets."""

    slot: int
    extension: int
    name: str
    model: str


@dataclass(frozen=True)
class DeviceStatus:
    device_id: str
    model: str
    identity: str
    state: State
    window_until: datetime | None
    bound_source: str | None
    last_file: str | None
    last_hash: str | None
    last_at: datetime | None
    last_source: str | None
    last_user_agent: str | None
    refusals: int = 0  # fetches refused (window closed, another source, wrong credentials)
    last_refused_at: datetime | None = None
    last_refused_source: str | None = None
    order_id: str = ""
    site: str | None = None
    title: str = ""  # the model's name as people say it
    kind: str = ""  # phone | dect_base | switch | iad | ont ...
    identity_kind: str = "mac"  # mac | serial: what binds it
    pushed: bool = False  # configured by push (switch, IAD), not only by fetching
    terminals: tuple[Handset, ...] = ()
    switch: str | None = None
    port: int | None = None
    fetches: int = 0
    blocked_until: datetime | None = None
    push_result: str | None = None
    push_at: datetime | None = None
    push_job: str | None = None
    push_error: str = ""
    pushing_job: str | None = None
    resync_at: datetime | None = None  # the last NOTIFY check-sync sent to it
    resync_outcome: str | None = None  # delivered | not-registered | refused | timeout | failed
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def tone(self) -> str:
        return TONE[self.state]

    @property
    def what(self) -> str:
        """What it serves, in a few words: ``201 Giulia Rossi`` or ``slots 1-2: 203, 204``."""
        if not self.terminals:
            return ""
        if len(self.terminals) == 1 and self.terminals[0].slot == 0:
            t = self.terminals[0]
            return f"{t.extension} {t.name}"
        return ", ".join(f"{t.slot}:{t.extension}" for t in self.terminals)


def decide(
    *,
    identity: str,
    window_until: datetime | None,
    armed_at: datetime | None,
    state: DeviceState | None,
    blocked: bool,
    pushed: bool,
    push_result: str | None,
    pushing: bool,
) -> State:
    """The one rule that names a device's state (see the module's docstring)."""
    if not identity:
        return State.planned
    if pushed:
        if pushing:
            return State.pushing
        if push_result in PUSH_VERIFIED:
            return State.verified
        if push_result in PUSH_FAILED:
            return State.failed
    if blocked:
        return State.blocked
    last_at = state.last_at if state else None
    refused_at = state.last_refused_at if state else None
    # A refusal before the window was (re-)armed is history: the box may try again.
    if (
        refused_at is not None
        and (last_at is None or refused_at > last_at)
        and (window_until is None or armed_at is None or refused_at > armed_at)
    ):
        return State.refused
    if last_at is not None:
        return State.fetched
    if window_until is not None:
        return State.armed
    return State.bound


def active_blocks(session: Session, now: datetime | None = None) -> dict[str, datetime]:
    """Sources blocked now -> until when."""
    now = now or utcnow()
    rows = session.execute(
        select(SourceBlock.source, SourceBlock.until).where(
            SourceBlock.lifted_at.is_(None), SourceBlock.until > now
        )
    ).all()
    out: dict[str, datetime] = {}
    for source, until in rows:
        out[source] = max(until, out.get(source, until))
    return out


def statuses(session: Session, devices: Sequence[Device]) -> list[DeviceStatus]:
    """The status of each of ``devices`` (read in ``session``), in bulk."""
    if not devices:
        return []
    now = utcnow()
    pks = [d.id for d in devices]
    order_pks = sorted({d.order_pk for d in devices})
    states = {
        s.device_pk: s
        for s in session.scalars(select(DeviceState).where(DeviceState.device_pk.in_(pks)))
    }
    windows: dict[int, list[Enrollment]] = {}
    for w in session.scalars(select(Enrollment).where(Enrollment.order_pk.in_(order_pks))):
        windows.setdefault(w.order_pk, []).append(w)
    last_push = (
        select(PushResultRow.device_pk, func.max(PushResultRow.id).label("last"))
        .where(PushResultRow.device_pk.in_(pks), PushResultRow.result != "dry-run")
        .group_by(PushResultRow.device_pk)
        .subquery()
    )
    pushes = {
        r.device_pk: r
        for r in session.scalars(
            select(PushResultRow).join(last_push, PushResultRow.id == last_push.c.last)
        )
    }
    locks = {
        lock.device_pk: lock.job_id
        for lock in session.scalars(select(PushLock).where(PushLock.device_pk.in_(pks)))
    }
    blocks = active_blocks(session, now)
    resyncs = last_resyncs(session, devices)
    out = []
    for dev in devices:
        st = states.get(dev.id)
        own = [w for w in windows.get(dev.order_pk, []) if w.device_pk in (None, dev.id)]
        ends = [w.expires_at for w in own if w.expires_at > now]
        until = max(ends) if ends else None
        armed_at = max((w.armed_at for w in own), default=None)
        identity = dev.mac or dev.serial or ""
        facts = MODELS.get(dev.model)
        kind = facts.kind if facts else "unknown"
        pushed = kind in ("switch", "iad")
        push = pushes.get(dev.id)
        sources = (
            [s for s in (st.bound_source, st.last_source, st.last_refused_source) if s]
            if st
            else []
        )
        blocked_until = max((blocks[s] for s in sources if s in blocks), default=None)
        state = decide(
            identity=identity,
            window_until=until,
            armed_at=armed_at,
            state=st,
            blocked=blocked_until is not None,
            pushed=pushed,
            push_result=push.result if push else None,
            pushing=dev.id in locks,
        )
        out.append(
            DeviceStatus(
                dev.device_id,
                dev.model,
                identity,
                state,
                until,
                st.bound_source if st else None,
                st.last_file if st else None,
                st.last_hash if st else None,
                st.last_at if st else None,
                st.last_source if st else None,
                st.last_user_agent if st else None,
                (st.refusals or 0) if st else 0,
                st.last_refused_at if st else None,
                st.last_refused_source if st else None,
                order_id=dev.order.order_id,
                site=dev.site.site_id
                if dev.site
                else (dev.terminals[0].extension.site.site_id if dev.terminals else None),
                title=facts.title if facts else dev.model,
                kind=kind,
                identity_kind=facts.identity if facts else "mac",
                pushed=pushed,
                terminals=tuple(
                    Handset(t.slot, t.extension.short, t.extension.name, t.model)
                    for t in dev.terminals
                ),
                switch=dev.switch.device_id if dev.switch else None,
                port=dev.port,
                fetches=(st.fetches or 0) if st else 0,
                blocked_until=blocked_until,
                push_result=push.result if push else None,
                push_at=push.ended_at if push else None,
                push_job=push.job_id if push else None,
                push_error=push.error if push else "",
                pushing_job=locks.get(dev.id),
                resync_at=resyncs.get(dev.id, (None, None))[0],
                resync_outcome=resyncs.get(dev.id, (None, None))[1],
            )
        )
    return out


RESYNC_ACTION = "device.resync"  # the audit action of a NOTIFY check-sync (provisioner.voice)


def last_resyncs(
    session: Session, devices: Sequence[Device]
) -> dict[int, tuple[datetime, str | None]]:
    """Device pk -> (when, outcome) of the last resync the audit log holds for it."""
    by_name = {(d.order.order_id, d.device_id): d.id for d in devices}
    orders = sorted({k[0] for k in by_name})
    last = (
        select(func.max(AuditEvent.id))
        .where(AuditEvent.action == RESYNC_ACTION, AuditEvent.order_id.in_(orders))
        .group_by(AuditEvent.order_id, AuditEvent.device)
    )
    out: dict[int, tuple[datetime, str | None]] = {}
    for ev in session.scalars(select(AuditEvent).where(AuditEvent.id.in_(last))):
        pk = by_name.get((ev.order_id or "", ev.device or ""))
        if pk is not None:
            try:
                outcome = json.loads(ev.detail or "{}").get("outcome")
            except ValueError:
                outcome = None
            out[pk] = (ev.at, outcome)
    return out


def device_status(session: Session, order: Order) -> list[DeviceStatus]:
    """Per device of ``order``: its state and its last fetch (read in ``session``)."""
    return statuses(session, list(order.devices))


def fingerprint(session: Session, order: Order) -> tuple[int, ...]:
    """Something that changes whenever a device of ``order`` changes state: its generation
    (every write), its audit log (fetches, refusals, pushes), its devices' fetch and refusal
    counts, push locks and results, and the blocks in force. A handful of indexed queries:
    the event stream asks this once a second per watched order."""
    pks = select(Device.id).where(Device.order_pk == order.id)
    audit = session.scalar(
        select(func.max(AuditEvent.id)).where(AuditEvent.order_id == order.order_id)
    )
    counts = session.execute(
        select(
            func.coalesce(func.sum(DeviceState.fetches), 0),
            func.coalesce(func.sum(DeviceState.refusals), 0),
            func.count(DeviceState.bound_source),
        ).where(DeviceState.device_pk.in_(pks))
    ).one()
    pushes = session.scalar(
        select(func.max(PushResultRow.id)).where(PushResultRow.device_pk.in_(pks))
    )
    locks = session.scalar(select(func.count()).where(PushLock.device_pk.in_(pks)))
    now = utcnow()
    blocks = session.scalar(
        select(func.count()).where(SourceBlock.lifted_at.is_(None), SourceBlock.until > now)
    )
    # A window closing turns "armed" into "bound" without any write.
    windows = session.scalar(
        select(func.count()).where(Enrollment.order_pk == order.id, Enrollment.expires_at > now)
    )
    return (
        order.generation,
        audit or 0,
        int(counts[0]),
        int(counts[1]),
        int(counts[2]),
        pushes or 0,
        locks or 0,
        blocks or 0,
        windows or 0,
    )
