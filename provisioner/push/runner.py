"""Fan-out: push many devices at once, at most ``push_concurrency`` at a time.

Each device is one :func:`provisioner.push.job.push_device`, a plain function; here they run
in a thread pool of this process (the CLI's ``push``, the API's job board). A job queue's
worker would call the job function the same way.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Unpack

from provisioner.push.results import PushOptions, PushResult
from provisioner.push.targets import DeviceAddress
from provisioner.render.engine import DeviceKey, Renderer
from provisioner.store import audit


def push_many(
    inv: Any,
    renderer: Renderer,
    jobs: Sequence[tuple[DeviceKey, DeviceAddress | None]],
    *,
    concurrency: int | None = None,
    on_done: Callable[[PushResult], None] | None = None,
    **options: Unpack[PushOptions],
) -> tuple[str, list[PushResult]]:
    """Push every (device, address) with at most ``concurrency`` at once (default: the
    push_concurrency setting). One job id for the run (made when not given); results in
    the order given. A device without an address ends "failed" (``NoAddress``)."""
    # The job loads NAPALM and the SSH/SNMP libraries: only when something is pushed.
    from provisioner.push.job import push_device

    settings = options["settings"] = options.get("settings") or inv.settings
    job_id = options["job_id"] = options.get("job_id") or uuid.uuid4().hex
    options["actor"] = options.get("actor") or audit.default_actor()
    width = max(1, concurrency or settings.push_concurrency)

    def one(item: tuple[DeviceKey, DeviceAddress | None]) -> PushResult:
        key, target = item
        res = push_device(inv, renderer, key, target, **options)
        if on_done is not None:
            on_done(res)
        return res

    with ThreadPoolExecutor(
        max_workers=min(width, max(1, len(jobs))), thread_name_prefix="push"
    ) as pool:
        results = list(pool.map(one, jobs))
    return job_id, results
