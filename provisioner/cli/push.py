"""``provisioner push``, ``backups`` and ``rollback``: configure the devices that do not pull
their files (the PoE switch over SNMP, the IAD over SSH)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from provisioner.cli.app import _inventory, app, err, handles_errors, out
from provisioner.errors import PushFailed

if TYPE_CHECKING:
    from rich.table import Table

TargetsOpt = Annotated[
    Path | None,
    typer.Option("--targets", help="YAML/JSON file: device id -> HOST:PORT (lab up writes one)."),
]
TargetOpt = Annotated[
    list[str] | None,
    typer.Option("--target", help="DEVICE_ID=HOST:PORT (repeatable; wins over --targets)."),
]
TofuOpt = Annotated[
    bool,
    typer.Option(
        "--trust-on-first-use", help="Accept and pin an IAD's SSH host key seen for the first time."
    ),
]
ConnectOpt = Annotated[float, typer.Option("--connect-timeout", help="Seconds to connect.")]
CommandOpt = Annotated[
    float, typer.Option("--command-timeout", help="Seconds per SSH command / SNMP request x3.")
]


def _targets(targets_file: Path | None, target: list[str] | None) -> dict[str, Any]:
    from provisioner.push.targets import load_targets, parse_target

    found: dict[str, Any] = dict(load_targets(targets_file)) if targets_file else {}
    for item in target or []:
        device_id, address = parse_target(item)
        found[device_id] = address
    return found


def _timeouts(connect: float, command: float) -> Any:
    from provisioner.push.targets import Timeouts

    if connect <= 0 or command <= 0:
        raise PushFailed("timeouts must be positive")
    return Timeouts(connect=connect, command=command, snmp=min(command, 2.0))


def _renderer(inv: Any) -> Any:
    from provisioner.render.engine import Renderer

    return Renderer(inv.settings, inv)


def _table(results: list[Any], title: str) -> Table:
    from rich.table import Table

    table = Table(title=title)
    for col in ("device", "changed", "diff lines", "result", "time"):
        table.add_column(col, justify="right" if col in ("diff lines", "time") else "left")
    for r in results:
        style = {"ok": "green", "no change": "", "dry-run": "cyan"}.get(r.result, "red")
        table.add_row(
            r.device,
            "yes" if r.changed else "no",
            str(r.diff_lines),
            f"[{style}]{r.result}[/]" if style else r.result,
            f"{r.seconds:.1f} s",
        )
    return table


def _hint(res: Any) -> str:
    """What the user can do about a failure, in this CLI's words (the error has none).

    By the error's type (its name, when the result was read back from the store)."""
    kind, device_id = res.error_kind, res.device.rpartition("/")[2]
    if kind == "NoAddress":
        return f" (give --target {device_id}=HOST:PORT or --targets FILE)"
    if kind == "HostKeyUnknown":
        return " (--trust-on-first-use accepts and pins the key it shows)"
    if kind == "RollbackIncomplete":
        return f" (provisioner rollback <its MAC> --to {res.backup_version} --target ...)"
    return ""


def _show_details(results: list[Any], dry_run: bool) -> None:
    for r in results:
        if r.error:
            err.print(f"{r.device}: {r.error}{_hint(r)}", markup=False)
        if dry_run and r.diff:
            out.print(f"--- {r.device} (secrets masked)", markup=False)
            out.print(r.diff, markup=False)


