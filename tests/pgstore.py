"""A private PostgreSQL database for one test, on the server at 127.0.0.1:5432 (trust auth).

``with fresh_database() as url:`` creates it and drops it afterwards; the test is skipped
with a message where no PostgreSQL answers (CI on this machine kind runs one).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


@contextlib.contextmanager
def fresh_database(*, timezone: str = "") -> Iterator[str]:
    """The URL of a new, empty database (``timezone``: the database's own, e.g. Rome's)."""
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432 ({exc}".splitlines()[0] + ")")
    name = f"prov_test_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    if timezone:
        admin.execute(f"ALTER DATABASE \"{name}\" SET timezone TO '{timezone}'")
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    try:
        yield url
    finally:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()
