"""``provisioner serve``, ``arm`` and ``status``: zero-touch serving and the technician's view."""

from __future__ import annotations

import contextlib
import gc
import logging
import socket
import sys
import time
from dataclasses import dataclass
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
    workers: Annotated[
        int | None,
        typer.Option(help="Serving processes sharing the ports (setting serve_workers)."),
    ] = None,
) -> None:
    """Serve device files over TFTP and HTTP(S), and the REST API under /api/v1.

    Devices get their own files only inside an enrollment window (provisioner arm) or, over
    HTTP, with the credentials their first file installed. HTTPS listens on the https_port
    setting when tls_cert and tls_key are set. With --workers N, N processes share the ports
    (one per core: a boot storm is CPU-bound). Runs until interrupted.

    Examples:

      provisioner serve --tftp-port 1069 --http-port 8080

      provisioner serve --workers 4
    """
    from provisioner.cli.app import _settings

    settings = _settings()
    count = settings.serve_workers if workers is None else workers
    if not 1 <= count <= 64:
        raise ProvisionerError(f"--workers {count}: must be 1 to 64")
    bind = host or settings.bind_address
    tftp = settings.tftp_port if tftp_port is None else tftp_port
    http = settings.http_port if http_port is None else http_port
    if count == 1:
        _serve(bind, tftp, http, no_api)
    else:
        _serve_forked(count, bind, tftp, http, no_api, settings)


def _serve(
    bind: str,
    tftp_port: int,
    http_port: int,
    no_api: bool,
    listeners: _Listeners | None = None,
    worker: int | None = None,
) -> None:
    """One serving process: the service, TFTP and the HTTP(S) servers, until a signal stops
    them. A forked worker serves on the ``listeners`` its parent bound."""
    import asyncio
    import threading

    import uvicorn

    from provisioner.serving.http import DeviceHttpApp
    from provisioner.serving.httpserver import run_loop, server_config
    from provisioner.serving.stack import build_service, tftp_service

    inv = _inventory()
    s = inv.settings
    who = "" if worker is None else f"worker {worker}: "
    service = build_service(inv)
    api = None
    if not no_api:
        from provisioner.api.app import create_app

        api = create_app(s, inv)
    asgi = DeviceHttpApp(service, api)
    sock = listeners.tftp if listeners is not None else None
    tftp = tftp_service(service, bind, tftp_port, sock=sock)
    try:
        tftp_port = tftp.start()
    except OSError as exc:
        raise SettingsError(f"TFTP {bind}:{tftp_port}: cannot listen: {exc.strerror}") from None
    configs = [server_config(asgi, s, bind, http_port, lifespan="on")]
    sockets: list[socket.socket | None] = [listeners.http if listeners is not None else None]
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
        sockets.append(listeners.https if listeners is not None else None)
    servers = [uvicorn.Server(c) for c in configs]

    # Load every active order's published files in the background (no rendering): after a
    # power cut the whole customer base asks at once, and the index answers from memory.
    # Until then an order is loaded on its first fetch.
    def warm() -> None:
        started = time.monotonic()
        orders = service.warm()
        out.print(f"{who}index: {orders} orders in memory in {time.monotonic() - started:.1f} s")
        # Then every file decrypted ahead of its first fetch (served from memory meanwhile),
        # and what is in memory now kept out of the garbage collector's full passes: the
        # index is most of the heap, and a boot storm's allocations would have every
        # collection walk it again.
        service.decrypt_ahead()
        gc.collect()
        gc.freeze()

    threading.Thread(target=warm, name="warm-index", daemon=True).start()
    if worker is None:
        out.print(_serving_line(bind, tftp_port, configs[0].port, s, no_api, len(configs) > 1))

    async def main() -> None:
        # uvicorn turns SIGINT/SIGTERM into should_exit; when one server stops, stop them all.
        tasks = [
            asyncio.create_task(srv.serve(sockets=None if sock is None else [sock]))
            for srv, sock in zip(servers, sockets, strict=True)
        ]
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
        if worker is None:
            out.print("stopped")


