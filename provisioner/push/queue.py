"""Push jobs in the store: the job, a task per device, numbered events; leases and the reaper.

A push job is written once (:func:`create_job`: a ``push_jobs`` row and one ``push_tasks`` row
per device) and then run task by task, wherever the ``push_queue`` setting says:

- ``local`` (the default, SQLite or PostgreSQL): in the process that made it (the CLI's
  ``push``, the API), :func:`provisioner.push.worker.run_local`;
- ``procrastinate`` (PostgreSQL): on procrastinate's queue, in the same database. The queue's
  messages are written by :func:`create_job` in the same transaction as the job's rows, on
  the same connection: a job never exists without its messages, nor the reverse.
  ``provisioner worker`` processes run them (:mod:`provisioner.push.worker`).

Whoever runs a task takes it with a conditional UPDATE (queued -> running) and holds a
*lease* (``push_lease`` seconds) that it renews while it pushes. A worker killed mid-push
stops renewing it; :func:`reap` (every worker runs it, and every read of a job does) ends a
task whose lease ran out "failed", releases the device's push lock and says so: the device
then holds its old config or its new one (a set-plan is one SET PDU, an IAD commit one
assignment), never "ok" without a verify, and never stuck "running".

Everything a job does is an event in the store, numbered per job from 1 (``step``,
``result``, the last one ``done``): the API's server-sent events and the CLI's progress bar
read them, so whoever follows a job sees the same thing whichever process runs it.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session

from provisioner.errors import PushFailed
from provisioner.push.results import JobOptions, PushResult
from provisioner.push.targets import DeviceAddress, Timeouts, device_row
from provisioner.render.engine import DeviceKey
from provisioner.store import audit
from provisioner.store.models import Device, Order, utcnow
from provisioner.store.push_models import PushEvent, PushJob, PushLock, PushTask

DIED = (
    "the worker running this push stopped answering (its lease ran out): the device holds"
    " its old config or the new one, never a mix; push it again"
)


@dataclass(frozen=True)
class Task:
    """One claimed task: what the worker needs to push the device."""

    id: int
    key: DeviceKey
    target: DeviceAddress | None
    options: JobOptions

    @property
    def job_id(self) -> str:
        return self.options["job_id"]


@dataclass
class JobView:
    """A job as the store has it now: per-device rows and whether it is over."""

    id: str
    order: str
    actor: str
    dry_run: bool
    created_at: datetime
    finished_at: datetime | None
    devices: dict[str, dict[str, Any]]  # device id -> {"model", "step", "result": {...}}

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


def _target_json(target: DeviceAddress | None) -> str:
    return json.dumps(target.as_dict()) if target is not None else ""


def _target(text: str) -> DeviceAddress | None:
    return DeviceAddress(**json.loads(text)) if text else None


def create_job(
    inv: Any,
    order_id: str,
    targets: Sequence[tuple[DeviceKey, DeviceAddress | None]],
    *,
    actor: str = "",
    dry_run: bool = False,
    trust_on_first_use: bool = False,
    timeouts: Timeouts | None = None,
    job_id: str = "",
) -> str:
    """Write a push job and its tasks (and, on the queue, its messages) in one transaction."""
    settings = inv.settings
    on_queue = settings.push_queue == "procrastinate"
    if on_queue and inv.db.is_sqlite:
        raise PushFailed(
            "push_queue procrastinate needs the PostgreSQL store (database_url); SQLite runs"
            " pushes in the process that starts them (push_queue local)"
        )
    job_id = job_id or uuid.uuid4().hex
    actor = actor or audit.default_actor()
    with inv.db.write() as session:
        session.add(
            PushJob(
                id=job_id,
                order_id=order_id,
                actor=actor[:100],
                dry_run=dry_run,
                trust_on_first_use=trust_on_first_use,
                timeouts=json.dumps(dataclasses.asdict(timeouts or Timeouts())),
                queue=settings.push_queue,
                events=0,
            )
        )
        session.flush()  # the tasks' foreign key needs the job row first
        tasks = [
            PushTask(
                job_id=job_id,
                device_pk=device_row(session, key).id,
                device_id=key.device_id,
                model=key.model,
                target=_target_json(target),
                state="queued",
                worker="",
                attempts=0,
            )
            for key, target in targets
        ]
        session.add_all(tasks)
        session.flush()
        if on_queue:
            _defer(session, settings, [t.id for t in tasks])
    return job_id


def _defer(session: Session, settings: Any, task_ids: list[int]) -> None:
    """Enqueue one procrastinate job per task on the session's own connection."""
    from provisioner.push import pgqueue

    connection = session.connection().connection.driver_connection
    pgqueue.ensure_schema(connection)
    app = pgqueue.queue_app(settings)
    deferrer = app.tasks[pgqueue.TASK].configure()
    jobs = [deferrer.make_new_job(task_id=task_id) for task_id in task_ids]
    app.job_manager.batch_defer_jobs(jobs, connection=connection)


