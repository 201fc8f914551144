"""DHCP clients for many simulated devices in one process: raw Ethernet frames, by hand.

Each device does its own DISCOVER / OFFER / REQUEST / ACK for its own MAC (``chaddr`` and
the frame's source address), like its firmware: the exchanges of every device a process
owns share one ``AF_PACKET`` socket on the devices' interface, told apart by ``xid`` and
``chaddr``. A kernel filter (classic BPF, ``udp dst port 68``) keeps every other frame of
the storm out of the process.

Retransmission as RFC 2131 §4.1 says clients do: DISCOVER (and REQUEST) again after 4, 8,
16, 32, 64 s, each randomised by ±1 s, until the caller's deadline; after an OFFER, a
REQUEST that gets no ACK is retried the same way, and a NAK starts over with a DISCOVER.
The broadcast flag is set (the lab's devices have no IP stack of their own to take a
unicast OFFER).

Pure functions (:func:`build_frame`, :func:`parse_frame`, :func:`options_bytes`) are apart
from the socket (:class:`DhcpMux`) so they can be tested without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import socket
import struct
import time
from dataclasses import dataclass, field

DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE = 1, 2, 3, 4, 5, 6, 7
MAGIC = b"\x63\x82\x53\x63"
ETH_P_IP = 0x0800
SO_ATTACH_FILTER = 26
# tcpdump -dd 'ip and udp dst port 68 and not ip[6:2] & 0x1fff != 0', as (code, jt, jf, k)
BPF_UDP_DST_68 = (
    (0x28, 0, 0, 12),  # ldh [12]            ethertype
    (0x15, 0, 8, ETH_P_IP),  # jeq IPv4
    (0x30, 0, 0, 23),  # ldb [23]            IP protocol
    (0x15, 0, 6, 17),  # jeq UDP
    (0x28, 0, 0, 20),  # ldh [20]            fragment offset
    (0x45, 4, 0, 0x1FFF),  # jset -> drop
    (0xB1, 0, 0, 14),  # ldxb 4*([14]&0xf)   IP header length
    (0x48, 0, 0, 16),  # ldh [x+16]          UDP destination port
    (0x15, 0, 1, 68),  # jeq 68
    (0x06, 0, 0, 0x40000),  # accept
    (0x06, 0, 0, 0),  # drop
)
# What the devices ask for: subnet, router, DNS, domain, NTP, vendor-specific (43),
# TFTP server (66), bootfile (67), TFTP server address (150), provisioning URL (160).
PARAMETERS = bytes([1, 3, 6, 15, 42, 43, 66, 67, 150, 160])


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", "").replace("-", ""))


def options_bytes(options: list[tuple[int, bytes]]) -> bytes:
    out = bytearray()
    for code, value in options:
        out += bytes([code, len(value)]) + value
    return bytes(out + b"\xff")


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def build_frame(
    mac: str,
    xid: int,
    msg_type: int,
    *,
    secs: int = 0,
    requested: str | None = None,
    server_id: str | None = None,
    vendor_class: str = "",
    hostname: str = "",
) -> bytes:
    """A broadcast DHCP client message from ``mac`` as an Ethernet frame."""
    hw = mac_bytes(mac)
    opts: list[tuple[int, bytes]] = [(53, bytes([msg_type])), (61, b"\x01" + hw)]
    if requested:
        opts.append((50, socket.inet_aton(requested)))
    if server_id:
        opts.append((54, socket.inet_aton(server_id)))
    if hostname:
        opts.append((12, hostname.encode()))
    if vendor_class:
        opts.append((60, vendor_class.encode()))
    opts += [(55, PARAMETERS), (57, struct.pack("!H", 1500))]
    bootp = (
        struct.pack(
            "!BBBBIHH4s4s4s4s",
            1,
            1,
            6,
            0,
            xid,
            min(secs, 0xFFFF),
            0x8000,
            b"\0" * 4,
            b"\0" * 4,
            b"\0" * 4,
            b"\0" * 4,
        )
        + hw.ljust(16, b"\0")
        + b"\0" * 192
        + MAGIC
        + options_bytes(opts)
    )
    bootp = bootp.ljust(300, b"\0")  # BOOTP minimum; some servers want it
    udp_len = 8 + len(bootp)
    udp = struct.pack("!HHHH", 68, 67, udp_len, 0) + bootp
    ip_hdr = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, xid & 0xFFFF, 0, 64, 17, 0, b"\0" * 4, b"\xff" * 4
    )
    ip_hdr = ip_hdr[:10] + struct.pack("!H", _checksum(ip_hdr)) + ip_hdr[12:]
    return b"\xff" * 6 + hw + struct.pack("!H", ETH_P_IP) + ip_hdr + udp


@dataclass(frozen=True)
class Reply:
    """A server's DHCP message as a client reads it."""

    msg_type: int
    xid: int
    chaddr: str  # aa:bb:cc:dd:ee:ff
    yiaddr: str
    siaddr: str
    file: str  # BOOTP file field
    options: dict[int, bytes]

    @property
    def server_id(self) -> str:
        v = self.options.get(54)
        return socket.inet_ntoa(v) if v and len(v) == 4 else self.siaddr

    def text(self, code: int) -> str:
        return self.options.get(code, b"").rstrip(b"\0").decode("utf-8", "replace")

    def vendor_suboptions(self) -> dict[int, bytes]:
        """Option 43 read as sub-options (TR-069: 1 = the ACS URL)."""
        return _tlv(self.options.get(43, b""))


