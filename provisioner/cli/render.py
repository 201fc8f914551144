"""``provisioner render`` and ``provisioner dhcp``: device files as the devices get them.

Importing this module registers the commands on :data:`provisioner.cli.app.app`. Secrets are
masked (``********``) unless ``--show-secrets``; files written with secrets shown are 0600.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from provisioner.cli.app import _inventory, app, err, handles_errors, out
from provisioner.errors import DeviceUnknown, ProvisionerError

if TYPE_CHECKING:
    from provisioner.render.engine import RenderedFile, Renderer


def _renderer() -> Renderer:
    from provisioner.render.engine import Renderer

    inv = _inventory()
    return Renderer(inv.settings, inv)


def _how(f: RenderedFile) -> str:
    return "fetched (TFTP/HTTP)" if f.served else "pushed / shown"


def _write(path: Path, data: bytes, private: bool) -> None:
    # With secrets shown the file is created 0600 from the start: never readable by others.
    mode = 0o600 if private else 0o644
    if path.exists():
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


@app.command("render")
@handles_errors
def render(
    mac: Annotated[
        str | None,
        typer.Argument(help="MAC of the device (any usual spelling), or a Mini ONT's serial."),
    ] = None,
    filename: Annotated[
        str | None, typer.Argument(help="One of the device's files (default: list them).")
    ] = None,
    order: Annotated[
        str | None, typer.Option("--order", help="Render every file of this order.")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Folder for the files of --order.")
    ] = None,
    show_secrets: Annotated[
        bool, typer.Option("--show-secrets", help="Print secrets instead of ********.")
    ] = False,
) -> None:
    """Show a device's files exactly as the device gets them, or write an order's files.

    With a MAC: the device's only file is printed; with several, they are listed and
    FILENAME picks one. With --order and --out: every file of the order is written to the
    folder. Secrets are replaced by ******** unless --show-secrets (files then 0600).

    \b
    Examples:
      provisioner render 00:80:f0:00:00:01
      provisioner render 00:80:f0:00:00:01 0080f0000001.cfg
      provisioner render ALCL1A2B3C4D
      provisioner render --order WT-2026-000123 --out /tmp/wt123
    """
    from rich.table import Table

    r = _renderer()
    if order is not None:
        if mac is not None:
            raise ProvisionerError("render: give a MAC or --order, not both")
        if out_dir is None:
            raise ProvisionerError(f"render --order {order}: say where with --out DIR")
        files = r.render_order(order)
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, f in sorted(files.items()):
            data = f.data if show_secrets else f.masked()
            _write(out_dir / name, data, private=show_secrets)
        for note in r.unrendered(order):
            err.print(f"note: {note}", markup=False)
        masked = "" if show_secrets else " (secrets masked)"
        out.print(f"{order}: wrote {len(files)} files to {out_dir}{masked}", markup=False)
        return
    if mac is None:
        raise ProvisionerError("render: give a device MAC, or --order ORDER --out DIR")
    key, files = r.device_files(mac)
    if filename is None and len(files) == 1:
        filename = next(iter(files))
    if filename is None:
        table = Table("file", "how", "format", "bytes", title=f"{key} ({key.model})")
        for name, f in sorted(files.items()):
            table.add_row(name, _how(f), f.format, str(len(f.data)))
        out.print(table)
        if not files:
            out.print(f"{key}: no files (model {key.model})", markup=False)
        return
    if filename not in files:
        known = ", ".join(sorted(files)) or "none"
        raise DeviceUnknown(f"{key}: no file {filename} (its files: {known})")
    f = files[filename]
    sys.stdout.buffer.write(f.data if show_secrets else f.masked())
    sys.stdout.flush()


@app.command("dhcp")
@handles_errors
def dhcp(
    order: Annotated[str, typer.Option("--order", help="Order id.")],
    site: Annotated[str, typer.Option("--site", help="Site id of the order.")],
    fmt: Annotated[
        str, typer.Option("--format", help="dnsmasq or kea (an ISC Kea Dhcp4 snippet).")
    ] = "dnsmasq",
) -> None:
    """Print a DHCP snippet giving option 66 (our server) to a site's phones only.

    For customers who run their own DHCP server instead of the IAD's. Lists the phones and
    DECT bases bound to a MAC; re-run it after binding more.

    \b
    Examples:
      provisioner dhcp --order WT-2026-000123 --site milano --format dnsmasq
      provisioner dhcp --order WT-2026-000123 --site roma --format kea
    """
    from provisioner.render.dhcp import dhcp_snippet

    sys.stdout.write(dhcp_snippet(_renderer(), order, site, fmt))


@app.command()
@handles_errors
def republish(
    order: Annotated[
        list[str] | None, typer.Argument(help="Order ids (default: with --all, every one).")
    ] = None,
    all_orders: Annotated[bool, typer.Option("--all", help="Every active order.")] = False,
) -> None:
    """Render and publish device files again, after a template or model change.

    Every write publishes the files it changes by itself; this is for changes that are not
    writes to an order (an upgraded template, a new driver, an operator's override folder).
    Files that come out the same are left alone; every server serves the new ones within a
    second.

    Examples:
      provisioner republish --all
      provisioner republish WT-2026-000123
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    if bool(order) == all_orders:
        raise ProvisionerError("give order ids, or --all for every active order")
    from provisioner.orders.reads import OrderQuery

    inv = _inventory()
    active = OrderQuery(state="active")
    wanted = order or inv.read_orders(active, lambda o: o.order_id).items
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("republishing", total=len(wanted))
        done = inv.republish(wanted, progress=lambda _order, _d: progress.advance(task))
    out.print(
        f"{len(wanted)} orders: {done.written} files written, {done.deleted} deleted",
        markup=False,
    )
