"""Times in the store: written in UTC, read back as aware UTC datetimes, compared correctly,
on SQLite and on PostgreSQL (whatever the server's time zone), with no schema change."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi.testclient import TestClient
from pgstore import fresh_database

from provisioner.api.app import create_app
from provisioner.api.limits import ApiLimits
from provisioner.orders.service import OrdersService
from provisioner.settings import load_settings
from provisioner.store import push_models, tokens  # noqa: F401  (every table in Base.metadata)
from provisioner.store.models import AuditEvent, Base

ROME = timezone(timedelta(hours=1))  # CET, what an Italian server's clock says in November
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def inventory(
    request: pytest.FixtureRequest, home: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[OrdersService]:
    """An empty store on SQLite, or on a PostgreSQL database whose time zone is Rome's."""
    if request.param == "sqlite":
        inv = OrdersService(load_settings())
        yield inv
        inv.db.dispose()
        return
    with fresh_database(timezone="Europe/Rome") as url:
        monkeypatch.setenv("PROVISIONER_DATABASE_URL", url)
        inv = OrdersService(load_settings())
        try:
            yield inv
        finally:
            inv.db.dispose()


def _event(inv: OrdersService, at: datetime, action: str) -> None:
    with inv.db.write() as s:
        s.add(AuditEvent(at=at, actor="test", action=action, order_id="WT-2026-000123"))


def test_a_time_comes_back_as_the_same_instant_in_utc(inventory: OrdersService) -> None:
    written = datetime(2026, 11, 22, 9, 30, 15, 250000, tzinfo=ROME)
    _event(inventory, written, "written.rome")
    with inventory.db.read() as s:
        event = s.query(AuditEvent).one()
    assert event.at == written
    assert event.at.tzinfo is UTC
    assert event.at.isoformat() == "2026-11-22T08:30:15.250000+00:00"


def test_comparisons_in_queries_take_the_instant_not_the_wall_time(
    inventory: OrdersService,
) -> None:
    base = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
    for hour in range(3):
        _event(inventory, base + timedelta(hours=hour), f"at.{hour}")
    with inventory.db.read() as s:
        since = datetime(2026, 11, 22, 10, 0, tzinfo=timezone(timedelta(hours=2)))  # 08:00Z
        found = s.query(AuditEvent).filter(AuditEvent.at > since).all()
    assert sorted(e.action for e in found) == ["at.1", "at.2"]


def test_the_audit_api_filters_by_since_and_until_with_or_without_an_offset(
    inventory: OrdersService,
) -> None:
    base = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)
    for hour in range(3):
        _event(inventory, base + timedelta(hours=hour), f"at.{7 + hour}")
    with inventory.db.write() as s:
        _, token = tokens.create(s, "viewer", name="reader")
    client = TestClient(create_app(inventory.settings, inventory, ApiLimits(1e6, 10**6)))

    def actions(**query: str) -> list[str]:
        r = client.get("/api/v1/audit", params=query, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        return [e["action"] for e in r.json()["items"] if e["action"].startswith("at.")]

    assert actions(since="2026-11-22T08:00:00Z") == ["at.9", "at.8"]
    assert actions(since="2026-11-22T09:00:00+01:00") == ["at.9", "at.8"]  # 08:00Z
    assert actions(since="2026-11-22T08:00:00") == ["at.9", "at.8"]  # no offset: UTC
    assert actions(until="2026-11-22T09:00:00+01:00") == ["at.7"]
    assert actions(since="2026-11-22T07:30:00Z", until="2026-11-22T10:00:00+01:00") == ["at.8"]
    items = client.get(
        "/api/v1/audit", params={"order": "WT-2026-000123"},
        headers={"Authorization": f"Bearer {token}"},
    ).json()["items"]  # fmt: skip
    assert {e["at"] for e in items} == {
        "2026-11-22T07:00:00Z",
        "2026-11-22T08:00:00Z",
        "2026-11-22T09:00:00Z",
    }


def test_the_migrated_schema_is_what_the_models_declare(inventory: OrdersService) -> None:
    """The UTC column type changes no database type: no migration is needed for it."""
    with inventory.db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
