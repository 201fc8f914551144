"""Push jobs started over the API: written to the store, run, followed by status and SSE.

A job is :func:`provisioner.push.queue.create_job` over the devices a request names, with a
job id made up front so the request can answer 202 at once. Where it runs is the
``push_queue`` setting: ``local`` runs it in a thread of this process (at most
``push_jobs_running`` jobs at once, more get 429); ``procrastinate`` leaves it on the queue
for ``provisioner worker`` processes. Either way its steps and results are numbered events
in the store (the ``id:`` of the server-sent events, so a client that reconnects with
``Last-Event-ID`` misses nothing, on this server or another one). A job pushed from the CLI
in-process (no job rows) is read back from its stored results.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select

from provisioner.api import schemas
from provisioner.metrics import METRICS
from provisioner.push import queue
from provisioner.push.results import PushResult
from provisioner.push.targets import DeviceAddress, Timeouts
from provisioner.render.engine import DeviceKey, Renderer
from provisioner.store.models import Device, Order, utcnow
from provisioner.store.push_models import PushResultRow

KEEP = 200  # finished jobs kept in memory (older ones are read from the store)


class TooManyJobs(Exception):
    """The push_jobs_running setting's number of jobs is already running."""


def _metric_label(result: str) -> str:
    return result.replace(" ", "_").replace("-", "_")


