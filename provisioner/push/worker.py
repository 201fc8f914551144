"""Who runs push tasks: this process (``push_queue = local``) or ``provisioner worker``
processes on procrastinate's PostgreSQL queue (``push_queue = procrastinate``).

Why procrastinate (not Celery or Dramatiq): its queue is a table in the PostgreSQL the
servers already share, so enqueuing is an INSERT in the same transaction as the job's own
rows (:func:`provisioner.push.queue.create_job`): no job without its messages or the
reverse, no broker to run, back up and watch, and LISTEN/NOTIFY wakes a worker at once.
Celery and Dramatiq send to Redis or RabbitMQ, outside that transaction: they need an
outbox table and a relay to give the same promise.

Either way a task is :func:`run_task`: take it (a lease in the store), push the device
(:func:`provisioner.push.job.push_device`: backup, diff, commit, verify, roll back), write
every step and the result as the job's events, give it back. At most ``push_concurrency``
tasks at once per process; one push per device across all of them (the store lock).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from provisioner.errors import PushFailed
from provisioner.push import pgqueue, queue
from provisioner.push.results import PushResult
from provisioner.render.engine import Renderer

log = logging.getLogger(__name__)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_task(inv: Any, renderer: Renderer, task_id: int, worker: str) -> PushResult | None:
    """Run one task if it is still queued (None otherwise: another took it, or it is over)."""
    from provisioner.push.job import push_device

    task = queue.claim(inv, task_id, worker)
    if task is None:
        return None

    def on_step(device: str, step: str) -> None:
        queue.step(inv, task.job_id, device.rpartition("/")[2], step)

    with queue.Lease(inv, task.id, worker):
        res = push_device(inv, renderer, task.key, task.target, **task.options, on_step=on_step)
    queue.finish(inv, task.id, worker, res)
    return res


def run_local(inv: Any, renderer: Renderer, job_id: str, concurrency: int | None = None) -> None:
    """Run every task of a job in this process, at most ``concurrency`` at once (default:
    the push_concurrency setting). Returns when they are all over."""
    tasks = queue.task_ids(inv, job_id)
    width = max(1, min(concurrency or inv.settings.push_concurrency, len(tasks) or 1))
    worker = worker_name()
    with ThreadPoolExecutor(max_workers=width, thread_name_prefix="push") as pool:
        list(pool.map(lambda t: run_task(inv, renderer, t, worker), tasks))


# ---------------------------------------------------------------------- the queue


def run_worker(inv: Any, renderer: Renderer, *, concurrency: int, name: str = "") -> None:
    """Run queued push tasks until SIGINT/SIGTERM: ``provisioner worker``.

    At most ``concurrency`` at once (procrastinate's worker concurrency, and as many threads
    for the synchronous job function); a reaper thread ends tasks whose worker died."""
    settings = inv.settings
    if settings.push_queue != "procrastinate" or inv.db.is_sqlite:
        raise PushFailed(
            "a worker needs push_queue = procrastinate and the PostgreSQL store"
            " (PROVISIONER_PUSH_QUEUE, PROVISIONER_DATABASE_URL)"
        )
    with inv.db.engine.begin() as conn:
        pgqueue.ensure_schema(conn.connection.driver_connection)
    name = name or worker_name()
    # A worker exists to push: load NAPALM, netmiko and pysnmp and start the SNMP engine
    # now, not inside the first tasks (their threads would all wait on the import lock).
    import provisioner.push.job  # noqa: F401
    from provisioner.push import snmp

    snmp.shared()
    app = pgqueue.queue_app(
        settings, asynchronous=True, run=lambda task_id: run_task(inv, renderer, task_id, name)
    )
    stop = threading.Event()

    def reaper() -> None:
        every = max(1.0, settings.push_lease / 3)
        while not stop.wait(every):
            try:
                ended = queue.reap(inv)
                if ended:
                    log.warning("reaper: %d push task(s) of a dead worker ended failed", ended)
            except Exception as exc:  # the store may blink; try again next round
                log.warning("reaper: %s", exc)

    async def main() -> None:
        # procrastinate runs a synchronous task in the loop's default executor: give it one
        # thread per task it may run at once (the default has cores + 4).
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=concurrency + 2, thread_name_prefix="push")
        )
        async with app.open_async():
            await app.run_worker_async(
                queues=[pgqueue.QUEUE],
                concurrency=concurrency,
                name=name,
                delete_jobs="successful",
            )

    thread = threading.Thread(target=reaper, name="push-reaper", daemon=True)
    thread.start()
    try:
        asyncio.run(main())
    finally:
        stop.set()
