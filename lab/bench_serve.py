"""Benchmark: a boot storm of N devices fetching their files over TFTP and HTTP (issue 4).

Not a test (timings are flaky on shared machines). What it does, all on loopback:

1. a temporary PROVISIONER_HOME (SQLite) gets ceil(N/32) generated Office Maxi orders of 32
   phones (Alcatel Temporis IP150, one ``<mac12>.cfg`` each), applied and armed; the
   expected bytes of every phone's file come from ``Renderer.render_order``;
2. our server runs as a subprocess, as in production:
   ``provisioner serve --host 127.0.0.1 --tftp-port P --http-port Q --no-api``.
   One process for the TFTP passes, a fresh one for the HTTP passes, so each protocol's
   first pass is the first fetch of every device after a restart ("cold": the boot storm;
   files are published, never rendered by a fetch) and is followed by "warm" passes;
3. the same bytes, one file per device under the same names, are served by Debian's nginx
   (own config, ``worker_processes 2``, ``access_log off``) and by tftpd-hpa
   (``in.tftpd -L -a 127.0.0.1:P -s DIR -u nobody``) on free high ports, then both are
   stopped by PID (also on Ctrl-C or an error);
4. an asyncio load generator in this process fetches every device's file with at most
   ``--concurrency`` fetches in flight and checks every body against the expected sha256;
5. ``wrk`` (keep-alive, 64 connections) hammers one armed device's file, without and with
   its per-device Basic credentials, on ours and on nginx in turn: the load tool is not the
   bottleneck there (nginx shows what the machine can do).

Each device fetches from its own loopback address (127.0.x.y, all of 127/8 is loopback on
Linux): the cold TFTP pass binds each device to that address inside its enrollment window,
and later passes come from the same address. HTTP cold = inside the window without
credentials; HTTP warm = the per-device Basic credentials its first file installed (the
steady state). TFTP runs lock-step with blksize 512 unless ``--blksize`` is given; a lost
packet is retransmitted by the client after 1 s (counted as a retry; 5 in a row fail the
fetch). A correct run has zero failures and zero misses (the sweep guard would block a
source after 20 misses a minute, so any failure is a real one).

    .venv/bin/python lab/bench_serve.py                     # 2,000 devices, 200 in flight
    .venv/bin/python lab/bench_serve.py --devices 500 --skip-reference
    .venv/bin/python lab/bench_serve.py --profile /tmp/prof  # py-spy: /tmp/prof/tftp-cold.txt,
                                                             # ... wrk-plain.txt

Reference servers: ``apt-get install nginx-light tftpd-hpa`` (tftpd-hpa needs root for
``-s``/``-u``); without them, or with ``--skip-reference``, only our rows are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

PHONES_PER_ORDER = 32
CLIENT_TIMEOUT = 1.0  # TFTP retransmission timeout, seconds
CLIENT_MAX_RETRIES = 5  # consecutive timeouts before a TFTP fetch fails
HTTP_TIMEOUT = 15.0  # seconds for one whole HTTP fetch
STARTUP_TIMEOUT = 30.0


# ---------------------------------------------------------------------------- the devices


@dataclass(frozen=True)
class Job:
    """One device's fetch: its file name, its source address, what it must get."""

    name: str
    source: str
    sha256: str
    size: int
    user: str
    password: str


def source_of(i: int) -> str:
    """A distinct loopback address per device: 127.0.1.1, 127.0.1.2, ... 127.0.254.250."""
    return f"127.0.{1 + i // 250}.{i % 250 + 1}"


def mac_of(order: int, phone: int) -> str:
    return f"00:80:f1:{(order >> 8) & 0xFF:02x}:{order & 0xFF:02x}:{phone:02x}"


