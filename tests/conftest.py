"""Shared fixtures: a private PROVISIONER_HOME per test, and the sample inventory applied.

``pytest --update-golden`` rewrites golden files instead of comparing against them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "inventory" / "orders"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite golden files from what the code renders now (review the diff!)",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh PROVISIONER_HOME (SQLite store and secret key inside) for one test."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("PROVISIONER_HOME", str(h))
    for var in (
        "PROVISIONER_DATABASE_URL",
        "PROVISIONER_SECRET_KEY",
        "PROVISIONER_SETTINGS",
        "PROVISIONER_SECRET_KEY_FILE",
    ):
        monkeypatch.delenv(var, raising=False)
    return h


@pytest.fixture
def settings(home: Path):  # type: ignore[no-untyped-def]
    from provisioner.settings import load_settings

    return load_settings()


@pytest.fixture
def inventory(settings) -> Iterator[object]:  # type: ignore[no-untyped-def]
    """An empty store in the test's home."""
    from provisioner.inventory import Inventory

    inv = Inventory(settings)
    yield inv
    inv.db.dispose()


@pytest.fixture
def sample_inventory(inventory):  # type: ignore[no-untyped-def]
    """The store with every sample order of inventory/orders applied."""
    from provisioner.validate import check_paths

    for checked in check_paths([SAMPLES]):
        assert checked.ok, checked.lines()
        assert checked.document is not None
        inventory.apply(checked.document, source=checked.file, actor="test")
    return inventory
