"""Orders: validate and apply documents, list, show, export; bind, unbind, swap, cancel."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from provisioner.cli.app import _inventory, app, err, handles_errors, out
from provisioner.errors import ProvisionerError

JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print JSON (for scripts) instead of tables.")
]

PathsArg = Annotated[
    list[Path], typer.Argument(help="Order files (YAML) or folders of them.", show_default=False)
]


@app.command()
@handles_errors
def validate(paths: PathsArg) -> None:
    """Check order documents against the offer's rules; never touches the store.

    Prints every violation, one per line (file:line: order: path: what (limit)).
    Exit status 0 when all are valid, 1 otherwise.

    Example: provisioner validate inventory/orders/
    """
    from provisioner.documents.validate import check_paths

    results = check_paths(paths)
    if not results:
        err.print(f"error: no order files (*.yaml) in {' '.join(map(str, paths))}")
        raise typer.Exit(1)
    bad = 0
    for r in results:
        if r.ok:
            continue
        bad += 1
        for line in r.lines():
            err.print(line, markup=False)
    out.print(f"{len(results) - bad} valid, {bad} refused ({len(results)} files)")
    if bad:
        raise typer.Exit(1)


@app.command()
@handles_errors
def apply(
    paths: PathsArg,
    actor: Annotated[str, typer.Option(help="Who is applying (for the audit log).")] = "",
    rename_customer: Annotated[
        bool,
        typer.Option(
            "--rename-customer",
            help="Let an order rename a customer (same VAT) that other orders own.",
        ),
    ] = False,
) -> None:
    """Validate, then write each order into the store in its own transaction.

    Re-applying an unchanged file changes nothing and says so. A refused order leaves the
    store exactly as it was; the other files are still applied. Exit status 1 if any refused.
    A customer's name changes only through its own orders, unless --rename-customer.

    Example: provisioner apply inventory/orders/
    """
    from provisioner.documents.validate import check_paths

    results = check_paths(paths)
    if not results:
        err.print(f"error: no order files (*.yaml) in {' '.join(map(str, paths))}")
        raise typer.Exit(1)
    inv = _inventory()
    refused = 0
    for r in results:
        if not r.ok or r.document is None:
            refused += 1
            for line in r.lines():
                err.print(line, markup=False)
            inv.record_refusal(r.order_id, r.file, r.lines(), actor)
            out.print(f"{r.file}: {r.order_id or '?'}: refused", markup=False)
            continue
        try:
            res = inv.apply(r.document, source=r.file, actor=actor, rename_customer=rename_customer)
        except ProvisionerError as exc:
            refused += 1
            for line in str(exc).splitlines():
                err.print(f"{r.file}: {line}", markup=False)
            inv.record_refusal(r.order_id, r.file, str(exc).splitlines(), actor)
            out.print(f"{r.file}: {r.order_id}: refused", markup=False)
            continue
        if res.status == "unchanged":
            out.print(f"{r.file}: {res.order_id}: unchanged (no change)", markup=False)
        else:
            # A new order's one change is its creation: the status line says it already.
            news = [c for c in res.changes if c != f"order {res.order_id} created"]
            counted = f" ({len(news)} changes)" if news else ""
            out.print(f"{r.file}: {res.order_id}: {res.status}{counted}", markup=False)
            for change in news[:50]:
                out.print(f"  {change}", markup=False)
    if refused:
        raise typer.Exit(1)


# ---------------------------------------------------------------------- read


def _order_row(o: Any) -> tuple[str, ...]:
    bound = sum(1 for d in o.devices if d.mac or d.serial)
    return (
        o.order_id,
        o.customer.name,
        o.customer.vat,
        o.plan,
        o.state,
        str(len(o.sites)),
        str(len(o.extensions)),
        str(len(o.devices)),
        f"{bound}/{len(o.devices)}",
    )


@app.command()
@handles_errors
def orders(as_json: JsonOpt = False) -> None:
    """List the orders in the store.

    Examples:

      provisioner orders

      provisioner orders --json
    """
    from rich.table import Table

    from provisioner.orders.reads import OrderQuery

    if as_json:
        import json

        from provisioner.api import views

        page = _inventory().read_orders(OrderQuery(), views.order_summary)
        items = [o.model_dump(mode="json") for o in page.items]
        out.print(json.dumps(items, indent=2, ensure_ascii=False), markup=False)
        return
    rows = _inventory().read_orders(OrderQuery(), _order_row).items
    if not rows:
        out.print("no orders in the store (try: provisioner apply inventory/orders/)")
        return
    table = Table("order", "customer", "VAT", "plan", "state", "sites", "ext.", "devices", "bound")
    for row in rows:
        table.add_row(*row)
    out.print(table)


def _order_tables(o: Any, states: dict[str, str]) -> list[Any]:
    """What ``show`` prints of an order: a headline and three tables."""
    from rich.table import Table

    from provisioner.catalog import MODELS

    head = (
        f"[bold]{o.order_id}[/] {o.customer.name} ({o.customer.vat}) plan {o.plan}, "
        f"{o.lines} lines, {o.state}"
    )
    sites = Table("site", "connectivity", "address", title="Sites")
    for s in o.sites:
        sites.add_row(s.site_id, s.connectivity, s.address)
    terms: dict[int, str] = {}
    for d in o.devices:
        for t in d.terminals:
            terms[t.extension_pk] = d.device_id if t.slot == 0 else f"{d.device_id} slot {t.slot}"
    exts = Table("short", "number", "type", "name", "site", "terminal", title="Extensions")
    for e in o.extensions:
        exts.add_row(str(e.short), e.number, e.type, e.name, e.site.site_id, terms.get(e.id, "-"))
    devs = Table(
        "device", "model", "site", "MAC / serial", "switch port", "extensions", "state",
        title="Devices",
    )  # fmt: skip
    for d in o.devices:
        devs.add_row(
            d.device_id,
            MODELS[d.model].title,
            d.site.site_id if d.site else "-",
            d.mac or d.serial or "-",
            f"{d.switch.device_id}:{d.port}" if d.switch else "-",
            ",".join(str(t.extension.short) for t in d.terminals) or "-",
            states.get(d.device_id, "-"),
        )
    return [head, sites, exts, devs]


@app.command()
@handles_errors
def show(order: Annotated[str, typer.Argument(help="Order id.")], as_json: JsonOpt = False) -> None:
    """Show one order: sites, extensions and devices with their state (the words of
    provisioner status). No secrets.

    Examples:

      provisioner show WT-2026-000123

      provisioner show WT-2026-000123 --json
    """
    if as_json:
        import json

        from provisioner.api import views

        body = _inventory().read_order(order, views.order_public)
        out.print(json.dumps(body.model_dump(mode="json"), indent=2, ensure_ascii=False),
                  markup=False)  # fmt: skip
        return
    inv = _inventory()
    states = {d.device_id: d.state.value for d in inv.read_status(order).devices}
    for part in inv.read_order(order, lambda o: _order_tables(o, states)):
        out.print(part)


@app.command()
@handles_errors
def export(
    order: Annotated[str, typer.Argument(help="Order id.")],
    output: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write to this file instead of stdout.")
    ] = None,
) -> None:
    """Print an order as a YAML document that re-applies to the same state (no secrets).

    Example: provisioner export WT-2026-000123 --out WT-2026-000123.yaml
    """
    import yaml

    doc = _inventory().export(order)
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)
    if output:
        output.write_text(text)
        err.print(f"wrote {output}")
    else:
        sys.stdout.write(text)


# ---------------------------------------------------------------------- bind


@app.command()
@handles_errors
def bind(
    order: Annotated[str, typer.Argument(help="Order id.")],
    mac: Annotated[str | None, typer.Option(help="MAC of the box in hand.")] = None,
    serial: Annotated[str | None, typer.Option(help="Serial of the box (Mini ONT).")] = None,
    extension: Annotated[
        int | None, typer.Option(help="Short number of the extension the terminal serves.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="Device id in the order.")] = None,
    model: Annotated[
        str | None,
        typer.Option(help="Phone model, when the extension has no terminal in the order yet."),
    ] = None,
    actor: Annotated[str, typer.Option(help="Who binds (for the audit log).")] = "",
) -> None:
    """Tie the box in hand to a planned device of an order.

    Refused past the offer's limits (one terminal per extension, no more terminals than
    Standard + Premium extensions), for a MAC already in use, or a device already bound.

    Examples:
      provisioner bind WT-2026-000123 --mac 00:80:f0:00:00:09 --extension 209
      provisioner bind WT-2026-000102 --mac 00:1d:73:b2:00:01 --device iad-torino
      provisioner bind WT-2026-000104 --mac 00:80:f0:20:00:05 --extension 204 \\
          --model alcatel-temporis-ip150
    """
    inv = _inventory()
    done = inv.bind(
        order,
        mac=mac,
        serial=serial,
        extension=extension,
        device_id=device,
        model=model,
        actor=actor,
    )
    out.print(f"{order}: {done.device_id} bound to {mac or serial}", markup=False)


@app.command()
@handles_errors
def unbind(
    order: Annotated[str, typer.Argument(help="Order id.")],
    mac: Annotated[str | None, typer.Option(help="MAC of the bound box.")] = None,
    device: Annotated[str | None, typer.Option(help="Device id in the order.")] = None,
    actor: Annotated[str, typer.Option(help="Who unbinds (for the audit log).")] = "",
) -> None:
    """Make a bound device planned again (for a wrong box or a swap).

    Example: provisioner unbind WT-2026-000123 --mac 00:80:f0:00:00:09
    """
    inv = _inventory()
    done = inv.unbind(order, mac=mac, device_id=device, actor=actor)
    out.print(f"{order}: {done.device_id} unbound", markup=False)


@app.command()
@handles_errors
def swap(
    order: Annotated[str, typer.Argument(help="Order id.")],
    old: Annotated[str, typer.Option("--old", help="MAC of the box being replaced.")],
    new: Annotated[str, typer.Option("--new", help="MAC of the replacement box.")],
    actor: Annotated[str, typer.Option(help="Who swaps (for the audit log).")] = "",
) -> None:
    """Replace a bound box with a new one (RMA): the device keeps its extension, port,
    secrets and enrollment window; the old box can fetch nothing more, the new one fetches
    inside the same window without a re-arm.

    Example:
      provisioner swap WT-2026-000123 --old 00:80:f0:00:00:01 --new 00:80:f0:00:00:99
    """
    inv = _inventory()
    done = inv.swap(order, old, new, actor=actor)
    out.print(f"{order}: {done.device_id} swapped to {new}", markup=False)


@app.command()
@handles_errors
def cancel(
    order: Annotated[str, typer.Argument(help="Order id.")],
    actor: Annotated[str, typer.Option(help="Who cancels (for the audit log).")] = "",
) -> None:
    """Cancel an order: its devices get no file from then on; the rows stay for audit.

    Example:
      provisioner cancel WT-2026-000123
    """
    inv = _inventory()
    done = inv.cancel(order, actor=actor)
    out.print(
        f"{order}: cancelled" if done.cancelled else f"{order}: was already cancelled",
        markup=False,
    )