def order_document(o: int) -> dict[str, object]:
    """Office Maxi, one site, an IAD and 32 phones on 32 extensions (as test_serving does)."""
    exts = [
        {
            "number": f"+3902{5550000 + i}",
            "short": 1000 + i,
            "type": "standard",
            "name": f"Ext {i}",
            "site": "hq",
        }
        for i in range(PHONES_PER_ORDER)
    ]
    phones = [
        {"model": "alcatel-temporis-ip150", "extension": 1000 + i, "mac": mac_of(o, i)}
        for i in range(PHONES_PER_ORDER)
    ]
    return {
        "order": f"WT-BENCH-{o:04d}",
        "customer": {"name": "Carico S.r.l.", "vat": "IT05550000003"},
        "plan": "office_maxi",
        "lines": 8,
        "numbers": {"gnr": [{"first": "+39025550000", "last": "+39025550099"}]},
        "sites": [{"id": "hq", "address": "Via Carico 1, Milano", "connectivity": "fttc"}],
        "extensions": exts,
        "devices": [{"model": "iad", "site": "hq"}, *phones],
    }


def prepare_store(devices: int) -> tuple[list[Job], dict[str, bytes]]:
    """Apply and arm the orders in PROVISIONER_HOME; the jobs and every job's bytes."""
    import yaml

    from provisioner.documents.validate import check_text
    from provisioner.orders.service import OrdersService
    from provisioner.render.engine import Renderer
    from provisioner.settings import load_settings

    inv = OrdersService(load_settings())
    renderer = Renderer(inv.settings, inv)
    jobs: list[Job] = []
    data: dict[str, bytes] = {}
    try:
        for o in range(math.ceil(devices / PHONES_PER_ORDER)):
            doc = order_document(o)
            checked = check_text(yaml.safe_dump(doc))
            if checked.document is None:
                raise SystemExit("generated order is invalid:\n" + "\n".join(checked.lines()))
            inv.apply(checked.document, actor="bench")
            inv.arm(str(doc["order"]), 120, actor="bench")
            rendered = renderer.render_order(str(doc["order"]))
            with inv.db.read() as s:
                order = inv.get(s, str(doc["order"]))
                secret = {
                    d.mac: inv.secret(s, order, f"device:{d.device_id}", "provisioning_password")
                    for d in order.devices
                    if d.mac and d.model == "alcatel-temporis-ip150"
                }
            for p in range(PHONES_PER_ORDER):
                if len(jobs) == devices:
                    break
                mac = mac_of(o, p)
                user = mac.replace(":", "")
                name = f"{user}.cfg"
                body = rendered[name].data
                data[name] = body
                jobs.append(
                    Job(
                        name,
                        source_of(len(jobs)),
                        hashlib.sha256(body).hexdigest(),
                        len(body),
                        user,
                        secret[mac],
                    )
                )
    finally:
        inv.db.dispose()
    return jobs, data


# ---------------------------------------------------------------------------- measuring


@dataclass
class Row:
    server: str
    protocol: str
    label: str
    devices: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    retries: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    served: int = 0  # fetches that got the right bytes
    passes: int = 1  # > 1: the median of repeated passes; failures and retries of all

    @property
    def rate(self) -> float:
        return self.served / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


Fetch = Callable[[Job, Row], Awaitable[bytes]]


async def run_pass(
    server: str, protocol: str, label: str, jobs: list[Job], fetch: Fetch, concurrency: int
) -> Row:
    row = Row(server, protocol, label, len(jobs), 0.0)
    gate = asyncio.Semaphore(concurrency)

    async def one(job: Job) -> None:
        async with gate:
            t0 = time.perf_counter()
            try:
                body = await fetch(job, row)
            except Exception as exc:  # every way a fetch can fail is counted, none stops us
                row.failures += 1
                why = str(exc)[:60] or f"no answer within {HTTP_TIMEOUT:.0f} s"
                row.reasons[f"{type(exc).__name__}: {why}"] += 1
                return
            row.latencies.append(time.perf_counter() - t0)
            if hashlib.sha256(body).hexdigest() != job.sha256:
                row.failures += 1
                row.reasons[f"wrong bytes ({len(body)} of {job.size})"] += 1
            else:
                row.served += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(one(j) for j in jobs))
    row.seconds = time.perf_counter() - t0
    return row


# -- HTTP: raw asyncio streams, one connection per fetch (a booting device opens its own)


class FetchFailed(Exception):
    pass