def task_ids(inv: Any, job_id: str) -> list[int]:
    with inv.db.read() as session:
        return list(
            session.scalars(select(PushTask.id).where(PushTask.job_id == job_id).order_by("id"))
        )


# ---------------------------------------------------------------------- running a task


def claim(inv: Any, task_id: int, worker: str) -> Task | None:
    """Take a queued task (None when another took it, or it is over), lease included."""
    lease = timedelta(seconds=inv.settings.push_lease)
    with inv.db.write() as session:
        taken = session.execute(
            update(PushTask)
            .where(PushTask.id == task_id, PushTask.state == "queued")
            .values(
                state="running",
                worker=worker[:100],
                lease_until=utcnow() + lease,
                attempts=PushTask.attempts + 1,
            )
        ).rowcount
        if not taken:
            return None
        task = session.get(PushTask, task_id)
        assert task is not None
        job = session.get(PushJob, task.job_id)
        assert job is not None
        order_id = session.scalar(
            select(Order.order_id)
            .join(Device, Device.order_pk == Order.id)
            .where(Device.id == task.device_pk)
        )
        options = JobOptions(
            job_id=job.id,
            actor=job.actor,
            dry_run=job.dry_run,
            trust_on_first_use=job.trust_on_first_use,
            timeouts=Timeouts(**json.loads(job.timeouts)),
        )
        key = DeviceKey(str(order_id), task.device_id, task.model)
        return Task(id=task.id, key=key, target=_target(task.target), options=options)


def renew(inv: Any, task_id: int, worker: str) -> bool:
    """Extend a running task's lease; False when it is no longer this worker's."""
    lease = timedelta(seconds=inv.settings.push_lease)
    with inv.db.write() as session:
        return bool(
            session.execute(
                update(PushTask)
                .where(
                    PushTask.id == task_id,
                    PushTask.state == "running",
                    PushTask.worker == worker[:100],
                )
                .values(lease_until=utcnow() + lease)
            ).rowcount
        )


class Lease:
    """Renews a task's lease every third of ``push_lease`` while the push runs."""

    def __init__(self, inv: Any, task_id: int, worker: str) -> None:
        self._inv, self._task, self._worker = inv, task_id, worker
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{task_id}", daemon=True)

    def _run(self) -> None:
        every = self._inv.settings.push_lease / 3
        while not self._stop.wait(every):
            try:
                renew(self._inv, self._task, self._worker)
            except Exception:  # noqa: S112 - the store may blink; the next renewal retries
                continue

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _event(session: Session, job_id: str, kind: str, data: dict[str, Any]) -> int:
    """Append an event: the job row's counter gives its number (and serialises writers)."""
    seq = session.execute(
        update(PushJob)
        .where(PushJob.id == job_id)
        .values(events=PushJob.events + 1)
        .returning(PushJob.events)
    ).scalar_one()
    session.add(PushEvent(job_id=job_id, seq=seq, kind=kind, data=json.dumps(data)))
    return int(seq)


def step(inv: Any, job_id: str, device: str, name: str) -> None:
    """A device moved to a step (connect, backup, diff, commit, ...).

    Progress, not state: on PostgreSQL its commit does not wait for the disk (a crash may
    lose the last steps, never a result, which waits as every other write does)."""
    with inv.db.write() as session:
        if not inv.db.is_sqlite:
            session.execute(text("SET LOCAL synchronous_commit TO OFF"))
        _event(session, job_id, "step", {"device": device, "step": name})


def result_data(device: str, model: str, res: PushResult) -> dict[str, Any]:
    """A device's result as its event carries it (the API's PushDeviceResult)."""
    return {
        "device": device,
        "model": model,
        **res.outcome(),
        "diff": res.diff,
        # The error's type, for a client that acts on it (the CLI names the option that helps).
        "error_kind": res.error_kind,
    }


def finish(inv: Any, task_id: int, worker: str | None, res: PushResult) -> bool:
    """End a task with its result (and the job with ``done`` after its last task).

    ``worker``: only if this worker still holds it (None: the reaper, any running task).
    False when the task was no longer running (the reaper ended it first)."""
    with inv.db.write() as session:
        task = session.get(PushTask, task_id)
        if task is None or task.state != "running":
            return False
        if worker is not None and task.worker != worker[:100]:
            return False
        _event(session, task.job_id, "result", result_data(task.device_id, task.model, res))
        ended = session.execute(
            update(PushTask)
            .where(PushTask.id == task_id, PushTask.state == "running")
            .values(state="done", result=res.result, lease_until=None)
        ).rowcount
        if not ended:
            raise PushFailed(f"push task {task_id}: ended twice")  # rolls the event back
        _maybe_done(session, task.job_id)
        return True


