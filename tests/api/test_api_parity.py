"""An order applied through the API and through ``provisioner apply`` gives the same store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from apistore import OPEN_LIMITS, OTHER, SAMPLES, canary_document
from fastapi.testclient import TestClient
from sqlalchemy import inspect, text
from typer.testing import CliRunner

from provisioner.api.app import create_app
from provisioner.orders.service import OrdersService
from provisioner.settings import Settings
from provisioner.store import tokens

# Differ by nature between two stores or two callers: keys, clocks, ciphertexts, who/where.
SKIP_TABLES = {"alembic_version", "audit_events", "api_tokens"}
SKIP_COLUMNS = {"id", "customer_id", "created_at", "updated_at", "ciphertext", "at"}
# Published files hold each store's own generated passwords: their hashes differ, not names.
SKIP_TABLE_COLUMNS = {
    ("orders", "source"),
    ("published_files", "sha256"),
    ("published_files", "published_at"),
}


def _rows(inv: OrdersService) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    insp = inspect(inv.db.engine)
    with inv.db.engine.connect() as conn:
        for table in sorted(set(insp.get_table_names()) - SKIP_TABLES):
            cols = [
                c["name"]
                for c in insp.get_columns(table)
                if c["name"] not in SKIP_COLUMNS
                and not c["name"].endswith("_pk")
                and (table, c["name"]) not in SKIP_TABLE_COLUMNS
            ]
            if not cols:
                continue
            query = f"SELECT {', '.join(cols)} FROM {table}"  # noqa: S608 - names from the schema
            out[table] = sorted(conn.execute(text(query)).all(), key=repr)
    return out


def _secrets(inv: OrdersService, order_id: str) -> dict[tuple[str, str], str]:
    from provisioner.store.models import SecretRow

    with inv.db.read() as session:
        order = inv.get(session, order_id)
        rows = session.query(SecretRow).filter(SecretRow.order_pk == order.id).all()
        return {
            (r.owner, r.name): inv.vault.decrypt(r.ciphertext)
            for r in rows
            if r.source == "document"
        }


@pytest.mark.parametrize("which", ["sample", "canary"])
def test_api_and_cli_apply_give_identical_stores(
    which: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from provisioner.cli.app import app as cli

    if which == "sample":
        doc_file = SAMPLES / f"{OTHER}.yaml"
    else:
        doc_file = tmp_path / "canary.yaml"
        doc_file.write_text(canary_document())
    body = doc_file.read_text()
    order_id = body.split("order:", 1)[1].split()[0]

    cli_home = tmp_path / "cli"
    monkeypatch.setenv("PROVISIONER_HOME", str(cli_home))
    for var in ("PROVISIONER_DATABASE_URL", "PROVISIONER_SECRET_KEY", "PROVISIONER_SETTINGS"):
        monkeypatch.delenv(var, raising=False)
    result = CliRunner().invoke(cli, ["apply", str(doc_file)])
    assert result.exit_code == 0, result.output
    by_cli = OrdersService(Settings(home=cli_home))

    by_api = OrdersService(Settings(home=tmp_path / "api"))
    with by_api.db.write() as session:
        token = tokens.create(session, "noc", name="parity")[1]
    client = TestClient(create_app(by_api.settings, by_api, OPEN_LIMITS))
    r = client.post(
        "/api/v1/orders",
        content=body,
        headers={"Authorization": f"Bearer {token}", "content-type": "application/yaml"},
    )
    assert r.status_code == 201, r.text

    assert by_cli.export(order_id) == by_api.export(order_id)
    cli_rows, api_rows = _rows(by_cli), _rows(by_api)
    assert cli_rows.keys() == api_rows.keys()
    for table in cli_rows:
        assert cli_rows[table] == api_rows[table], table
    assert sum(len(v) for v in cli_rows.values()) > 20  # the comparison saw real rows
    assert _secrets(by_cli, order_id) == _secrets(by_api, order_id)
    if which == "canary":
        assert _secrets(by_api, order_id)  # document-given secrets were compared
    with by_cli.db.engine.connect() as a, by_api.db.engine.connect() as b:
        q = text("SELECT action FROM audit_events ORDER BY id")
        assert a.execute(q).scalars().all() == b.execute(q).scalars().all() == ["order.created"]
    by_cli.db.dispose()
    by_api.db.dispose()