def _serving_line(
    bind: str, tftp_port: int, http_port: int, s: Any, no_api: bool, https: bool
) -> str:
    return (
        f"serving TFTP on {bind}:{tftp_port}, HTTP on {bind}:{http_port}"
        + (f", HTTPS on {bind}:{s.https_port}" if https else "")
        + ("" if no_api else f"; REST API at http://{bind}:{http_port}/api/v1/docs")
    )


@dataclass
class _Listeners:
    """The sockets a forked ``serve`` binds once and its workers serve on."""

    http: socket.socket
    https: socket.socket | None
    tftp: socket.socket


def _listen(bind: str, port: int, what: str, count: int) -> list[socket.socket]:
    """``count`` listening sockets on one port (SO_REUSEPORT: the kernel spreads new
    connections over them by address and port, so every worker takes its share; only
    processes of this user can join the group)."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((bind, port))
            port = sock.getsockname()[1]  # port 0: the others join the one it got
            sock.listen(2048)
    except OSError as exc:
        for sock in socks:
            sock.close()
        raise SettingsError(f"{what} {bind}:{port}: cannot listen: {exc.strerror}") from None
    return socks


def _serve_forked(
    count: int, bind: str, tftp_port: int, http_port: int, no_api: bool, settings: Any
) -> None:
    """Bind the ports here (errors are this command's), fork ``count`` workers serving on
    them (a TCP and a UDP listener per worker on each port: the kernel spreads connections
    and TFTP clients over them) and supervise: a signal stops them all; a worker that dies
    stops the rest and ends the command with exit 1 (a process manager restarts it whole)."""
    import os
    import signal

    from provisioner.serving.tftp import bind_udp

    udp: list[socket.socket] = []
    try:
        for _ in range(count):
            udp.append(bind_udp(bind, tftp_port, reuse_port=True))
            tftp_port = udp[0].getsockname()[1]  # port 0: the others join the one it got
    except OSError as exc:
        for sock in udp:
            sock.close()
        raise SettingsError(f"TFTP {bind}:{tftp_port}: cannot listen: {exc.strerror}") from None
    http = _listen(bind, http_port, "HTTP", count)
    tls = bool(settings.tls_cert and settings.tls_key)
    https = _listen(bind, settings.https_port, "HTTPS", count) if tls else []
    ports = (tftp_port, http[0].getsockname()[1])
    children: dict[int, int] = {}
    # A signal held until the supervisor's handlers are in place (a worker starts with the
    # default ones, and uvicorn's own once it serves): none is lost and none is taken by a
    # half-made supervisor.
    held = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, held)
    for n in range(1, count + 1):
        sys.stdout.flush()  # nothing buffered is printed twice
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as exc:
            for started in children:
                os.kill(started, signal.SIGKILL)
            raise SettingsError(f"cannot start worker {n}: {exc.strerror}") from None
        if pid == 0:  # a worker: serve until a signal, never return into the parent's code
            code = 1
            signal.pthread_sigmask(signal.SIG_UNBLOCK, held)
            try:
                mine = n - 1
                listeners = _Listeners(http[mine], https[mine] if https else None, udp[mine])
                for sock in [*http, *https, *udp]:
                    if sock not in (listeners.http, listeners.https, listeners.tftp):
                        sock.close()  # the other workers' listeners
                _serve(bind, ports[0], ports[1], no_api, listeners, worker=n)
                code = 0
            except ProvisionerError as exc:
                out.print(f"worker {n}: error: {exc}", markup=False)
            except BaseException:
                log.exception("worker %d failed", n)
            finally:
                os._exit(code)
        children[pid] = n
    for sock in [*udp, *http, *https]:
        sock.close()  # the workers hold them
    out.print(_serving_line(bind, ports[0], ports[1], settings, no_api, tls)
              + f"; {count} processes")  # fmt: skip
    stopping = False

    def stop_all(signum: int = signal.SIGTERM, _frame: Any = None) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGINT, stop_all)
    signal.signal(signal.SIGTERM, stop_all)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, held)
    failed = False
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        n = children.pop(pid)
        if not stopping:
            code = os.waitstatus_to_exitcode(status)
            out.print(f"worker {n} ended (exit {code}): stopping the others", markup=False)
            failed = True
            stop_all()
    out.print("stopped")
    if failed:
        raise typer.Exit(1)


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
