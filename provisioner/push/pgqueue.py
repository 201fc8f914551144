"""procrastinate, the queue push tasks go through when ``push_queue = procrastinate``: its
App for the store's PostgreSQL database, and its schema (tables and functions beside ours).

Only this module, :mod:`.queue` (to enqueue) and :mod:`.worker` (to run) know it.
"""

from __future__ import annotations

import threading
from typing import Any

QUEUE = "push"  # procrastinate queue name
TASK = "provisioner.push.device"  # procrastinate task name: one device of a push job


def conninfo(settings: Any) -> str:
    """The store's PostgreSQL URL as psycopg takes it."""
    from sqlalchemy.engine import make_url

    url = make_url(settings.effective_database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


_apps: dict[tuple[str, bool], Any] = {}
_apps_lock = threading.Lock()


def queue_app(settings: Any, *, asynchronous: bool = False, run: Any = None) -> Any:
    """procrastinate's App for the store's database, with the push task registered.

    ``run(task_id)`` is what the task does in a worker; an app that only enqueues (the API,
    the CLI) never runs it."""
    import procrastinate

    key = (settings.effective_database_url, asynchronous)
    with _apps_lock:
        app = _apps.get(key) if run is None else None
        if app is not None:
            return app
        connector: Any
        if asynchronous:
            connector = procrastinate.PsycopgConnector(conninfo=conninfo(settings))
        else:
            connector = procrastinate.SyncPsycopgConnector(conninfo=conninfo(settings))
        app = procrastinate.App(connector=connector)

        def push_device_task(task_id: int) -> None:
            if run is None:
                raise RuntimeError("this process only enqueues push tasks")
            run(task_id)

        app.task(name=TASK, queue=QUEUE, pass_context=False)(push_device_task)
        if run is None:
            _apps[key] = app
        return app


_SCHEMA_LOCK = 0x70757368  # "push": one process installs procrastinate's schema at a time
_schema_ready: set[str] = set()


def ensure_schema(connection: Any) -> None:
    """Install procrastinate's tables and functions in the database once (its own SQL, as
    ``procrastinate schema --apply`` would), inside the caller's transaction."""
    from procrastinate import schema

    key = str(connection.info.dsn)  # one check per database and process
    if key in _schema_ready:
        return
    with connection.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        cur.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")
        row = cur.fetchone()
        if not (row and row[0]):
            cur.execute(schema.SchemaManager.get_schema())
    _schema_ready.add(key)
