"""TFTP service for zero-touch provisioning, on tftpy 0.8.7 made survivable.

The caller's resolver decides every read request; this module never reads the disk. Writes
are always refused. What a device sees:

* a known name: the resolver's bytes, with ``blksize`` (RFC 2348, 8..65464), ``tsize`` and
  ``timeout`` (RFC 2349, 1..30 s accepted) negotiated when asked for. ``netascii`` requests
  get the RFC 1350 line-ending translation (the client undoes it), ``octet`` the bytes as is;
* an unknown or refused name: exactly one ``ERROR 1 "File not found"``, byte-identical for
  every miss, never retransmitted and never a default file;
* a write request: one ``ERROR 2 "Access violation"``; nothing is created;
* more than ``max_sessions`` live transfers (or no file descriptor left): one ``ERROR 0
  "busy"``;
* anything malformed (bad opcode, no NUL terminator, unknown mode such as ``mail``):
  silently dropped, so junk is never answered with more bytes than it carried. Bad option
  values (``blksize=abc``, ``timeout=0``...) are left out of the OACK, as RFC 2347 allows.
  ``windowsize`` (RFC 7440) is not offered, see below.

Why a replacement loop plus a tftpy session subclass, and not ``tftpy.TftpServer``:
tftpy 0.8.7's ``TftpServer.listen()`` is where its fatal bugs live. Any non-``TftpException``
from one datagram (``UnicodeDecodeError`` for a non-ASCII name, ``ValueError`` for
``blksize=abc``) ends the loop; ``select()`` raises ``ValueError`` once a descriptor number
passes 1023 (about 1,020 live sessions); a stalled session is resent on every loop wake-up
after its first timeout; and its ``__init__`` insists on a readable root directory, which
this service must not use. A subclass would have to override both methods, so nothing
would be left to inherit, and patching site-packages is out of the question. What is sound
in tftpy is kept and reused unchanged: the packet codec, the per-transfer context
(``TftpContextServer``, one UDP socket per transfer as RFC 1350 wants) and its sending
state machine (``TftpStateExpectACK``: DATA after each ACK, duplicate ACKs never trigger a
resend, so no Sorcerer's Apprentice). ``_BytesSession`` subclasses the context to serve
bytes already in memory, with file locking off: tftpy's end-of-transfer unlock reads
``fileobj.name`` and crashes on ``io.BytesIO`` (bug #155, which kills the server after the
first dynamic transfer). The loop (``TftpService``) uses ``selectors`` (epoll on Linux, no
descriptor ceiling), caps live sessions, enlarges the listening socket's receive buffer so
a boot storm is queued instead of dropped, parses requests itself (strict, bounded, never
raising), and keeps each session's retransmission deadline in a heap so an abandoned
transfer is dropped ``timeout * retries`` seconds after the last packet it was sent.

windowsize (RFC 7440) is deliberately not negotiated: tftpy's state machine is lock-step
(one DATA per ACK), so offering it would mean writing a new sliding-window sender with its
own rollover and loss handling, with no Debian client to check it against. Declining the
option is standard behaviour: the client falls back to one block per ACK.

Threading: ``start()`` runs the loop on one daemon thread. The resolver and ``on_event``
are called on that thread, one at a time; a slow resolver delays every other transfer, so
keep it to a store lookup. IPv4 only (tftpy's contexts create ``AF_INET`` sockets).
Logs carry the client address and the (escaped, truncated) file name only, never contents.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import io
import itertools
import logging
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from tftpy import TftpContexts, TftpException, TftpPacketTypes, TftpStates, TftpTimeoutExpectACK

log = logging.getLogger(__name__)

Resolver = Callable[[str, str], Any]
"""``(filename, source_ip) -> bytes`` to serve, or ``None`` for not found / refused.

