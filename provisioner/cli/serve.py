"""``provisioner serve``, ``arm`` and ``status``: zero-touch serving and the technician's view."""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

import typer

from provisioner.cli.app import _inventory, app, handles_errors, out
from provisioner.errors import ProvisionerError, SettingsError

log = logging.getLogger("provisioner.serve")


@app.command()
@handles_errors
def serve(
    tftp_port: Annotated[int | None, typer.Option(help="TFTP port (setting tftp_port).")] = None,
    http_port: Annotated[int | None, typer.Option(help="HTTP port (setting http_port).")] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on (bind_address).")] = None,
    no_api: Annotated[bool, typer.Option("--no-api", help="Do not mount the REST API.")] = False,
) -> None:
    """Serve device files over TFTP and HTTP(S), and the REST API under /api/v1.

    Devices get their own files only inside an enrollment window (provisioner arm) or, over
    HTTP, with the credentials their first file installed. HTTPS listens on the https_port
    setting when tls_cert and tls_key are set. Runs until interrupted.

    Example: provisioner serve --tftp-port 1069 --http-port 8080
    """
    import asyncio
    import threading

    import uvicorn

    from provisioner.serving.http import DeviceHttpApp
    from provisioner.serving.httpserver import run_loop, server_config
    from provisioner.serving.stack import build_service, tftp_service

    inv = _inventory()
    s = inv.settings
    bind = host or s.bind_address
    service = build_service(inv)
    api = None
    if not no_api:
        from provisioner.api.app import create_app

        api = create_app(s, inv)
    asgi = DeviceHttpApp(service, api)
    tftp = tftp_service(service, bind, s.tftp_port if tftp_port is None else tftp_port)
    try:
        port = tftp.start()
    except OSError as exc:
        raise SettingsError(f"TFTP {bind}:{tftp.port}: cannot listen: {exc.strerror}") from None
    http = s.http_port if http_port is None else http_port
    configs = [server_config(asgi, s, bind, http, lifespan="on")]
    if s.tls_cert and s.tls_key:
        configs.append(
            server_config(
                asgi,
                s,
                bind,
                s.https_port,
                ssl_certfile=s.tls_cert,
                ssl_keyfile=s.tls_key,
                lifespan="off",
            )
        )
    servers = [uvicorn.Server(c) for c in configs]

    # Load every active order's published files in the background (no rendering): after a
    # power cut the whole customer base asks at once, and the index answers from memory.
    # Until then an order is loaded on its first fetch.
    def warm() -> None:
        started = time.monotonic()
        orders = service.warm()
        out.print(f"index: {orders} orders in memory in {time.monotonic() - started:.1f} s")

    threading.Thread(target=warm, name="warm-index", daemon=True).start()
    out.print(
        f"serving TFTP on {bind}:{port}, HTTP on {bind}:{configs[0].port}"
        + (f", HTTPS on {bind}:{s.https_port}" if len(configs) > 1 else "")
        + ("" if no_api else f"; REST API at http://{bind}:{configs[0].port}/api/v1/docs")
    )

    async def main() -> None:
        # uvicorn turns SIGINT/SIGTERM into should_exit; when one server stops, stop them all.
        tasks = [asyncio.create_task(srv.serve()) for srv in servers]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for srv in servers:
            srv.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        for t in done:
            if t.exception():
                raise SettingsError(f"HTTP server stopped: {t.exception()}")
        if any(not srv.started for srv in servers):
            raise SettingsError("HTTP server could not start (port in use or not permitted?)")

    try:
        run_loop(main())
    finally:
        tftp.stop()
        service.close()
        out.print("stopped")


@app.command()
@handles_errors
def arm(
    target: Annotated[str, typer.Argument(help="Order id, a device's MAC, or its device id.")],
    minutes: Annotated[
        int | None, typer.Option(help="Window length (setting enrollment_minutes).")
    ] = None,
    actor: Annotated[str, typer.Option(help="Who arms (for the audit log).")] = "",
) -> None:
    """Open an enrollment window: the device (or every device of the order) may fetch its
    files without credentials until it closes. Re-arming releases the source binding.

    Examples:

      provisioner arm WT-2026-000123 --minutes 60

      provisioner arm 00:80:f0:00:00:01

      provisioner arm phone-209
    """
    if minutes is not None and not 1 <= minutes <= 7 * 24 * 60:
        raise ProvisionerError(f"--minutes {minutes}: must be 1 to 10080 (a week)")
    from provisioner.errors import OrderUnknown

    inv = _inventory()
    try:
        armed = inv.arm(target, minutes, actor=actor)
    except OrderUnknown:
        # Not an order, not a MAC: a device id (as push's --target names devices).
        _, device_id, mac = inv.resolve_device(target)
        if not mac:
            raise ProvisionerError(
                f"device {device_id}: no box bound yet; bind one first"
            ) from None
        armed = inv.arm(mac, minutes, actor=actor, only="device")
    until = armed.expires_at.astimezone(_local(inv.settings)).strftime("%Y-%m-%d %H:%M %Z")
    out.print(f"{armed.order_id}: armed {len(armed.devices)} devices until {until}", markup=False)


JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print JSON (for scripts) instead of a table.")
]


def _local(settings: Any) -> Any:
    """The time zone people read times in (setting timezone)."""
    from zoneinfo import ZoneInfo

    try:
        return ZoneInfo(settings.timezone)
    except (KeyError, ValueError):
        return ZoneInfo("UTC")


