"""``provisioner serve``, ``arm`` and ``status``: zero-touch serving and the technician's view."""

from __future__ import annotations

import logging
from typing import Annotated

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
    # Render every active order in the background: after a power cut the whole customer
    # base asks at once, and a warm cache answers from memory.
    threading.Thread(target=service.warm, name="warm-cache", daemon=True).start()
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
    target: Annotated[str, typer.Argument(help="Order id, or a device's MAC.")],
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
    """
    if minutes is not None and not 1 <= minutes <= 7 * 24 * 60:
        raise ProvisionerError(f"--minutes {minutes}: must be 1 to 10080 (a week)")
    armed = _inventory().arm(target, minutes, actor=actor)
    until = armed.expires_at.astimezone().strftime("%Y-%m-%d %H:%M %Z")
    out.print(f"{armed.order_id}: armed {len(armed.devices)} devices until {until}", markup=False)


@app.command()
@handles_errors
def status(order: Annotated[str, typer.Argument(help="Order id.")]) -> None:
    """Per device of an order: planned / bound / armed / fetched, and what it fetched last.

    Example: provisioner status WT-2026-000123
    """
    from rich.table import Table

    from provisioner.serving.blocks import active

    inv = _inventory()
    rows = inv.status(order)
    blocks = {b.source: b for b in active(inv)}
    table = Table(
        "device",
        "model",
        "MAC / serial",
        "state",
        "window until",
        "bound to",
        "last file",
        "sha256",
        "when",
        "from",
        "user agent",
        "refused",
        title=order,
    )
    for r in rows:
        table.add_row(
            r.device_id,
            r.model,
            r.identity or "-",
            r.state,
            r.window_until.astimezone().strftime("%H:%M") if r.window_until else "-",
            r.bound_source or "-",
            r.last_file or "-",
            (r.last_hash or "-")[:12],
            r.last_at.astimezone().strftime("%Y-%m-%d %H:%M:%S") if r.last_at else "-",
            r.last_source or "-",
            r.last_user_agent or "-",
            f"{r.refusals} (last from {r.last_refused_source} at "
            f"{r.last_refused_at.astimezone().strftime('%H:%M:%S')})"
            if r.refusals and r.last_refused_at
            else "-",
        )
    out.print(table)
    # A blocked source gets no file at all: say so next to the devices it concerns.
    seen = {s for r in rows for s in (r.bound_source, r.last_source, r.last_refused_source) if s}
    for source in sorted(seen & set(blocks)):
        until = blocks[source].until.astimezone().strftime("%H:%M")
        out.print(
            f"source {source} is blocked until {until} (sweep guard): provisioner unblock {source}",
            markup=False,
        )


@app.command()
@handles_errors
def blocks() -> None:
    """Sources blocked for asking for too many unknown device names (a MAC sweep).

    A blocked source gets no file over TFTP or HTTP, except with a device's own credentials.

    Example:
      provisioner blocks
    """
    from rich.table import Table

    from provisioner.serving.blocks import active

    rows = active(_inventory())
    if not rows:
        out.print("no source is blocked")
        return
    table = Table("source", "blocked at", "until", "protocol", "unknown names")
    for b in rows:
        table.add_row(
            b.source,
            b.blocked_at.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
            b.until.astimezone().strftime("%H:%M:%S"),
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
