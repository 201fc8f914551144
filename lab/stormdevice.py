"""One simulated device of a boot storm: power on, DHCP, fetch, register, as its firmware does.

Many of these run in one asyncio process (a storm worker, :func:`run_worker`), each on the
address DHCP leased it (the devices' namespace holds the whole pool: see :mod:`lab.labnet`).

By kind (the fetch behaviour of :mod:`lab.phones` and :mod:`lab.install`):

* **phone / dect_base** (Temporis, IP2215): DHCP option 66 names the server (a URL); over
  HTTP it asks for the names every unit of its model asks for (``y000000000000.cfg``, its
  firmware, ``<mac>-local.cfg``: 404 here), then ``<mac>.cfg`` (no credentials: the
  enrollment window), then the phonebook its file names, with the per-device credentials the
  file installed; then registers every enabled account of the file, from its own SIP port.
* **iad**: a TR-069-style CPE: DHCP option 60 ``dslforum.org``, the server's URL in option 43
  sub-option 1 (research/device-facts.md §3); fetches ``<mac>.cfg`` over HTTP and registers
  its FXS lines (``set voice line N username/auth-username/password``).
* **ont**: fetches ``ont-<serial>.txt`` over TFTP from the server option 66 names (RRQ with
  ``blksize``, retransmission on timeout), nothing to register.

Retries like firmware: DHCP per RFC 2131 (:mod:`lab.dhcpclient`); TFTP retransmits the last
packet after 1, 2, 4 s and restarts the transfer after a pause; HTTP retries after an
exponential, jittered back-off (1, 2, 4, ... 16 s); SIP per :mod:`lab.sipua`. A device gives
up at ``give_up`` seconds after its power-on.

Every file's bytes are hashed and compared with what ``render`` gives for that device (the
parent computes the expected sha256 from the store before the storm): a file that differs is
counted, never masked.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import random
import resource
import shlex
import struct
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from provisioner_lab.dhcpclient import DhcpMux, Lease
from provisioner_lab.phones import parse_phone_file, parse_sections
from provisioner_lab.sip import SipAccount
from provisioner_lab.sipua import UserAgent


@dataclass
class DeviceSpec:
    """What a device knows before power-on (its MAC, serial, model) and what the storm
    checks it against (``expected``: file name -> sha256 of what render gives)."""

    device_id: str
    order_id: str
    kind: str  # phone | dect_base | iad | ont
    model: str
    mac: str
    serial: str = ""
    firmware: str = ""
    power_on: float = 0.0  # seconds after the storm's t0
    expected: dict[str, str] = field(default_factory=dict)
    accounts: int = 0  # SIP accounts its file holds (the order says)


@dataclass
class DeviceResult:
    device_id: str
    kind: str
    dhcp: float | None = None  # seconds from power-on to the ACK
    first_file: float | None = None  # to its own file (<mac>.cfg, ont-<serial>.txt)
    all_files: float | None = None  # to the last file it needs
    registered: float | None = None  # to the last account's 200 (None: not all)
    accounts_expected: int = 0
    accounts: int = 0  # in the file it got
    accounts_ok: int = 0
    files: int = 0
    differ: list[str] = field(default_factory=list)
    address: str = ""
    error: str = ""
    dhcp_sent: int = 0
    http_retries: int = 0
    tftp_retransmits: int = 0
    sip_requests: int = 0

    @property
    def done(self) -> float | None:
        """Seconds to its last stage: REGISTER when it has accounts, else its files."""
        return self.registered if (self.accounts or self.accounts_expected) else self.all_files


class FetchError(RuntimeError):
    pass


# ---------------------------------------------------------------------- HTTP (raw asyncio)


class HttpConnection:
    """HTTP/1.1 from one device's address, kept alive between its requests like firmware's
    libcurl; reconnects when the server closes."""

    def __init__(self, host: str, port: int, local: str):
        self.host, self.port, self.local = host, port, local
        self._r: asyncio.StreamReader | None = None
        self._w: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        if self._w is not None:
            self._w.transport.abort()  # like firmware dropping it: no wait for the close
        self._r = self._w = None

    async def get(
        self, path: str, auth: tuple[str, str] | None = None, timeout: float = 10.0
    ) -> tuple[int, bytes]:
        return await asyncio.wait_for(self._get(path, auth), timeout)

    async def _get(self, path: str, auth: tuple[str, str] | None) -> tuple[int, bytes]:
        for attempt in range(2):  # a kept-alive connection the server closed: once more
            if self._w is None:
                self._r, self._w = await asyncio.open_connection(
                    self.host, self.port, local_addr=(self.local, 0)
                )
            assert self._r is not None and self._w is not None
            head = f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\nUser-Agent: lab-storm\r\n"
            if auth:
                token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
                head += f"Authorization: Basic {token}\r\n"
            try:
                self._w.write((head + "\r\n").encode())
                status_line = await self._r.readline()
                if not status_line:
                    raise ConnectionResetError("closed")
            except (ConnectionError, OSError):
                await self.close()
                if attempt:
                    raise
                continue
            status = int(status_line.split(b" ", 2)[1])
            length, close = 0, False
            while True:
                line = await self._r.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                key = name.strip().lower()
                if key == "content-length":
                    length = int(value.strip())
                elif key == "connection" and value.strip().lower() == "close":
                    close = True
            body = await self._r.readexactly(length) if length else b""
            if close:
                await self.close()
            return status, body
        raise ConnectionResetError("closed twice")


# ---------------------------------------------------------------------- TFTP (asyncio)


class _TftpProto(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr))


async def tftp_get(
    host: str, port: int, name: str, local: str, *, blksize: int = 1428, tries: int = 4
) -> tuple[bytes, int]:
    """Read ``name`` (octet, ``blksize`` option); (data, retransmissions)."""
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(_TftpProto, local_addr=(local, 0))
    retx = 0
    try:
        rrq = struct.pack("!H", 1) + name.encode() + b"\0octet\0blksize\0" + str(blksize).encode()
        rrq += b"\0"
        last, dest = rrq + b"", (host, port)
        peer: tuple[str, int] | None = None
        expected, out, size = 1, bytearray(), 512
        transport.sendto(last, dest)
        missed = 0
        while True:
            try:
                pkt, addr = await asyncio.wait_for(proto.queue.get(), min(4.0, 1.0 * 2**missed))
            except TimeoutError:
                missed += 1
                if missed > tries:
                    raise FetchError(f"tftp {name}: no answer") from None
                retx += 1
                transport.sendto(last, dest)
                continue
            if peer is None:
                peer = dest = addr
            elif addr != peer:
                continue
            op = struct.unpack("!H", pkt[:2])[0]
            if op == 5:
                msg = pkt[4:].split(b"\0", 1)[0].decode("utf-8", "replace")
                raise FetchError(f"tftp {name}: error {msg}")
            if op == 6:  # OACK
                opts = pkt[2:].split(b"\0")
                pairs = dict(zip(opts[::2], opts[1::2], strict=False))
                size = int(pairs.get(b"blksize", b"512"))
                last = struct.pack("!HH", 4, 0)
                transport.sendto(last, peer)
                missed = 0
                continue
            if op != 3:
                continue
            block = struct.unpack("!H", pkt[2:4])[0]
            last = struct.pack("!HH", 4, block)
            transport.sendto(last, peer)
            if block == expected:
                out += pkt[4:]
                expected = (expected + 1) % 65536
                missed = 0
                if len(pkt) - 4 < size:
                    return bytes(out), retx
    finally:
        transport.close()


# ---------------------------------------------------------------------- the device


def _url(url: str) -> tuple[str, int, str]:
    u = urlsplit(url if "://" in url else f"http://{url}/")
    return u.hostname or "", u.port or (69 if u.scheme == "tftp" else 80), u.path or "/"


def iad_accounts(data: bytes) -> list[SipAccount]:
    """The FXS lines of an IAD's ``<mac>.cfg`` (our CLI dialect) as SIP accounts."""
    cfg: dict[tuple[str, ...], str] = {}
    for line in data.decode("utf-8").splitlines():
        words = shlex.split(line)
        if len(words) >= 3 and words[0] == "set":
            cfg[tuple(words[1:-1])] = words[-1]
    registrar = cfg.get(("voice", "sip", "registrar"), "")
    port = cfg.get(("voice", "sip", "registrar-port"), "5060")
    domain = cfg.get(("voice", "sip", "domain"), registrar)
    out = []
    lines = sorted({k[2] for k in cfg if k[:2] == ("voice", "line") and len(k) == 4})
    for n in lines:
        user = cfg.get(("voice", "line", n, "username"), "")
        if not user:
            continue
        out.append(
            SipAccount(
                user,
                domain,
                cfg.get(("voice", "line", n, "password"), ""),
                f"{registrar}:{port}",
                cfg.get(("voice", "line", n, "auth-username"), user),
            )
        )
    return out


