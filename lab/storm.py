"""``provisioner lab storm``: a city's devices boot at once after a power cut (issue 16).

1. **Orders**: ``--devices N`` devices across generated orders that keep the offer's rules
   (applied through the orders service like :mod:`lab.bench_publish`): Office Maxi sites
   with an IAD, mostly desk phones (IP150, some IP701G), a DECT kit with handsets on larger
   sites and a Mini ONT on FTTH sites; one in ten orders a single-extension Office One (an
   IAD whose FXS port 1 registers the extension, plus a Mini ONT on FTTH). Every order is
   armed. A fresh ``PROVISIONER_HOME`` whose settings name the services' address as the
   provisioning host and the registrar, so the files name it.
2. **Expected files**: every served file of every device rendered in this process from the
   store (``Renderer.render_order``) and hashed: what a device gets must be those bytes.
3. **The lab network** (:mod:`lab.labnet`) and, in its services namespace: ``provisioner
   serve`` on the store, dnsmasq fed by ``provisioner dhcp``'s snippets for every site plus
   the lab's lines for IADs (option 43 to ``dslforum.org``) and ONTs (option 66 with the
   TFTP server), and Kamailio fed by ``provisioner pbx export --all``.
4. **The storm**: ``--workers`` processes in the devices' namespace, each owning a share of
   the devices (:mod:`lab.stormdevice`), power-on times spread uniformly over ``--spread``
   seconds from a common t0.
5. **Figures**: per stage (DHCP, first file, all files, REGISTER) how many devices got there
   and p50/p99/max seconds from their power-on; devices done (registered, or all files for
   a device with nothing to register) and done within 60 s; files that differ from render;
   CPU seconds of the server, Kamailio and dnsmasq during the storm; the verdict.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from provisioner_lab.labnet import (
    LabNet,
    LabNetError,
    Segment,
    inside,
    netns_pids,
    require_netns,
)
from provisioner_lab.stormdevice import DeviceResult, DeviceSpec

Emit = Callable[[str], None]
AIM_REGISTERED = 0.999
AIM_SECONDS = 60.0
CONNECTIVITY = ("fttc", "ftth", "adsl")


# ---------------------------------------------------------------------- orders


@dataclass
class Planned:
    """A device the storm generates: what it is and its identity."""

    device_id: str
    order_id: str
    kind: str
    model: str
    mac: str
    serial: str = ""
    accounts: int = 0  # SIP accounts its file will hold


class _Ids:
    """Unique MACs and serials for the storm's devices (random, as a city's are)."""

    PREFIX: ClassVar[dict[str, str]] = {
        "phone": "00:80:f0",
        "dect_base": "00:80:f1",
        "iad": "00:1d:73",
        "ont": "02:4f:4e",
    }

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.seen: set[str] = set()

    def mac(self, kind: str) -> str:
        while True:
            tail = ":".join(f"{self.rng.randrange(256):02x}" for _ in range(3))
            mac = f"{self.PREFIX[kind]}:{tail}"
            if mac not in self.seen:
                self.seen.add(mac)
                return mac

    def serial(self) -> str:
        while True:
            s = "LABS" + "".join(self.rng.choice("0123456789ABCDEF") for _ in range(8))
            if s not in self.seen:
                self.seen.add(s)
                return s


def order_document(
    o: int, size: int, rng: random.Random, ids: _Ids
) -> tuple[dict[str, Any], list[Planned], dict[str, str]]:
    """Order ``o`` with about ``size`` devices: (document, its devices, ONT serial -> MAC)."""
    oid = f"WT-STORM-{o:06d}"
    conn = rng.choice(CONNECTIVITY)
    base = f"+390{2 + o % 7}{o:06d}"  # a ported range of 100 numbers per order
    site = "hq"
    planned: list[Planned] = []
    onts: dict[str, str] = {}
    devices: list[dict[str, Any]] = []
    iad_mac = ids.mac("iad")
    devices.append({"model": "iad", "site": site, "mac": iad_mac})
    planned.append(Planned(f"{oid}/iad", oid, "iad", "iad", iad_mac, accounts=int(size <= 0)))
    if conn == "ftth":
        serial = ids.serial()
        devices.append({"model": "mini-ont", "site": site, "serial": serial})
        onts[serial] = ids.mac("ont")
        planned.append(Planned(f"{oid}/ont", oid, "ont", "mini-ont", onts[serial], serial))
    doc: dict[str, Any] = {
        "order": oid,
        "customer": {"name": "Blackout Citta S.r.l.", "vat": "IT01234567897"},
        "sites": [{"id": site, "address": f"Via Blackout {o}, Milano", "connectivity": conn}],
        "numbers": {"gnr": [{"first": f"{base}00", "last": f"{base}99"}]},
    }
    left = size - len(devices)
    if left <= 0:  # a single-extension plan: the IAD's FXS port 1 is the extension
        doc.update(
            plan="office_one" if conn in ("fttc", "ftth") else "office_plus_special", lines=1
        )
        doc["extensions"] = [
            {
                "number": f"{base}00",
                "short": 10,
                "type": "premium",
                "name": "Titolare",
                "site": site,
            }
        ]
        doc["devices"] = devices
        return doc, planned, onts
    exts: list[dict[str, Any]] = []

    def ext(i: int) -> int:
        short = 100 + i
        exts.append(
            {
                "number": f"{base}{i:02d}",
                "short": short,
                "type": "standard",
                "name": f"Interno {i}",
                "site": site,
            }
        )
        return short

    dect = left >= 8 and rng.random() < 0.5
    phones = left - (1 if dect else 0)
    handsets = min(5, max(1, 32 - phones - 0)) if dect else 0
    handsets = min(handsets, rng.randint(2, 4)) if dect else 0
    while phones + handsets > 32:
        phones -= 1  # Office Maxi: at most 32 extensions
    for i in range(phones):
        model = "alcatel-temporis-ip701g" if rng.random() < 0.2 else "alcatel-temporis-ip150"
        mac = ids.mac("phone")
        devices.append({"model": model, "mac": mac, "extension": ext(i)})
        planned.append(Planned(f"{oid}/{model}-{i}", oid, "phone", model, mac, accounts=1))
    if dect:
        mac = ids.mac("dect_base")
        hs = [
            {"extension": ext(phones + j)}
            if j == 0
            else {"extension": ext(phones + j), "model": "alcatel-ip15"}
            for j in range(handsets)
        ]
        devices.append({"model": "alcatel-ip2215", "mac": mac, "site": site, "handsets": hs})
        planned.append(
            Planned(f"{oid}/dect", oid, "dect_base", "alcatel-ip2215", mac, accounts=handsets)
        )
    while len(exts) < 3:
        ext(len(exts))
    doc.update(plan="office_maxi", lines=3 if conn == "fwa" else min(8, max(3, len(exts) // 4)))
    doc["extensions"] = exts
    doc["devices"] = devices
    return doc, planned, onts


def generate(n: int, seed: int) -> Iterator[tuple[dict[str, Any], list[Planned], dict[str, str]]]:
    """Orders until ``n`` devices: one in ten a single-extension plan, the rest Office Maxi
    sites of 6 to 34 devices."""
    rng = random.Random(seed)
    ids = _Ids(rng)
    total, o = 0, 0
    while total < n:
        left = n - total
        small = rng.random() < 0.1 or left <= 2
        size = 0 if small else min(left, rng.randint(6, 34))
        if not small and 0 < left - size < 3:
            size = left  # leave no remainder too small for an order
        doc, planned, onts = order_document(o, size, rng, ids)
        if len(planned) > left:  # the last order: an ONT too many
            continue
        total += len(planned)
        o += 1
        yield doc, planned, onts


# ---------------------------------------------------------------------- the store


@dataclass
class Store:
    home: Path
    env: dict[str, str]
    orders: list[str] = field(default_factory=list)
    devices: list[Planned] = field(default_factory=list)
    ont_macs: dict[str, str] = field(default_factory=dict)  # serial -> DHCP MAC
    expected: dict[str, dict[str, str]] = field(default_factory=dict)  # device -> name -> sha
    seconds: float = 0.0


def storm_env(home: Path, net: LabNet) -> dict[str, str]:
    """Settings of the storm's store: files name the services' address."""
    return {
        "PROVISIONER_HOME": str(home),
        "PROVISIONER_PROVISIONING_HOST": net.services_ip,
        "PROVISIONER_SIP_REGISTRAR": net.services_ip,
        "PROVISIONER_SIP_DOMAIN": "storm.lab",
        "PROVISIONER_HTTP_PORT": "80",
        "PROVISIONER_TFTP_PORT": "69",
        "PROVISIONER_BIND_ADDRESS": net.services_ip,
        "PROVISIONER_LOG_LEVEL": "WARNING",
    }


@contextlib.contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def build_store(home: Path, net: LabNet, n: int, seed: int, emit: Emit) -> Store:
    """Apply and arm the generated orders; hash every served file render gives."""
    import hashlib

    import yaml

    from provisioner.documents.validate import check_text
    from provisioner.orders.service import OrdersService
    from provisioner.render.engine import Renderer
    from provisioner.settings import load_settings

    store = Store(home, storm_env(home, net))
    t0 = time.monotonic()
    with _environ({k: v for k, v in store.env.items() if k != "PROVISIONER_LOG_LEVEL"}):
        inv = OrdersService(load_settings())
        try:
            for doc, planned, onts in generate(n, seed):
                checked = check_text(yaml.safe_dump(doc, sort_keys=False), f"{doc['order']}.yaml")
                if checked.document is None:
                    raise LabNetError(
                        f"storm: generated order {doc['order']} is refused: "
                        + "; ".join(checked.lines())
                    )
                inv.apply(checked.document, actor="lab:storm")
                inv.arm(doc["order"], 240, actor="lab:storm", only="order")
                store.orders.append(doc["order"])
                store.devices += planned
                store.ont_macs.update(onts)
                if len(store.orders) % 100 == 0:
                    emit(f"  ... {len(store.orders)} orders, {len(store.devices)} devices")
            renderer = Renderer(inv.settings, inv)
            per_order: dict[str, list[Planned]] = {}
            for d in store.devices:
                per_order.setdefault(d.order_id, []).append(d)
            for oid in store.orders:
                groups: dict[str, dict[str, str]] = {}
                for name, f in renderer.render_order(oid).items():
                    if f.served:
                        groups.setdefault(f.device_id, {})[name] = hashlib.sha256(
                            f.data
                        ).hexdigest()
                for d in per_order.get(oid, []):
                    ident = d.serial or d.mac.replace(":", "")
                    store.expected[d.device_id] = next(
                        (g for g in groups.values() if any(ident in name for name in g)), {}
                    )
        finally:
            inv.db.dispose()
    store.seconds = time.monotonic() - t0
    return store


# ---------------------------------------------------------------------- services


def dnsmasq_conf(orders: list[str], ont_macs: list[str], seg: Segment, services_ip: str,
                 renderer: Any) -> str:  # fmt: skip
    """One area's dnsmasq: the lab's lines, then ``provisioner dhcp`` for each of its sites."""
    from provisioner.render.dhcp import render_dhcp

    first, last = seg.pool_range()
    lines = [
        f"# provisioner lab: DHCP for area {seg.index} of the devices' namespace",
        "port=0",  # no DNS
        f"interface={seg.svc_if}",
        "bind-interfaces",
        f"dhcp-range={first},{last},255.255.0.0,12h",
        "dhcp-lease-max=40000",
        "dhcp-authoritative",
        "no-ping",
        "leasefile-ro",  # leases in memory only: a lease file is rewritten on every change
        "quiet-dhcp",
        "# IADs (TR-069 CPEs) send option 60 dslforum.org and read the server's URL from",
        "# option 43 sub-option 1 (research/device-facts.md section 3)",
        f"dhcp-option=vendor:dslforum.org,1,http://{services_ip}/",
        "# Mini ONTs: the TFTP server (option 66, an address) [lab: no source for the ONT]",
    ]
    lines += [f"dhcp-host={mac},set:ont" for mac in ont_macs]
    lines.append(f"dhcp-option=tag:ont,66,{services_ip}")
    for oid in orders:
        order, _ = renderer.order_views(oid)
        for site in order.sites:
            lines.append(render_dhcp(renderer.engine, order, site.id, "dnsmasq"))
    return "\n".join(lines) + "\n"


@dataclass
class Services:
    serve: subprocess.Popen[bytes] | None = None
    dnsmasq: list[subprocess.Popen[bytes]] = field(default_factory=list)
    kamailio: Any = None
    workdir: Path | None = None
    serve_ready: float = 0.0
    index_line: str = ""

    def stop(self) -> None:
        for p in [self.serve, *self.dnsmasq]:
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGINT if p is self.serve else signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
        if self.kamailio is not None:
            self.kamailio.stop()


def require_tools() -> None:
    """Raise :class:`LabNetError` naming the programs the lab's services need and lack."""
    from provisioner_lab.sip import KAMAILIO

    missing = [n for n, ok in (("dnsmasq", shutil.which("dnsmasq")), ("kamailio", KAMAILIO))
               if not ok]  # fmt: skip
    if missing:
        raise LabNetError(
            f"the lab's services need {' and '.join(missing)} (apt-get install dnsmasq kamailio)"
        )


