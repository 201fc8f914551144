"""SNMP for the push drivers: one pysnmp engine per process, shared by every switch.

pysnmp 7 is asyncio-only, and an ``SnmpEngine`` is bound to the event loop it first ran on.
Building one costs ~0.19 s of CPU (the issue-14 profile: more than half of a whole push), so
a process keeps exactly one: :func:`shared` starts an event loop in a daemon thread and
creates the engine inside it; every switch pushed from the process sends its requests
through that engine and its one UDP transport, so many devices are in flight on one loop.

SNMPv2c goes through pysnmp's *v1arch* dispatcher (one per process too): a community
message needs no USM, and v1arch builds the PDU straight from numeric OIDs, where the v3arch
engine writes every target into its own configuration MIB and resolves every OID through
a MIB view first (the profile after the shared engine: 60 % of the pushing process's CPU).
SNMPv3 uses the v3arch engine (USM: keys, authentication, privacy).
The synchronous NAPALM driver methods submit coroutines to it (:meth:`SnmpLoop.run`), from
any thread; async code can await :class:`SnmpSession`'s coroutines on the loop itself.

A :class:`SnmpSession` is one device (address, credentials, timeouts). Requests carry as
many varbinds as the agent accepts: a whole GET or a whole SET in one PDU, halved only when
the agent answers ``tooBig``. One SET PDU is applied all or nothing by the agent (RFC 3416
§4.2.5), which is what lets a killed push leave a switch with its old config or its new
one, never a mix; a plan the agent needs in several PDUs loses that (it is then as safe as
the rollback).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from provisioner.push import setplan as sp

T = TypeVar("T")

TOO_BIG = 1  # SNMP errorStatus tooBig: the answer would not fit in one message
BULK_REPETITIONS = 16  # rows per GETBULK when walking a table column


class SnmpError(Exception):
    """An SNMP request failed; ``timeout`` tells no-answer apart from a refusal."""

    def __init__(self, message: str, *, timeout: bool = False, too_big: bool = False):
        super().__init__(message)
        self.timeout = timeout
        self.too_big = too_big
        self.sent = 0  # varbinds of a SET that the agent had accepted before this failure


class _NoMibCompiler:
    """Stands in for pysmi's MIB compiler: we send numeric OIDs only.

    With pysmi installed (snmpsim needs it), pysnmp builds a lark parser for ASN.1 MIBs on
    an engine's first request, ~1.5 s of CPU; numeric OIDs never need it.
    """

    def compile(self, *names: str, **options: Any) -> dict[str, str]:
        return {}


class SnmpLoop:
    """An event loop in a daemon thread and the one pysnmp engine that lives on it."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="snmp", daemon=True)
        self._thread.start()
        self.engine: Any = self.run(self._create(), 60.0)
        self.dispatcher: Any = self.run(self._dispatcher(), 60.0)

    @staticmethod
    async def _create() -> Any:
        import pysnmp.smi.mibs
        from pysnmp.hlapi.v3arch import asyncio as h

        engine = h.SnmpEngine()  # inside the running loop: it binds to this loop
        engine.get_mib_builder().set_mib_compiler(
            _NoMibCompiler(), str(Path(pysnmp.smi.mibs.__file__).parent)
        )
        return engine

    @staticmethod
    async def _dispatcher() -> Any:
        from pysnmp.hlapi.v1arch import asyncio as v1

        return v1.SnmpDispatcher()

    def run(self, coro: Coroutine[Any, Any, T], deadline: float) -> T:
        """Run ``coro`` on the loop and wait for it (at most ``deadline`` seconds)."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout=deadline)
        except TimeoutError:
            future.cancel()
            raise SnmpError(f"no answer within {deadline:g} s", timeout=True) from None

    def close(self) -> None:
        async def _close() -> None:
            self.engine.close_dispatcher()
            self.dispatcher.transport_dispatcher.close_dispatcher()

        with contextlib.suppress(Exception):  # best effort at shutdown
            self.run(_close(), 5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


_shared: SnmpLoop | None = None
_shared_lock = threading.Lock()


def shared() -> SnmpLoop:
    """The process's SNMP loop and engine, made on first use (and again in a forked child:
    a loop thread does not survive a fork)."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared.pid != os.getpid():
            _shared = SnmpLoop()
        return _shared


