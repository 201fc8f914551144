"""Engine and sessions. SQLite gets WAL, foreign keys and serialised writers; schema by Alembic.

Write transactions on SQLite start with ``BEGIN IMMEDIATE`` so two writers (two technicians
binding at once) queue on the database lock instead of both reading a stale count; on
PostgreSQL the same writers lock the order row (``SELECT ... FOR UPDATE``).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from provisioner.errors import SettingsError
from provisioner.settings import Settings
from provisioner.store import changes as _changes  # noqa: F401  (registers the write hooks)

MIGRATIONS = Path(__file__).parent / "migrations"
_WRITE = "provisioner_write"


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite would defer it).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except Exception:
        raise SettingsError(f"PROVISIONER_DATABASE_URL: {url!r} is not a database URL") from None
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _sqlite_setup(engine)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        # psycopg 3 is the driver we install; plain postgresql:// would ask for psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg")
    return create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=20)


_migrated: set[str] = set()
_migrate_lock = threading.Lock()
_REVISION_LINE = re.compile(
    r"""^(revision|down_revision)\b[^=\n]*=\s*(?:"([^"]*)"|'([^']*)'|None)\s*$""", re.M
)


def _script_head() -> str | None:
    """The newest migration's revision, read from the scripts' text: importing alembic costs
    more than a short command's whole run. None unless the scripts form one plain chain."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (MIGRATIONS / "versions").glob("*.py"):
        found = {m[1]: m[2] or m[3] for m in _REVISION_LINE.finditer(script.read_text())}
        if "revision" not in found or "down_revision" not in found or not found["revision"]:
            return None
        revisions.add(found["revision"])
        if found["down_revision"]:
            parents.add(found["down_revision"])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def _is_current(engine: Engine) -> bool:
    """True when the store is at the scripts' head (a plain read; any doubt says False)."""
    head = _script_head()
    if head is None:
        return False
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    except Exception:  # no table yet, no database yet: alembic decides and reports
        return False
    return [r[0] for r in rows] == [head]


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (idempotent; cheap when already current:
    alembic is imported only when the store is not at the newest migration)."""
    key = engine.url.render_as_string(hide_password=False)
    with _migrate_lock:
        if key in _migrated:
            return
        if _is_current(engine):
            _migrated.add(key)
            return
        from alembic import command
        from alembic.config import Config
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        head = ScriptDirectory.from_config(cfg).get_current_head()
        try:
            with engine.connect() as conn:
                current = MigrationContext.configure(conn).get_current_revision()
        except OperationalError as exc:
            raise SettingsError(f"database {engine.url!r}: {exc.orig}".splitlines()[0]) from None
        if current != head:
            with engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        _migrated.add(key)


class Database:
    """The store's engine plus session helpers; made once per process from settings."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.url = settings.effective_database_url
        self.engine = make_engine(self.url)
        if self.engine.url.get_backend_name() == "sqlite" and self.engine.url.database:
            db_path = Path(self.engine.url.database)
            if not db_path.exists():
                db_path.touch(mode=0o600)
            db_path.chmod(0o600)
        migrate(self.engine)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.url.get_backend_name() == "sqlite"

    @contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction: committed on success, rolled back on any exception."""
        with (
            self.engine.connect().execution_options(**{_WRITE: True}) as conn,
            Session(bind=conn, expire_on_commit=False) as session,
            conn.begin(),
        ):
            yield session
            session.flush()

    def dispose(self) -> None:
        self.engine.dispose()