def http_fetcher(port: int, with_credentials: bool) -> Fetch:
    async def fetch(job: Job, row: Row) -> bytes:
        return await asyncio.wait_for(_http_get(port, job, with_credentials), HTTP_TIMEOUT)

    return fetch


async def _http_get(port: int, job: Job, with_credentials: bool) -> bytes:
    auth = ""
    if with_credentials:
        token = base64.b64encode(f"{job.user}:{job.password}".encode()).decode()
        auth = f"Authorization: Basic {token}\r\n"
    request = (
        f"GET /{job.name} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"User-Agent: bench-serve/1\r\n{auth}Connection: close\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(job.source, 0))
    try:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = head[9:12]
        length = None
        for line in head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == b"content-length":
                length = int(value.strip())
        if status != b"200":
            raise FetchFailed(f"HTTP {status.decode(errors='replace')}")
        if length is None:
            return await reader.read()
        return await reader.readexactly(length)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


# -- TFTP: RRQ, then DATA/ACK lock-step, retransmitting our last packet after 1 s


class _TftpTransfer(asyncio.DatagramProtocol):
    def __init__(self, server: tuple[str, int], rrq: bytes, blksize: int, row: Row):
        self.server = server
        self.rrq = rrq
        self.blksize = blksize
        self.row = row
        self.done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.buf = bytearray()
        self.block = 1
        self.tid: tuple[str, int] | None = None
        self.last: tuple[bytes, tuple[str, int]] = (rrq, server)
        self.misses = 0
        self.timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.transport.sendto(self.rrq, self.server)
        self._arm()

    def _arm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(CLIENT_TIMEOUT, self._timeout)

    def _timeout(self) -> None:
        if self.done.done() or self.transport is None:
            return
        self.misses += 1
        if self.misses > CLIENT_MAX_RETRIES:
            self._end(FetchFailed(f"no answer after {CLIENT_MAX_RETRIES} retries"))
            return
        self.row.retries += 1
        self.transport.sendto(*self.last)
        self._arm()

    def _end(self, result: bytes | Exception) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if not self.done.done():
            if isinstance(result, Exception):
                self.done.set_exception(result)
            else:
                self.done.set_result(result)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.done.done() or self.transport is None:
            return
        if self.tid is None:
            if addr[0] != self.server[0]:
                return
            self.tid = addr
        elif addr != self.tid:
            return  # another TID: not ours (RFC 1350 would answer ERROR 5; ignoring is enough)
        opcode = data[:2]
        if opcode == b"\x00\x05":
            code = int.from_bytes(data[2:4], "big")
            self._end(FetchFailed(f"TFTP ERROR {code} {data[4:-1].decode(errors='replace')}"))
            return
        if opcode == b"\x00\x06":  # OACK for our blksize
            if self.block != 1:
                return
            self.last = (b"\x00\x04\x00\x00", addr)
            self.transport.sendto(*self.last)
            self.misses = 0
            self._arm()
            return
        if opcode != b"\x00\x03" or len(data) < 4:
            return
        number = int.from_bytes(data[2:4], "big")
        if number == self.block & 0xFFFF:
            self.buf += data[4:]
            self.last = (b"\x00\x04" + data[2:4], addr)
            self.transport.sendto(*self.last)
            self.block += 1
            self.misses = 0
            if len(data) - 4 < self.blksize:
                self._end(bytes(self.buf))
            else:
                self._arm()
        elif number == (self.block - 1) & 0xFFFF:
            self.transport.sendto(b"\x00\x04" + data[2:4], addr)  # our ACK was lost: again

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP port unreachable and the like: the retransmission timer decides


def tftp_fetcher(port: int, blksize: int) -> Fetch:
    loop = asyncio.get_running_loop()

    async def fetch(job: Job, row: Row) -> bytes:
        rrq = b"\x00\x01" + job.name.encode() + b"\x00octet\x00"
        size = 512
        if blksize:
            rrq += b"blksize\x00" + str(blksize).encode() + b"\x00"
            size = blksize
        transport, proto = await loop.create_datagram_endpoint(
            lambda: _TftpTransfer(("127.0.0.1", port), rrq, size, row),
            local_addr=(job.source, 0),
        )
        try:
            return await proto.done
        finally:
            transport.close()

    return fetch


