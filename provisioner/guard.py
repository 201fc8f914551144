"""Sweep protection: misses counted per source address, a sweeping source blocked for a while.

The counters live in this process (a boot storm must not wait on the database for them);
:class:`SourceGuard` is the interface a shared backend (the store or Redis) can implement
when several ``serve`` instances stand behind one load balancer.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class GuardPolicy:
    max_misses: int = 20  # misses tolerated per window before a block
    window_seconds: float = 60.0
    block_seconds: float = 900.0
    max_sources: int = 100_000  # memory bound: the oldest tracked sources are forgotten


class SourceGuard:
    """Counts misses per source and blocks sources that sweep. Thread-safe."""

    def __init__(
        self, policy: GuardPolicy | None = None, clock: Callable[[], float] = time.monotonic
    ):
        self.policy = policy or GuardPolicy()
        self._clock = clock
        self._misses: OrderedDict[str, deque[float]] = OrderedDict()
        self._blocked: dict[str, float] = {}
        self._lock = threading.Lock()

    def blocked(self, source: str) -> bool:
        until = self._blocked.get(source)
        if until is None:
            return False
        if self._clock() >= until:
            with self._lock:
                self._blocked.pop(source, None)
            return False
        return True

    def blocked_until(self, source: str) -> float | None:
        return self._blocked.get(source)

    def miss(self, source: str) -> bool:
        """Count one miss; True when this miss is the one that blocks the source."""
        now = self._clock()
        p = self.policy
        with self._lock:
            q = self._misses.get(source)
            if q is None:
                q = deque()
                self._misses[source] = q
                if len(self._misses) > p.max_sources:
                    self._misses.popitem(last=False)
            else:
                self._misses.move_to_end(source)
            q.append(now)
            while q and q[0] <= now - p.window_seconds:
                q.popleft()
            if len(q) > p.max_misses and source not in self._blocked:
                self._blocked[source] = now + p.block_seconds
                q.clear()
                return True
        return False

    def unblock(self, source: str) -> None:
        with self._lock:
            self._blocked.pop(source, None)
            self._misses.pop(source, None)

    def blocked_sources(self) -> list[str]:
        now = self._clock()
        return [s for s, until in self._blocked.items() if until > now]
