"""``provisioner lab up`` and ``provisioner lab phones``: the lab's commands.

The product does not know the lab: this Typer app is registered as the entry point
``lab`` of the group ``provisioner.commands`` (pyproject.toml), which the ``provisioner``
command loads only when ``lab`` is named or the command list is shown. Like every command
module it imports typer and ``provisioner.cli.app`` only; the simulators (asyncssh,
snmpsim, httpx: the ``lab`` extra) load when a command runs.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Annotated

import typer

from provisioner.cli.app import handles_errors, orders_service, out
from provisioner.errors import ProvisionerError

app = typer.Typer(
    help="Simulated devices on loopback (a demo, and what the end-to-end tests run).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)


def _lab_module(command: str, name: str) -> ModuleType:
    """``provisioner_lab.<name>``, or one line saying which package of the extra is missing."""
    try:
        return importlib.import_module(f"provisioner_lab.{name}")
    except ModuleNotFoundError as exc:
        raise ProvisionerError(
            f"lab {command}: needs the lab extra (pip install 'provisioner[lab]'): "
            f"no module named {exc.name!r}"
        ) from None


@app.command("up")
@handles_errors
def up(
    order: Annotated[
        list[str] | None, typer.Option("--order", help="Order id (repeatable; default: all).")
    ] = None,
    targets_out: Annotated[
        Path, typer.Option("--targets-out", help="Where to write the targets file.")
    ] = Path("lab-targets.yaml"),
) -> None:
    """Start a simulated switch/IAD for every pushed device; run until Ctrl-C or SIGTERM.

    Prints each device's address and how to reach it, and writes a targets file for
    `provisioner push --targets`.

    Example: provisioner lab up --order WT-2026-000104 && provisioner push WT-2026-000104
    --targets lab-targets.yaml --trust-on-first-use
    """
    from provisioner.render.engine import Renderer

    lab_up = _lab_module("up", "up")
    inv = orders_service()
    renderer = Renderer(inv.settings, inv)
    if not order:
        from provisioner.orders.reads import OrderQuery

        order = inv.read_orders(OrderQuery(state="active"), lambda o: o.order_id).items
    workdir = inv.settings.data_dir / "lab"
    lab = lab_up.start_lab(inv, renderer, order, workdir, targets_file=targets_out)
    try:
        for d in lab.devices:
            out.print(f"{d.key} ({d.key.model}, {d.kind}) at {d.address}", markup=False)
            for line in d.how_to_reach():
                out.print(f"    {line}", markup=False)
        out.print(f"targets: {targets_out}  (provisioner push ORDER --targets {targets_out})")
        out.print("running; Ctrl-C stops every simulator")
        lab_up.wait_for_stop()
    finally:
        lab.stop()
    out.print("stopped")


@app.command("phones")
@handles_errors
def phones(
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
    import contextlib
    import tempfile

    from rich.table import Table

    if with_registrar and registrar:
        raise ProvisionerError("give --registrar or --with-registrar, not both")
    lab_phones = _lab_module("phones", "phones")
    inv = orders_service()
    s = inv.settings
    with contextlib.ExitStack() as stack:
        if with_registrar:
            from provisioner.render.pbx import subscribers, write_kamailio
            from provisioner_lab.sip import Kamailio, SipLabError

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
        reports = lab_phones.boot_order(
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


@app.command("install")
@handles_errors
def install(
    order: Annotated[str, typer.Argument(help="Order id.")],
    registrar: Annotated[
        bool,
        typer.Option(help="Start Kamailio and register every account (needs kamailio, baresip)."),
    ] = True,
    http_port: Annotated[
        int, typer.Option(help="HTTP port of the lab's server (0: a free one).")
    ] = 0,
    tftp_port: Annotated[
        int, typer.Option(help="TFTP port of the lab's server (0: a free one).")
    ] = 0,
    hold: Annotated[
        float, typer.Option(help="Seconds to keep the server up at the end (to look at the page).")
    ] = 0.0,
) -> None:
    """Play a whole install appointment against the lab and print its timeline.

    Planned devices get simulated boxes and are bound, the order is armed, phones and DECT
    bases boot (fetch over TFTP or HTTP, register on Kamailio), the Mini ONT fetches its file,
    the switch and IAD are pushed and verified. The technician page's login link is printed
    first: open it to watch. Exit status 1 unless every device ends green.

    Examples:

      provisioner lab install WT-2026-000123

      provisioner lab install WT-2026-000104 --http-port 8080 --hold 60
    """
    lab_install = _lab_module("install", "install")
    inv = orders_service()

    def emit(line: str) -> None:
        out.print(line, markup=False)

    from provisioner.errors import OrderUnknown

    try:
        report = lab_install.run_install(
            inv,
            order,
            emit=emit,
            registrar=registrar,
            http_port=http_port,
            tftp_port=tftp_port,
            hold=hold,
        )
    except OrderUnknown as exc:  # the usual first try on a fresh store
        raise OrderUnknown(f"{exc} (apply it first: provisioner apply inventory/orders/)") from None
    accounts = (
        f", {report.registered}/{report.accounts} SIP accounts registered" if registrar else ""
    )
    out.print(
        f"{order}: {'all green' if report.green else 'NOT all green'} in {report.seconds:.1f} s"
        f" ({len(report.states)} devices{accounts})",
        markup=False,
    )
    if not report.green or (registrar and report.registered < report.accounts):
        raise typer.Exit(1)


net_app = typer.Typer(
    help="The lab network: namespaces for the services and the devices, joined by a bridge.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)
app.add_typer(net_app, name="net")


@net_app.command("up")
@handles_errors
def net_up(
    name: Annotated[str, typer.Option(help="Prefix of the namespaces' names.")] = "plab",
    detach: Annotated[
        bool, typer.Option("--detach", help="Leave it up and return (provisioner lab net down).")
    ] = False,
    services: Annotated[
        bool, typer.Option(help="Start serve, dnsmasq and Kamailio on this store.")
    ] = True,
) -> None:
    """Build the lab network and start the services in it; run until Ctrl-C or SIGTERM.

    Namespaces NAME-svc (10.66.0.1: provisioner serve, dnsmasq fed by provisioner dhcp for
    every active order's sites, Kamailio fed by provisioner pbx export --all), NAME-dev (the
    devices: DHCP pool 10.66.128.0/17) and NAME-sw (the bridge). Nothing is added to the
    machine's own network. Root only. Files name the server and registrar your settings
    give: set provisioning_host and sip_registrar to 10.66.0.1 for devices in the lab.

    Example: provisioner lab net up --detach && provisioner lab net down
    """
    import signal as _signal
    import tempfile
    import time

    labnet = _lab_module("net", "labnet")
    LabNetError = labnet.LabNetError
    net = labnet.LabNet(name=name)
    try:
        if not net.up():
            out.print(f"the lab network {name} is up already ({', '.join(net.namespaces)})")
            return
    except LabNetError as exc:
        raise ProvisionerError(f"lab net up: {exc}") from None
    out.print(f"up: {net.svc} {net.services_ip}/16, {net.dev} pool {net.pool}, bridge in {net.sw}")
    svc = None
    try:
        if services:
            storm = _lab_module("net", "storm")
            from provisioner.orders.reads import OrderQuery
            from provisioner.render.engine import Renderer

            inv = orders_service()
            s = inv.settings
            for what, value in (
                ("provisioning_host", s.provisioning_host),
                ("sip_registrar", s.sip_registrar),
            ):
                if value != net.services_ip:
                    out.print(
                        f"note: setting {what} is {value}, not {net.services_ip}: "
                        "files name that, not the lab's services",
                        markup=False,
                    )
            orders = inv.read_orders(OrderQuery(state="active"), lambda o: o.order_id).items
            seg = net.segment(0)
            text = storm.dnsmasq_conf(orders, [], seg, net.services_ip, Renderer(s, inv))
            workdir = Path(tempfile.mkdtemp(prefix=f"lab-net-{name}-"))
            svc = storm.start_services(
                net, {}, workdir, lambda line: out.print(line, markup=False), dnsmasq_texts=[text]
            )
            out.print(f"logs: {workdir}")
        if detach:
            svc = None
            out.print(f"left up; stop with: provisioner lab net down --name {name}")
            return
        out.print("running; Ctrl-C takes it down")
        stop = {"now": False}

        def on_signal(signum: int, frame: object) -> None:
            stop["now"] = True

        _signal.signal(_signal.SIGTERM, on_signal)
        try:
            while not stop["now"]:
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
    except LabNetError as exc:
        detach = False
        raise ProvisionerError(f"lab net up: {exc}") from None
    finally:
        if not detach:
            if svc is not None:
                svc.stop()
            removed = net.down()
            out.print(f"down: removed {', '.join(removed) or 'nothing'}")


@net_app.command("down")
@handles_errors
def net_down(
    name: Annotated[str, typer.Option(help="Prefix of the namespaces' names.")] = "plab",
) -> None:
    """End the processes left in the lab network and delete its namespaces, veths and bridge.

    Example: provisioner lab net down
    """
    labnet = _lab_module("net", "labnet")
    removed = labnet.LabNet(name=name).down()
    out.print(f"removed {', '.join(removed)}" if removed else f"the lab network {name} is not up")


@app.command("storm")
@handles_errors
def storm(
    devices: Annotated[int, typer.Option("--devices", help="Devices to boot.")] = 1000,
    spread: Annotated[
        float, typer.Option("--spread", help="Seconds over which they power on.")
    ] = 10.0,
    seed: Annotated[int, typer.Option(help="Seed of the orders and power-on times.")] = 1,
    workers: Annotated[
        int,
        typer.Option(help="Device processes, one per area (a broadcast domain with its dnsmasq)."),
    ] = 4,
    keep: Annotated[
        bool, typer.Option("--keep", help="Leave the network and services up after.")
    ] = False,
    name: Annotated[str, typer.Option(help="Prefix of the namespaces' names.")] = "plab",
) -> None:
    """A city's devices boot at once after a power cut: DHCP, fetch, REGISTER, on a lab network.

    Generates orders with --devices devices (phones, DECT bases with handsets, IADs, Mini
    ONTs) in a store of its own, arms them, builds the lab network (provisioner lab net),
    starts serve, dnsmasq and Kamailio in it, and powers the devices on over --spread
    seconds. Prints per stage (DHCP, first file, all files, REGISTER) how many got there and
    p50/p99/max seconds from power-on, files that differ from render, and the CPU seconds of
    the server, Kamailio and dnsmasq. Exit status 1 unless >= 99.9 % of the devices are done
    within 60 s of their power-on and no file differs. Root only.

    Example: provisioner lab storm --devices 10000 --spread 40
    """
    storm_mod = _lab_module("storm", "storm")
    labnet = _lab_module("storm", "labnet")
    try:
        report = storm_mod.run_storm(
            devices=devices,
            spread=spread,
            seed=seed,
            workers=workers,
            keep=keep,
            name=name,
            emit=lambda line: out.print(line, markup=False),
        )
    except labnet.LabNetError as exc:
        raise ProvisionerError(f"lab storm: {exc}") from None
    for line in report.lines():
        out.print(line, markup=False)
    if not report.ok:
        raise typer.Exit(1)
