"""``provisioner pbx export``, ``rotate`` and ``resync``: the voice side of provisioning."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from provisioner.cli.app import _inventory, app, handles_errors, out
from provisioner.errors import ProvisionerError

pbx_app = typer.Typer(
    help="What the voice platform needs: the registrar's subscriber table.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(pbx_app, name="pbx")


@pbx_app.command("export")
@handles_errors
def pbx_export(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the tables into.")],
    order: Annotated[
        list[str] | None, typer.Option("--order", help="Order id (repeatable).")
    ] = None,
    all_orders: Annotated[bool, typer.Option("--all", help="Every active order.")] = False,
    fmt: Annotated[str, typer.Option("--format", help="Registrar: kamailio (db_text).")] = (
        "kamailio"
    ),
) -> None:
    """Write the registrar's subscriber table for every extension (passwords included).

    Kamailio db_text: OUT/version and OUT/subscriber, mode 0600. Username: the extension's
    E.164 number (the files' UserName/AuthName). Domain: the registrar host (setting
    sip_registrar; phone and DECT files name it and have no domain key, so phones register
    as number@registrar) and the SIP domain (setting sip_domain; the IAD's analog lines
    register there): one row per extension and domain. Kamailio reads db_text once at
    start, unless db_text runs in non-caching mode (modparam db_mode 1: it reads a table
    again when its file changed; README "Resync"): else restart it after an export.

    Example: provisioner pbx export --all --format kamailio --out /etc/kamailio/dbtext
    """
    from provisioner.render.pbx import (
        FORMATS,
        ExportRefused,
        sip_domains,
        subscribers,
        write_kamailio,
    )

    if fmt not in FORMATS:
        raise ExportRefused(f"--format {fmt}: unknown (known: {', '.join(FORMATS)})")
    if bool(order) == all_orders:
        raise ExportRefused("give --order ORDER (repeatable) or --all")
    inv = _inventory()
    subs = subscribers(inv, None if all_orders else order)
    paths = write_kamailio(subs, out_dir)
    orders = len({s.order_id for s in subs})
    extensions = len({(s.order_id, s.short) for s in subs})
    domains = ", ".join(sip_domains(inv.settings))
    out.print(
        f"{extensions} extensions of {orders} orders ({len(subs)} rows, domains {domains}) "
        "written to " + ", ".join(str(p) for p in paths),
        markup=False,
    )


@app.command()
@handles_errors
def rotate(
    order: Annotated[str, typer.Argument(help="Order id.")],
    extension: Annotated[
        list[int] | None, typer.Option("--extension", help="Short number (repeatable).")
    ] = None,
    all_extensions: Annotated[bool, typer.Option("--all", help="Every extension.")] = False,
    actor: Annotated[str, typer.Option(help="Who rotates (for the audit log).")] = "",
) -> None:
    """Give extensions a new SIP password (never printed).

    Phones get it at their next fetch (provisioner resync, or the setting
    resync_after_publish, makes that now); the registrar with the next pbx export.

    Example: provisioner rotate WT-2026-000104 --extension 202
    """
    if bool(extension) == all_extensions:
        raise ProvisionerError(f"order {order}: give --extension SHORT (repeatable) or --all")
    done = _inventory().rotate(order, None if all_extensions else extension, actor=actor)
    shorts = ", ".join(map(str, done.extensions))
    out.print(f"{order}: new SIP password for extension {shorts}", markup=False)
    if done.from_document:
        given = ", ".join(map(str, done.from_document))
        out.print(
            f"note: the order document gives the password of {given}; "
            "re-applying it restores that value",
            markup=False,
        )


@app.command()
@handles_errors
def resync(
    target: Annotated[str, typer.Argument(help="Order id, or a device's MAC.")],
    actor: Annotated[str, typer.Option(help="Who asks (for the audit log).")] = "",
) -> None:
    """Tell devices to re-fetch their files now, without a reboot (SIP NOTIFY check-sync).

    The registrar (settings sip_registrar, sip_registrar_port) relays one NOTIFY to each
    bound desk phone and DECT base of the order (or to the one device) at the contact it
    registered. One line per device: delivered (the device took it), not-registered (the
    registrar has no contact for it), refused, timeout or failed. Exit status 1 unless every
    device took it. Audited (device.resync).

    Example: provisioner resync WT-2026-000104
             provisioner resync 00:80:f0:20:10:01
    """
    from provisioner.voice.resync import Resyncer

    done = Resyncer(_inventory()).resync(target, actor=actor)
    for r in done:
        out.print(r.line(), markup=False)
    if not all(r.ok for r in done):
        raise typer.Exit(1)