# ---------------------------------------------------------------------------- the servers


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports() -> tuple[int, int]:
    """(a UDP port, a TCP port), each free at the moment."""
    return free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)


class Processes:
    """Every child we start, stopped by its PID at the end whatever happens."""

    def __init__(self) -> None:
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, label: str, argv: list[str], **kw: object) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, start_new_session=True, **kw)  # type: ignore[call-overload]
        self.children.append((label, proc))
        return proc  # type: ignore[no-any-return]

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.children = [(n, p) for n, p in self.children if p is not proc]

    def stop_all(self) -> None:
        for _label, proc in reversed(self.children):
            self.stop(proc)


def wait_tcp(port: int, proc: subprocess.Popen[bytes], label: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{label} exited with status {proc.returncode} while starting")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"{label} did not listen on 127.0.0.1:{port} within {STARTUP_TIMEOUT} s")


def wait_tftp(port: int, proc: subprocess.Popen[bytes], probe: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    rrq = b"\x00\x01" + probe.encode() + b"\x00octet\x00"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.3)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"in.tftpd exited with status {proc.returncode}")
            s.sendto(rrq, ("127.0.0.1", port))
            with contextlib.suppress(OSError):
                pkt, addr = s.recvfrom(1024)
                if pkt[:2] == b"\x00\x03":
                    s.sendto(b"\x00\x04" + pkt[2:4], addr)
                    return
    raise SystemExit(f"in.tftpd did not answer on 127.0.0.1:{port}")


