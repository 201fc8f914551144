"""An asyncio SIP user agent over UDP: many devices in one process, each on its own address.

One :class:`UserAgent` is one device (a desk phone, a DECT base with its handsets): one UDP
socket bound to the device's own address (``local_addr``), one or more accounts
(:class:`~provisioner_lab.sip.SipAccount`) registered from it, as the firmware does.

* REGISTER with MD5 digest (a 401 or 407 challenge is answered once per nonce; a second
  challenge after an answer, or a 403, is a failure: the firmware would not guess another
  password). The transaction retransmits like RFC 3261's timer A (T1, 2 T1, 4 T1, ... capped at
  T2) until timer B (64 T1); a transaction that times out or gets a 5xx is retried after an
  exponential, jittered back-off (``retry_base`` doubling up to ``retry_max``), as real
  firmware does, until ``deadline`` seconds from the start of :meth:`UserAgent.register`.
* After registering the UA keeps listening: ``OPTIONS`` gets 200; ``NOTIFY`` with
  ``Event: check-sync`` gets 200 only when it comes from the IP address of one of its
  accounts' registrars (else 403, as phones that trust only their server do), and then the
  owner's ``on_check_sync(ua, request)`` coroutine runs. Other requests get 405.
* :meth:`UserAgent.unregister` sends ``Expires: 0`` for every registered account;
  :meth:`UserAgent.close` (or ``async with``) releases the socket.

Results: one :class:`RegisterResult` per account (final status, reason, seconds from the start
of :meth:`UserAgent.register`, REGISTER requests sent, transactions tried).

    async with UserAgent([SipAccount("alice", "sip.test", "pw", "127.0.0.1:5060")]) as ua:
        [result] = await ua.register()
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import socket
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from provisioner_lab.sip import SipAccount

T1 = 0.5  # RFC 3261 timer T1: first retransmission
T2 = 4.0  # cap of the retransmission interval for non-INVITE
USER_AGENT = "provisioner-lab-ua/1"


@dataclass(frozen=True)
class SipMessage:
    """A parsed SIP message: a request (``method``, ``uri``) or a response (``status``)."""

    first_line: str
    headers: dict[str, list[str]]  # lower-case names (compact forms expanded)
    body: bytes = b""
    method: str = ""
    uri: str = ""
    status: int = 0
    reason: str = ""

    def header(self, name: str, default: str = "") -> str:
        values = self.headers.get(name.lower())
        return values[0] if values else default

    @property
    def is_request(self) -> bool:
        return bool(self.method)


_COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact",
            "l": "content-length", "c": "content-type", "o": "event", "k": "supported"}  # fmt: skip


def parse_message(data: bytes) -> SipMessage:
    """A SIP message from a datagram; ValueError when it is not one."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("utf-8", "replace").split("\r\n")
    first = lines[0]
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            continue
        key = name.strip().lower()
        headers.setdefault(_COMPACT.get(key, key), []).append(value.strip())
    if first.startswith("SIP/2.0 "):
        parts = first.split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise ValueError(f"not a SIP status line: {first!r}")
        return SipMessage(first, headers, body, status=int(parts[1]),
                          reason=parts[2] if len(parts) > 2 else "")  # fmt: skip
    parts = first.split(" ")
    if len(parts) != 3 or parts[2] != "SIP/2.0":
        raise ValueError(f"not a SIP request line: {first!r}")
    return SipMessage(first, headers, body, method=parts[0], uri=parts[1])


def _params(challenge: str) -> dict[str, str]:
    """``Digest realm="x", nonce="y", qop="auth"`` -> {realm: x, nonce: y, qop: auth}."""
    _, _, rest = challenge.partition(" ")
    out: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " ,":
            i += 1
        eq = rest.find("=", i)
        if eq < 0:
            break
        key = rest[i:eq].strip().lower()
        i = eq + 1
        if i < n and rest[i] == '"':
            end = rest.find('"', i + 1)
            end = n if end < 0 else end
            out[key] = rest[i + 1 : end]
            i = end + 1
        else:
            end = rest.find(",", i)
            end = n if end < 0 else end
            out[key] = rest[i:end].strip()
            i = end
    return out