@dataclass
class JobRun:
    """One job's state: per-device results so far and the event log."""

    id: str
    order: str
    actor: str | None
    dry_run: bool
    models: dict[str, str]  # device id -> model, in the order pushed
    started_at: datetime | None = None
    finished_at: datetime | None = None
    stored: bool = False  # a job of the push_jobs table: its events are read from the store
    devices: dict[str, schemas.PushDeviceResult] = field(default_factory=dict)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        for device, model in self.models.items():
            self.devices.setdefault(device, schemas.PushDeviceResult(device=device, model=model))

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    def step(self, device: str, step: str) -> None:
        with self._lock:
            row = self.devices.get(device)
            if row is None or row.result is not None:
                return
            row.step = step
            event = schemas.PushStepEvent(device=device, step=step)
            self.events.append(("step", event.model_dump(mode="json")))

    def result(self, device: str, res: PushResult) -> None:
        with self._lock:
            row = schemas.PushDeviceResult(
                device=device,
                model=self.models.get(device, ""),
                result=schemas.PushOutcome(res.result),
                changed=res.changed,
                diff_lines=res.diff_lines,
                diff=res.diff,
                seconds=round(res.seconds, 3),
                backup=res.backup_version,
                error=res.error,
            )
            self.devices[device] = row
            self.events.append(("result", row.model_dump(mode="json")))

    def finish(self, at: datetime | None = None) -> None:
        with self._lock:
            done = schemas.PushDoneEvent(summary=self._summary(), finished_at=at or utcnow())
            self.finished_at = done.finished_at  # in UTC (times read back from SQLite are naive)
            self.events.append(("done", done.model_dump(mode="json")))

    def _summary(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self.devices.values():
            if row.result is not None:
                out[row.result.value] = out.get(row.result.value, 0) + 1
        return out

    def public(self) -> schemas.PushJobPublic:
        with self._lock:
            return schemas.PushJobPublic(
                id=self.id,
                order=self.order,
                state=schemas.PushJobState.finished
                if self.finished
                else schemas.PushJobState.running,
                dry_run=self.dry_run,
                actor=self.actor,
                started_at=self.started_at,
                finished_at=self.finished_at,
                summary=self._summary(),
                devices=[r.model_copy() for r in self.devices.values()],
            )

    def events_after(self, seen: int) -> tuple[list[tuple[int, str, dict[str, Any]]], bool]:
        """Events numbered above ``seen`` (numbers start at 1) and whether the job is over."""
        with self._lock:
            start = max(0, seen)
            items = [(start + i + 1, n, d) for i, (n, d) in enumerate(self.events[start:])]
            return items, self.finished


def _from_view(view: queue.JobView) -> JobRun:
    run = JobRun(
        id=view.id,
        order=view.order,
        actor=view.actor,
        dry_run=view.dry_run,
        models={d: row["model"] for d, row in view.devices.items()},
        started_at=view.created_at,
        finished_at=view.finished_at,
        stored=True,
    )
    for device, row in view.devices.items():
        if row["result"] is not None:
            run.devices[device] = schemas.PushDeviceResult.model_validate(row["result"])
        elif row["step"] is not None:
            run.devices[device].step = row["step"]
    return run


def event_data(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """A stored event's data in the API's shape (validated: what the schema promises)."""
    if kind == "result":
        return schemas.PushDeviceResult.model_validate(data).model_dump(mode="json")
    if kind == "done":
        return schemas.PushDoneEvent.model_validate(data).model_dump(mode="json")
    return schemas.PushStepEvent.model_validate(data).model_dump(mode="json")


class JobBoard:
    """Starts push jobs; runs the local ones in threads, at most ``running`` at once."""

    def __init__(self, running: int):
        self.running = max(1, running)
        self._threads: OrderedDict[str, threading.Thread] = OrderedDict()
        self._active = 0
        self._lock = threading.Lock()

    def get(self, inv: Any, job_id: str) -> JobRun | None:
        """The job as the store has it now (a CLI job: from its stored results)."""
        view = queue.job_view(inv, job_id)
        if view is not None:
            return _from_view(view)
        return job_from_store(inv, job_id)

    def start(
        self,
        inv: Any,
        renderer: Renderer,
        order: str,
        jobs: Sequence[tuple[DeviceKey, DeviceAddress]],
        *,
        job_id: str,
        actor: str,
        dry_run: bool,
        trust_on_first_use: bool,
        timeouts: Timeouts,
    ) -> JobRun:
        """Write the job; run it here when local (:class:`TooManyJobs` when the board is
        full), else leave it to the workers."""
        local = inv.settings.push_queue == "local"
        if local:
            with self._lock:
                if self._active >= self.running:
                    raise TooManyJobs(f"{self._active} push jobs are running; retry later")
                self._active += 1
        try:
            queue.create_job(
                inv,
                order,
                list(jobs),
                actor=actor,
                dry_run=dry_run,
                trust_on_first_use=trust_on_first_use,
                timeouts=timeouts,
                job_id=job_id,
            )
        except BaseException:
            if local:
                with self._lock:
                    self._active -= 1
            raise
        if local:

            def work() -> None:
                from provisioner.push.worker import run_local

                try:
                    run_local(inv, renderer, job_id)
                    for res in queue.job_results(inv, job_id):
                        METRICS.push_results.labels(result=_metric_label(res.result)).inc()
                finally:
                    with self._lock:
                        self._active -= 1

            thread = threading.Thread(target=work, name=f"push-job-{job_id[:8]}", daemon=True)
            with self._lock:
                self._threads[job_id] = thread
                while len(self._threads) > KEEP:
                    self._threads.popitem(last=False)
            thread.start()
        run = self.get(inv, job_id)
        assert run is not None
        return run

    def wait(self, job_id: str, timeout: float) -> bool:
        """For tests and scripts: block until a local job's thread is over."""
        with self._lock:
            thread = self._threads.get(job_id)
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True


def job_from_store(inv: Any, job_id: str) -> JobRun | None:
    """A finished job rebuilt from its stored results (no steps: those were never stored)."""
    with inv.db.read() as session:
        rows = session.execute(
            select(PushResultRow, Device.device_id, Device.model, Order.order_id)
            .join(Device, PushResultRow.device_pk == Device.id)
            .join(Order, Device.order_pk == Order.id)
            .where(PushResultRow.job_id == job_id)
            .order_by(PushResultRow.id)
        ).all()
    if not rows:
        return None
    first = rows[0][0]
    run = JobRun(
        id=job_id,
        order=rows[0][3],
        actor=None,
        dry_run=any(r.result == "dry-run" for r, *_ in rows),
        models={device_id: model for _, device_id, model, _ in rows},
        started_at=first.started_at,
    )
    for row, device_id, _, _ in rows:
        res = PushResult(
            device=device_id,
            result=row.result,
            changed=row.changed,
            diff=row.diff,
            error=row.error,
            seconds=(row.ended_at - row.started_at).total_seconds(),
            backup_version=row.backup_version,
            job_id=job_id,
        )
        run.result(device_id, res)
    run.finish(max(r.ended_at for r, *_ in rows))
    return run