def _maybe_done(session: Session, job_id: str) -> None:
    open_tasks = session.scalar(
        select(func.count(PushTask.id)).where(PushTask.job_id == job_id, PushTask.state != "done")
    )
    if open_tasks:
        return
    summary: dict[str, int] = {}
    for result in session.scalars(select(PushTask.result).where(PushTask.job_id == job_id)):
        summary[str(result)] = summary.get(str(result), 0) + 1
    at = utcnow()
    session.execute(update(PushJob).where(PushJob.id == job_id).values(finished_at=at))
    _event(session, job_id, "done", {"summary": summary, "finished_at": at.isoformat()})


def reap(inv: Any, job_id: str | None = None) -> int:
    """End every running task whose lease ran out "failed" (of one job, or all); release the
    device's push lock its dead worker left. Returns how many it ended."""
    from provisioner.push.results import record

    now = utcnow()
    stmt = select(PushTask).where(PushTask.state == "running", PushTask.lease_until < now)
    if job_id is not None:
        stmt = stmt.where(PushTask.job_id == job_id)
    with inv.db.read() as session:
        dead = [(t.id, t.job_id, t.device_pk, t.device_id, t.model) for t in session.scalars(stmt)]
    ended = 0
    for task_id, job, device_pk, device_id, model in dead:
        res = PushResult(device_id, "failed", job_id=job)
        res.fail(PushFailed(DIED))
        with inv.db.write() as session:
            current = session.get(PushTask, task_id)
            if current is None or current.state != "running" or current.lease_until is None:
                continue
            if current.lease_until >= utcnow():
                continue  # renewed meanwhile: alive after all
            session.execute(
                delete(PushLock).where(PushLock.device_pk == device_pk, PushLock.job_id == job)
            )
            order_id = session.scalar(select(PushJob.order_id).where(PushJob.id == job))
        if finish(inv, task_id, None, res):
            ended += 1
            record(inv, DeviceKey(str(order_id), device_id, model), device_pk, res, now, "reaper")
    return ended


# ---------------------------------------------------------------------- following a job


def finished(inv: Any, job_id: str) -> bool:
    with inv.db.read() as session:
        return session.scalar(select(PushJob.finished_at).where(PushJob.id == job_id)) is not None


def events_after(
    inv: Any, job_id: str, seen: int
) -> tuple[list[tuple[int, str, dict[str, Any]]], bool]:
    """The job's events numbered above ``seen``, and whether the job is over."""
    reap(inv, job_id)
    with inv.db.read() as session:
        rows = session.execute(
            select(PushEvent.seq, PushEvent.kind, PushEvent.data)
            .where(PushEvent.job_id == job_id, PushEvent.seq > seen)
            .order_by(PushEvent.seq)
        ).all()
        done = session.scalar(select(PushJob.finished_at).where(PushJob.id == job_id))
    return [(int(s), k, json.loads(d)) for s, k, d in rows], done is not None


def job_view(inv: Any, job_id: str) -> JobView | None:
    """A job from the store (None when there is no such job)."""
    reap(inv, job_id)
    with inv.db.read() as session:
        job = session.get(PushJob, job_id)
        if job is None:
            return None
        devices: dict[str, dict[str, Any]] = {
            t.device_id: {"model": t.model, "step": None, "result": None}
            for t in session.scalars(
                select(PushTask).where(PushTask.job_id == job_id).order_by(PushTask.id)
            )
        }
        for kind, data in session.execute(
            select(PushEvent.kind, PushEvent.data)
            .where(PushEvent.job_id == job_id, PushEvent.kind != "done")
            .order_by(PushEvent.seq)
        ):
            event = json.loads(data)
            row = devices.get(event["device"])
            if row is None:
                continue
            if kind == "step" and row["result"] is None:
                row["step"] = event["step"]
            elif kind == "result":
                row["result"], row["step"] = event, None
        return JobView(
            id=job.id,
            order=job.order_id,
            actor=job.actor,
            dry_run=job.dry_run,
            created_at=job.created_at,
            finished_at=job.finished_at,
            devices=devices,
        )


def job_results(inv: Any, job_id: str) -> list[PushResult]:
    """The devices' results so far, as :class:`PushResult` (device "ORDER/ID")."""
    view = job_view(inv, job_id)
    if view is None:
        return []
    out = []
    for device, row in view.devices.items():
        r = row["result"]
        if r is None:
            continue
        out.append(
            PushResult(
                f"{view.order}/{device}",
                r["result"],
                changed=r["changed"],
                diff=r["diff"],
                error=r["error"],
                seconds=float(r["seconds"] or 0.0),
                backup_version=r["backup"],
                job_id=job_id,
                error_kind=r.get("error_kind", ""),
            )
        )
    return out
