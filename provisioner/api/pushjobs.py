"""Push jobs started over the API: run in a background thread, watched by status and SSE.

A job is :func:`provisioner.push.runner.push_many` over the devices a request names, with a job
id made up front so the request can answer 202 at once. While it runs, the :class:`JobBoard`
of the process holds its steps and results as numbered events (the ``id:`` of the
server-sent events, so a client that reconnects with ``Last-Event-ID`` misses nothing).
Every result is also stored (``push_results``) and audited by the push job itself: a job
that this process no longer holds (restart, or pushed from the CLI) is read from the store.
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
from provisioner.push.results import PushResult
from provisioner.push.runner import push_many
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


class JobBoard:
    """The push jobs of this process: at most ``running`` at once, the last ``KEEP`` kept."""

    def __init__(self, running: int):
        self.running = max(1, running)
        self._jobs: OrderedDict[str, JobRun] = OrderedDict()
        self._active = 0
        self._lock = threading.Lock()

    def get(self, job_id: str) -> JobRun | None:
        with self._lock:
            return self._jobs.get(job_id)

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
        """Start the push in a thread; :class:`TooManyJobs` when the board is full."""
        run = JobRun(
            id=job_id,
            order=order,
            actor=actor,
            dry_run=dry_run,
            models={k.device_id: k.model for k, _ in jobs},
            started_at=utcnow(),
        )
        with self._lock:
            if self._active >= self.running:
                raise TooManyJobs(f"{self._active} push jobs are running; retry later")
            self._active += 1
            self._jobs[job_id] = run
            while len(self._jobs) > KEEP:
                oldest = next(iter(self._jobs))
                if not self._jobs[oldest].finished:
                    break
                self._jobs.popitem(last=False)

        def on_step(device: str, step: str) -> None:
            run.step(device.rpartition("/")[2], step)

        def on_done(res: PushResult) -> None:
            run.result(res.device.rpartition("/")[2], res)
            METRICS.push_results.labels(result=_metric_label(res.result)).inc()

        def work() -> None:
            try:
                push_many(
                    inv,
                    renderer,
                    list(jobs),
                    dry_run=dry_run,
                    trust_on_first_use=trust_on_first_use,
                    timeouts=timeouts,
                    actor=actor,
                    job_id=job_id,
                    on_step=on_step,
                    on_done=on_done,
                )
            finally:
                # push_many turns every device error into a result; whatever else happens,
                # the job ends, so no watcher waits for ever.
                run.finish()
                with self._lock:
                    self._active -= 1

        threading.Thread(target=work, name=f"push-job-{job_id[:8]}", daemon=True).start()
        return run

    def wait(self, job_id: str, timeout: float) -> bool:
        """For tests and scripts: block until the job is over (or ``timeout`` seconds)."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.get(job_id)
            if run is None or run.finished:
                return True
            time.sleep(0.05)
        return False


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
