"""Lab phones that stay on: boot once, keep listening, and re-fetch when told (resync).

A :class:`LivePhone` is a :class:`~provisioner_lab.phones.Phone` (fetch over TFTP/HTTP with
the per-device credentials its first file installed, the phone's own INI parser) whose
accounts are registered by a :class:`~provisioner_lab.sipua.UserAgent` that keeps its socket
open. On a ``NOTIFY`` with ``Event: check-sync`` from its registrar (the UA answers 200 only
to the registrar's address, 403 to anyone else) it:

1. fetches its file again over HTTP with those credentials, and parses it;
2. when an account's user, auth name, password or server changed, registers the new accounts
   from the same address and port (the Contact stays the same, so the registrar's binding of
   an unchanged AOR is replaced, not doubled) and unregisters an AOR the file no longer has;
   an unchanged file registers nothing.

:class:`PhoneRack` runs the phones' event loop in a thread of its own, so a synchronous test
(CLI commands, Kamailio) can boot phones and wait for what they did.

    with PhoneRack() as rack:
        phone = rack.boot(LivePhone("00:80:f0:20:10:01", server="127.0.0.1", http_port=8080))
        ...  # provisioner rotate, pbx export, provisioner resync
        rack.wait(lambda: phone.resyncs, 5)
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from provisioner_lab.phones import FileAccount, Phone
from provisioner_lab.sip import SipAccount
from provisioner_lab.sipua import RegisterResult, SipMessage, UserAgent

T = TypeVar("T")


@dataclass
class Resync:
    """What one check-sync made the phone do (times: ``time.monotonic()``)."""

    notified_at: float
    source: tuple[str, int]
    fetched_at: float = 0.0
    via: str = ""  # http+auth (or the error)
    sha256: str = ""
    changed: list[str] = field(default_factory=list)  # AORs registered again
    removed: list[str] = field(default_factory=list)  # AORs unregistered
    results: list[RegisterResult] = field(default_factory=list)
    done_at: float = 0.0

    @property
    def registered(self) -> bool:
        return bool(self.results) and all(r.ok for r in self.results)


def _key(a: FileAccount) -> tuple[str, str, str, str, int, bool]:
    return (a.user, a.auth_name, a.password, a.host, a.port, a.enabled)


class LivePhone(Phone):
    """A phone or DECT base that stays registered and answers check-sync."""

    def __init__(self, mac: str, *, registrar: str | None = None, **kwargs: Any):
        super().__init__(mac, **kwargs)
        self.registrar = registrar  # HOST:PORT override of the file's server
        self.ua: UserAgent | None = None
        self.address: tuple[str, int] = ("127.0.0.1", 0)
        self.boot_results: list[RegisterResult] = []
        self.resyncs: list[Resync] = []
        self._work: set[asyncio.Task[None]] = set()

    def _accounts(self) -> list[SipAccount]:
        return [s for _, s in self.sip_accounts(self.registrar)]

    async def start(self, protocol: str = "tftp", deadline: float = 5.0) -> list[RegisterResult]:
        """Fetch, parse, register, and stay on (the socket's address is kept for good)."""
        await asyncio.to_thread(self.fetch, protocol)
        await self._listen(self._accounts())
        assert self.ua is not None
        self.boot_results = await self.ua.register(deadline)
        return self.boot_results

    async def _listen(self, accounts: list[SipAccount]) -> None:
        ua = UserAgent(accounts, local_addr=self.address, on_check_sync=self._notified)
        for _ in range(100):  # a closed transport lets its socket go on a later loop turn
            try:
                await ua.start()
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                await asyncio.sleep(0.001)
        else:
            await ua.start()
        self.ua = ua
        self.address = ua.local_addr  # the same port from now on: the Contact stays

    async def _notified(self, _ua: UserAgent, request: SipMessage) -> None:
        # The UA answered 200 already (it came from the registrar). The work runs as the
        # phone's own task: it replaces the UA, which cancels the UA's callbacks on close.
        source = self.ua.local_addr if self.ua else self.address
        resync = Resync(time.monotonic(), source)
        self.resyncs.append(resync)
        task = asyncio.get_running_loop().create_task(self._refetch(resync))
        self._work.add(task)
        task.add_done_callback(self._work.discard)

    async def _refetch(self, resync: Resync, deadline: float = 5.0) -> None:
        before = {a.index: a for a in (self.file.accounts if self.file else [])}
        try:
            resync.via = await asyncio.to_thread(self.fetch, "http")
        except Exception as exc:  # the firmware keeps its old file and stays registered
            resync.via = f"not fetched: {exc}"
            resync.done_at = time.monotonic()
            return
        resync.fetched_at = time.monotonic()
        resync.sha256 = hashlib.sha256(self.data).hexdigest()
        after = {a.index: a for a in (self.file.accounts if self.file else [])}
        changed = [i for i in after if i not in before or _key(after[i]) != _key(before[i])]
        gone_users = {before[i].user for i in before} - {after[i].user for i in after}
        if changed or gone_users:
            old = self.ua
            if old is not None:
                if gone_users:  # an AOR the file no longer has: remove its binding
                    resync.removed = sorted(f"{u}@" for u in gone_users)
                    await old.unregister(2.0)
                await old.close()
            self.ua = None
            await self._listen(self._accounts())
            assert self.ua is not None
            results = await self.ua.register(deadline)
            wanted = {f"{after[i].user}@{after[i].host}" for i in changed if after[i].enabled}
            resync.results = [r for r in results if r.aor in wanted] or results
            resync.changed = [r.aor for r in resync.results]
        resync.done_at = time.monotonic()

    async def stop(self) -> None:
        for task in list(self._work):
            task.cancel()
        if self._work:
            await asyncio.gather(*self._work, return_exceptions=True)
        if self.ua is not None:
            await self.ua.unregister(2.0)
            await self.ua.close()
            self.ua = None


class PhoneRack:
    """Live phones on an event loop in a thread of its own (for synchronous callers)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.phones: list[LivePhone] = []
        self._thread = threading.Thread(target=self.loop.run_forever, name="phone-rack",
                                        daemon=True)  # fmt: skip

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def boot(self, phone: LivePhone, protocol: str = "tftp") -> LivePhone:
        self.run(phone.start(protocol))
        self.phones.append(phone)
        return phone

    def wait(self, done: Callable[[], Any], timeout: float) -> bool:
        """Poll ``done()`` (read on the loop's thread) until true or ``timeout``."""
        end = time.monotonic() + timeout

        async def check() -> Any:
            return done()

        while time.monotonic() < end:
            if self.run(check()):
                return True
            time.sleep(0.01)
        return bool(self.run(check()))

    def __enter__(self) -> PhoneRack:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for phone in self.phones:
            try:
                self.run(phone.stop(), 10)
            except Exception:  # noqa: S112 - a phone that cannot say goodbye is left behind
                continue
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()
