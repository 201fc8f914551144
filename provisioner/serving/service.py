"""The decision behind every device fetch, for TFTP and HTTP alike (DESIGN.md §5).

``ProvisioningService.fetch(name, source, ...)`` answers one request, in memory:

1. a request with valid per-device credentials (HTTP Basic, installed by the device's first
   file) is served, even from a blocked source: the credentials are 131-bit random;
2. a blocked source gets nothing else;
3. a name no driver serves is a static file under ``tftp_root/`` (firmware) or "not found",
   and never a miss: the names our devices ask for at boot besides their own files
   (model-wide files, firmware, other vendors' names) carry no identity of ours to sweep;
4. a device-file name of an unknown device, a cancelled order, wrong credentials, a closed
   enrollment window or a second claimant all get the *same* answer as an unknown name;
   unknown device identities are counted per source, and a source that sweeps is blocked;
5. a known device inside its enrollment window gets its files, and its first fetch binds it
   to the source address it came from.

The request path does no I/O that can wait: the devices and the files they get are the read
model of :mod:`provisioner.serving.index` (what the orders service published, never rendered
here); what the decisions change is stored by :mod:`provisioner.serving.recorder` in the
background. A follower thread keeps the index and the blocks as the store says, within a
second of any write, whichever server or command made it (on PostgreSQL woken at once by the
writer's NOTIFY, see :mod:`provisioner.serving.feed`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy import select

from provisioner.render.drivers.base import Driver
from provisioner.serving.feed import ChangeFeed
from provisioner.serving.guard import SourceGuard
from provisioner.serving.index import DeviceEntry, Index, ServedFile
from provisioner.serving.recorder import Event, Recorder
from provisioner.serving.static import resolve_static
from provisioner.store.access import Store
from provisioner.store.models import SourceBlock, utcnow

# A static name found missing is not looked up on disk again for this long (a firmware file
# copied into the static root is served within that time); at most this many names are kept.
STATIC_MISS_SECONDS = 2.0
STATIC_MISSES_KEPT = 4096

log = logging.getLogger("provisioner.serving.service")

Outcome = Literal["served", "not_found", "blocked"]


# Plain slotted dataclasses: made on every request, and a frozen one costs twice as much.
@dataclass(slots=True)
class _Ticket:
    """What to audit when a served transfer ends (TFTP tells completion)."""

    name: str
    source: str
    protocol: str
    device_pk: int | None
    device_id: str
    order_id: str
    user_agent: str


@dataclass(slots=True)
class Answer:
    outcome: Outcome
    data: bytes = b""
    etag: str = ""
    device: str = ""
    # The name has a device file's shape: HTTP answers it with a Basic challenge, the same
    # for a MAC we know and one we don't, so that devices that wait for one send credentials.
    challenge: bool = False
    sha256: str = ""
    ticket: _Ticket | None = None


@dataclass(frozen=True)
class _Static:
    data: bytes
    sha256: str
    etag: str


class ProvisioningService:
    """Answers device fetches from memory; thread-safe (TFTP thread + HTTP loop/threads).

    Made with the store's devices indexed; :meth:`warm` loads every order's published files
    (``serve`` does, in the background, at start-up) and :meth:`close` ends it.
    """

    def __init__(
        self,
        store: Store,
        drivers: Iterable[Driver],
        static_root: Path,
        guard: SourceGuard | None = None,
        *,
        refresh_seconds: float = 0.25,
        on_event: Callable[[str, str, str], None] | None = None,
    ):
        self.store = store
        self.static_root = static_root
        self.guard = guard or SourceGuard()
        self.refresh_seconds = refresh_seconds
        self.on_event = on_event  # metrics hook: (protocol, outcome, source)
        self.index = Index(store, drivers)
        self.recorder = Recorder(store, self.index, self.guard)
        self.guard.on_block = self._blocked_elsewhere
        self._static: dict[Path, tuple[float, _Static]] = {}
        self._static_lock = threading.Lock()
        self._static_misses: dict[str, float] = {}  # name -> monotonic time it is checked again
        self._stop = threading.Event()
        self._feed = ChangeFeed(store)
        self._follower = threading.Thread(target=self._follow, name="store-follower", daemon=True)
        self._follower.start()

    # ------------------------------------------------------------------ the decision

    def fetch(
        self,
        name: str,
        source: str,
        protocol: str,
        *,
        credentials: tuple[str, str] | None = None,
        user_agent: str = "",
    ) -> Answer:
        name = name.lstrip("/") if protocol == "http" else name
        key = self.index.identity(name.lstrip("/"))
        if key is None:
            return self._other(name, source, protocol, user_agent)
        entry = self.index.lookup(key)
        file = entry.files.get(name.lstrip("/")) if entry is not None else None
        blocked = self.guard.blocked(source)
        if credentials is not None:
            if entry is None or file is None or not self._credentials_ok(entry, credentials):
                return self._refuse(name, source, protocol, key, entry, blocked)
            return self._serve(name, source, protocol, entry, file, user_agent)
        if blocked or entry is None or file is None:
            return self._refuse(name, source, protocol, key, entry, blocked)
        if entry.window_until is None or entry.window_until <= utcnow():
            return self._refuse(name, source, protocol, key, entry, blocked)
        holder, claimed = self.index.claim(entry, source)
        if claimed:
            self.recorder.emit(Event("claim", source, protocol, name, entry.pk, entry.device_id,
                                     entry.order_id, armed_at=entry.armed_at,
                                     identity=key))  # fmt: skip
        if holder != source:
            return self._refuse(name, source, protocol, key, entry, blocked, kind="claim-refused")
        return self._serve(name, source, protocol, entry, file, user_agent)

    def _credentials_ok(self, entry: DeviceEntry, credentials: tuple[str, str]) -> bool:
        user, password = credentials
        expected = entry.password(self.store)
        return (
            bool(expected)
            and hmac.compare_digest(user.encode(), entry.username.encode())
            and hmac.compare_digest(password.encode(), expected.encode())
        )

    def _serve(
        self,
        name: str,
        source: str,
        protocol: str,
        entry: DeviceEntry,
        file: ServedFile,
        user_agent: str,
    ) -> Answer:
        ticket = None
        if protocol == "tftp":  # TFTP reports the end of the transfer (transfer_done)
            ticket = _Ticket(name, source, protocol, entry.pk, entry.device_id, entry.order_id,
                             user_agent)  # fmt: skip
        else:
            self.recorder.emit(Event("served", source, protocol, name, entry.pk, entry.device_id,
                                     entry.order_id, file.sha256, user_agent))  # fmt: skip
        self._count(protocol, "served", source)
        return Answer("served", file.body(self.store), file.etag, entry.device_id,
                      sha256=file.sha256, ticket=ticket)  # fmt: skip

    def _refuse(
        self,
        name: str,
        source: str,
        protocol: str,
        key: str,
        entry: DeviceEntry | None,
        blocked: bool,
        kind: str = "refused",
    ) -> Answer:
        if blocked:
            if entry is not None:  # the technician sees it in status: an office locked out
                self.recorder.emit(Event("blocked-fetch", source, protocol, name, entry.pk,
                                         entry.device_id, entry.order_id))  # fmt: skip
            self._count(protocol, "blocked", source)
            return Answer("blocked")
        if entry is not None:
            self.recorder.emit(Event(kind, source, protocol, name, entry.pk, entry.device_id,
                                     entry.order_id))  # fmt: skip
        elif self.guard.miss(source, key):
            # Only unknown identities count: an office's own devices, refused because their
            # window closed, never get their address blocked.
            log.warning("blocked source %s after sweeping device names", source)
            self.recorder.emit(Event("blocked", source, protocol, name))
            self._count(protocol, "source_blocked", source)
        self._count(protocol, "not_found", source)
        return Answer("not_found", challenge=True)

    def _other(self, name: str, source: str, protocol: str, user_agent: str) -> Answer:
        """A name that is no device's file: static (firmware), or not found. Never a miss."""
        if self.guard.blocked(source):
            self._count(protocol, "blocked", source)
            return Answer("blocked")
        static = self._static_file(name)
        if static is None:
            self._count(protocol, "not_found", source)
            return Answer("not_found")
        ticket = _Ticket(name, source, protocol, None, "", "", user_agent)
        if protocol != "tftp":
            self.recorder.emit(Event("static", source, protocol, name, sha256=static.sha256))
        self._count(protocol, "served", source)
        return Answer("served", static.data, static.etag, sha256=static.sha256, ticket=ticket)

    def transfer_done(self, answer: Answer, completed: bool) -> None:
        """A TFTP transfer of ``answer`` ended: acknowledged to the last block, or abandoned."""
        t = answer.ticket
        if t is None:
            return
        if t.device_pk is None:
            kind = "static" if completed else "static-abandoned"
            self.recorder.emit(Event(kind, t.source, t.protocol, t.name, sha256=answer.sha256))
        elif completed:
            self.recorder.emit(_served(t, answer.sha256))
        else:
            self.recorder.emit(Event("abandoned", t.source, t.protocol, t.name, t.device_pk,
                                     t.device_id, t.order_id, answer.sha256))  # fmt: skip

    def _blocked_elsewhere(self, source: str) -> None:
        """The sweep was counted across servers (shared guard): block and say so."""
        log.warning("blocked source %s after sweeping device names (counted by all servers)",
                    source)  # fmt: skip
        self.recorder.emit(Event("blocked", source, "any", ""))

    def _count(self, protocol: str, outcome: str, source: str) -> None:
        if self.on_event is not None:
            self.on_event(protocol, outcome, source)

    # ------------------------------------------------------------------ static files

    def _static_file(self, name: str) -> _Static | None:
        # Every phone asks for names nobody has (model-wide files, other vendors' names) at
        # each boot: a miss is remembered for a moment instead of resolved on disk again.
        now = time.monotonic()
        until = self._static_misses.get(name)
        if until is not None and until > now:
            return None
        path = resolve_static(self.static_root, name)
        if path is None:
            with self._static_lock:
                if len(self._static_misses) >= STATIC_MISSES_KEPT:
                    self._static_misses.clear()  # a flood of names stays bounded
                self._static_misses[name] = now + STATIC_MISS_SECONDS
            return None
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return None
        hit = self._static.get(path)
        if hit is not None and hit[0] == mtime:
            return hit[1]
        try:
            data = path.read_bytes()
        except OSError:
            return None
        digest = hashlib.sha256(data).hexdigest()
        file = _Static(data, digest, f'"{digest[:32]}"')
        with self._static_lock:
            if len(self._static) > 256:
                self._static.clear()
            self._static[path] = (mtime, file)
        return file

    # ------------------------------------------------------------------ following the store

    @property
    def loaded(self) -> bool:
        """Every active order is in memory: no fetch reads the store (see :meth:`warm`)."""
        return self.index.loaded

    def warm(self) -> int:
        """Load every active order's published files (start-up); returns how many orders."""
        return self.index.warm()

    def decrypt_ahead(self) -> int:
        """After :meth:`warm`: decrypt every file in memory now; returns how many."""
        return self.index.decrypt_ahead()

    def refresh(self) -> int:
        """One look at the store: reload the orders that changed, take bindings made
        elsewhere and the blocks in force; returns how many orders were reloaded."""
        as_of = self.guard.now()
        with self.store.db.read() as s:
            blocks = s.execute(
                select(SourceBlock.source, SourceBlock.until).where(
                    SourceBlock.lifted_at.is_(None), SourceBlock.until > utcnow()
                )
            ).all()
        self.guard.sync(dict(blocks), as_of)
        return self.index.refresh()

    def _follow(self) -> None:
        """Follow the store off the request path: on every change notice (PostgreSQL), and
        every ``refresh_seconds`` anyway."""
        while not self._stop.is_set():
            self._feed.wait(self.refresh_seconds)
            if self._stop.is_set():
                return
            try:
                self.refresh()
            except Exception:
                log.exception("could not follow the store's changes")

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until every decision so far is in the store (tests, shutdown)."""
        self.recorder.flush(timeout)

    def close(self) -> None:
        self._stop.set()
        self._feed.close()
        self.guard.close()
        self.recorder.close()
        self._follower.join(5)


def _served(t: _Ticket, sha256: str) -> Event:
    return Event("served", t.source, t.protocol, t.name, t.device_pk, t.device_id, t.order_id,
                 sha256, t.user_agent)  # fmt: skip


__all__ = ["Answer", "ProvisioningService"]
