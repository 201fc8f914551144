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
    from rich.progress import Progress
    from rich.table import Table

    from provisioner.push.results import JobOptions

TargetsOpt = Annotated[
    Path | None,
    typer.Option("--targets", help="YAML/JSON file: device id -> HOST:PORT (lab up writes one)."),
]
TargetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--target",
        metavar="DEVICE_ID=HOST:PORT",
        help="Where a device answers (repeatable; wins over --targets).",
    ),
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


def _progress() -> Progress:  # rich loads when a push runs, not for --help
    """The push's progress bar on stderr, gone when the push ends (the summary stays)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )


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
    what: Annotated[
        str, typer.Argument(help="Order id (every pushed device), a device's MAC or its id.")
    ],
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

    Examples:

      provisioner push WT-2026-000104 --targets lab-targets.yaml --dry-run

      provisioner push sw-catania --target sw-catania=192.168.1.250:161
    """
    from provisioner.errors import ProvisionerError
    from provisioner.push.results import JobOptions
    from provisioner.push.runner import push_many
    from provisioner.push.targets import device_keys

    inv = _inventory()
    renderer = _renderer(inv)
    try:
        keys = device_keys(inv, renderer, what)
    except ProvisionerError:
        # Neither an order nor a MAC: a device id, as --target names devices.
        mac = inv.resolve_device(what)[2]
        keys = device_keys(inv, renderer, mac) if mac else []
    if not keys:
        raise PushFailed(f"{what}: no device that is configured by push")
    addresses = _targets(targets_file, target)
    jobs = [(k, addresses.get(k.device_id)) for k in keys]
    options = JobOptions(
        dry_run=dry_run,
        trust_on_first_use=trust_on_first_use,
        timeouts=_timeouts(connect_timeout, command_timeout),
    )
    lock = threading.Lock()
    if inv.settings.push_queue == "procrastinate":
        job_id, results = _on_the_queue(inv, jobs, options)
        _finish(what, job_id, results, dry_run)
        return
    with _progress() as progress:
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
            on_step=on_step,
            on_done=on_done,
            **options,
        )
    _finish(what, job_id, results, dry_run)


def _finish(what: str, job_id: str, results: list[Any], dry_run: bool) -> None:
    out.print(_table(results, f"push {what} (job {job_id}{', dry-run' if dry_run else ''})"))
    _show_details(results, dry_run)
    if any(r.failed for r in results):
        raise typer.Exit(1)


def _on_the_queue(inv: Any, jobs: list[Any], options: JobOptions) -> tuple[str, list[Any]]:
    """Enqueue the push for the workers and follow it from the store's events."""
    import time

    from provisioner.push import queue

    job_id = queue.create_job(inv, jobs[0][0].order_id, jobs, **options)
    err.print(f"push job {job_id} queued for the workers (provisioner worker)", markup=False)
    seen = 0
    with _progress() as progress:
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

    # A device id (as --target names devices) works as well as a MAC.
    mac = inv.resolve_device(mac)[2] or mac
    keys = device_keys(inv, renderer, mac)
    if len(keys) != 1 or keys[0].order_id == mac:
        raise PushFailed(f"{mac}: give the MAC of one pushed device (switch or IAD)")
    return keys[0]


@app.command()
@handles_errors
def backups(
    mac: Annotated[str, typer.Argument(help="MAC or device id of a pushed device.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")] = False,
) -> None:
    """List the stored config backups of a device (newest last). Times are local.

    Examples:

      provisioner backups b0:c5:54:10:00:01

      provisioner backups sw-catania --json
    """
    from zoneinfo import ZoneInfo

    from rich.table import Table

    from provisioner.push.backups import list_backups

    inv = _inventory()
    key = _one_device(inv, _renderer(inv), mac)
    rows = list_backups(inv, key)
    if as_json:
        import json

        items = [
            {"version": b.version, "taken_at": b.taken_at.isoformat(), "method": b.method,
             "reason": b.reason, "sha256": b.sha256}
            for b in rows
        ]  # fmt: skip
        out.print(json.dumps(items, indent=2), markup=False)
        return
    try:
        zone = ZoneInfo(inv.settings.timezone)
    except (KeyError, ValueError):
        zone = ZoneInfo("UTC")
    table = Table(title=f"backups of {key}")
    for col in ("version", "taken at", "method", "reason", "sha256"):
        table.add_column(col)
    for b in rows:
        table.add_row(
            str(b.version),
            f"{b.taken_at.astimezone(zone):%Y-%m-%d %H:%M:%S}",
            b.method,
            b.reason,
            b.sha256[:16],
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
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask before rolling back.")
    ] = False,
) -> None:
    """Push a stored backup back to the device (what it has now is backed up first).

    Says which backup it is (when taken, why, how long) and asks first, unless --yes or
    --dry-run. Audited as a rollback.

    Examples:

      provisioner rollback sw-catania --to 1 --target sw-catania=10.0.0.2:161

      provisioner rollback b0:c5:54:10:00:01 --to 2 --targets lab-targets.yaml --yes
    """
    from provisioner.push.backups import list_backups, read_backup
    from provisioner.push.job import rollback_device

    inv = _inventory()
    renderer = _renderer(inv)
    key = _one_device(inv, renderer, mac)
    stored = list_backups(inv, key)
    versions = [b.version for b in stored]
    if not stored:
        raise PushFailed(f"{key}: no backup stored (push takes one before every change)")
    if to is not None and to not in versions:
        raise PushFailed(
            f"{key}: no version {to} stored (versions: {', '.join(map(str, versions))})"
        )
    address = _targets(targets_file, target).get(key.device_id)
    if address is None:
        raise PushFailed(f"{key}: no address (give --target {key.device_id}=HOST:PORT)")
    chosen = next(b for b in stored if b.version == (to if to is not None else versions[-1]))
    text = read_backup(inv, key, chosen.version).text
    lines = len([ln for ln in text.splitlines() if ln.strip()])
    what = (
        f"{key}: backup {chosen.version} taken {chosen.taken_at:%Y-%m-%d %H:%M} UTC "
        f"({chosen.reason}, {chosen.method}, {lines} lines"
        + (": EMPTY, a factory config" if lines == 0 else "")
        + ")"
    )
    err.print(what, markup=False)
    if not dry_run and not yes:
        import sys

        if not sys.stdin.isatty() and not _stdin_has_data():
            raise PushFailed(f"{key}: rolling back needs a yes: answer the question or give --yes")
        if not typer.confirm("Roll the device back to it?", default=False, err=True):
            raise PushFailed(f"{key}: not rolled back")
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
    if not dry_run:
        inv.note(
            audit_actor(),
            "rollback",
            order_id=key.order_id,
            device=key.device_id,
            version=chosen.version,
            result=res.result,
            job=res.job_id,
        )
    if res.failed:
        raise typer.Exit(1)


def audit_actor() -> str:
    from provisioner.store.audit import default_actor

    return default_actor()


def _stdin_has_data() -> bool:
    """Whether an answer was piped in (a script's "yes"): stdin is readable now."""
    import select
    import sys

    try:
        return bool(select.select([sys.stdin], [], [], 0)[0])
    except (OSError, ValueError):
        return True  # not a real file (a test runner's input): let confirm read it