def _provisioner() -> str:
    exe = Path(sys.executable).parent / "provisioner"
    return str(exe) if exe.exists() else (shutil.which("provisioner") or "provisioner")


def start_services(
    net: LabNet,
    env: dict[str, str],
    workdir: Path,
    emit: Emit,
    *,
    dnsmasq_texts: list[str],
    kamailio_children: int = 4,
) -> Services:
    """serve, dnsmasq and Kamailio (from ``pbx export --all``) in the services namespace."""
    import logging

    import httpx

    from provisioner_lab.sip import Kamailio, SipLabError

    logging.getLogger("httpx").setLevel(logging.WARNING)  # the readiness probe: not news

    require_tools()
    svc = Services(workdir=workdir)
    full_env = {**os.environ, **env}
    db = workdir / "kamailio-db"
    r = subprocess.run(
        [_provisioner(), "pbx", "export", "--all", "--format", "kamailio", "--out", str(db)],
        env=full_env,
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        raise LabNetError(f"pbx export: {r.stderr.strip() or r.stdout.strip()}")
    confs = []
    for k, text in enumerate(dnsmasq_texts):
        confs.append(workdir / f"dnsmasq-{k}.conf")
        confs[-1].write_text(text)
    out_path, log_path = workdir / "serve.out", workdir / "serve.log"
    try:
        with inside(net.svc), out_path.open("wb") as out, log_path.open("wb") as log:
            t0 = time.monotonic()
            svc.serve = subprocess.Popen(
                [_provisioner(), "serve", "--host", net.services_ip, "--no-api"],
                env=full_env,
                stdout=out,
                stderr=log,
                start_new_session=True,
            )
            for k, conf in enumerate(confs):
                with (workdir / f"dnsmasq-{k}.log").open("wb") as dlog:
                    svc.dnsmasq.append(
                        subprocess.Popen(
                            [
                                "dnsmasq",
                                "-k",
                                "-C",
                                str(conf),
                                "--log-facility=-",
                                f"--pid-file={workdir}/dnsmasq-{k}.pid",
                            ],
                            stdout=subprocess.DEVNULL,
                            stderr=dlog,
                            start_new_session=True,
                        )
                    )
            kam = Kamailio(
                db,
                host=net.services_ip,
                port=5060,
                workdir=workdir,
                children=kamailio_children,
                memory_mb=256,
                lookup="htable",
                trusted=net.services_ip,  # a resync from the server (provisioner resync)
            )
            try:
                kam.start()
            except SipLabError as exc:
                raise LabNetError(f"kamailio: {exc}") from None
            svc.kamailio = kam
            # serve prints "index: N orders in memory in X s" when every order is loaded
            deadline = time.monotonic() + 300
            while not svc.index_line:
                for line in out_path.read_text(errors="replace").splitlines():
                    if line.startswith("index:"):
                        svc.index_line = line.strip()
                if svc.serve.poll() is not None:
                    raise LabNetError("serve exited: " + log_path.read_text()[-1500:])
                if time.monotonic() > deadline:
                    raise LabNetError("serve: orders not in memory after 300 s")
                time.sleep(0.05)
            while True:
                try:
                    httpx.get(f"http://{net.services_ip}/y000000000000.cfg", timeout=2)
                    break
                except httpx.HTTPError:
                    if svc.serve.poll() is not None or time.monotonic() > deadline:
                        raise LabNetError("serve: HTTP does not answer") from None
                    time.sleep(0.1)
            svc.serve_ready = time.monotonic() - t0
            for k, d in enumerate(svc.dnsmasq):
                if d.poll() is not None:
                    log_k = (workdir / f"dnsmasq-{k}.log").read_text()[-800:]
                    raise LabNetError(f"dnsmasq {k} exited: {log_k}")
    except BaseException:
        svc.stop()
        raise
    emit(
        f"services on {net.services_ip}: serve ({svc.index_line}; ready in "
        f"{svc.serve_ready:.1f} s), {len(svc.dnsmasq)} dnsmasq, kamailio :5060 "
        f"({kamailio_children} children)"
    )
    return svc


def cpu_seconds(pids: list[int]) -> dict[str, float]:
    """utime+stime (s) of the given processes, summed by command name (/proc/PID/stat)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[comm] = out.get(comm, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


# ---------------------------------------------------------------------- the storm


@dataclass
class StormReport:
    devices: int
    spread: float
    results: list[DeviceResult]
    cpu: dict[str, float]
    storm_seconds: float
    setup: dict[str, float] = field(default_factory=dict)

    def stage(self, name: str) -> list[float]:
        return sorted(v for r in self.results if (v := getattr(r, name)) is not None)

    @property
    def with_accounts(self) -> list[DeviceResult]:
        """Devices whose file holds SIP accounts (whether they got that far or not)."""
        return [r for r in self.results if r.accounts_expected or r.accounts]

    @property
    def done(self) -> list[float]:
        return sorted(d for r in self.results if (d := r.done) is not None)

    @property
    def differ(self) -> int:
        return sum(len(r.differ) for r in self.results)

    @property
    def files(self) -> int:
        return sum(r.files for r in self.results)

    @property
    def done_share(self) -> float:
        on_time = [d for d in self.done if d <= AIM_SECONDS]
        return len(on_time) / max(1, self.devices)

    @property
    def ok(self) -> bool:
        return self.done_share >= AIM_REGISTERED and self.differ == 0

    def lines(self) -> list[str]:
        n = self.devices
        out = [
            f"storm: {n} devices, power-on spread over {self.spread:g} s, "
            f"{self.storm_seconds:.1f} s from t0 to the last device's end"
        ]
        out.append(f"{'stage':<12} {'devices':>14} {'p50 s':>8} {'p99 s':>8} {'max s':>8}")
        regs = self.with_accounts
        rows = [
            ("DHCP", "dhcp", n),
            ("first file", "first_file", n),
            ("all files", "all_files", n),
            ("REGISTER", "registered", len(regs)),
        ]
        for label, attr, of in rows:
            vals = self.stage(attr)
            out.append(
                f"{label:<12} {len(vals):>7}/{of:<6} {_pct(vals, 50):>8} "
                f"{_pct(vals, 99):>8} {_pct(vals, 100):>8}"
            )
        done = self.done
        late = [d for d in done if d > AIM_SECONDS]
        accounts = sum(r.accounts for r in regs)
        accounts_ok = sum(r.accounts_ok for r in regs)
        out.append(
            f"registered: {len(self.stage('registered'))}/{len(regs)} devices with SIP "
            f"accounts ({accounts_ok}/{accounts} accounts); done (registered, or all "
            f"files for the {n - len(regs)} devices with nothing to register): "
            f"{len(done)}/{n} = {100 * len(done) / max(1, n):.2f} %, "
            f"{len(late)} later than {AIM_SECONDS:g} s after power-on"
        )
        out.append(f"files: {self.files} fetched, {self.differ} differ from render")
        retries = {
            k: sum(getattr(r, k) for r in self.results)
            for k in ("dhcp_sent", "http_retries", "tftp_retransmits", "sip_requests")
        }
        out.append("retries: " + ", ".join(f"{k} {v}" for k, v in retries.items()))
        cpu = ", ".join(f"{k} {v:.1f}" for k, v in sorted(self.cpu.items()))
        out.append(f"CPU seconds during the storm: {cpu}")
        errors: dict[str, int] = {}
        for r in self.results:
            if r.error:
                key = r.error.split(":", 2)[0] + ": " + r.error.rsplit(":", 1)[-1].strip()
                errors[key] = errors.get(key, 0) + 1
        for e, c in sorted(errors.items(), key=lambda x: -x[1])[:8]:
            out.append(f"  {c} x {e}")
        verdict = "OK" if self.ok else "NOT MET"
        out.append(
            f"verdict: {verdict} (aim: >= {AIM_REGISTERED * 100:g} % of devices done within "
            f"{AIM_SECONDS:g} s of power-on: {100 * self.done_share:.2f} %; 0 files differing "
            f"from render: {self.differ})"
        )
        return out


def _pct(vals: list[float], p: int) -> str:
    if not vals:
        return "-"
    i = min(len(vals) - 1, max(0, round(p / 100 * len(vals) + 0.5) - 1))
    return f"{vals[i]:.2f}"


def _specs(store: Store, spread: float, rng: random.Random) -> list[DeviceSpec]:
    from provisioner.catalog import MODELS

    out = []
    for d in store.devices:
        mac = store.ont_macs[d.serial] if d.kind == "ont" else d.mac
        out.append(
            DeviceSpec(
                d.device_id,
                d.order_id,
                d.kind,
                d.model,
                mac,
                d.serial,
                MODELS[d.model].firmware,
                rng.uniform(0, spread),
                store.expected.get(d.device_id, {}),
                d.accounts,
            )
        )
    return out


def run_storm(
    *,
    devices: int,
    spread: float,
    seed: int = 1,
    workers: int = 4,
    keep: bool = False,
    name: str = "plab",
    give_up: float = 90.0,
    emit: Emit = print,
) -> StormReport:
    """Everything above, then the network down (unless ``keep``). Raises LabNetError.

    ``workers``: device processes, one per area (broadcast domain, with its own dnsmasq).
    """
    require_netns()
    require_tools()
    net = LabNet(name=name, segments=workers)
    if net.existing():
        raise LabNetError(f"the lab network {name} is up already (provisioner lab net down first)")
    rng = random.Random(seed)
    tmp = Path(tempfile.mkdtemp(prefix="lab-storm-"))
    svc: Services | None = None
    procs: list[subprocess.Popen[bytes]] = []
    old_term = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        emit(f"store: generating {devices} devices ...")
        store = build_store(tmp / "home", net, devices, seed, emit)
        emit(
            f"store: {len(store.orders)} orders, {len(store.devices)} devices applied, armed "
            f"and hashed in {store.seconds:.1f} s"
        )
        # an order's devices are all in one area: area k has every workers-th order
        area = {oid: n % workers for n, oid in enumerate(store.orders)}
        from provisioner.orders.service import OrdersService
        from provisioner.render.engine import Renderer
        from provisioner.settings import load_settings

        texts = []
        with _environ(store.env):
            inv = OrdersService(load_settings())
            try:
                renderer = Renderer(inv.settings, inv)
                for seg in net.all_segments:
                    orders = [o for o in store.orders if area[o] == seg.index]
                    onts = [store.ont_macs[d.serial] for d in store.devices
                            if d.kind == "ont" and area[d.order_id] == seg.index]  # fmt: skip
                    texts.append(dnsmasq_conf(orders, onts, seg, net.services_ip, renderer))
            finally:
                inv.db.dispose()
        net.up()
        with inside(net.dev):  # the devices' ARP asks from the link's own address
            for key in ["all"] + [seg.dev_if for seg in net.all_segments]:
                Path(f"/proc/sys/net/ipv4/conf/{key}/arp_announce").write_text("2\n")
        emit(
            f"net: {net.svc} ({net.services_ip}), {net.dev}, {workers} areas (pools {net.pool}),"
            f" bridges in {net.sw}"
        )
        svc = start_services(net, store.env, tmp, emit, dnsmasq_texts=texts)
        specs = _specs(store, spread, rng)
        svc_pids = netns_pids(net.svc)
        cpu0 = cpu_seconds(svc_pids)
        t0 = time.monotonic() + 2.0  # the workers' start-up
        share: list[list[dict[str, Any]]] = [[] for _ in range(workers)]
        for spec in specs:
            share[area[spec.order_id]].append(asdict(spec))
        env = {**os.environ, **store.env}
        with inside(net.dev):
            for w in range(workers):
                plan = tmp / f"plan-{w}.json"
                plan.write_text(json.dumps({
                    "t0": t0, "give_up": give_up, "ifname": net.segment(w).dev_if,
                    "seed": seed * 1000 + w, "devices": share[w],
                }))  # fmt: skip
                with (tmp / f"worker-{w}.log").open("wb") as wlog:
                    procs.append(subprocess.Popen(
                        [sys.executable, "-m", "provisioner_lab.stormdevice", str(plan),
                         str(tmp / f"out-{w}.jsonl")],
                        env=env, stderr=wlog,
                    ))  # fmt: skip
        emit(f"storm: {len(specs)} devices in {workers} workers, power-on over {spread:g} s")
        deadline = t0 + spread + give_up + 60
        for p in procs:
            try:
                p.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
        ended = time.monotonic() - t0
        cpu1 = cpu_seconds(svc_pids)
        cpu = {k: cpu1.get(k, 0.0) - cpu0.get(k, 0.0) for k in cpu1}
        results: list[DeviceResult] = []
        for w, p in enumerate(procs):
            out = tmp / f"out-{w}.jsonl"
            if p.returncode != 0 or not out.exists():
                tail = (tmp / f"worker-{w}.log").read_text(errors="replace")[-1500:]
                raise LabNetError(f"storm worker {w} failed (exit {p.returncode}):\n{tail}")
            for line in out.read_text().splitlines():
                row = json.loads(line)
                if "cpu" in row:
                    cpu["devices (workers)"] = cpu.get("devices (workers)", 0.0) + row["cpu"]
                else:
                    results.append(DeviceResult(**row))
        report = StormReport(len(specs), spread, results, cpu, ended)
        report.setup = {"store": store.seconds, "serve_ready": svc.serve_ready}
        return report
    finally:
        signal.signal(signal.SIGTERM, old_term)
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)
        if not keep:
            if svc is not None:
                svc.stop()
            net.down()
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            emit(f"kept: the lab network {name} and {tmp} (provisioner lab net down --name {name})")