@app.command()
@handles_errors
def push(
    what: Annotated[str, typer.Argument(help="Order id (every pushed device) or a device MAC.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Read, back up and diff; change nothing.")
    ] = False,
    concurrency: Annotated[
        int | None,
        typer.Option("--concurrency", help="Devices at once (setting push_concurrency)."),
    ] = None,
    targets_file: TargetsOpt = None,
    target: TargetOpt = None,
    trust_on_first_use: TofuOpt = False,
    connect_timeout: ConnectOpt = 10.0,
    command_timeout: CommandOpt = 30.0,
) -> None:
    """Push the rendered config to the order's switch (SNMP) and IAD (SSH).

    Every device is backed up first; a failed commit is rolled back to the backup. The
    store holds no management addresses: give them with --target or --targets. Exit
    status 1 if any device failed or was rolled back.

    Example: provisioner push WT-2026-000104 --targets lab-targets.yaml --dry-run
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from provisioner.push.runner import push_many
    from provisioner.push.targets import device_keys

    inv = _inventory()
    renderer = _renderer(inv)
    keys = device_keys(inv, renderer, what)
    if not keys:
        raise PushFailed(f"{what}: no device that is configured by push")
    addresses = _targets(targets_file, target)
    jobs = [(k, addresses.get(k.device_id)) for k in keys]
    timeouts = _timeouts(connect_timeout, command_timeout)
    lock = threading.Lock()
    if inv.settings.push_queue == "procrastinate":
        job_id, results = _on_the_queue(inv, jobs, dry_run, trust_on_first_use, timeouts)
        _finish(what, job_id, results, dry_run)
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task("push", total=len(jobs))

        def on_step(device: str, step: str) -> None:
            with lock:
                progress.update(task, description=f"{device}: {step}")

        def on_done(res: Any) -> None:
            with lock:
                progress.advance(task)

        job_id, results = push_many(
            inv,
            renderer,
            jobs,
            concurrency=concurrency,
            dry_run=dry_run,
            trust_on_first_use=trust_on_first_use,
            timeouts=timeouts,
            on_step=on_step,
            on_done=on_done,
        )
    _finish(what, job_id, results, dry_run)


def _finish(what: str, job_id: str, results: list[Any], dry_run: bool) -> None:
    out.print(_table(results, f"push {what} (job {job_id}{', dry-run' if dry_run else ''})"))
    _show_details(results, dry_run)
    if any(r.failed for r in results):
        raise typer.Exit(1)


def _on_the_queue(
    inv: Any, jobs: list[Any], dry_run: bool, trust_on_first_use: bool, timeouts: Any
) -> tuple[str, list[Any]]:
    """Enqueue the push for the workers and follow it from the store's events."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from provisioner.push import queue

    job_id = queue.create_job(
        inv,
        jobs[0][0].order_id,
        jobs,
        dry_run=dry_run,
        trust_on_first_use=trust_on_first_use,
        timeouts=timeouts,
    )
    err.print(f"push job {job_id} queued for the workers (provisioner worker)", markup=False)
    seen = 0
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task("queued", total=len(jobs))
        while True:
            items, finished = queue.events_after(inv, job_id, seen)
            for seen, kind, data in items:  # noqa: B007 - seen is where the next read starts
                if kind == "step":
                    progress.update(task, description=f"{data['device']}: {data['step']}")
                elif kind == "result":
                    progress.advance(task)
            if finished:
                break
            time.sleep(0.2)
    return job_id, queue.job_results(inv, job_id)


def _one_device(inv: Any, renderer: Any, mac: str) -> Any:
    from provisioner.push.targets import device_keys

    keys = device_keys(inv, renderer, mac)
    if len(keys) != 1 or keys[0].order_id == mac:
        raise PushFailed(f"{mac}: give the MAC of one pushed device (switch or IAD)")
    return keys[0]


@app.command()
@handles_errors
def backups(
    mac: Annotated[str, typer.Argument(help="MAC of a pushed device.")],
) -> None:
    """List the stored config backups of a device (newest last).

    Example: provisioner backups b0:c5:54:10:00:01
    """
    from rich.table import Table

    from provisioner.push.backups import list_backups

    inv = _inventory()
    key = _one_device(inv, _renderer(inv), mac)
    rows = list_backups(inv, key)
    table = Table(title=f"backups of {key}")
    for col in ("version", "taken at", "method", "reason", "sha256"):
        table.add_column(col)
    for b in rows:
        table.add_row(
            str(b.version), f"{b.taken_at:%Y-%m-%d %H:%M:%S}", b.method, b.reason, b.sha256[:16]
        )
    out.print(table)
    if not rows:
        out.print("no backups yet (push takes one before every change)")


@app.command()
@handles_errors
def rollback(
    mac: Annotated[str, typer.Argument(help="MAC of a pushed device.")],
    to: Annotated[
        int | None, typer.Option("--to", help="Backup version (default: newest).")
    ] = None,
    targets_file: TargetsOpt = None,
    target: TargetOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show the diff.")] = False,
    trust_on_first_use: TofuOpt = False,
    connect_timeout: ConnectOpt = 10.0,
    command_timeout: CommandOpt = 30.0,
) -> None:
    """Push a stored backup back to the device (what it has now is backed up first).

    Example: provisioner rollback b0:c5:54:10:00:01 --to 1 --target sw-catania=10.0.0.2:161
    """
    from provisioner.push.job import rollback_device

    inv = _inventory()
    renderer = _renderer(inv)
    key = _one_device(inv, renderer, mac)
    address = _targets(targets_file, target).get(key.device_id)
    if address is None:
        raise PushFailed(f"{key}: no address (give --target {key.device_id}=HOST:PORT)")
    res = rollback_device(
        inv,
        renderer,
        key,
        address,
        version=to,
        dry_run=dry_run,
        trust_on_first_use=trust_on_first_use,
        timeouts=_timeouts(connect_timeout, command_timeout),
    )
    out.print(_table([res], f"rollback {key}"))
    _show_details([res], dry_run)
    if res.failed:
        raise typer.Exit(1)