@contextlib.contextmanager
def our_server(
    procs: Processes, home: Path, tag: str, workers: int = 1
) -> Iterator[tuple[int, int, int]]:
    """``provisioner serve --workers N`` in a subprocess; yields (tftp port, http port, pid)."""
    tftp_port, http_port = free_ports()
    argv = [
        sys.executable,
        "-c",
        "from provisioner.cli.app import app; app()",
        "serve",
        "--host",
        "127.0.0.1",
        "--tftp-port",
        str(tftp_port),
        "--http-port",
        str(http_port),
        "--no-api",
        "--workers",
        str(workers),
    ]
    env = {**os.environ, "PROVISIONER_HOME": str(home)}
    log = (home / f"serve-{tag}.log").open("wb")
    proc = procs.start("provisioner serve", argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_tcp(http_port, proc, "provisioner serve")
        yield tftp_port, http_port, proc.pid
    finally:
        procs.stop(proc, signal.SIGINT)
        log.close()


def cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and of its live children (``serve --workers``' processes)."""
    total = 0.0
    pids = [pid]
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            pids += [int(c) for c in (task / "children").read_text().split()]
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def settle(pid: int, limit: float = 60.0) -> float:
    """Wait until the server is idle (< 5 % of a CPU for 0.5 s): a pass's abandoned requests
    and its audit rows must not be billed to the next pass. Returns the seconds waited."""
    t0 = time.perf_counter()
    before = cpu_seconds(pid)
    while time.perf_counter() - t0 < limit:
        time.sleep(0.5)
        now = cpu_seconds(pid)
        if now - before < 0.025:
            break
        before = now
    return time.perf_counter() - t0


def start_py_spy(procs: Processes, pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        print("  (py-spy not found: no profile)")
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [exe, "record", "--pid", str(pid), "--format", "raw", "--rate", "100", "--threads",
            "--subprocesses", "--nonblocking", "-o", str(out)]  # fmt: skip
    proc = procs.start("py-spy", argv, stdout=subprocess.DEVNULL)
    time.sleep(1.0)  # attached before the first request
    return proc


NGINX_CONF = """\
worker_processes 2;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    default_type text/plain;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {root};
        location / {{ }}
    }}
}}
"""


def write_reference_files(ref: Path, data: dict[str, bytes], probe: str) -> Path:
    """The very same bytes under the same names, readable by nobody (nginx workers, tftpd)."""
    ref.chmod(0o755)
    files = ref / "files"
    files.mkdir(mode=0o755)
    for name, body in [*data.items(), (probe, b"probe\n")]:
        (files / name).write_bytes(body)
        (files / name).chmod(0o644)
    return files


@contextlib.contextmanager
def nginx(procs: Processes, root: Path, prefix: Path) -> Iterator[int | None]:
    exe = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(exe).exists():
        print("  nginx not installed (apt-get install nginx-light): no HTTP reference")
        yield None
        return
    port = free_port(socket.SOCK_STREAM)
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, port=port, root=root))
    argv = [exe, "-c", str(conf), "-p", str(prefix), "-e", str(prefix / "error.log")]
    proc = procs.start("nginx", argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_tcp(port, proc, "nginx")
        yield port
    finally:
        procs.stop(proc, signal.SIGTERM)


@contextlib.contextmanager
def tftpd_hpa(procs: Processes, root: Path, probe: str) -> Iterator[int | None]:
    exe = shutil.which("in.tftpd") or "/usr/sbin/in.tftpd"
    if not Path(exe).exists():
        print("  tftpd-hpa not installed (apt-get install tftpd-hpa): no TFTP reference")
        yield None
        return
    if os.geteuid() != 0:
        print("  in.tftpd -s/-u needs root: no TFTP reference")
        yield None
        return
    port = free_port(socket.SOCK_DGRAM)
    argv = [exe, "-L", "-a", f"127.0.0.1:{port}", "-s", str(root), "-u", "nobody"]
    proc = procs.start("in.tftpd", argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_tftp(port, proc, probe)
        yield port
    finally:
        procs.stop(proc, signal.SIGTERM)


# ---------------------------------------------------------------------------- report


def summarize(rows: list[Row]) -> list[Row]:
    """One row per server, protocol and pass kind: the median of repeated passes by files/s,
    carrying the failures and retries of all of them."""
    groups: dict[tuple[str, str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.server, r.protocol, r.label), []).append(r)
    out = []
    for group in groups.values():
        median = sorted(group, key=lambda r: r.rate)[len(group) // 2]
        row = dataclasses.replace(median, reasons=Counter(), passes=len(group))
        row.failures = sum(r.failures for r in group)
        row.retries = sum(r.retries for r in group)
        for r in group:
            row.reasons.update(r.reasons)
        out.append(row)
    rank = {"ours": 0, "nginx": 1, "tftpd-hpa": 1}
    return sorted(out, key=lambda r: (r.protocol, rank.get(r.server, 2), r.label))


def print_table(rows: list[Row]) -> None:
    head = ("server", "protocol", "pass", "devices", "seconds", "files/s", "p50 ms", "p99 ms",
            "failures", "retries")  # fmt: skip
    lines = [head]
    for r in rows:
        lines.append(
            (
                r.server,
                r.protocol,
                r.label if r.passes == 1 else f"{r.label} (median of {r.passes})",
                str(r.devices),
                f"{r.seconds:.2f}",
                f"{r.rate:.0f}",
                f"{r.pct(0.50):.1f}",
                f"{r.pct(0.99):.1f}",
                str(r.failures),
                str(r.retries),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    for n, line in enumerate(lines):
        print("  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in
                        enumerate(zip(line, widths, strict=True))))  # fmt: skip
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print("(failures and retries: summed over all passes of the row)")
    for r in rows:
        for reason, count in r.reasons.most_common(3):
            print(f"  {r.server} {r.protocol} {r.label}: {count} x {reason}")


def print_ratios(rows: list[Row]) -> None:
    by = {(r.server, r.protocol, r.label): r for r in rows}
    # Issue 13: the per-device client's passes >= 0.5 x nginx and >= 1.5 x tftpd-hpa.
    aims = {("http", "nginx"): 0.5, ("tftp", "tftpd-hpa"): 1.5}
    printed = False
    for (protocol, ref), aim in aims.items():
        for label in ("cold", "warm"):
            ours, theirs = by.get(("ours", protocol, label)), by.get((ref, protocol, label))
            if ours is None or theirs is None or not theirs.rate:
                continue
            if not printed:
                print("\nratios (files/s ours / theirs; p99 theirs / ours):")
                printed = True
            ratio = ours.rate / theirs.rate
            verdict = "ok" if ratio >= aim else "BELOW AIM"
            if ours.failures:
                verdict += f", {ours.failures} FAILURES"
            p99 = theirs.pct(0.99) / ours.pct(0.99) if ours.latencies else float("nan")
            print(f"  {protocol} {label}: ours/{ref} = {ratio:.3f} (aim >= {aim}) {verdict};"
                  f" p99 ratio {p99:.2f}")  # fmt: skip
    for protocol in ("http", "tftp"):
        cold, warm = by.get(("ours", protocol, "cold")), by.get(("ours", protocol, "warm"))
        if cold is not None and warm is not None and cold.rate:
            slower = warm.rate / cold.rate
            verdict = "ok" if slower <= 1.2 else "BELOW AIM"
            print(f"  {protocol}: ours cold is {slower:.2f} x as slow as warm (aim <= 1.2)"
                  f" {verdict}")  # fmt: skip


# ---------------------------------------------------------------------------- wrk


def rearm(job: Job) -> None:
    from provisioner.orders.service import OrdersService
    from provisioner.settings import load_settings

    inv = OrdersService(load_settings())
    try:
        inv.arm(":".join(job.user[i : i + 2] for i in range(0, 12, 2)), 120, actor="bench")
    finally:
        inv.db.dispose()


def wrk_rate(url: str, seconds: int, connections: int, header: str = "") -> float:
    """Requests per second ``wrk`` reaches on ``url`` (keep-alive); 0 when wrk is absent."""
    exe = shutil.which("wrk")
    if exe is None:
        return 0.0
    argv = [exe, "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if header:
        argv[1:1] = ["-H", header]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=False)
    non_2xx = next((ln for ln in out.stdout.splitlines() if "Non-2xx" in ln), "")
    if non_2xx:
        raise SystemExit(f"wrk on {url}: {non_2xx.strip()} (the file was not served)")
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("Requests/sec:")), "")
    return float(line.split()[1]) if line else 0.0


# The Python HTTP stack's own ceiling: uvicorn (httptools, uvloop, as ``serve`` runs it) with
# an ASGI app that answers every request with the same bytes and decides nothing.
BARE_ASGI = """
import sys, uvicorn
body = open(sys.argv[2], "rb").read()
head = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": head})
    await send({"type": "http.response.body", "body": body})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
            log_level="warning", access_log=False, lifespan="off")
"""


@contextlib.contextmanager
def bare_uvicorn(procs: Processes, body_file: Path) -> Iterator[int]:
    port = free_ports()[0]
    argv = [sys.executable, "-c", BARE_ASGI, str(port), str(body_file)]
    proc = procs.start("uvicorn (bare)", argv, stdout=subprocess.DEVNULL)
    try:
        wait_tcp(port, proc, "uvicorn (bare)")
        yield port
    finally:
        procs.stop(proc, signal.SIGINT)


def wrk_passes(procs: Processes, home: Path, base: Path, files: Path | None, job: Job,
               args: argparse.Namespace) -> None:  # fmt: skip
    """One armed device's file under ``wrk`` (keep-alive, 64 connections): without and with
    the device's own Basic credentials, ours and nginx interleaved in one run."""
    if shutil.which("wrk") is None:
        print("\nwrk: not installed (apt-get install wrk): no keep-alive passes")
        return
    basic = base64.b64encode(f"{job.user}:{job.password}".encode()).decode()
    header = f"Authorization: Basic {basic}"
    rows: dict[tuple[str, str], list[float]] = {}
    rearm(job)  # the device is bound to its own source by now: a re-arm releases it
    with contextlib.ExitStack() as stack:
        _, http_port, pid = stack.enter_context(our_server(procs, home, "wrk", args.workers))
        ours = f"http://127.0.0.1:{http_port}/{job.name}"
        # wrk fetches from 127.0.0.1: that box, inside its window, binds the device first.
        first = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                "--interface", "127.0.0.1", ours],
                               capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
        if first.stdout != "200":
            raise SystemExit(f"wrk: our server answered {first.stdout} to the device's file")
        time.sleep(1.0)  # every worker has followed the binding
        theirs = None
        if files is not None:
            nginx_port = stack.enter_context(nginx(procs, files, base / "nginx-wrk"))
            theirs = f"http://127.0.0.1:{nginx_port}/{job.name}"
        body_file = base / "wrk-body"
        body_file.write_bytes(b"x" * job.size)  # the same size as the device's file
        bare = f"http://127.0.0.1:{stack.enter_context(bare_uvicorn(procs, body_file))}/x"
        for n in range(args.wrk_rounds):
            for kind, hdr in (("plain", ""), ("credentials", header)):
                spy = None
                if args.profile is not None and n == 0:
                    spy = start_py_spy(procs, pid, args.profile / f"wrk-{kind}.txt")
                rows.setdefault(("ours", kind), []).append(
                    wrk_rate(ours, args.wrk_seconds, args.wrk_connections, hdr)
                )
                if spy is not None:
                    procs.stop(spy, signal.SIGINT)
                if theirs is not None:
                    rows.setdefault(("nginx", kind), []).append(
                        wrk_rate(theirs, args.wrk_seconds, args.wrk_connections, hdr)
                    )
            rows.setdefault(("bare", "plain"), []).append(
                wrk_rate(bare, args.wrk_seconds, args.wrk_connections)
            )
    print(f"\nwrk -t2 -c{args.wrk_connections} -d{args.wrk_seconds}s (keep-alive), one armed"
          f" device's file, median of {args.wrk_rounds}; ours: serve --workers {args.workers},"
          " nginx: worker_processes 2, bare uvicorn: one process:")  # fmt: skip
    for kind in ("plain", "credentials"):
        ours_rate = statistics.median(rows[("ours", kind)])
        line = f"  {kind:11}: ours {ours_rate:8.0f} req/s"
        if ("nginx", kind) in rows:
            ref_rate = statistics.median(rows[("nginx", kind)])
            ratio = ours_rate / ref_rate if ref_rate else 0.0
            verdict = "ok" if ratio >= 0.35 else "BELOW AIM"
            line += (f", nginx {ref_rate:8.0f} req/s: ours/nginx = {ratio:.3f}"
                     f" (aim >= 0.35) {verdict}")  # fmt: skip
        print(line)
    bare_rate = statistics.median(rows[("bare", "plain")])
    ours_rate = statistics.median(rows[("ours", "plain")])
    line = f"  {'ceiling':11}: uvicorn with an ASGI app that decides nothing {bare_rate:8.0f} req/s"
    if ("nginx", "plain") in rows:
        line += f" = {bare_rate / statistics.median(rows[('nginx', 'plain')]):.3f} x nginx"
    print(line + f"; ours is {ours_rate / bare_rate:.2f} of it")


# ---------------------------------------------------------------------------- main


async def measure(
    name: str, protocol: str, label: str, jobs: list[Job], port: int, args: argparse.Namespace
) -> Row:
    if protocol == "tftp":
        fetch = tftp_fetcher(port, args.blksize)
    else:
        fetch = http_fetcher(port, with_credentials=label == "warm")
    row = await run_pass(name, protocol, label, jobs, fetch, args.concurrency)
    print(f"  {name:9} {protocol} {label}: {row.seconds:6.2f} s, {row.rate:7.0f} files/s,"
          f" {row.failures} failures, {row.retries} retries", flush=True)  # fmt: skip
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=2000, help="simulated devices (2,000)")
    ap.add_argument("--concurrency", type=int, default=200, help="fetches in flight (200)")
    ap.add_argument("--blksize", type=int, default=0, help="TFTP blksize option (none: 512)")
    ap.add_argument("--repeat", type=int, default=3, help="warm passes per server (3)")
    ap.add_argument("--skip-reference", action="store_true", help="no nginx / tftpd-hpa")
    ap.add_argument("--profile", type=Path, help="py-spy raw stacks of our server to this dir")
    ap.add_argument("--wrk-seconds", type=int, default=10, help="each wrk run (10)")
    ap.add_argument("--wrk-connections", type=int, default=64, help="wrk connections (64)")
    ap.add_argument("--wrk-rounds", type=int, default=3, help="wrk runs per server (3)")
    ap.add_argument("--skip-wrk", action="store_true", help="no wrk keep-alive passes")
    ap.add_argument(
        "--workers",
        type=int,
        default=2,
        help="our serving processes (2: as many as nginx's worker_processes)",
    )
    args = ap.parse_args(argv)
    if not 1 <= args.devices <= 250 * 254:
        ap.error("--devices must be 1 to 63,500 (one loopback source each)")
    if not 1 <= args.repeat <= 20:
        ap.error("--repeat must be 1 to 20")
    if not 1 <= args.concurrency <= 4000:
        ap.error("--concurrency must be 1 to 4,000")

    def terminated(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminated)  # `timeout`, `kill`: still stop our children
    procs = Processes()
    base = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    ref = Path(tempfile.mkdtemp(prefix="bench-serve-ref-"))
    started = time.perf_counter()
    rows: list[Row] = []
    try:
        home = base / "home"
        home.mkdir()
        os.environ["PROVISIONER_HOME"] = str(home)
        for var in ("PROVISIONER_DATABASE_URL", "PROVISIONER_SETTINGS"):
            os.environ.pop(var, None)
        t0 = time.perf_counter()
        jobs, data = prepare_store(args.devices)
        orders = math.ceil(args.devices / PHONES_PER_ORDER)
        sizes = sorted(j.size for j in jobs)
        print(f"{len(jobs)} devices in {orders} orders applied, armed and rendered in"
              f" {time.perf_counter() - t0:.1f} s; file sizes {sizes[0]}..{sizes[-1]} bytes,"
              f" concurrency {args.concurrency}, TFTP blksize {args.blksize or 512}")  # fmt: skip

        files, probe = None, "bench-probe.txt"
        if not args.skip_reference:
            files = write_reference_files(ref, data, probe)
        # Per protocol: a fresh server of ours (empty cache) and the reference side by side,
        # their passes interleaved (ours, theirs, ours, theirs...) so that a change in the
        # machine's load hits both alike; the warm pass is repeated --repeat times.
        for protocol in ("tftp", "http"):
            theirs = "tftpd-hpa" if protocol == "tftp" else "nginx"
            with contextlib.ExitStack() as stack:
                server = our_server(procs, home, protocol, args.workers)
                tftp_port, http_port, pid = stack.enter_context(server)
                ours_port = tftp_port if protocol == "tftp" else http_port
                ref_port = None
                if files is not None:
                    ref_server = (
                        tftpd_hpa(procs, files, probe)
                        if protocol == "tftp"
                        else nginx(procs, files, base / "nginx")
                    )
                    ref_port = stack.enter_context(ref_server)
                # Cold: the first fetch of every device after a restart (the server has
                # loaded what was published, nothing rendered); not the start-up itself,
                # which lab/bench_publish.py measures.
                settle(pid)
                passes = ["cold"] + ["warm"] * args.repeat
                for n, label in enumerate(passes):
                    spy = None
                    if args.profile is not None and n < 2:
                        spy = start_py_spy(procs, pid, args.profile / f"{protocol}-{label}.txt")
                    rows.append(
                        asyncio.run(measure("ours", protocol, label, jobs, ours_port, args))
                    )
                    print(f"    (our server busy {settle(pid):.1f} s more after the pass)")
                    if spy is not None:
                        procs.stop(spy, signal.SIGINT)
                    if ref_port is not None:
                        row = asyncio.run(measure(theirs, protocol, label, jobs, ref_port, args))
                        rows.append(row)
        summary = summarize(rows)
        print()
        print_table(summary)
        print_ratios(summary)
        if not args.skip_wrk:
            wrk_passes(procs, home, base, files, jobs[-1], args)
    except KeyboardInterrupt:
        print("\ninterrupted")
        return 130
    finally:
        procs.stop_all()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(ref, ignore_errors=True)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 1 if any(r.failures for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
