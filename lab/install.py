"""``provisioner lab install ORDER``: a whole install appointment played against the lab.

What a technician does on site, done by simulated boxes, against a real server in this
process (TFTP, HTTP, the REST API and the technician page on loopback ports):

1. every planned device gets a simulated box (a MAC, or a serial for the Mini ONT) and is
   bound to it through the orders service, as ``provisioner bind`` would;
2. the order is armed;
3. a Kamailio starts with the order's subscribers (``pbx export``), when it is installed;
4. the phones and DECT bases boot the way each model does (:mod:`lab.phones`: the generic
   names first, then their own file over TFTP, or HTTP for the DECT base), parse what they
   got and register every account on Kamailio; the Mini ONT fetches its file over TFTP;
5. a simulated switch and IAD start for every pushed device (:mod:`lab.up`) and are pushed
   and verified (``provisioner push``);
6. the order's status must then be all green: every device ``fetched`` or ``verified``.

Each step goes on the timeline (seconds since the start). The page at ``/tech/`` shows the
same appointment live while it runs (its login link is printed first).
"""

from __future__ import annotations

import contextlib
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provisioner.catalog import MODELS
from provisioner.errors import BindRefused, ProvisionerError
from provisioner.orders.status import DONE

Emit = Callable[[str], None]
# Lab boxes' addresses: the vendors' own prefixes with a lab byte, so a lab MAC reads like the
# real thing and never collides with the samples' (which stop below 0xf0).
PREFIX = {"phone": "00:80:f0:f1", "dect_base": "00:80:f0:f2", "switch": "b0:c5:54:f3",
          "iad": "00:1d:73:f4"}  # fmt: skip


@dataclass
class InstallReport:
    order_id: str
    seconds: float = 0.0
    timeline: list[tuple[float, str]] = field(default_factory=list)
    states: dict[str, str] = field(default_factory=dict)  # device id -> final state
    registered: int = 0
    accounts: int = 0
    page: str = ""

    @property
    def green(self) -> bool:
        return bool(self.states) and all(s in DONE for s in self.states.values())


class Timeline:
    def __init__(self, report: InstallReport, emit: Emit):
        self.report = report
        self.emit = emit
        self.t0 = time.monotonic()
        self._lock = threading.Lock()

    def __call__(self, what: str) -> None:
        at = time.monotonic() - self.t0
        with self._lock:
            self.report.timeline.append((at, what))
            self.emit(f"{at:6.1f}s  {what}")


