"""An order cannot silently rename another order's customer (issue 11 item 12).

A customer (one VAT) changes its name only through one of its own orders re-applied with the
new name, or when an admin says so (API: the admin role; CLI: ``apply --rename-customer``).
Any other order naming a stored VAT differently is refused, naming the order that owns the
customer, and the store is left as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from provisioner.api.app import create_app
from provisioner.api.limits import ApiLimits
from provisioner.cli.app import app as cli
from provisioner.orders.service import OrdersService
from provisioner.store import tokens
from provisioner.store.models import AuditEvent, Customer, Order

SAMPLES = Path(__file__).resolve().parents[2] / "inventory" / "orders"
OWNER = "WT-2026-000123"  # the sample that holds the customer below
VAT = "IT01234567897"
NAME = "Rossi Impianti S.r.l."
OTHER = "WT-2026-000102"  # another customer's order (Studio Legale Bianchi)
NEW = "WT-2026-900001"
PROBLEM = (
    f'customer.name: customer {VAT} is "{NAME}" in order {OWNER}; '
    "only that customer's orders or an admin may rename it"
)


def _doc(order_id: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((SAMPLES / f"{order_id}.yaml").read_text())
    return doc


def _new_order(name: str) -> dict[str, Any]:
    """A new order for the VAT of OWNER, with no boxes named (so no MAC clashes)."""
    doc = _doc(OWNER)
    doc["order"] = NEW
    doc["customer"] = {"name": name, "vat": VAT}
    for dev in doc["devices"]:
        dev.pop("mac", None)
        dev.pop("serial", None)
    return doc


def _moved(name: str) -> dict[str, Any]:
    """OTHER, moved to the VAT of OWNER under another name."""
    doc = _doc(OTHER)
    doc["customer"] = {"name": name, "vat": VAT}
    return doc


def _customers(inv: OrdersService) -> dict[str, str]:
    with inv.db.read() as session:
        return {c.vat: c.name for c in session.scalars(select(Customer))}


def _orders(inv: OrdersService) -> dict[str, tuple[str, str]]:
    with inv.db.read() as session:
        return {o.order_id: (o.customer.vat, o.source) for o in session.scalars(select(Order))}


class Api:
    def __init__(self, inv: OrdersService):
        self.client = TestClient(create_app(inv.settings, inv, ApiLimits(rate=1e6, burst=10**6)))
        with inv.db.write() as session:
            self.tokens = {r: tokens.create(session, r, name=f"t-{r}")[1] for r in ("noc", "admin")}

    def send(self, role: str, method: str, order_id: str | None, doc: dict[str, Any]) -> Any:
        url = "/api/v1/orders" + (f"/{order_id}" if order_id else "")
        auth = {"Authorization": f"Bearer {self.tokens[role]}"}
        return self.client.request(method, url, json=doc, headers=auth)


@pytest.fixture
def api(sample_inventory: OrdersService) -> Iterator[Api]:
    yield Api(sample_inventory)


# ---------------------------------------------------------------------- API


@pytest.mark.parametrize(
    ("method", "order_id", "doc"),
    [("POST", None, _new_order("Impostori S.r.l.")), ("PUT", OTHER, _moved("Impostori S.r.l."))],
    ids=["a new order", "an order moving to the VAT"],
)
def test_the_api_refuses_a_noc_order_renaming_another_orders_customer(
    api: Api,
    sample_inventory: OrdersService,
    method: str,
    order_id: str | None,
    doc: dict[str, Any],
) -> None:
    customers, orders = _customers(sample_inventory), _orders(sample_inventory)
    r = api.send("noc", method, order_id, doc)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert [v["message"] for v in r.json()["violations"]] == [f"{doc['order']}: {PROBLEM}"]
    assert _customers(sample_inventory) == customers
    assert _orders(sample_inventory) == orders
    with sample_inventory.db.read() as session:
        refused = session.scalars(select(AuditEvent).where(AuditEvent.action == "order.refused"))
        assert OWNER in list(refused)[-1].detail


def test_the_api_lets_a_new_order_reuse_a_vat_under_the_same_name(
    api: Api, sample_inventory: OrdersService
) -> None:
    r = api.send("noc", "POST", None, _new_order(NAME))
    assert r.status_code == 201, r.text
    assert _customers(sample_inventory)[VAT] == NAME
    assert _orders(sample_inventory)[NEW][0] == VAT


def test_the_customers_own_order_renames_it_through_the_api(
    api: Api, sample_inventory: OrdersService
) -> None:
    doc = _doc(OWNER)
    doc["customer"]["name"] = "Rossi Impianti S.p.A."
    r = api.send("noc", "PUT", OWNER, doc)
    assert r.status_code == 200, r.text
    assert f"customer {VAT}: name changed" in r.json()["changes"]
    assert _customers(sample_inventory)[VAT] == "Rossi Impianti S.p.A."


def test_an_admin_may_rename_through_another_order(
    api: Api, sample_inventory: OrdersService
) -> None:
    r = api.send("admin", "POST", None, _new_order("Rossi Impianti S.p.A."))
    assert r.status_code == 201, r.text
    assert _customers(sample_inventory)[VAT] == "Rossi Impianti S.p.A."
    got = api.client.get(
        f"/api/v1/orders/{OWNER}", headers={"Authorization": f"Bearer {api.tokens['noc']}"}
    )
    assert got.json()["customer"]["name"] == "Rossi Impianti S.p.A."


# ---------------------------------------------------------------------- CLI


def _write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / f"{doc['order']}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.mark.parametrize(
    "doc", [_new_order("Impostori S.r.l."), _moved("Impostori S.r.l.")], ids=["new", "moved"]
)
def test_cli_apply_refuses_in_one_line_and_leaves_the_store_unchanged(
    sample_inventory: OrdersService, tmp_path: Path, doc: dict[str, Any]
) -> None:
    customers, orders = _customers(sample_inventory), _orders(sample_inventory)
    path = _write(tmp_path, doc)
    result = CliRunner().invoke(cli, ["apply", str(path)])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines() == [f"{path}: {doc['order']}: {PROBLEM}"]
    assert "Traceback" not in result.output
    assert _customers(sample_inventory) == customers
    assert _orders(sample_inventory) == orders


def test_cli_apply_renames_with_rename_customer(
    sample_inventory: OrdersService, tmp_path: Path
) -> None:
    path = _write(tmp_path, _moved("Rossi Impianti S.p.A."))
    result = CliRunner().invoke(cli, ["apply", "--rename-customer", str(path)])
    assert result.exit_code == 0, result.output
    assert f"customer {VAT}: name changed" in result.stdout
    assert _customers(sample_inventory)[VAT] == "Rossi Impianti S.p.A."
    assert _orders(sample_inventory)[OTHER][0] == VAT


def test_cli_reapplying_the_customers_own_order_renames_it(
    sample_inventory: OrdersService, tmp_path: Path
) -> None:
    doc = _doc(OWNER)
    doc["customer"]["name"] = "Rossi Impianti S.p.A."
    result = CliRunner().invoke(cli, ["apply", str(_write(tmp_path, doc))])
    assert result.exit_code == 0, result.output
    assert _customers(sample_inventory)[VAT] == "Rossi Impianti S.p.A."


def test_the_problem_names_every_order_of_the_customer(
    sample_inventory: OrdersService, tmp_path: Path
) -> None:
    second = _new_order(NAME)  # the same customer gets a second order ...
    assert CliRunner().invoke(cli, ["apply", str(_write(tmp_path, second))]).exit_code == 0
    result = CliRunner().invoke(cli, ["apply", str(_write(tmp_path, _moved("Impostori")))])
    assert result.exit_code == 1
    assert f'is "{NAME}" in orders {OWNER}, {NEW}; only' in result.stderr
