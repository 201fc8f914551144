"""Sweep protection: unknown device identities counted per source, a sweeping source blocked.

What counts is the number of *distinct unknown device identities* (MACs, serials) one source
asked for in the last ``window_seconds``, not its requests: a phone that retries its own file,
an office of 30 phones behind one NAT address asking for their files and for model-wide
names at boot, none of that is a sweep. A source that names ``max_misses`` unknown devices in
a window is blocked for ``block_seconds`` on TFTP and HTTP alike.

The counters live in this process (a boot storm must not wait on a database for them).
Blocks are also written to the store by the serving layer, so ``provisioner blocks`` lists
them, ``provisioner unblock`` lifts them and other servers on the same store honour them:
:meth:`SourceGuard.sync` takes the store's view.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from provisioner.store.models import utcnow

log = logging.getLogger("provisioner.serving.guard")

# A block made here and not yet written is kept this long even if the store does not list it
# (the audit writer persists it within a fraction of a second, then calls ``stored``).
_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class GuardPolicy:
    max_misses: int = 20  # distinct unknown device identities per window before a block
    window_seconds: float = 60.0
    block_seconds: float = 900.0
    max_sources: int = 100_000  # memory bound: the oldest tracked sources are forgotten
    max_names: int = 256  # identities remembered per source (well past max_misses)


@dataclass
class _Block:
    until: float  # on the guard's clock
    made: float  # when this process made it (or learnt it)
    stored: float | None = None  # when it was known to be in the store (guard's clock)


class SourceGuard:
    """Counts unknown identities per source and blocks sources that sweep. Thread-safe."""

    def __init__(
        self, policy: GuardPolicy | None = None, clock: Callable[[], float] = time.monotonic
    ):
        self.policy = policy or GuardPolicy()
        self._clock = clock
        self._misses: OrderedDict[str, OrderedDict[str, float]] = OrderedDict()
        self._blocked: dict[str, _Block] = {}
        self._lock = threading.Lock()
        # Called with a source blocked by what other servers counted (RedisGuard).
        self.on_block: Callable[[str], None] | None = None

    def close(self) -> None:
        """Release what the guard holds (nothing here; a shared guard's connection)."""

    def now(self) -> float:
        """This guard's clock (for :meth:`sync`'s ``as_of``)."""
        return self._clock()

    def blocked(self, source: str) -> bool:
        block = self._blocked.get(source)
        if block is None:
            return False
        if self._clock() >= block.until:
            with self._lock:
                self._blocked.pop(source, None)
            return False
        return True

    def remaining(self, source: str) -> float:
        """Seconds until the block of ``source`` ends (0 when it is not blocked)."""
        block = self._blocked.get(source)
        return 0.0 if block is None else max(0.0, block.until - self._clock())

    def miss(self, source: str, identity: str) -> bool:
        """Count an unknown device ``identity`` asked for by ``source``; True if that blocks it."""
        now = self._clock()
        p = self.policy
        with self._lock:
            names = self._misses.get(source)
            if names is None:
                names = OrderedDict()
                self._misses[source] = names
                if len(self._misses) > p.max_sources:
                    self._misses.popitem(last=False)
            else:
                self._misses.move_to_end(source)
            names[identity] = now
            names.move_to_end(identity)
            while names and next(iter(names.values())) <= now - p.window_seconds:
                names.popitem(last=False)
            while len(names) > p.max_names:
                names.popitem(last=False)
            if len(names) >= p.max_misses and source not in self._blocked:
                self._blocked[source] = _Block(now + p.block_seconds, now)
                names.clear()
                return True
        return False

    def stored(self, source: str) -> None:
        """The block of ``source`` is written to the store (see :meth:`sync`)."""
        with self._lock:
            block = self._blocked.get(source)
            if block is not None:
                block.stored = self._clock()

    def sync(self, store_blocks: Mapping[str, datetime], as_of: float) -> None:
        """Take the store's active blocks (source -> until), read at ``as_of`` (this guard's
        clock, taken before the query): add the ones another server or process made, drop
        the ones lifted there (``provisioner unblock``)."""
        now, wall = self._clock(), utcnow()
        with self._lock:
            for source, until in store_blocks.items():
                left = (until - wall).total_seconds()
                block = self._blocked.get(source)
                if block is None:
                    self._blocked[source] = _Block(now + left, now, stored=as_of)
                else:
                    block.until = max(block.until, now + left)
                    block.stored = block.stored or as_of
            for source in [s for s in self._blocked if s not in store_blocks]:
                block = self._blocked[source]
                lifted = block.stored is not None and block.stored <= as_of
                if lifted or now - block.made > _GRACE_SECONDS:
                    del self._blocked[source]
                    self._misses.pop(source, None)

    def blocked_sources(self) -> list[str]:
        now = self._clock()
        return [s for s, b in self._blocked.items() if b.until > now]


class RedisGuard(SourceGuard):
    """A :class:`SourceGuard` whose counts are shared by every server through Redis.

    Each server still counts and blocks on its own at once (a sweep aimed at one server is
    stopped there); every miss is also added, off the request path, to the source's sorted
    set in Redis (member: the unknown identity, score: when), so a sweep spread over several
    servers behind a load balancer is counted as one. The server whose addition reaches
    ``max_misses`` takes the block (``SET NX``) and reports it through ``on_block``; the
    others learn it from the store within a second (blocks are stored, see ``sync``).
    """

    def __init__(
        self,
        policy: GuardPolicy | None,
        url: str,
        *,
        prefix: str = "provisioner:guard:",
        clock: Callable[[], float] = time.monotonic,
    ):
        import redis

        super().__init__(policy, clock)
        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._prefix = prefix
        self._queue: queue.SimpleQueue[tuple[str, str, float] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._count, name="guard-redis", daemon=True)
        self._thread.start()

    def miss(self, source: str, identity: str) -> bool:
        self._queue.put((source, identity, time.time()))
        return super().miss(source, identity)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(5)
        self._redis.close()

    def _count(self) -> None:
        p = self.policy
        while True:
            item = self._queue.get()
            if item is None:
                return
            source, identity, at = item
            key = f"{self._prefix}miss:{source}"
            try:
                pipe = self._redis.pipeline()
                pipe.zadd(key, {identity: at})
                pipe.zremrangebyscore(key, "-inf", at - p.window_seconds)
                pipe.zcard(key)
                pipe.expire(key, int(p.window_seconds) + 1)
                count = pipe.execute()[2]
                if count < p.max_misses or self.blocked(source):
                    continue
                block = f"{self._prefix}block:{source}"
                if self._redis.set(block, "1", nx=True, ex=int(p.block_seconds)):
                    self._block_here(source)
            except Exception as exc:  # Redis away: each server keeps counting on its own
                log.warning("sweep guard: Redis: %s", type(exc).__name__)

    def _block_here(self, source: str) -> None:
        now = self._clock()
        with self._lock:
            if source in self._blocked:
                return
            self._blocked[source] = _Block(now + self.policy.block_seconds, now)
            self._misses.pop(source, None)
        if self.on_block is not None:
            self.on_block(source)