def _plain(value: Any) -> Any:
    """pysnmp value -> bytes/int/str, or None for noSuchObject/Instance/endOfMibView."""
    from pyasn1.type import univ
    from pysnmp.proto import rfc1905

    if isinstance(value, rfc1905.NoSuchObject | rfc1905.NoSuchInstance | rfc1905.EndOfMibView):
        return None
    if isinstance(value, univ.OctetString):  # also IpAddress, Opaque
        return bytes(value.asOctets())
    if isinstance(value, univ.ObjectIdentifier):
        return str(value)
    return int(value)


def _value(vb: sp.VarBind) -> Any:
    from pysnmp.proto import rfc1902

    if vb.kind == "int":
        return rfc1902.Integer32(int(vb.value))
    if vb.kind == "gauge":
        return rfc1902.Gauge32(int(vb.value))
    if vb.kind == "octets":
        assert isinstance(vb.value, bytes)
        return rfc1902.OctetString(vb.value)
    return rfc1902.OctetString(str(vb.value).encode())


class SnmpSession:
    """One device reached through the shared engine. Values come back as plain Python.

    ``auth``: ``{"version": "2c", "community": ...}`` or ``{"version": "3", "user",
    "auth_key", "priv_key", "auth_protocol", "priv_protocol"}`` (pysnmp protocol ids).
    """

    def __init__(
        self,
        host: str,
        port: int,
        auth: dict[str, Any],
        timeout: float,
        retries: int,
        context_name: str = "",
        *,
        max_varbinds: int | None = None,
    ) -> None:
        self.where = f"{host}:{port}"
        self._host, self._port = host, port
        self._auth_args = auth
        self._timeout, self._retries = timeout, retries
        self._context_name = context_name
        self.max_varbinds = max_varbinds  # None: as many as the agent accepts
        self.requests = 0  # PDUs sent (each retry of pysnmp's own not counted)
        self._loop = shared()
        self._target: Any = None
        self._auth: Any = None
        self._lock = threading.Lock()  # one request of this device at a time

    # --- async API (on the shared loop) ------------------------------------------------

    @property
    def _v2c(self) -> bool:
        return bool(self._auth_args["version"] != "3")

    async def _setup(self) -> None:
        if self._target is not None:
            return
        a = self._auth_args
        if a["version"] == "3":
            from pysnmp.hlapi.v3arch import asyncio as h

            self._target = await h.UdpTransportTarget.create(
                (self._host, self._port), timeout=self._timeout, retries=self._retries
            )
            self._auth = h.UsmUserData(
                a["user"],
                authKey=a["auth_key"],
                privKey=a["priv_key"],
                authProtocol=a["auth_protocol"],
                privProtocol=a["priv_protocol"],
            )
        else:
            from pysnmp.hlapi.v1arch import asyncio as v1

            self._target = await v1.UdpTransportTarget.create(
                (self._host, self._port), timeout=self._timeout, retries=self._retries
            )
            # v2c only when the caller allows it; require_v3 refuses writes before sending.
            self._auth = v1.CommunityData(a["community"], mpModel=1)  # noqa: S508

    def _context(self) -> Any:
        from pysnmp.hlapi.v3arch import asyncio as h

        return h.ContextData(contextName=self._context_name)

    async def _command(self, name: str, *args: Any) -> Any:
        """Send one request (``get_cmd``, ``set_cmd``, ``bulk_cmd``); varbinds are
        (OID string, pysnmp value) pairs, sent as they are (no MIB lookup)."""
        *head, varbinds = args
        if self._v2c:
            from pysnmp.hlapi.v1arch import asyncio as v1
            from pysnmp.proto.rfc1902 import ObjectName

            pairs = [(ObjectName(oid), value) for oid, value in varbinds]
            return await getattr(v1, name)(
                self._loop.dispatcher, self._auth, self._target, *head, *pairs, lookupMib=False
            )
        from pysnmp.hlapi.v3arch import asyncio as h

        objs = [h.ObjectType(h.ObjectIdentity(oid), value) for oid, value in varbinds]
        return await getattr(h, name)(
            self._loop.engine, self._auth, self._target, self._context(), *head, *objs,
            lookupMib=False,
        )  # fmt: skip

    def _check(self, what: str, result: tuple[Any, Any, Any, Any]) -> list[tuple[str, Any]]:
        error_indication, error_status, error_index, var_binds = result
        if error_indication:
            from pysnmp.proto.errind import RequestTimedOut

            timed_out = isinstance(error_indication, RequestTimedOut)
            raise SnmpError(f"{self.where}: {what}: {error_indication}", timeout=timed_out)
        if error_status:
            oid = "?"
            if error_index and 0 < int(error_index) <= len(var_binds):
                oid = str(var_binds[int(error_index) - 1][0])
            raise SnmpError(
                f"{self.where}: {what}: {error_status.prettyPrint()} at {oid}",
                too_big=int(error_status) == TOO_BIG,
            )
        return [(str(oid), _plain(val)) for oid, val in var_binds]

    def _chunks(self, items: list[T]) -> list[list[T]]:
        size = self.max_varbinds or len(items) or 1
        return [items[i : i + size] for i in range(0, len(items), size)]

    async def get_async(self, oids: list[str]) -> list[tuple[str, Any]]:
        """GET every OID, in as few PDUs as the agent accepts."""
        await self._setup()
        out: list[tuple[str, Any]] = []
        for chunk in self._chunks(oids):
            out += await self._get_split(chunk)
        return out

    async def _get_split(self, oids: list[str]) -> list[tuple[str, Any]]:
        from pyasn1.type.univ import Null

        self.requests += 1
        result = await self._command("get_cmd", [(o, Null("")) for o in oids])
        try:
            return self._check("get", result)
        except SnmpError as exc:
            if not exc.too_big or len(oids) < 2:
                raise
        half = len(oids) // 2
        return await self._get_split(oids[:half]) + await self._get_split(oids[half:])

    async def column_async(self, prefix: str) -> list[tuple[str, Any]]:
        """Every row of a table column (GETBULK until the column ends)."""
        from pyasn1.type.univ import Null

        await self._setup()
        out: list[tuple[str, Any]] = []
        start = prefix
        inside = prefix + "."
        while True:
            self.requests += 1
            result = await self._command("bulk_cmd", 0, BULK_REPETITIONS, [(start, Null(""))])
            rows = self._check("getbulk", result)
            for oid, value in rows:
                if not oid.startswith(inside) or value is None:
                    return out
                out.append((oid, value))
            if not rows:
                return out
            start = rows[-1][0]

    async def set_async(self, varbinds: list[sp.VarBind]) -> int:
        """SET the varbinds, all in one PDU unless the agent says tooBig (or ``max_varbinds``
        caps it). Returns how many were sent before a failure raised (all on success)."""
        await self._setup()
        sent = 0
        for chunk in self._chunks(varbinds):
            sent = await self._set_split(chunk, sent)
        return sent

    async def _set_split(self, varbinds: list[sp.VarBind], sent: int) -> int:
        self.requests += 1
        result = await self._command("set_cmd", [(vb.oid, _value(vb)) for vb in varbinds])
        try:
            answered = self._check("set", result)
        except SnmpError as exc:
            if not exc.too_big or len(varbinds) < 2:
                exc.sent = sent
                raise
            half = len(varbinds) // 2
            sent = await self._set_split(varbinds[:half], sent)
            return await self._set_split(varbinds[half:], sent)
        # snmpsim (and some agents) answer errorStatus 0 with noSuchInstance for an object
        # they cannot write: that is a failure too.
        missing = [oid for oid, value in answered if value is None]
        if missing:
            error = SnmpError(f"{self.where}: set: no such object {', '.join(missing)}")
            error.sent = sent
            raise error
        return sent + len(varbinds)

    # --- synchronous API (any thread) --------------------------------------------------

    def setup(self, deadline: float) -> None:
        with self._lock:
            self._loop.run(self._setup(), deadline)

    def get(self, oids: list[str], deadline: float) -> list[tuple[str, Any]]:
        with self._lock:
            return self._loop.run(self.get_async(oids), deadline)

    def column(self, prefix: str, deadline: float) -> list[tuple[str, Any]]:
        with self._lock:
            return self._loop.run(self.column_async(prefix), deadline)

    def set(self, varbinds: list[sp.VarBind], deadline: float) -> int:
        with self._lock:
            return self._loop.run(self.set_async(varbinds), deadline)

    def close(self) -> None:
        """Nothing to close on the device (SNMP has no session); the engine stays."""
        self._target = None