def digest_authorization(
    challenge: str, *, method: str, uri: str, username: str, password: str, nc: int = 1
) -> str:
    """The ``Authorization`` value answering a ``WWW-Authenticate``/``Proxy-Authenticate``."""
    p = _params(challenge)
    realm, nonce = p.get("realm", ""), p.get("nonce", "")
    ha1 = hashlib.md5(f"{username}:{realm}:{password}".encode()).hexdigest()  # noqa: S324
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()  # noqa: S324
    fields = [f'username="{username}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"']
    qops = [q.strip() for q in p.get("qop", "").split(",") if q.strip()]
    if "auth" in qops:
        cnonce = os.urandom(8).hex()
        ncs = f"{nc:08x}"
        resp = hashlib.md5(  # noqa: S324
            f"{ha1}:{nonce}:{ncs}:{cnonce}:auth:{ha2}".encode()
        ).hexdigest()
        fields += [f'response="{resp}"', "qop=auth", f"nc={ncs}", f'cnonce="{cnonce}"']
    else:
        resp = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()  # noqa: S324
        fields.append(f'response="{resp}"')
    fields.append("algorithm=MD5")
    if "opaque" in p:
        fields.append(f'opaque="{p["opaque"]}"')
    return "Digest " + ", ".join(fields)


@dataclass(frozen=True)
class RegisterResult:
    """The outcome of one account's registration (or unregistration)."""

    aor: str
    status: int | None  # final SIP status; None: no answer by the deadline
    reason: str
    seconds: float  # from the start of register() to this outcome
    requests: int = 0  # REGISTER datagrams sent, retransmissions included
    transactions: int = 0  # transactions started (challenges and retries after back-off)

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def outcome(self) -> str:
        return f"{self.status} {self.reason}".strip() if self.status else "no answer"


CheckSync = Callable[["UserAgent", SipMessage], Coroutine[Any, Any, None]]


@dataclass
class _Account:
    acc: SipAccount
    call_id: str
    tag: str
    registrar: tuple[str, int]
    cseq: int = 0
    registered: bool = False