def _status_lines(st: Any, zone: Any, width: int) -> list[str]:
    """The compact status: two lines per device, fitting ``width`` (60 at least) columns."""
    from provisioner.orders.status import DONE, WRONG

    def hm(at: Any) -> str:
        return at.astimezone(zone).strftime("%H:%M:%S") if at else "-"

    mark = {**dict.fromkeys(DONE, "ok"), **dict.fromkeys(WRONG, "!!")}
    counts = ", ".join(f"{n} {k}" for k, n in st.counts().items())
    lines = [f"{st.order_id} {st.customer[: max(10, width - 40)]}", f"  {counts}"]
    for d in st.devices:
        head = f"{mark.get(d.state, '..')} {d.device_id} {d.state.value}"
        what = d.title + (f" - {d.what}" if d.what else "")
        lines.append(f"{head}  {what}"[:width])
        if d.state.value == "fetched":
            detail = f"{d.last_file} {hm(d.last_at)} from {d.last_source}"
        elif d.state.value == "armed":
            detail = f"window until {hm(d.window_until)}"
        elif d.state.value == "refused":
            detail = (
                f"{d.refusals} refused, last {hm(d.last_refused_at)} from {d.last_refused_source}"
            )
        elif d.state.value == "blocked":
            detail = f"{d.refusals} refused; source blocked until {hm(d.blocked_until)}"
        elif d.state.value in ("verified", "failed"):
            detail = f"push {d.push_result} {hm(d.push_at)}" + (
                f": {d.push_error}" if d.push_error else ""
            )
        elif d.state.value == "planned":
            detail = "bind a box: provisioner bind ..."
        else:
            detail = d.identity
        if d.identity and d.state.value != "bound":
            detail = f"{d.identity} {detail}"
        lines.append(f"   {detail}"[:width])
    for source, until in st.blocks.items():
        # A blocked source gets no file at all: say so, and how to lift it.
        lines.append(f"source {source} is blocked until {hm(until)} (sweep guard)"[:width])
        lines.append(f"  lift it: provisioner unblock {source}"[:width])
    return lines


def _status_json(st: Any) -> str:
    import json

    from provisioner.api import views

    return json.dumps(views.order_status_public(st).model_dump(mode="json"), indent=2)


@app.command()
@handles_errors
def status(
    order: Annotated[str, typer.Argument(help="Order id.")],
    as_json: JsonOpt = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Show it again whenever a device changes (Ctrl-C ends).")
    ] = False,
    interval: Annotated[float, typer.Option(help="Seconds between looks with --watch.")] = 1.0,
) -> None:
    """Per device of an order: its state (planned, bound, armed, fetched, refused, blocked,
    pushing, verified, failed: the words the API and the technician page use), what it
    fetched, when (local time, setting timezone) and from where. Fits 60 columns.

    Examples:

      provisioner status WT-2026-000123

      provisioner status WT-2026-000123 --watch

      provisioner status WT-2026-000123 --json
    """
    import shutil

    inv = _inventory()
    zone = _local(inv.settings)
    width = max(60, shutil.get_terminal_size((60, 24)).columns)
    last: tuple[int, ...] | None = None
    while True:
        key = inv.watch_key(order)
        if key != last:
            last = key
            st = inv.read_status(order)
            if as_json:
                out.print(_status_json(st), markup=False)
            else:
                if watch:
                    now = time.strftime("%H:%M:%S")
                    out.print(f"--- {now}", markup=False)
                for line in _status_lines(st, zone, width):
                    out.print(line, markup=False, overflow="ignore", crop=False)
        if not watch:
            return
        time.sleep(max(0.2, interval))


@app.command()
@handles_errors
def blocks(as_json: JsonOpt = False) -> None:
    """Sources blocked for asking for too many unknown device names (a MAC sweep).

    A blocked source gets no file over TFTP or HTTP, except with a device's own credentials.
    Times are local (setting timezone).

    Examples:

      provisioner blocks

      provisioner blocks --json
    """
    import json

    from rich.table import Table

    from provisioner.serving.blocks import active

    inv = _inventory()
    rows = active(inv)
    if as_json:
        items = [
            {"source": b.source, "blocked_at": b.blocked_at.isoformat(),
             "until": b.until.isoformat(), "protocol": b.protocol, "unknown_names": b.names}
            for b in rows
        ]  # fmt: skip
        out.print(json.dumps(items, indent=2), markup=False)
        return
    if not rows:
        out.print("no source is blocked")
        return
    zone = _local(inv.settings)
    table = Table("source", "blocked at", "until", "protocol", "unknown names")
    for b in rows:
        table.add_row(
            b.source,
            b.blocked_at.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S"),
            b.until.astimezone(zone).strftime("%H:%M:%S"),
            b.protocol,
            str(b.names),
        )
    out.print(table)


@app.command()
@handles_errors
def unblock(
    source: Annotated[str, typer.Argument(help="The blocked IP address.")],
    actor: Annotated[str, typer.Option(help="Who lifts the block (for the audit log).")] = "",
) -> None:
    """Lift a block: every server answers the source again within a second.

    Example:
      provisioner unblock 203.0.113.7
    """
    from provisioner.serving.blocks import lift

    lift(_inventory(), source, actor)
    out.print(f"{source}: unblocked", markup=False)