@contextlib.contextmanager
def running_server(inv: Any, http_port: int = 0, tftp_port: int = 0) -> Iterator[Any]:
    """TFTP, HTTP with the REST API and the page, as ``provisioner serve`` runs them, in a
    thread of this process on loopback."""
    import socket

    import uvicorn

    from provisioner.api.app import create_app
    from provisioner.serving.http import DeviceHttpApp
    from provisioner.serving.httpserver import server_config
    from provisioner.serving.stack import build_service, tftp_service

    service = build_service(inv)
    service.warm()
    tftp = tftp_service(service, "127.0.0.1", tftp_port)
    port = tftp.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", http_port))
    app = DeviceHttpApp(service, create_app(inv.settings, inv))
    server = uvicorn.Server(server_config(app, inv.settings, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise ProvisionerError("lab install: the HTTP server did not start")
        time.sleep(0.02)
    try:
        yield type("Server", (), {"tftp_port": port, "http_port": sock.getsockname()[1],
                                  "service": service})  # fmt: skip
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        tftp.stop()
        service.close()


def _lab_mac(kind: str, rng: random.Random) -> str:
    prefix = PREFIX.get(kind, "00:80:f0:f5")
    return f"{prefix}:{rng.randrange(256):02x}:{rng.randrange(256):02x}"


def bind_planned(inv: Any, order_id: str, tick: Timeline, rng: random.Random) -> int:
    """A simulated box for every planned device, bound through the orders service."""
    status = inv.read_status(order_id)
    bound = 0
    for d in status.devices:
        if d.identity or d.identity_kind not in ("mac", "serial"):
            continue
        for _ in range(20):  # a lab MAC another order holds: draw again
            try:
                if d.identity_kind == "serial":
                    serial = "LABS" + "".join(rng.choice("0123456789ABCDEF") for _ in range(8))
                    inv.bind(order_id, serial=serial, device_id=d.device_id, actor="lab:install")
                    box = serial
                else:
                    box = _lab_mac(d.kind, rng)
                    inv.bind(order_id, mac=box, device_id=d.device_id, actor="lab:install")
                break
            except BindRefused as exc:
                if "already" not in str(exc):
                    raise
        else:
            raise ProvisionerError(f"lab install: no free lab address for {d.device_id}")
        bound += 1
        tick(f"bound {d.device_id} ({d.title}) to {box}")
    return bound


def _boot(phone: Any, protocol: str, registrar: str | None) -> Any:
    if registrar is None:
        # No registrar: fetch and parse only (what the page can show without Kamailio).
        from provisioner_lab.phones import PhoneReport

        report = PhoneReport(phone.device_id, phone.model, phone.mac)
        try:
            phone.ask_generic(protocol)
            report.fetched_via = phone.fetch(protocol)
        except Exception as exc:
            report.error = str(exc)
        return report
    return phone.boot(protocol, registrar, timeout=5.0)


def run_install(
    inv: Any,
    order_id: str,
    *,
    emit: Emit,
    registrar: bool = True,
    http_port: int = 0,
    tftp_port: int = 0,
    seed: int | None = None,
    on_page: Callable[[str], None] | None = None,
    hold: float = 0.0,
) -> InstallReport:
    """Play the appointment (see the module's docstring); the report says how it ended."""
    import logging

    from provisioner.api import tokens
    from provisioner.push.runner import push_many
    from provisioner.push.targets import Timeouts
    from provisioner.render.engine import Renderer
    from provisioner_lab.phones import Phone, tftp_get
    from provisioner_lab.up import start_lab

    logging.getLogger("httpx").setLevel(logging.WARNING)  # the phones' requests: not news
    report = InstallReport(order_id)
    tick = Timeline(report, emit)
    rng = random.Random(seed)
    inv.read_order(order_id, lambda o: None)  # unknown order: one line, before anything starts
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(running_server(inv, http_port, tftp_port))
        issued = tokens.issue(inv, "technician", name="lab-install", orders=[order_id],
                              expires="2h", link=True, actor="lab:install")  # fmt: skip
        report.page = f"http://127.0.0.1:{server.http_port}/tech/login/{issued.text}"
        tick(f"server up: TFTP 127.0.0.1:{server.tftp_port}, HTTP 127.0.0.1:{server.http_port}")
        tick(f"page: {report.page}")
        if on_page is not None:
            on_page(report.page)

        n = bind_planned(inv, order_id, tick, rng)
        tick(f"{n} boxes bound")
        armed = inv.arm(order_id, 60, actor="lab:install", only="order")
        tick(f"armed {len(armed.devices)} devices for 60 minutes")
        server.service.refresh()

        address: str | None = None
        if registrar:
            from provisioner.render.pbx import subscribers, write_kamailio
            from provisioner_lab.sip import Kamailio, SipLabError

            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lab-install-")))
            write_kamailio(subscribers(inv), tmp / "db")
            try:
                kam = stack.enter_context(Kamailio(tmp / "db", workdir=tmp))
            except SipLabError as exc:
                raise ProvisionerError(f"lab install: {exc}") from None
            address = kam.address
            tick(f"kamailio on {address}")

        status = inv.read_status(order_id)
        phones = [
            Phone(
                d.identity,
                device_id=d.device_id,
                model=d.model,
                server="127.0.0.1",
                tftp_port=server.tftp_port,
                http_port=server.http_port,
            )
            for d in status.devices
            if d.identity and d.kind in ("phone", "dect_base")
        ]

        def boot(phone: Any) -> Any:
            protocol = "http" if MODELS[phone.model].kind == "dect_base" else "tftp"
            r = _boot(phone, protocol, address)
            accounts = ", ".join(f"{a.user} {a.outcome}" for a in getattr(r, "accounts", []))
            got = f"fetched over {r.fetched_via}" if r.fetched_via else f"no file ({r.error})"
            tick(
                f"{phone.device_id} booted: {got}"
                + (f"; registered {accounts}" if accounts else "")
            )
            return r

        with ThreadPoolExecutor(max_workers=8) as pool:
            boots = list(pool.map(boot, phones))
        report.accounts = sum(len(r.accounts) for r in boots)
        report.registered = sum(1 for r in boots for a in r.accounts if a.status == 200)

        for d in status.devices:
            if d.kind == "ont" and d.identity:
                name = f"ont-{d.identity}.txt"
                try:
                    tftp_get("127.0.0.1", server.tftp_port, name)
                    tick(f"{d.device_id} fetched {name} over tftp")
                except Exception as exc:
                    tick(f"{d.device_id}: no file ({exc})")

        renderer = Renderer(inv.settings, inv)
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lab-sims-")))
        lab = stack.enter_context(start_lab(inv, renderer, [order_id], workdir))
        tick(f"simulated {', '.join(str(d.key.device_id) for d in lab.devices)}")
        jobs = [(d.key, d.address) for d in lab.devices]

        def step(device: str, name: str) -> None:
            tick(f"push {device.rpartition('/')[2]}: {name}")

        _, results = push_many(
            inv, renderer, jobs, trust_on_first_use=True, actor="lab:install",
            timeouts=Timeouts(connect=5.0, command=10.0), on_step=step,
        )  # fmt: skip
        for res in results:
            tick(f"push {res.device.rpartition('/')[2]}: {res.result}"
                 + (f" ({res.error})" if res.error else ""))  # fmt: skip

        server.service.flush()
        final = inv.read_status(order_id)
        report.states = {d.device_id: d.state.value for d in final.devices}
        report.seconds = time.monotonic() - tick.t0
        tick(
            "all green"
            if report.green
            else "not all green: "
            + ", ".join(f"{k} {v}" for k, v in report.states.items() if v not in DONE)
        )
        if hold > 0:
            tick(f"holding the server {hold:g} s (the page stays up)")
            time.sleep(hold)
    return report