The resolver may also return any object with a ``data`` attribute (bytes) and an optional
``sha256``: it comes back as the ``reply`` of the transfer's :class:`TftpEvent`, so the caller
learns how the transfer it decided ended (acknowledged to the last block, or abandoned)."""

_RRQ, _WRQ, _ACK, _ERROR = 1, 2, 4, 5
# Largest UDP payload is 65,507 bytes; a bigger buffer means nothing is ever truncated.
_RECV_SIZE = 65536
_MIN_BLKSIZE, _MAX_BLKSIZE = 8, 65464  # RFC 2348
_MAX_OPTION_TIMEOUT = 30  # RFC 2349 allows 255 s; longer would let one RRQ hold a slot minutes
_MAX_DISPLAY = 200
_SO_RCVBUFFORCE = 33  # Linux value; the socket module does not export it
# Datagrams read from the listening socket per wake-up: large enough to drain a burst fast,
# small enough that running transfers are not starved by a flood of requests.
_MAIN_BATCH = 256

ERR_NOT_FOUND = b"\x00\x05\x00\x01File not found\x00"
"""The one answer for every unknown, refused or undecodable name."""
ERR_ACCESS = b"\x00\x05\x00\x02Access violation\x00"
ERR_BUSY = b"\x00\x05\x00\x00busy\x00"
ERR_UNKNOWN_TID = b"\x00\x05\x00\x05Unknown transfer ID\x00"


@dataclass(frozen=True)
class TftpEvent:
    """One per request, for the audit log and metrics.

    ``outcome`` is ``"served"`` (the last block was acknowledged), ``"refused"`` (resolver
    said no, or an undecodable name), ``"error"`` (the resolver failed or returned no
    bytes object, the mode was not octet/netascii, or an accepted transfer was abandoned,
    aborted by the peer or cut by ``stop()``), ``"write-refused"`` or ``"busy"``.
    ``size``/``sha256`` describe the resolver's bytes for transfers that were started.
    Datagrams that are not requests at all produce no event.
    """

    source: str
    port: int
    filename: str
    outcome: str
    size: int = 0
    sha256: str = ""
    reply: Any = None  # what the resolver returned, when it was not plain bytes


@dataclass(frozen=True)
class _Request:
    opcode: int
    name: bytes
    mode: bytes
    options: dict[str, str]


class _PeerError(TftpException):
    """The client sent an ERROR packet: the transfer is over."""


class _BytesSession(TftpContexts.TftpContextServer):
    """One read transfer of in-memory bytes, on tftpy's server context and ACK state machine.

    Differences from the parent, each fixing a way it fails: no file locking (bug #155 with
    ``BytesIO``), its own block size instead of ``options`` (so the OACK carries only what
    the client asked for), and a ``receive()`` that ignores malformed packets and answers
    foreign ports with ERROR 5 instead of feeding them to the state machine.
    """

    def __init__(
        self,
        peer: tuple[str, int],
        *,
        bind_ip: str,
        data: bytes,
        options: dict[str, str],
        blksize: int,
        timeout: float,
        retries: int,
        event: TftpEvent,
    ) -> None:
        # root/dyn_file_func/upload_open are unused: the request is decided before this exists.
        super().__init__(peer[0], peer[1], timeout, "", None, None, retries=retries, flock=False)
        try:
            if bind_ip not in ("", "0.0.0.0"):  # noqa: S104 - comparing, not binding
                # Answer from the address the client wrote to, not whatever routing picks.
                self.sock.bind((bind_ip, 0))
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise
        self.tidport = peer[1]
        self.file_to_transfer = event.filename
        self.fileobj = io.BytesIO(data)
        self.options = options
        self.blksize = blksize
        self.event = event
        self.key = peer
        self.deadline = 0.0
        self.closed = False

    def getBlocksize(self) -> int:
        """Block size in force (negotiated or 512)."""
        return self.blksize

    def begin(self) -> None:
        """Send the OACK (options were accepted) or the first block."""
        self.metrics.start_time = time.time()
        state = TftpStates.TftpStateExpectACK(self)
        if self.options:
            self.next_block = 0  # the client ACKs the OACK with block 0
            state.sendOACK()
        else:
            self.next_block = 1
            self.pending_complete = state.sendDAT()
        self.state = state

    def receive(self) -> bool:
        """Handle one datagram; True if it made us send something new (progress).

        Raises ``TftpException`` when the transfer must end (peer ERROR, too many dups).
        """
        try:
            buf, addr = self.sock.recvfrom(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return False
        if addr[0] != self.address or addr[1] != self.tidport:
            # RFC 1350: a packet from another TID gets ERROR 5 and leaves this transfer alone.
            with contextlib.suppress(OSError):
                self.sock.sendto(ERR_UNKNOWN_TID, addr)
            return False
        opcode = int.from_bytes(buf[:2], "big") if len(buf) >= 4 else -1
        if opcode == _ERROR:
            raise _PeerError("peer sent ERROR")
        if opcode != _ACK:
            return False  # junk or an out-of-place packet: the retransmission timer still runs
        ack = TftpPacketTypes.TftpPacketACK()
        ack.blocknumber = int.from_bytes(buf[2:4], "big")
        before = self.last_pkt
        self.state = self.state.handle(ack, addr[0], addr[1])
        return self.last_pkt is not before

    def resend(self) -> None:
        """Retransmit the last packet (the OACK or the current block)."""
        self.sock.sendto(self.last_pkt.buffer, (self.address, self.tidport))
        self.metrics.last_dat_time = time.time()


class TftpService:
    """Read-only TFTP server answering from a resolver, on one daemon thread.

    ``timeout`` is the retransmission interval in seconds, ``retries`` how many intervals
    without an acknowledgement end a transfer, ``max_sessions`` the cap on live transfers,
    ``rcvbuf`` the requested receive buffer of the listening socket (the kernel caps it at
    ``net.core.rmem_max``). Serving more than ~1,000 sessions also needs ``ulimit -n`` above
    ``max_sessions``; when descriptors run out, requests get the busy answer. A service is
    started once; usable as a context manager (``with TftpService(...) as svc``).
    """

    def __init__(
        self,
        resolve: Resolver,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        on_event: Callable[[TftpEvent], None] | None = None,
        timeout: float = 2.0,
        retries: int = 3,
        max_sessions: int = 4096,
        rcvbuf: int = 4 << 20,
    ) -> None:
        if timeout <= 0 or retries < 1 or max_sessions < 1 or rcvbuf < 0:
            raise ValueError("timeout > 0, retries >= 1, max_sessions >= 1 and rcvbuf >= 0")
        self._resolve = resolve
        self._host = host
        self._requested_port = port
        self._on_event = on_event
        self._timeout = float(timeout)
        self._retries = retries
        self._max_sessions = max_sessions
        self._rcvbuf = rcvbuf
        self._port = 0
        self._sock: socket.socket | None = None
        self._selector: selectors.BaseSelector | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._sessions: dict[tuple[str, int], _BytesSession] = {}
        # (deadline, tie-breaker, session); stale entries are skipped when popped.
        self._timers: list[tuple[float, int, _BytesSession]] = []
        self._seq = itertools.count()
        tftpy_log = logging.getLogger("tftpy")
        if tftpy_log.level == logging.NOTSET:
            # tftpy logs several INFO lines per packet; keep an explicit operator choice.
            tftpy_log.setLevel(logging.WARNING)

    # -- public API ------------------------------------------------------------------------

    def start(self) -> int:
        """Bind, start the loop thread and return the bound port. Bind errors raise here."""
        if self._thread is not None:
            raise RuntimeError("a TftpService can be started once")
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            if self._rcvbuf:
                _grow_receive_buffer(sock, self._rcvbuf)
            sock.bind((self._host, self._requested_port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._port = sock.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(sock, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._wake_r)
        log.info(
            "TFTP listening on %s:%d (receive buffer %d bytes)",
            self._host,
            self._port,
            self.receive_buffer,
        )
        self._thread = threading.Thread(target=self._run, name=f"tftp-{self._port}", daemon=True)
        self._thread.start()
        return self._port

    def stop(self) -> None:
        """Stop promptly: wake the loop, abort live transfers, join the thread."""
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"\0")
        if thread is not threading.current_thread():
            # Bounded: only a resolver stuck forever could hold the loop this long.
            thread.join(timeout=30)
            if thread.is_alive():
                log.warning("TFTP thread did not stop within 30 s (resolver stuck?)")

    @property
    def port(self) -> int:
        """The bound UDP port (0 before ``start()``)."""
        return self._port

    @property
    def receive_buffer(self) -> int:
        """The listening socket's receive buffer as the kernel reports it (0 before start)."""
        if self._sock is None or self._sock.fileno() < 0:
            return 0
        return self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

    @property
    def running(self) -> bool:
        """True while the loop thread is alive and not stopping."""
        return self._thread is not None and self._thread.is_alive() and not self._stopping.is_set()

    @property
    def active_sessions(self) -> int:
        """Transfers in progress (read from any thread; an instant snapshot)."""
        return len(self._sessions)

    def __enter__(self) -> TftpService:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- loop --------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    self._iterate()
                except Exception:
                    # Safety net: nothing a client sends may end the loop. Pause briefly so a
                    # persistent fault cannot turn into a busy loop flooding the log.
                    log.exception("TFTP loop iteration failed; continuing")
                    time.sleep(0.05)
        finally:
            self._shutdown()

    def _iterate(self) -> None:
        assert self._selector is not None
        now = time.monotonic()
        wait = 1.0
        if self._timers:
            wait = min(wait, max(0.0, self._timers[0][0] - now))
        for key, _ in self._selector.select(wait):
            if key.data is None:
                self._drain_requests()
            elif key.data is self._wake_r:
                with contextlib.suppress(OSError):
                    self._wake_r.recv(4096)
            else:
                self._on_session_packet(key.data)
        self._expire(time.monotonic())

    def _drain_requests(self) -> None:
        assert self._sock is not None
        for _ in range(_MAIN_BATCH):
            try:
                buf, addr = self._sock.recvfrom(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("recvfrom on the listening socket failed: %s", exc)
                return
            try:
                self._on_request(buf, (addr[0], addr[1]))
            except Exception:
                log.exception("request from %s dropped after an internal error", addr[0])

    def _on_request(self, buf: bytes, addr: tuple[str, int]) -> None:
        if self._stopping.is_set() or addr in self._sessions:
            # A retransmitted RRQ for a live transfer: its own timer resends, and the
            # resolver is not asked twice.
            return
        req = _parse_request(buf)
        if req is None:
            log.debug("dropped a malformed datagram from %s", addr[0])
            return
        shown = _display(req.name)
        if req.opcode == _WRQ:
            self._reply(ERR_ACCESS, addr)
            self._decided(addr, shown, "write-refused")
            return
        if req.mode not in (b"octet", b"netascii"):
            # "mail" and unknown modes: dropped unanswered, like any other malformed request.
            self._decided(addr, shown, "error")
            return
        if len(self._sessions) >= self._max_sessions:
            # Checked before the resolver: under overload, shed load at the cheapest point.
            self._send_main(ERR_BUSY, addr)
            self._decided(addr, shown, "busy")
            return
        try:
            name = req.name.decode("utf-8")
        except UnicodeDecodeError:
            self._reply(ERR_NOT_FOUND, addr)
            self._decided(addr, shown, "refused")
            return
        try:
            reply = self._resolve(name, addr[0])
            data = reply if isinstance(reply, bytes | bytearray | memoryview) else None
            if reply is not None and data is None:
                data = getattr(reply, "data", None)
                if not isinstance(data, bytes):
                    raise TypeError(f"resolver returned {type(reply).__name__}, not bytes")
        except Exception as exc:
            log.warning("TFTP resolver failed for %s %s: %s", addr[0], shown, type(exc).__name__)
            self._reply(ERR_NOT_FOUND, addr)
            self._decided(addr, shown, "error")
            return
        if data is None:
            self._reply(ERR_NOT_FOUND, addr)
            self._decided(addr, shown, "refused")
            return
        self._begin(addr, shown, bytes(data), req, None if reply is data else reply)

    def _begin(
        self, addr: tuple[str, int], shown: str, data: bytes, req: _Request, reply: Any
    ) -> None:
        digest = getattr(reply, "sha256", "") or hashlib.sha256(data).hexdigest()
        event = TftpEvent(addr[0], addr[1], shown, "served", len(data), digest, reply)
        wire = _to_netascii(data) if req.mode == b"netascii" else data
        options, blksize, timeout = _negotiate(req.options, len(wire), self._timeout)
        try:
            session = _BytesSession(
                addr,
                bind_ip=self._host,
                data=wire,
                options=options,
                blksize=blksize,
                timeout=timeout,
                retries=self._retries,
                event=event,
            )
        except OSError as exc:
            # Out of descriptors (EMFILE) or similar: same answer as the session cap.
            log.warning("TFTP cannot open a transfer socket for %s: %s", addr[0], exc)
            self._send_main(ERR_BUSY, addr)
            self._decided(addr, shown, "busy")
            return
        try:
            session.begin()
        except Exception as exc:
            log.warning("TFTP transfer to %s %s failed to start: %s", addr[0], shown, exc)
            self._finish(session, "error")
            return
        assert self._selector is not None
        self._selector.register(session.sock, selectors.EVENT_READ, session)
        self._sessions[addr] = session
        self._schedule(session, time.monotonic())
        log.debug("TFTP sending %s to %s:%d", shown, addr[0], addr[1])

    def _on_session_packet(self, session: _BytesSession) -> None:
        if session.closed:
            return
        try:
            progressed = session.receive()
        except TftpTimeoutExpectACK:
            # A stale duplicate ACK: retransmission is driven by the timer alone, so a flood
            # of duplicate ACKs never multiplies DATA packets.
            return
        except Exception as exc:  # peer ERROR, "Max duplicates reached", socket error...
            log.debug("TFTP transfer to %s ended: %s", session.address, exc)
            self._finish(session, "error")
            return
        if session.state is None:
            self._finish(session, "served")
        elif progressed:
            session.retry_count = 0
            self._schedule(session, time.monotonic())

    def _schedule(self, session: _BytesSession, now: float) -> None:
        session.deadline = now + session.timeout
        heapq.heappush(self._timers, (session.deadline, next(self._seq), session))

    def _expire(self, now: float) -> None:
        """Retransmit for sessions whose deadline passed; drop those out of retries."""
        while self._timers and self._timers[0][0] <= now:
            deadline, _, session = heapq.heappop(self._timers)
            if session.closed or deadline != session.deadline:
                continue  # rescheduled since, or already over
            session.retry_count += 1
            if session.retry_count >= session.retries:
                log.debug("TFTP transfer to %s abandoned by the client", session.address)
                self._finish(session, "error")
                continue
            try:
                session.resend()
            except OSError as exc:
                log.debug("TFTP resend to %s failed: %s", session.address, exc)
                self._finish(session, "error")
                continue
            self._schedule(session, now)

    def _finish(self, session: _BytesSession, outcome: str) -> None:
        if session.closed:
            return
        session.closed = True
        if self._sessions.get(session.key) is session:
            del self._sessions[session.key]
        if self._selector is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(session.sock)
        try:
            session.end()
        except Exception as exc:
            log.debug("TFTP session cleanup: %s", exc)
        ev = session.event
        self._emit(
            TftpEvent(ev.source, ev.port, ev.filename, outcome, ev.size, ev.sha256, ev.reply)
        )

    def _shutdown(self) -> None:
        for session in list(self._sessions.values()):
            self._finish(session, "error")  # cut short by stop()
        self._timers.clear()
        if self._selector is not None:
            self._selector.close()
        for sock in (self._sock, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        log.info("TFTP on port %d stopped", self._port)

    # -- replies and events ----------------------------------------------------------------

    def _reply(self, packet: bytes, addr: tuple[str, int]) -> None:
        """Send a one-off answer from a fresh port, as a transfer would (RFC 1350 TIDs)."""
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                if self._host not in ("", "0.0.0.0"):  # noqa: S104 - comparing, not binding
                    sock.bind((self._host, 0))
                sock.sendto(packet, addr)
        except OSError:
            self._send_main(packet, addr)  # e.g. out of descriptors

    def _send_main(self, packet: bytes, addr: tuple[str, int]) -> None:
        assert self._sock is not None
        try:
            self._sock.sendto(packet, addr)
        except OSError as exc:
            log.debug("TFTP answer to %s not sent: %s", addr[0], exc)

    def _decided(self, addr: tuple[str, int], shown: str, outcome: str) -> None:
        log.debug("TFTP %s %s from %s:%d", outcome, shown, addr[0], addr[1])
        self._emit(TftpEvent(addr[0], addr[1], shown, outcome))

    def _emit(self, event: TftpEvent) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:
            log.exception("TFTP on_event callback failed")


# -- pure helpers ----------------------------------------------------------------------------


def _grow_receive_buffer(sock: socket.socket, size: int) -> None:
    """Ask for a ``size``-byte receive buffer on the listening socket.

    A burst of RRQs larger than the default ~208 KiB buffer is dropped by the kernel, and
    every client then waits a full retransmission interval (tftpy measured: 1,000 RRQs took
    3 s instead of 0.16 s). ``SO_RCVBUF`` is capped at ``net.core.rmem_max``; a privileged
    process (CAP_NET_ADMIN) may go past it with ``SO_RCVBUFFORCE``.
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    # Linux reports twice the value set (bookkeeping); less than asked means it was capped.
    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) < size and sys.platform == "linux":
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, size)
    effective = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    if effective < size:
        log.warning(
            "TFTP receive buffer is %d bytes, not %d: raise net.core.rmem_max for boot storms",
            effective,
            size,
        )


def _parse_request(buf: bytes) -> _Request | None:
    """Parse an RRQ/WRQ; ``None`` for anything else or anything malformed. Never raises."""
    if len(buf) < 4:
        return None
    opcode = int.from_bytes(buf[:2], "big")
    if opcode not in (_RRQ, _WRQ) or not buf.endswith(b"\0"):
        return None
    fields = buf[2:-1].split(b"\0")
    if len(fields) < 2:
        return None
    name, mode, *rest = fields
    options: dict[str, str] = {}
    # A trailing option name without a value is ignored, like tftpd-hpa does.
    for raw_key, raw_value in zip(rest[0::2], rest[1::2], strict=False):
        try:
            key, value = raw_key.decode("ascii").lower(), raw_value.decode("ascii")
        except UnicodeDecodeError:
            continue
        options.setdefault(key, value)  # the first of duplicated options wins
    return _Request(opcode, name, mode.lower(), options)


def _negotiate(
    requested: dict[str, str], size: int, default_timeout: float
) -> tuple[dict[str, str], int, float]:
    """Return (options for the OACK, block size, retransmission timeout).

    Only options the client asked for and that are valid are answered (RFC 2347); an empty
    dict means no OACK, the transfer starts with block 1.
    """
    accepted: dict[str, str] = {}
    blksize, timeout = 512, default_timeout
    wanted = _as_int(requested.get("blksize"))
    if wanted is not None and wanted >= _MIN_BLKSIZE:
        blksize = min(wanted, _MAX_BLKSIZE)  # larger asks are answered with the maximum
        accepted["blksize"] = str(blksize)
    # tsize 0 is left out: curl rejects "tsize 0" in an OACK and aborts, and an empty file
    # needs no size announcement.
    if _as_int(requested.get("tsize")) is not None and size > 0:
        accepted["tsize"] = str(size)
    wanted = _as_int(requested.get("timeout"))
    if wanted is not None and 1 <= wanted <= _MAX_OPTION_TIMEOUT:
        timeout = float(wanted)
        accepted["timeout"] = str(wanted)
    return accepted, blksize, timeout


def _as_int(value: str | None) -> int | None:
    # Length-bounded: int() of a 5,000-digit string raises ValueError in Python 3.11+.
    if value is None or not (0 < len(value) <= 20 and value.isascii() and value.isdigit()):
        return None
    return int(value)


def _to_netascii(data: bytes) -> bytes:
    """RFC 1350/764 netascii: CR becomes CR NUL, LF becomes CR LF."""
    return data.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")


def _display(name: bytes) -> str:
    """A file name safe for logs and events: escaped, at most 200 characters."""
    try:
        text = repr(name.decode("utf-8"))[1:-1]
    except UnicodeDecodeError:
        text = repr(name)[2:-1]
    return text[:_MAX_DISPLAY]
