"""The change feed: how a server learns that the store changed (DESIGN.md §4).

Every write that changes what servers answer (an order's published files or windows, a
binding, a block) announces itself in its transaction (:func:`provisioner.store.changes.
announce`): on PostgreSQL a ``NOTIFY`` that every server's listener gets the moment the write
commits, so several ``serve`` processes behind one load balancer answer the same within a
fraction of a second. On SQLite (one machine) there is nothing to listen to: the follower
polls the store's generation every ``refresh_seconds``, which is what it also does on
PostgreSQL as a safety net if a notice is lost with a connection.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy.engine import make_url

from provisioner.store.access import Store
from provisioner.store.changes import CHANNEL

log = logging.getLogger("provisioner.serving.feed")


class ChangeFeed:
    """``wait(timeout)`` returns early when the store announces a change (PostgreSQL)."""

    def __init__(self, store: Store):
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        url = make_url(store.db.url)
        if url.get_backend_name() == "postgresql":
            dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
            self._thread = threading.Thread(target=self._listen, args=(dsn,),
                                            name="change-feed", daemon=True)  # fmt: skip
            self._thread.start()

    @property
    def listening(self) -> bool:
        return self._thread is not None

    def wait(self, timeout: float) -> bool:
        """Wait for a change notice or ``timeout`` seconds; True if a notice came."""
        came = self._changed.wait(timeout)
        self._changed.clear()
        return came

    def close(self) -> None:
        self._stop.set()
        self._changed.set()
        if self._thread is not None:
            self._thread.join(5)

    def _listen(self, dsn: str) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._changed.set()  # anything missed while (re)connecting
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=1.0):
                            self._changed.set()
            except Exception as exc:  # the database restarted, a network blip: poll, retry
                log.warning("change feed: %s; polling until it is back", type(exc).__name__)
                self._stop.wait(2.0)