class Device:
    """One device's boot; :meth:`run` fills :attr:`result`."""

    def __init__(
        self, spec: DeviceSpec, mux: DhcpMux, t0: float, give_up: float, rng: random.Random
    ):
        self.spec = spec
        self.mux = mux
        self.on = t0 + spec.power_on
        self.end = self.on + give_up
        self.rng = rng
        self.result = DeviceResult(spec.device_id, spec.kind, accounts_expected=spec.accounts)
        self.ua: UserAgent | None = None
        self.mac12 = spec.mac.replace(":", "").lower()

    def _since(self) -> float:
        return time.monotonic() - self.on

    def _check(self, name: str, data: bytes) -> None:
        self.result.files += 1
        want = self.spec.expected.get(name)
        if want is None or hashlib.sha256(data).hexdigest() != want:
            self.result.differ.append(name)

    async def run(self) -> DeviceResult:
        await asyncio.sleep(max(0.0, self.on - time.monotonic()))
        try:
            await self._boot()
        except Exception as exc:  # one device's failure is its result, not the worker's
            self.result.error = f"{type(exc).__name__}: {exc}"[:200]
        return self.result

    async def _boot(self) -> None:
        s = self.spec
        vendor = "dslforum.org" if s.kind == "iad" else ""
        lease = await self.mux.acquire(
            s.mac, deadline=self.end, vendor_class=vendor, hostname=s.device_id[:32]
        )
        self.result.dhcp = self._since()
        self.result.dhcp_sent = lease.sent
        self.result.address = lease.address
        if s.kind == "ont":
            await self._ont(lease)
        elif s.kind == "iad":
            await self._iad(lease)
        else:
            await self._phone(lease)

    async def _backoff(self, attempt: int) -> None:
        wait = min(16.0, 2.0**attempt) * self.rng.uniform(0.5, 1.0)
        if time.monotonic() + wait >= self.end:
            raise FetchError("gave up")
        self.result.http_retries += 1
        await asyncio.sleep(wait)

    async def _http(
        self,
        conn: HttpConnection,
        path: str,
        auth: tuple[str, str] | None = None,
        *,
        want: bool = True,
    ) -> bytes:
        """GET until 200 (``want``) or any answer (not ``want``), with back-off between."""
        attempt = 0
        while True:
            try:
                status, body = await conn.get(path, auth)
                if status == 200 or not want:
                    return body
                err = f"http {path}: {status}"
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                await conn.close()
                err = f"http {path}: {type(exc).__name__}"
            if time.monotonic() >= self.end:
                raise FetchError(err)
            await self._backoff(attempt)
            attempt += 1

    async def _phone(self, lease: Lease) -> None:
        host, port, prefix = _url(lease.tftp_server)
        conn = HttpConnection(host, port, lease.address)
        try:
            for name in ("y000000000000.cfg", self.spec.firmware, f"{self.mac12}-local.cfg"):
                if name:
                    await self._http(conn, prefix + name, want=False)
            own = f"{self.mac12}.cfg"
            data = await self._http(conn, prefix + own)
            self.result.first_file = self._since()
            self._check(own, data)
            pf = parse_phone_file(data)
            auth = (pf.prov_user, pf.prov_password) if pf.prov_user else None
            for name, keys in parse_sections(data.decode("utf-8")):
                url = keys.get("URL", "") if name.startswith("RemotePhoneBook") else ""
                if url:
                    _host, _port, path = _url(url)
                    book = await self._http(conn, path, auth)
                    self._check(path.rsplit("/", 1)[-1], book)
            self.result.all_files = self._since()
        finally:
            await conn.close()
        accounts = [
            SipAccount(a.user, a.host, a.password, f"{a.host}:{a.port}", a.auth_name)
            for a in pf.accounts
            if a.enabled
        ]
        await self._register(lease, accounts)

    async def _iad(self, lease: Lease) -> None:
        url = lease.reply.vendor_suboptions().get(1, b"").decode() or lease.tftp_server
        host, port, prefix = _url(url)
        conn = HttpConnection(host, port, lease.address)
        try:
            own = f"{self.mac12}.cfg"
            data = await self._http(conn, prefix + own)
        finally:
            await conn.close()
        self.result.first_file = self.result.all_files = self._since()
        self._check(own, data)
        await self._register(lease, iad_accounts(data))

    async def _ont(self, lease: Lease) -> None:
        host, port, _ = _url(f"tftp://{lease.tftp_server}/")
        name = f"ont-{self.spec.serial}.txt"
        attempt = 0
        while True:
            try:
                data, retx = await tftp_get(host, port, name, lease.address)
                self.result.tftp_retransmits += retx
                break
            except FetchError:
                self.result.tftp_retransmits += 4
                await self._backoff(attempt)
                attempt += 1
        self.result.first_file = self.result.all_files = self._since()
        self._check(name, data)

    async def _register(self, lease: Lease, accounts: list[SipAccount]) -> None:
        self.result.accounts = len(accounts)
        if not accounts:
            return
        self.ua = UserAgent(accounts, local_addr=(lease.address, 5060), rng=self.rng)
        await self.ua.start()
        results = await self.ua.register(deadline=max(1.0, self.end - time.monotonic()))
        self.result.sip_requests = sum(r.requests for r in results)
        self.result.accounts_ok = sum(1 for r in results if r.ok)
        if self.result.accounts_ok == len(accounts):
            self.result.registered = self._since()
        else:
            bad = next(r for r in results if not r.ok)
            self.result.error = f"sip {bad.aor}: {bad.outcome}"


# ---------------------------------------------------------------------- a worker process


async def _run(plan: dict[str, Any]) -> list[DeviceResult]:
    rng = random.Random(plan["seed"])
    mux = DhcpMux(plan["ifname"], rng=random.Random(plan["seed"] + 1))
    mux.open()
    specs = [DeviceSpec(**d) for d in plan["devices"]]
    devices = [
        Device(s, mux, plan["t0"], plan["give_up"], random.Random(rng.random())) for s in specs
    ]
    try:
        results = await asyncio.gather(*(d.run() for d in devices))
        # devices stay on (listening) until every device of this worker is done
        return list(results)
    finally:
        await asyncio.gather(*(d.ua.close() for d in devices if d.ua), return_exceptions=True)
        mux.close()


def run_worker(plan_path: str, out_path: str) -> int:
    """Entry of one storm worker (started in the devices' namespace)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    with open(plan_path, encoding="utf-8") as fh:
        plan = json.load(fh)
    results = asyncio.run(_run(plan))
    with open(out_path, "w", encoding="utf-8") as fh:
        for r in results:
            fh.write(json.dumps(asdict(r)) + "\n")
        fh.write(json.dumps({"cpu": time.process_time()}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_worker(sys.argv[1], sys.argv[2]))
