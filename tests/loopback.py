"""The test process sends nothing off loopback (DEVELOPERS.md: never any address but loopback).

``install()`` (called by the root conftest) wraps ``socket.socket``'s ``connect``,
``connect_ex`` and ``sendto``: a destination that is an IP address off loopback (or a host
name other than ``localhost``) fails like an unreachable network, and is kept in
``attempts``, which fails the run. A thread inside another network namespace than the
process's own (the lab network's, ``lab/labnet.py``: namespaces with no route out of them)
may reach any address there. Everything the server does in-process (a push job's SSH
or SNMP, uvicorn, the PostgreSQL driver) goes through those methods; AF_UNIX is untouched.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
from typing import Any

LOOPBACK = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
    ipaddress.ip_network("::ffff:127.0.0.0/104"),
)
attempts: list[str] = []
_HOME_NETNS: list[int] = []  # the process's own network namespace (inode), set by install()


def _elsewhere() -> bool:
    """True while this thread is in a network namespace other than the process's own."""
    if not _HOME_NETNS:
        return False
    try:
        return os.stat("/proc/thread-self/ns/net").st_ino != _HOME_NETNS[0]
    except OSError:
        return False


def outside(address: object) -> str | None:
    """The destination, when it is off this host's loopback; None when it is fine."""
    if not isinstance(address, tuple) or not address or not isinstance(address[0], str):
        return None  # AF_UNIX paths, netlink, ...
    if address[0] == "localhost":
        return None
    try:
        ip = ipaddress.ip_address(address[0].split("%")[0])
    except ValueError:
        return f"{address[0]} (a host name)"
    if ip.is_unspecified or any(ip in net for net in LOOPBACK):
        return None  # 0.0.0.0 and :: reach this host
    port = address[1] if len(address) > 1 else "?"
    return f"{ip} port {port}"


def _guarded(name: str) -> Any:
    original = getattr(socket.socket, name)

    def method(self: socket.socket, *args: Any) -> Any:
        # connect(addr), connect_ex(addr), sendto(data, addr), sendto(data, flags, addr)
        if name.startswith("connect"):
            address = args[0] if args else None
        else:
            address = args[-1] if len(args) > 1 else None
        where = outside(address)
        if where is not None and not _elsewhere():
            attempts.append(f"{name} to {where}")
            raise OSError(errno.ENETUNREACH, f"test guard: {where} is not loopback")
        return original(self, *args)

    method.__name__ = name
    method.__qualname__ = f"socket.{name}"
    method.__wrapped__ = original  # type: ignore[attr-defined]
    return method


def install() -> None:
    """Wrap the socket methods once (idempotent)."""
    if not _HOME_NETNS:
        with contextlib.suppress(OSError):
            _HOME_NETNS.append(os.stat("/proc/self/ns/net").st_ino)
    for name in ("connect", "connect_ex", "sendto"):
        if not hasattr(getattr(socket.socket, name), "__wrapped__"):
            setattr(socket.socket, name, _guarded(name))