def _tlv(data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    i = 0
    while i + 1 < len(data):
        code = data[i]
        if code == 0:
            i += 1
            continue
        if code == 255:
            break
        n = data[i + 1]
        out[code] = out.get(code, b"") + data[i + 2 : i + 2 + n]  # RFC 3396: concatenate
        i += 2 + n
    return out


def parse_frame(frame: bytes) -> Reply | None:
    """The DHCP server message in an Ethernet frame, or None when it is not one."""
    if len(frame) < 14 + 20 + 8 + 240 or frame[12:14] != b"\x08\x00":
        return None
    ihl = (frame[14] & 0x0F) * 4
    udp = 14 + ihl
    if frame[23] != 17 or struct.unpack("!H", frame[udp + 2 : udp + 4])[0] != 68:
        return None
    b = frame[udp + 8 :]
    if len(b) < 240 or b[0] != 2 or b[236:240] != MAGIC:
        return None
    opts = _tlv(b[240:])
    if 53 not in opts or not opts[53]:
        return None
    return Reply(
        msg_type=opts[53][0],
        xid=struct.unpack("!I", b[4:8])[0],
        chaddr=":".join(f"{x:02x}" for x in b[28:34]),
        yiaddr=socket.inet_ntoa(b[16:20]),
        siaddr=socket.inet_ntoa(b[20:24]),
        file=b[108:236].split(b"\0", 1)[0].decode("latin-1"),
        options=opts,
    )


@dataclass
class Lease:
    mac: str
    address: str
    server_id: str
    options: dict[int, bytes]
    siaddr: str
    file: str
    sent: int  # client messages sent, retransmissions included
    reply: Reply

    @property
    def tftp_server(self) -> str:
        """Option 66 (a name, an address or a URL), else the BOOTP next-server."""
        return self.reply.text(66) or self.siaddr

    @property
    def bootfile(self) -> str:
        return self.reply.text(67) or self.file


class DhcpFailed(RuntimeError):
    """No lease by the deadline, or the server said NAK too often."""


@dataclass
class _Exchange:
    mac: str
    xid: int
    queue: asyncio.Queue[Reply] = field(default_factory=asyncio.Queue)


class DhcpMux:
    """One AF_PACKET socket on ``ifname`` carrying the DHCP exchanges of many devices."""

    def __init__(self, ifname: str, rng: random.Random | None = None):
        self.ifname = ifname
        self.rng = rng or random.Random()
        self._sock: socket.socket | None = None
        self._exchanges: dict[int, _Exchange] = {}
        self.frames_in = 0

    def open(self) -> None:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
        prog = b"".join(struct.pack("HBBI", *ins) for ins in BPF_UDP_DST_68)
        buf = ctypes_buffer(prog)
        fprog = struct.pack("HL", len(BPF_UDP_DST_68), buf[1])
        s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        s.bind((self.ifname, ETH_P_IP))
        with contextlib.suppress(OSError):
            s.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE (root)
        with contextlib.suppress(OSError):
            s.setsockopt(socket.SOL_SOCKET, 32, 4 << 20)  # SO_SNDBUFFORCE
        s.setblocking(False)
        self._keep = buf  # the filter program must outlive the setsockopt call
        self._sock = s
        asyncio.get_running_loop().add_reader(s.fileno(), self._readable)

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def _readable(self) -> None:
        assert self._sock is not None
        for _ in range(256):
            try:
                frame = self._sock.recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            self.frames_in += 1
            reply = parse_frame(frame)
            if reply is None:
                continue
            ex = self._exchanges.get(reply.xid)
            if ex is not None and ex.mac == reply.chaddr:
                ex.queue.put_nowait(reply)

    def _send(self, frame: bytes) -> None:
        assert self._sock is not None
        # a full queue is a lost frame: the retransmission timer covers it
        with contextlib.suppress(BlockingIOError, InterruptedError):
            self._sock.send(frame)

    def _interval(self, attempt: int) -> float:
        return min(64.0, 4.0 * 2**attempt) + self.rng.uniform(-1.0, 1.0)

    async def acquire(
        self, mac: str, *, deadline: float, vendor_class: str = "", hostname: str = ""
    ) -> Lease:
        """DISCOVER ... ACK for ``mac``; ``deadline`` is a time.monotonic() value."""
        mac = mac.lower()
        xid = self.rng.getrandbits(32)
        while xid in self._exchanges:
            xid = self.rng.getrandbits(32)
        ex = _Exchange(mac, xid)
        self._exchanges[xid] = ex
        start = time.monotonic()
        sent = 0
        try:
            for nak in range(8):
                if nak:  # the address was taken meanwhile: start over, a moment later
                    await asyncio.sleep(self.rng.uniform(0.1, 1.0))
                offer = None
                attempt = 0
                while offer is None:
                    secs = int(time.monotonic() - start)
                    self._send(
                        build_frame(
                            mac,
                            xid,
                            DISCOVER,
                            secs=secs,
                            vendor_class=vendor_class,
                            hostname=hostname,
                        )
                    )
                    sent += 1
                    offer = await self._wait(ex, OFFER, self._interval(attempt), deadline)
                    attempt += 1
                attempt = 0
                ack: Reply | None = None
                while ack is None:
                    secs = int(time.monotonic() - start)
                    self._send(
                        build_frame(
                            mac,
                            xid,
                            REQUEST,
                            secs=secs,
                            requested=offer.yiaddr,
                            server_id=offer.server_id,
                            vendor_class=vendor_class,
                            hostname=hostname,
                        )
                    )
                    sent += 1
                    ack = await self._wait(ex, (ACK, NAK), self._interval(attempt), deadline)
                    attempt += 1
                if ack.msg_type == ACK:
                    ipaddress.ip_address(ack.yiaddr)
                    return Lease(
                        mac, ack.yiaddr, ack.server_id, ack.options, ack.siaddr, ack.file, sent, ack
                    )
            raise DhcpFailed(f"{mac}: NAK after NAK")
        finally:
            self._exchanges.pop(xid, None)

    async def _wait(
        self, ex: _Exchange, want: int | tuple[int, ...], interval: float, deadline: float
    ) -> Reply | None:
        wanted = (want,) if isinstance(want, int) else want
        end = min(time.monotonic() + interval, deadline)
        while True:
            left = end - time.monotonic()
            if left <= 0:
                if time.monotonic() >= deadline:
                    raise DhcpFailed(f"{ex.mac}: no lease by the deadline")
                return None
            try:
                reply = await asyncio.wait_for(ex.queue.get(), left)
            except TimeoutError:
                continue
            if reply.msg_type in wanted:
                return reply


def ctypes_buffer(data: bytes) -> tuple[object, int]:
    """A C buffer holding ``data`` and its address (for sock_fprog)."""
    import ctypes

    buf = ctypes.create_string_buffer(data, len(data))
    return buf, ctypes.addressof(buf)
