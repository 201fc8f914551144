"""Fixtures for the REST API tests (the store itself is built in ``apistore``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from apistore import OPEN_LIMITS, Store, copy_store, populate
from fastapi import FastAPI
from fastapi.testclient import TestClient

from provisioner.api.app import create_app


@pytest.fixture
def store(template_home: Path, tmp_path: Path) -> Iterator[Store]:
    """A private copy of the populated store (copying is much faster than applying)."""
    s = copy_store(template_home, tmp_path / "home")
    yield s
    s.inventory.db.dispose()


@pytest.fixture
def app(store: Store) -> FastAPI:
    return create_app(store.settings, store.inventory, OPEN_LIMITS)


@pytest.fixture
def client(app: FastAPI) -> TestClient:
    return TestClient(app)


@pytest.fixture(scope="session")
def template_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A populated home, copied for tests that must each start from the same store."""
    home = tmp_path_factory.mktemp("template") / "home"
    s = populate(home)
    s.inventory.db.dispose()  # checkpoints the WAL so the copied file is complete
    (home / "tokens.yaml").write_text(yaml.safe_dump({"tokens": s.tokens, "macs": s.macs}))
    return home