@dataclass
class _Pending:
    future: asyncio.Future[SipMessage]
    sent: int = 0


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, ua: UserAgent):
        self.ua = ua

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.ua._received(data, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP unreachable etc.: the transaction's timers decide


class UserAgent:
    """One device's SIP stack: a UDP socket on ``local_addr`` and its accounts."""

    def __init__(
        self,
        accounts: Sequence[SipAccount],
        *,
        local_addr: tuple[str, int] = ("127.0.0.1", 0),
        on_check_sync: CheckSync | None = None,
        expires: int = 3600,
        t1: float = T1,
        t2: float = T2,
        retry_base: float = 2.0,
        retry_max: float = 32.0,
        freebind: bool = False,
        rng: random.Random | None = None,
    ):
        self.on_check_sync = on_check_sync
        self.expires = expires
        self.t1, self.t2 = t1, t2
        self.retry_base, self.retry_max = retry_base, retry_max
        self.freebind = freebind
        self.rng = rng or random.Random()
        self._bind = local_addr
        self._accounts = [
            _Account(a, f"{os.urandom(8).hex()}@ua", os.urandom(4).hex(), _hostport(a))
            for a in accounts
        ]
        self._transport: asyncio.DatagramTransport | None = None
        self._pending: dict[str, _Pending] = {}  # branch -> waiting transaction
        self._tasks: set[asyncio.Task[None]] = set()
        self.notifies: list[tuple[SipMessage, tuple[str, int], int]] = []  # (req, src, answer)

    # ------------------------------------------------------------------ lifecycle

    @property
    def accounts(self) -> list[SipAccount]:
        return [a.acc for a in self._accounts]

    @property
    def local_addr(self) -> tuple[str, int]:
        if self._transport is None:
            raise RuntimeError("the user agent is not started")
        host, port = self._transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    async def start(self) -> UserAgent:
        if self._transport is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                if self.freebind:  # an address of an AnyIP route (ip route add local ...)
                    sock.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND
                sock.bind(self._bind)
                sock.setblocking(False)
            except OSError:
                sock.close()
                raise
            loop = asyncio.get_running_loop()
            self._transport, _ = await loop.create_datagram_endpoint(
                lambda: _Protocol(self), sock=sock
            )
        return self

    async def close(self) -> None:
        for p in self._pending.values():
            if not p.future.done():
                p.future.cancel()
        self._pending.clear()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def __aenter__(self) -> UserAgent:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ registering

    async def register(self, deadline: float = 60.0) -> list[RegisterResult]:
        """Register every account (concurrently); one result each, in the accounts' order.

        ``deadline``: seconds from now after which an account still without a final answer
        is reported as ``status=None``.
        """
        await self.start()
        t0 = time.monotonic()
        return list(
            await asyncio.gather(
                *(self._register(a, self.expires, t0, deadline) for a in self._accounts)
            )
        )

    async def unregister(self, deadline: float = 10.0) -> list[RegisterResult]:
        """``Expires: 0`` for every account that is registered (others are skipped)."""
        t0 = time.monotonic()
        todo = [a for a in self._accounts if a.registered]
        return list(await asyncio.gather(*(self._register(a, 0, t0, deadline) for a in todo)))

    async def _register(
        self, a: _Account, expires: int, t0: float, deadline: float
    ) -> RegisterResult:
        requests = transactions = 0
        auth: str | None = None
        failures = 0
        last: tuple[int | None, str] = (None, "")
        end = t0 + deadline
        while time.monotonic() < end:
            transactions += 1
            a.cseq += 1
            resp, sent = await self._transaction(a, expires, auth, end)
            requests += sent
            if resp is None or resp.status >= 500:
                last = (None, "") if resp is None else (resp.status, resp.reason)
                failures += 1
                auth = None  # start afresh: the nonce may have expired meanwhile
                wait = min(self.retry_max, self.retry_base * 2 ** (failures - 1))
                wait *= self.rng.uniform(0.5, 1.0)
                left = end - time.monotonic()
                if left <= wait:
                    break
                await asyncio.sleep(wait)
                continue
            if resp.status in (401, 407):
                name = "www-authenticate" if resp.status == 401 else "proxy-authenticate"
                challenge = resp.header(name)
                stale = _params(challenge).get("stale", "").lower() == "true"
                if auth is not None and not stale:
                    # challenged again after an answer: the password is wrong
                    last = (resp.status, resp.reason)
                    break
                auth_header = "Authorization" if resp.status == 401 else "Proxy-Authorization"
                value = digest_authorization(
                    challenge,
                    method="REGISTER",
                    uri=self._request_uri(a),
                    username=a.acc.auth_user or a.acc.user,
                    password=a.acc.password,
                )
                auth = f"{auth_header}: {value}"
                continue
            if 200 <= resp.status < 300:
                a.registered = expires > 0
            last = (resp.status, resp.reason)
            return RegisterResult(a.acc.aor, resp.status, resp.reason,
                                  time.monotonic() - t0, requests, transactions)  # fmt: skip
        return RegisterResult(a.acc.aor, last[0], last[1], time.monotonic() - t0,
                              requests, transactions)  # fmt: skip

    def _request_uri(self, a: _Account) -> str:
        return f"sip:{a.acc.domain}"

    async def _transaction(
        self, a: _Account, expires: int, auth: str | None, end: float
    ) -> tuple[SipMessage | None, int]:
        """One non-INVITE client transaction: (final response or None, datagrams sent)."""
        assert self._transport is not None
        branch = "z9hG4bK" + os.urandom(8).hex()
        host, port = self.local_addr
        acc = a.acc
        lines = [
            f"REGISTER {self._request_uri(a)} SIP/2.0",
            f"Via: SIP/2.0/UDP {host}:{port};rport;branch={branch}",
            "Max-Forwards: 70",
            f"From: <sip:{acc.aor}>;tag={a.tag}",
            f"To: <sip:{acc.aor}>",
            f"Call-ID: {a.call_id}",
            f"CSeq: {a.cseq} REGISTER",
            f"Contact: <sip:{_uri_user(acc.user)}@{host}:{port}>",
            f"Expires: {expires}",
            f"User-Agent: {USER_AGENT}",
        ]
        if auth:
            lines.append(auth)
        lines += ["Content-Length: 0", "", ""]
        data = "\r\n".join(lines).encode()
        fut: asyncio.Future[SipMessage] = asyncio.get_running_loop().create_future()
        pending = _Pending(fut)
        self._pending[branch] = pending
        timer_b = time.monotonic() + 64 * self.t1
        interval = self.t1
        try:
            while True:
                self._transport.sendto(data, a.registrar)
                pending.sent += 1
                stop = min(timer_b, end)
                left = stop - time.monotonic()
                if left <= 0:
                    return None, pending.sent
                with contextlib.suppress(TimeoutError):
                    # shield: a timeout must not cancel the future a late answer resolves
                    return await asyncio.wait_for(
                        asyncio.shield(fut), min(interval, left)
                    ), pending.sent
                if time.monotonic() >= stop:
                    return None, pending.sent
                interval = min(interval * 2, self.t2)
        finally:
            self._pending.pop(branch, None)
            if not fut.done():
                fut.cancel()

    # ------------------------------------------------------------------ receiving

    def _received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            msg = parse_message(data)
        except ValueError:
            return
        if not msg.is_request:
            via = msg.header("via")
            branch = _params("x " + via.split(";", 1)[-1].replace(";", ",")).get("branch", "")
            pending = self._pending.get(branch)
            if pending and msg.status >= 200 and not pending.future.done():
                pending.future.set_result(msg)
            return
        if msg.method == "ACK":
            return
        if msg.method == "OPTIONS":
            self._reply(msg, addr, 200, "OK")
        elif msg.method == "NOTIFY":
            event = msg.header("event").split(";", 1)[0].strip().lower()
            if event != "check-sync":
                self._reply(msg, addr, 489, "Bad Event")
                return
            trusted = any(a.registrar[0] == addr[0] for a in self._accounts)
            code = 200 if trusted else 403
            self._reply(msg, addr, code, "OK" if trusted else "Forbidden")
            self.notifies.append((msg, addr, code))
            if trusted and self.on_check_sync is not None:
                task = asyncio.get_running_loop().create_task(self.on_check_sync(self, msg))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        else:
            self._reply(msg, addr, 405, "Method Not Allowed")

    def _reply(self, req: SipMessage, addr: tuple[str, int], code: int, reason: str) -> None:
        if self._transport is None:
            return
        lines = [f"SIP/2.0 {code} {reason}"]
        for via in req.headers.get("via", []):
            lines.append(f"Via: {via}")
        to = req.header("to")
        if ";tag=" not in to:
            to += f";tag={os.urandom(4).hex()}"
        lines += [
            f"From: {req.header('from')}",
            f"To: {to}",
            f"Call-ID: {req.header('call-id')}",
            f"CSeq: {req.header('cseq')}",
        ]
        if code == 405:
            lines.append("Allow: OPTIONS, NOTIFY")
        lines += [f"User-Agent: {USER_AGENT}", "Content-Length: 0", "", ""]
        self._transport.sendto("\r\n".join(lines).encode(), addr)


def _hostport(a: SipAccount) -> tuple[str, int]:
    hostport = a.registrar or a.domain
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return hostport, 5060
    return host, int(port)


def _uri_user(user: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.!~*'()&=+$,;?/" else f"%{ord(c):02X}" for c in user)
