"""``provisioner pbx export``, ``rotate`` and ``lab phones``: the voice side of provisioning."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from provisioner.cli.app import _inventory, app, handles_errors, import_lab, out
from provisioner.errors import ProvisionerError

pbx_app = typer.Typer(
    help="What the voice platform needs: the registrar's subscriber table.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(pbx_app, name="pbx")


def _lab_group() -> typer.Typer:
    """The ``lab`` group: another module's, when it registered one first, else ours."""
    for group in app.registered_groups:
        if group.name == "lab" and group.typer_instance is not None:
            return group.typer_instance
    lab = typer.Typer(
        help="Simulated devices on loopback (a demo, and what the end-to-end tests run).",
        no_args_is_help=True,
        rich_markup_mode=None,
    )
    app.add_typer(lab, name="lab")
    return lab


lab_app = _lab_group()


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
    start: restart it after an export.

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

    Phones get it at their next fetch; the registrar after the next pbx export and restart.

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


@lab_app.command("phones")
@handles_errors
def lab_phones(
    order: Annotated[str, typer.Option("--order", help="Order id.")],
    registrar: Annotated[
        str | None,
        typer.Option(help="HOST:PORT to send REGISTER to (default: what each file says)."),
    ] = None,
    server: Annotated[str, typer.Option(help="Our provisioning server's address.")] = "127.0.0.1",
    tftp_port: Annotated[
        int | None, typer.Option(help="Its TFTP port (setting tftp_port).")
    ] = None,
    http_port: Annotated[
        int | None, typer.Option(help="Its HTTP port (setting http_port).")
    ] = None,
    protocol: Annotated[str, typer.Option(help="First fetch over tftp or http.")] = "tftp",
    timeout: Annotated[float, typer.Option(help="Seconds per registration.")] = 5.0,
    with_registrar: Annotated[
        bool,
        typer.Option(
            "--with-registrar",
            help="Start a Kamailio with the store's subscribers on a free loopback port.",
        ),
    ] = False,
) -> None:
    """Boot every IP phone and DECT base of an order: fetch its file, register each account.

    The provisioning server (provisioner serve) must be running and the order armed
    (provisioner arm) for a first fetch. The registrar too, unless --with-registrar starts
    one (Kamailio, from pbx export) for this run. Exit status 1 unless every account got
    200 OK.

    Examples:
      provisioner lab phones --order WT-2026-000104 --registrar 127.0.0.1:5060
      provisioner lab phones --order WT-2026-000104 --with-registrar --tftp-port 1069
    """
    import tempfile

    if with_registrar and registrar:
        raise ProvisionerError("give --registrar or --with-registrar, not both")
    phones = import_lab("phones")
    inv = _inventory()
    s = inv.settings
    with contextlib.ExitStack() as stack:
        if with_registrar:
            from lab.sip import Kamailio, SipLabError
            from provisioner.render.pbx import subscribers, write_kamailio

            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lab-pbx-")))
            write_kamailio(subscribers(inv), tmp / "db")
            try:
                kam = stack.enter_context(Kamailio(tmp / "db", workdir=tmp))
            except SipLabError as exc:
                raise ProvisionerError(f"lab phones: {exc}") from None
            registrar = kam.address
            out.print(
                f"registrar: kamailio on {kam.address} (started in {kam.start_seconds:.3f} s)"
            )
        reports = phones.boot_order(
            inv,
            order,
            server=server,
            tftp_port=s.tftp_port if tftp_port is None else tftp_port,
            http_port=s.http_port if http_port is None else http_port,
            registrar=registrar,
            protocol=protocol,
            timeout=timeout,
        )
    table = Table(
        "device", "model", "MAC", "fetched", "sha256", "slot", "SIP user", "status", "seconds",
        title=order,
    )  # fmt: skip
    ok = True
    for r in reports:
        fetched = r.fetched_via or f"no ({r.error})"
        if not r.accounts:
            ok = False
            table.add_row(r.device_id, r.model, r.mac, fetched, r.sha256[:12] or "-",
                          "-", "-", "-", f"{r.seconds:.2f}")  # fmt: skip
        for a in r.accounts:
            ok = ok and a.status == 200
            table.add_row(r.device_id, r.model, r.mac, fetched, r.sha256[:12], str(a.slot),
                          a.user, a.outcome, f"{r.seconds:.2f}")  # fmt: skip
    out.print(table)
    if not ok:
        raise typer.Exit(1)
