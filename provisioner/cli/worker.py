"""``provisioner worker``: run push jobs from the queue (``push_queue = procrastinate``)."""

from __future__ import annotations

from typing import Annotated

import typer

from provisioner.cli.app import _inventory, app, err, handles_errors


@app.command()
@handles_errors
def worker(
    concurrency: Annotated[
        int | None,
        typer.Option("--concurrency", help="Pushes at once in this worker (push_concurrency)."),
    ] = None,
    name: Annotated[
        str, typer.Option("--name", help="Worker name in the store (default: host:pid).")
    ] = "",
    quiet: Annotated[bool, typer.Option("--quiet", help="No start-up line.")] = False,
) -> None:
    """Run queued push jobs until Ctrl-C or SIGTERM (needs the PostgreSQL store and
    PROVISIONER_PUSH_QUEUE=procrastinate). Run as many as you like, on any machine that
    reaches the store and the devices: each takes the next device of any job.

    A worker killed mid-push leaves that device with its old config or its new one; within
    push_lease seconds another worker (or any read of the job) ends that device "failed".

    Example: PROVISIONER_PUSH_QUEUE=procrastinate provisioner worker --concurrency 25
    """
    from provisioner.push.worker import run_worker, worker_name
    from provisioner.render.engine import Renderer

    inv = _inventory()
    width = max(1, concurrency or inv.settings.push_concurrency)
    name = name or worker_name()
    if not quiet:
        err.print(f"worker {name}: up to {width} pushes at once; Ctrl-C stops", markup=False)
    run_worker(inv, Renderer(inv.settings, inv), concurrency=width, name=name)
