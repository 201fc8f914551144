"""A stand-in registrar on loopback: takes NOTIFYs, answers as a test says, and keeps what
it got (the real Kamailio relay is in ``tests/e2e``). ``start(policy)`` runs one on a free
port of 127.0.0.1 in a thread; ``stop()`` ends it."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

# (request number for this Call-ID, starting at 1, the request) -> the answers to send
Policy = Callable[[int, bytes], list[str]]


def header(msg: bytes, name: str) -> str:
    for line in msg.decode().split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return ""


def answer(request: bytes, status: str) -> bytes:
    """A response to ``request`` that copies Via, From, To, Call-ID and CSeq."""
    lines = [f"SIP/2.0 {status}"]
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        lines.append(f"{name}: {header(request, name)}")
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass
class FakeRegistrar:
    sock: socket.socket
    policy: Policy
    got: list[tuple[str, bytes]] = field(default_factory=list)  # (source ip, request)
    _stop: bool = False
    thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def users(self) -> list[str]:
        """The user of each NOTIFY's request URI, one per Call-ID (retransmissions once)."""
        seen: dict[str, str] = {}
        for _, msg in self.got:
            uri = msg.split(b" ", 2)[1].decode()
            seen.setdefault(header(msg, "Call-ID"), uri.removeprefix("sip:").split("@")[0])
        return list(seen.values())

    def serve(self) -> None:
        """Answer until stopped (the socket has a timeout, so a stop is seen)."""
        counts: dict[str, int] = {}
        while not self._stop:
            try:
                msg, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if not msg.startswith(b"NOTIFY "):
                continue
            self.got.append((peer[0], msg))
            call = header(msg, "Call-ID")
            counts[call] = counts.get(call, 0) + 1
            for status in self.policy(counts[call], msg):
                self.sock.sendto(answer(msg, status), peer)


def start(policy: Policy) -> FakeRegistrar:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    fake = FakeRegistrar(sock, policy)
    fake.thread = threading.Thread(target=fake.serve, daemon=True)
    fake.thread.start()
    return fake


def stop(fake: FakeRegistrar) -> None:
    fake._stop = True
    if fake.thread is not None:
        fake.thread.join(2)
    fake.sock.close()
